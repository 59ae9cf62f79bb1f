"""The tiny experiment grid the experiment tests run on (the session's tiny model, the demo task)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_demo_config

from delia.experiment.spec import ExperimentSpec, build_spec


def tiny_base(model_dir: Path) -> dict[str, Any]:
    base = tiny_demo_config(model_dir)
    del base["name"]  # each cell gets its own
    return base


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
