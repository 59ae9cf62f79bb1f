"""Security: safetensors only, no remote code unless asked, API keys from the environment and never written.

The pickles below are booby-trapped: unpickling one creates a marker file, so "refused" means the file was
never unpickled, not merely that an error came out afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import tiny_llama

from delia.core.config import RunConfig, build_config
from delia.core.errors import ConfigError, DeliaError

SECRET = "sk-test-5f2a9c1e-never-written-anywhere"
KEY_ENV = "DELIA_TEST_API_KEY"


class Trap:
    """Unpickling this runs `Path(marker).touch()`: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def trapped_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"weight": Trap(marker)}))


# ------------------------------------------------------------------------------------- safetensors


def test_a_bin_only_model_dir_is_refused_unread(tmp_path: Path, tokenizer: Any) -> None:
    from delia.core.models import load_model

    model_dir, marker = tmp_path / "bin-only", tmp_path / "unpickled"
    tiny_llama(len(tokenizer)).config.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    trapped_pickle(model_dir / "pytorch_model.bin", marker)
    with pytest.raises(DeliaError, match="cannot load model"):
        load_model(str(model_dir))
    assert not marker.exists()


def test_a_real_bin_checkpoint_is_refused_too(tmp_path: Path, tokenizer: Any) -> None:
    import torch

    from delia.core.models import load_model

    model_dir, model = tmp_path / "bin-only", tiny_llama(len(tokenizer))
    model.config.save_pretrained(model_dir)
    torch.save(model.state_dict(), model_dir / "pytorch_model.bin")  # the classic pickled checkpoint
    with pytest.raises(DeliaError, match="cannot load model"):
        load_model(str(model_dir))


def test_a_bin_only_adapter_is_refused_unread(tmp_path: Path, tiny_model_dir: Path) -> None:
    from delia.train import load_adapter_model

    adapter, marker = tmp_path / "adapter", tmp_path / "unpickled"
    adapter.mkdir()
    config = {
        "peft_type": "LORA",
        "r": 4,
        "lora_alpha": 8,
        "target_modules": ["q_proj"],
        "task_type": "CAUSAL_LM",
    }
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    trapped_pickle(adapter / "adapter_model.bin", marker)
    with pytest.raises(DeliaError, match="only safetensors adapters"):
        load_adapter_model(str(tiny_model_dir), adapter)
    assert not marker.exists()


def test_a_checkpoint_with_a_pickled_payload_is_not_unpickled(tmp_path: Path) -> None:
    import torch

    from delia.train.checkpoint import set_rng_state

    marker = tmp_path / "unpickled"
    torch.save({"torch": torch.get_rng_state(), "python": Trap(marker)}, tmp_path / "rng.pt")
    with pytest.raises(pickle.UnpicklingError):
        set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))  # as restore_checkpoint loads it
    assert not marker.exists()
    source = Path(__file__).resolve().parents[1] / "src" / "delia" / "train" / "checkpoint.py"
    assert "weights_only=False" not in source.read_text()


# ------------------------------------------------------------------------------------- remote code


def test_remote_code_is_off_by_default_and_never_runs(tmp_path: Path, tokenizer: Any) -> None:
    from delia.core.models import load_model

    assert RunConfig().model.trust_remote_code is False
    marker = tmp_path / "remote-code-ran"
    model_dir = tmp_path / "custom"
    tiny_llama(len(tokenizer)).save_pretrained(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (model_dir / "config.json").write_text(json.dumps(config))
    (model_dir / "evil.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")
    # A known architecture that also ships code: transformers' own class is used, the shipped code ignored.
    assert type(load_model(str(model_dir))).__name__ == "LlamaForCausalLM"
    # An architecture only the shipped code knows: refused.
    config["model_type"] = "evil-arch"
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(DeliaError, match="cannot load model"):
        load_model(str(model_dir))
    assert not marker.exists()


# ---------------------------------------------------------------------------------------- API keys


class KeyServer:
    """A chat-completions server on 127.0.0.1 that records Authorization headers; `reject` answers 401
    with an error body echoing the header, as careless servers do."""

    def __init__(self, reject: bool = False) -> None:
        self.auth: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                auth = self.headers.get("Authorization")
                outer.auth.append(auth)
                if reject:
                    status, answer = 401, {"error": f"bad key in header {auth!r}"}
                else:
                    text = "An answer to: " + body["messages"][-1]["content"][:40]
                    status = 200
                    answer = {"choices": [{"message": {"content": text}}], "usage": {"completion_tokens": 5}}
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def key_server() -> Iterator[KeyServer]:
    server = KeyServer()
    yield server
    server.close()


def files_containing(root: Path, needle: str) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and needle.encode() in path.read_bytes():
            hits.append(str(path.relative_to(root)))
    return hits


def test_a_run_with_an_openai_backend_never_writes_the_key(
    key_server: KeyServer,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from delia.pipeline import run

    monkeypatch.setenv(KEY_ENV, SECRET)
    config = build_config(
        {
            "name": "keyed",
            "run_dir": str(tmp_path / "runs"),
            "model": {"name": str(tiny_model_dir)},
            "task": {"builder": "demo", "builder_options": {"n": 4}},
            "sample": {
                "sampling": {"max_new_tokens": 8},
                "backend": {"kind": "openai", "base_url": key_server.url, "api_key_env": KEY_ENV},
            },
            "diversify": {"enabled": False},
            "mix": {"ratio": 1},
            "lora": {"r": 2, "alpha": 4, "target_modules": ["q_proj"]},
            "train": {"max_steps": 1, "batch_size": 4, "micro_batch_size": 4, "max_length": 64, "threads": 1},
        }
    )
    run_dir = run(config, log=print)
    assert key_server.auth and set(key_server.auth) == {f"Bearer {SECRET}"}  # the key was used...
    sample_manifest = json.loads((run_dir / "sample" / "manifest.json").read_text())
    assert sample_manifest["sampler"]["backend"] == "openai"
    assert KEY_ENV in (run_dir / "config.yaml").read_text()  # ...the config names its variable...
    assert files_containing(run_dir, SECRET) == []  # ...and no config, manifest, log or cache holds it
    out, err = capfd.readouterr()
    assert SECRET not in out + err


def test_an_error_echoing_the_key_is_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from delia.core.config import SamplingConfig
    from delia.generation.openai import OpenAIBackend

    server = KeyServer(reject=True)
    monkeypatch.setenv(KEY_ENV, SECRET)
    try:
        backend = OpenAIBackend(server.url, "m", api_key_env=KEY_ENV, max_retries=0, progress=False)
        assert SECRET not in repr(backend)
        with pytest.raises(DeliaError, match="HTTP 401") as caught:
            backend.generate([[{"role": "user", "content": "hi"}]], SamplingConfig(max_new_tokens=4))
    finally:
        server.close()
    assert server.auth == [f"Bearer {SECRET}"]
    assert SECRET not in str(caught.value) and "***" in str(caught.value)


def test_a_key_pasted_into_the_config_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({"sample": {"backend": {"kind": "openai", "api_key_env": SECRET}}})
    assert "NAME of an environment variable" in str(caught.value)
    assert SECRET not in str(caught.value)
    with pytest.raises(ConfigError, match="credentials") as in_url:
        build_config({"sample": {"backend": {"base_url": f"http://user:{SECRET}@127.0.0.1:9/v1"}}})
    assert SECRET not in str(in_url.value)


def test_a_missing_key_variable_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    from delia.generation.openai import OpenAIBackend

    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match="names no environment variable that is set") as caught:
        OpenAIBackend("http://127.0.0.1:9/v1", "m", api_key_env=KEY_ENV)
    assert KEY_ENV not in str(caught.value) and "\n" not in str(caught.value)
    assert os.environ.get(KEY_ENV) is None


# A Google-style API key: letters and digits only, so it passes for a variable's name.
NAME_SHAPED_KEY = "AIzaSyD3xTq9FakeKey0nlyForTests7w1Pz4Lm"


def test_a_key_shaped_like_a_variable_name_is_never_echoed_or_written(
    key_server: KeyServer,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from delia.core.secrets import REDACTED
    from delia.pipeline import run

    monkeypatch.delenv(NAME_SHAPED_KEY, raising=False)
    config = build_config(
        {
            "name": "pasted",
            "run_dir": str(tmp_path / "runs"),
            "model": {"name": str(tiny_model_dir)},
            "task": {"builder": "demo", "builder_options": {"n": 4}},
            "sample": {
                "backend": {"kind": "openai", "base_url": key_server.url, "api_key_env": NAME_SHAPED_KEY}
            },
            "diversify": {"enabled": False},
            "mix": {"ratio": 1},
        }
    )
    with pytest.raises(ConfigError, match=r"backend\.api_key_env: names no environment variable") as caught:
        run(config, log=print)
    assert NAME_SHAPED_KEY not in str(caught.value)
    assert key_server.auth == []  # refused before any request
    run_dir = tmp_path / "runs" / "pasted"
    written = (run_dir / "config.yaml").read_text()
    assert f"api_key_env: {REDACTED}" in written  # the config on disk names no key...
    assert build_config(yaml.safe_load(written)).sample.backend.api_key_env == REDACTED  # ...and still loads
    assert files_containing(tmp_path, NAME_SHAPED_KEY) == []
    out, err = capfd.readouterr()
    assert NAME_SHAPED_KEY not in out + err


def test_a_set_variable_name_is_kept_in_the_written_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    config = build_config({"sample": {"backend": {"kind": "openai", "api_key_env": KEY_ENV}}})
    written = config.to_yaml()
    assert f"api_key_env: {KEY_ENV}" in written and SECRET not in written
    monkeypatch.delenv(KEY_ENV)
    assert KEY_ENV not in config.to_yaml()  # once unset, it is no longer known to be a name
