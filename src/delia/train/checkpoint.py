"""Checkpoints that a resumed run continues from exactly: trainable weights, optimizer, scheduler, RNG, step.

Each checkpoint is written into a temp directory and swapped into place (`delia.core.io.atomic_dir`), so a
crash leaves either the previous checkpoint or the new one, never a half-written one. The trainable weights
are stored by parameter name in full precision (what resuming needs); a standard PEFT adapter sits beside
them for inspection.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from delia.core.errors import DeliaError
from delia.core.io import atomic_dir
from delia.train.artifacts import make_portable
from delia.train.sharding import copy_full_tensor

if TYPE_CHECKING:
    from peft import PeftModel

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
    root: Path,
    step: int,
    model: PeftModel,
    weights: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: dict[str, Any],
) -> Path:
    """Write checkpoint `step` atomically and prune old ones; returns its directory. `weights` are the
    trainable parameters, whole (gathered from their shards under FSDP), by name."""
    target = checkpoint_dir(root, step)
    with atomic_dir(target) as tmp:
        save_file(weights, str(tmp / "trainable.safetensors"))
        torch.save(optimizer_state, tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        model.save_pretrained(tmp / "adapter", state_dict=weights, save_embedding_layers=False)
        make_portable(tmp / "adapter")  # the base by its spec, as in the final adapter, not a local path
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2) + "\n")
    _prune(root)
    return target


def _prune(root: Path) -> None:
    done = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))
    for old in done[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(f".{PREFIX}*"):  # temp and swapped-out dirs of a run killed mid-write
        shutil.rmtree(stale, ignore_errors=True)


@dataclass
class Saved:
    """A checkpoint read back: the caller puts weights and optimizer state in place (sharded or not)."""

    path: Path
    weights: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    state: dict[str, Any]  # fingerprint, elapsed, step...

    def restore_weights(self, model: torch.nn.Module) -> None:
        params = dict(model.named_parameters())
        missing = [name for name, p in params.items() if p.requires_grad and name not in self.weights]
        if missing or any(name not in params for name in self.weights):
            raise DeliaError(
                f"checkpoint {self.path} does not match this model's trainable parameters "
                f"(e.g. {missing[:1]})"
            )
        for name, tensor in self.weights.items():
            copy_full_tensor(params[name], tensor)


def read_checkpoint(path: Path, scheduler: torch.optim.lr_scheduler.LRScheduler) -> Saved:
    """Read a checkpoint written by `save_checkpoint`; restores the scheduler and the RNG states at once."""
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    set_rng_state(torch.load(path / "rng.pt", weights_only=True))  # tensors and python's tuple of ints
    return Saved(
        path,
        load_file(str(path / "trainable.safetensors")),
        torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True),
        json.loads((path / "state.json").read_text()),
    )
