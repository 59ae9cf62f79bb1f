"""The tiny experiment grid the experiment tests run on (the session's tiny model, the demo task)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from delia.experiment.spec import ExperimentSpec, build_spec


def tiny_base(model_dir: Path) -> dict[str, Any]:
    return {
        "model": {"name": str(model_dir)},
        "task": {"builder": "demo", "builder_options": {"n": 8}},
        "sample": {"sampling": {"max_new_tokens": 6}, "backend": {"batch_size": 8}},
        "diversify": {"k": 1, "sampling": {"max_new_tokens": 12}, "backend": {"batch_size": 8}},
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "train": {"epochs": 1, "batch_size": 4, "micro_batch_size": 4, "max_length": 128, "lr": 1e-3},
        "eval": {
            "builder": "demo",
            "builder_options": {"split": "heldout", "n": 4},
            "keys": ["name", "city", "job"],
            "label_key": "city",
            "limit": 3,
            "max_new_tokens": 6,
            "bootstrap": 50,
        },
    }


def build_tiny_spec(tmp_path: Path, model_dir: Path, **grid: Any) -> ExperimentSpec:
    data = {
        "name": "tiny",
        "out": str(tmp_path / "out"),
        "base": tiny_base(model_dir),
        "grid": {
            "methods": [
                "delia",
                "common_it",
                {"name": "common_it_matched", "method": "common_it_matched", "match": "delia"},
                "icl",
                {"name": "w/o diverse", "method": "delia", "set": ["delia.diverse=false"]},
            ],
            "task_sizes": [4],
            "ratios": [0, 1],
            "seeds": [0, 1],
            **grid,
        },
        "metrics": ["json_format", "label_accuracy"],
        "probes": {"divergent_limit": 2},
        "notes": ["tiny test grid"],
    }
    return build_spec(data, "test")


@pytest.fixture(scope="session")
def tiny_spec(tiny_model_dir: Path) -> Callable[..., ExperimentSpec]:
    """tiny_spec(tmp_path, **grid): the tiny grid with `grid` keys replaced, writing under tmp_path."""
    return lambda tmp_path, **grid: build_tiny_spec(tmp_path, tiny_model_dir, **grid)
