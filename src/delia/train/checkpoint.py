"""Checkpoints that a resumed run continues from exactly: trainable weights, optimizer, scheduler, RNG, step.

Each checkpoint is written into a temp directory and renamed into place, so a crash leaves either the
previous checkpoint or the new one, never a half-written one. The trainable weights are stored by parameter
name in full precision (what resuming needs); a standard PEFT adapter sits beside them for inspection.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from delia.errors import DeliaError

PREFIX = "step-"
KEEP = 2  # checkpoints kept on disk; older ones are removed after a newer one is complete


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"{PREFIX}{step:08d}"


def latest_checkpoint(root: Path) -> Path | None:
    if not root.exists():
        return None
    done = sorted(
        p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "state.json").exists()
    )
    return done[-1] if done else None


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    root: Path, step: int, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any]
) -> Path:
    """Write checkpoint `step` atomically and prune old ones; returns its directory."""
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    target = checkpoint_dir(root, step)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{target.name}."))
    try:
        trainable = {
            name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad
        }
        save_file(trainable, str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        model.save_pretrained(tmp / "adapter", save_embedding_layers=False)
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(root)
    return target


def _prune(root: Path) -> None:
    done = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))
    for old in done[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(f".{PREFIX}*"):  # temp dirs of a run killed mid-write
        shutil.rmtree(stale, ignore_errors=True)


def restore_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Load everything saved by `save_checkpoint` back in place; returns the saved state (with "step")."""
    from safetensors.torch import load_file

    saved = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [name for name, p in params.items() if p.requires_grad and name not in saved]
    if missing or any(name not in params for name in saved):
        raise DeliaError(
            f"checkpoint {path} does not match this model's trainable parameters (e.g. {missing[:1]})"
        )
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    set_rng_state(torch.load(path / "rng.pt", weights_only=True))  # tensors and python's tuple of ints
    return json.loads((path / "state.json").read_text())
