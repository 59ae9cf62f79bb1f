"""The OpenAI-compatible backend and `delia synth sample --backend openai` against a real server:
`transformers serve` (the `serve` extra, installed by `make install`) on 127.0.0.1 and a port of its own,
serving a tiny random llama saved here (and, in one slow test, the embedded SmolLM2), with the hub off.

Faults come from a small stdlib proxy in front of it that, per request, passes the request on, drops the
connection before answering, cuts the answer off half-way, or answers late; the proxy also counts what
reaches the server, so a rerun can be shown to ask only for what the sampler's cache lacks.

`transformers serve` samples only where the checkpoint's generation_config says `do_sample: true` (else a
temperature is accepted and decoding stays greedy): the tiny model here is saved with it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cli_runner import run_cli as run_delia
from conftest import tiny_llama

from delia.core.config import SamplingConfig
from delia.core.errors import DeliaError
from delia.generation.openai import OpenAIBackend

TRANSFORMERS_CLI = Path(sys.executable).parent / "transformers"
READY_TIMEOUT_S = 120.0
GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=8)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_env() -> dict[str, str]:
    """Offline (a local checkpoint needs no hub), and one thread: the suite runs beside the server."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def wait_until_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"transformers serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(
        f"transformers serve not ready after {READY_TIMEOUT_S:g} s:\n{log.read_text()[-3000:]}"
    )


@contextlib.contextmanager
def transformers_serve(model_dir: Path, log: Path) -> Iterator[str]:
    """`transformers serve MODEL_DIR` on 127.0.0.1:<free port>; yields its /v1 URL; killed on exit."""
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing or not TRANSFORMERS_CLI.exists():
        pytest.fail(f"transformers[serving] is not installed (missing {missing}): pip install -e '.[serve]'")
    port = free_port()
    argv = [str(TRANSFORMERS_CLI), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--device", "cpu", "--dtype", "float32", "--log-level", "warning"]
    with open(log, "wb") as handle:
        proc = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=serve_env())
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", proc, log)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    # Untied and widely initialised: the default tiny llama greedily repeats the prompt's last token ("\n").
    model = tiny_llama(len(tokenizer), tie=False, init_std=0.5)
    model.generation_config.do_sample = True  # else transformers serve ignores the temperature
    path = tmp_path_factory.mktemp("served-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with transformers_serve(tiny_dir, tmp_path_factory.mktemp("serve-log") / "serve.log") as url:
        yield url


class FaultProxy:
    """Passes chat requests on to `upstream`; `script` holds one action per request ('pass', 'drop',
    'cut', 'slow'), and a request whose last message contains `poison` is always dropped."""

    def __init__(self, upstream: str, slow_s: float = 4.0) -> None:
        self.script: list[str] = []
        self.poison: str | None = None
        self.seen: list[str] = []  # the last message of each request that reached the server
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                question = json.loads(body)["messages"][-1]["content"]
                action = proxy.script.pop(0) if proxy.script else "pass"
                if proxy.poison and proxy.poison in question:
                    action = "drop"
                if action == "drop":
                    return  # the connection closes with no status line
                if action == "slow":
                    time.sleep(slow_s)
                proxy.seen.append(question)
                status, payload = forward(f"{upstream}{self.path.removeprefix('/v1')}", body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(payload[: len(payload) // 2] if action == "cut" else payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def forward(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture()
def proxy(server: str) -> Iterator[FaultProxy]:
    fault = FaultProxy(server)
    yield fault
    fault.close()


@pytest.fixture()
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backends made by the CLI retry once, 10 ms later, instead of five times over half a minute."""
    import delia.generation.openai as openai

    monkeypatch.setattr(openai, "BACKOFF_S", 0.01)
    monkeypatch.setattr(openai, "MAX_RETRIES", 1)


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def run_cli(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    """(exit code, stderr) of `delia ARGS` in this process."""
    code, _, err = run_delia(args, capsys, monkeypatch)
    return code, err


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def query_file(path: Path, texts: list[str]) -> Path:
    rows = [{"messages": [{"role": "user", "content": text}]} for text in texts]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def sample_args(url: str, model: str, queries: Path, out: Path) -> list[str]:
    return [
        "synth", "sample", "--backend", "openai", "--base-url", url, "--model", model,
        "--queries", str(queries), "--out", str(out), "--max-new-tokens", "8", "--batch-size", "3",
        "--concurrency", "3", "--threads", "1",
    ]  # fmt: skip


# --------------------------------------------------------------------------------- the backend itself


def test_greedy_answers_come_back_in_prompt_order(server: str, tiny_dir: Path) -> None:
    engine = OpenAIBackend(server, str(tiny_dir), concurrency=3, progress=False)
    prompts = [chat("What is the capital of France?"), chat("Say hello."), chat("What is 2 + 2?")]
    answers = engine.generate(prompts, GREEDY)
    assert all(answer.strip() for answer in answers)
    assert all(0 < count <= 8 for count in engine.last_new_tokens)  # the server's usage.completion_tokens
    one_by_one = [engine.generate([prompt], GREEDY)[0] for prompt in prompts]
    assert answers == one_by_one  # each answer is its own prompt's


def test_each_prompt_seed_reaches_the_server(server: str, tiny_dir: Path) -> None:
    # One request at a time: transformers serve seeds torch's global generator per request.
    engine = OpenAIBackend(server, str(tiny_dir), concurrency=1, progress=False)
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=12)
    prompts = [chat("Write one sentence about the sea.")] * 2
    first = engine.generate(prompts, sampling, seeds=[11, 12])
    assert engine.generate(prompts, sampling, seeds=[11, 12]) == first  # a seed fixes the sample...
    assert first[0] != first[1]  # ...and different seeds give different samples


def test_dropped_and_cut_off_answers_are_retried(proxy: FaultProxy, tiny_dir: Path) -> None:
    engine = OpenAIBackend(proxy.url, str(tiny_dir), backoff_s=0.01, progress=False)
    expected = engine.generate([chat("Say hello.")], GREEDY)
    proxy.script = ["drop", "cut"]
    assert engine.generate([chat("Say hello.")], GREEDY) == expected
    assert proxy.seen == ["Say hello."] * 3  # the cut answer reached the server too


def test_a_slow_server_is_retried_once_then_one_line(proxy: FaultProxy, tiny_dir: Path) -> None:
    # 2 s: several times what an answer takes here, half of what the proxy's 'slow' waits.
    engine = OpenAIBackend(proxy.url, str(tiny_dir), timeout_s=2.0, backoff_s=0.01, progress=False)
    proxy.script = ["slow"]
    assert engine.generate([chat("Say hello.")], GREEDY)[0].strip()
    proxy.script = ["slow", "slow"]
    with pytest.raises(DeliaError) as caught:
        engine.generate([chat("Say hello.")], GREEDY)
    assert str(caught.value) == f"{engine.url} did not answer within 2 s (backend.timeout_s) (2 tries)"


# --------------------------------------------------------------------- `delia synth sample` against it


def test_synth_sample_against_transformers_serve_and_a_cached_rerun(
    proxy: FaultProxy,
    tiny_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queries = query_file(
        tmp_path / "queries.jsonl",
        [f"Name a {thing}." for thing in ("colour", "fruit", "river", "city", "tree")],
    )
    out = tmp_path / "diverse.jsonl"
    code, err = run_cli(sample_args(proxy.url, str(tiny_dir), queries, out), capsys, monkeypatch)
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 and all(row["messages"][-1]["content"].strip() for row in rows)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["backend"] == "openai" and manifest["counts"]["answered_now"] == 5
    assert len(proxy.seen) == 5
    code, err = run_cli(sample_args(proxy.url, str(tiny_dir), queries, out), capsys, monkeypatch)
    assert code == 0, err
    assert len(proxy.seen) == 5  # nothing new reached the server
    assert json.loads((tmp_path / "manifest.json").read_text())["counts"]["from_cache"] == 5
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows


def test_a_server_failing_mid_run_keeps_every_answer_that_arrived(
    proxy: FaultProxy,
    tiny_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    quick_retries: None,
) -> None:
    # Longest first, in batches of 3: [colour, fruit, river], [city, tree, sea!].
    texts = [
        "Name a colour.",
        "Name a fruit.",
        "Name a river.",
        "Name a city.",
        "Name a tree.",
        "Name a sea!",
    ]
    queries, out = query_file(tmp_path / "queries.jsonl", texts), tmp_path / "diverse.jsonl"
    proxy.poison = "!"  # the server goes away whenever the last query is asked
    code, err = run_cli(sample_args(proxy.url, str(tiny_dir), queries, out), capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err
    (line,) = error_lines(err)
    assert "closed the connection before its answer was complete (2 tries); 2 of 3 prompts answered" in line
    assert "diverse.cache.jsonl: rerun" in line
    cache = [json.loads(row) for row in (tmp_path / "diverse.cache.jsonl").read_text().splitlines()]
    assert len(cache) == len(proxy.seen) == 5  # the first batch, and the two answers of the second
    proxy.poison, before = None, len(proxy.seen)
    code, err = run_cli(sample_args(proxy.url, str(tiny_dir), queries, out), capsys, monkeypatch)
    assert code == 0, err
    assert proxy.seen[before:] == ["Name a sea!"]  # the rerun asked only for what the cache lacked
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["messages"][0]["content"] for row in rows] == texts
    final = {row["meta"]["query_id"]: row["messages"][-1]["content"] for row in rows}
    assert {row["query_id"]: row["completion"] for row in cache}.items() <= final.items()  # kept as they were


def test_a_refused_connection_is_one_line_exit_2(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    queries = query_file(tmp_path / "queries.jsonl", ["Name a colour."])
    code, err = run_cli(sample_args(url, str(tiny_dir), queries, tmp_path / "d.jsonl"), capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err
    (line,) = error_lines(err)
    assert f"cannot reach {url}/chat/completions" in line and "backend.base_url" in line


# ------------------------------------------------------------------------------ the embedded SmolLM2


@pytest.mark.slow
def test_the_embedded_model_served_by_transformers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from delia.core.models import EMBEDDED, resolve_model_dir

    model_dir = resolve_model_dir(EMBEDDED)  # the dequantised safetensors cache of the packaged GGUF
    with transformers_serve(Path(model_dir), tmp_path / "serve.log") as url:
        engine = OpenAIBackend(url, model_dir, progress=False)
        sampling = SamplingConfig(temperature=0.0, max_new_tokens=12)
        (answer,) = engine.generate([chat("What is the capital of France? Answer in one word.")], sampling)
        assert "paris" in answer.lower()
        queries = query_file(tmp_path / "queries.jsonl", ["Name a colour.", "Name a fruit."])
        # The run's model stays the embedded spec; the server is asked for the checkpoint it serves.
        args = sample_args(url, EMBEDDED, queries, tmp_path / "diverse.jsonl")
        code, err = run_cli([*args, "--set", f"sample.backend.model={model_dir}"], capsys, monkeypatch)
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "diverse.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(row["messages"][-1]["content"].strip() for row in rows)
