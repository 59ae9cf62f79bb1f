"""A trained adapter on disk, as every command takes it: the adapter directory itself, or a run directory
holding `adapter/`; and the run config saved beside it (`config.yaml`, written when it was trained)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from delia.core.config import EvalConfig, config_error
from delia.core.errors import DeliaError

ADAPTER_CONFIG = "adapter_config.json"  # PEFT's: what makes a directory an adapter
SAVED_CONFIG = "config.yaml"


def resolve_adapter_dir(path: str | Path) -> Path:
    """A run directory or an adapter directory -> the directory holding adapter_config.json."""
    path = Path(path)
    if not path.exists():
        raise DeliaError(f"adapter {path} does not exist")
    for candidate in (path, path / "adapter"):
        if (candidate / ADAPTER_CONFIG).is_file():
            return candidate
    raise DeliaError(f"{path} holds no adapter (no {ADAPTER_CONFIG} in it or in {path / 'adapter'})")


def saved_eval_settings(adapter_dir: Path, names: tuple[str, ...]) -> dict[str, Any]:
    """The `eval.<name>` values the adapter's own run config saved, for the names it gives; {} when the
    adapter has no saved config (one trained outside delia)."""
    saved = adapter_dir / SAVED_CONFIG
    if not saved.is_file():
        return {}
    try:
        data = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise DeliaError(f"{saved}: invalid YAML ({getattr(err, 'problem', err)})") from None
    section = data.get("eval") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        return {}
    picked = {name: section[name] for name in names if name in section}
    try:
        validated = EvalConfig.model_validate(picked)
    except ValidationError as err:
        raise config_error(err, prefix="eval", source=str(saved)) from None
    return {name: getattr(validated, name) for name in picked}
