"""Which models a probe compares: the base model plus named adapters, each loaded with its own tokenizer.

An adapter is given as a run directory (holding `adapter/`) or as the adapter directory itself. Its base model
is read from `delia_adapter.json` unless the user names one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from delia.core.adapters import resolve_adapter_dir
from delia.core.errors import DeliaError
from delia.core.models import EMBEDDED, pick_device
from delia.methods import load_trained

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ADAPTER_META = "delia_adapter.json"
BASE_NAME = "base"


@dataclass(frozen=True)
class ProbeTarget:
    """One model a probe measures: `adapter_dir` None means the base model alone."""

    name: str
    model_spec: str
    adapter_dir: Path | None


def adapter_base_model(adapter_dir: Path) -> str | None:
    meta = adapter_dir / ADAPTER_META
    if not meta.exists():
        return None
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("base_model")
    except (json.JSONDecodeError, AttributeError) as err:
        raise DeliaError(f"{meta}: not a JSON object naming base_model ({err})") from None


def parse_named_path(item: str) -> tuple[str, Path]:
    """`NAME=PATH` -> (NAME, PATH); a bare PATH is named after its directory (its parent for `adapter/`)."""
    if "=" in item:
        name, raw = item.split("=", 1)
        if not name.strip() or not raw.strip():
            raise DeliaError(f"--run {item!r}: expected NAME=PATH")
        return name.strip(), Path(raw.strip())
    path = Path(item)
    resolved = path.resolve()
    name = resolved.parent.name if resolved.name == "adapter" else resolved.name
    return name, path


def probe_targets(model_spec: str | None, runs: list[str], include_base: bool = True) -> list[ProbeTarget]:
    """The base model (unless excluded) followed by each `--run` adapter, in the order given."""
    targets: list[ProbeTarget] = []
    adapters = [(name, resolve_adapter_dir(path)) for name, path in map(parse_named_path, runs)]
    names = [name for name, _ in adapters] + ([BASE_NAME] if include_base else [])
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise DeliaError(f"two runs are named {duplicate!r}: name them with NAME=PATH")
    first_base = next((adapter_base_model(d) for _, d in adapters if adapter_base_model(d)), None)
    base_spec = model_spec or first_base or EMBEDDED
    if include_base:
        targets.append(ProbeTarget(BASE_NAME, base_spec, None))
    for name, adapter_dir in adapters:
        spec = model_spec or adapter_base_model(adapter_dir) or EMBEDDED
        targets.append(ProbeTarget(name, spec, adapter_dir))
    if not targets:
        raise DeliaError("nothing to probe: give --run NAME=DIR or drop --no-base")
    return targets


def load_target(target: ProbeTarget, device: str = "cpu") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return load_model_and_tokenizer(target.model_spec, target.adapter_dir, device)


def load_model_and_tokenizer(
    model_spec: str, adapter_dir: Path | None, device: str = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model in eval mode, tokenizer), with whatever the run's method saved beside its adapter; torch's
    threads follow the free cores, as for every command that runs a model."""
    from delia.generation.threads import follow_free_cores  # torch

    device = pick_device(device)  # "auto" becomes the device it names
    follow_free_cores(None, device)
    return load_trained(model_spec, adapter_dir, device)
