"""BLEURT / COMET checkpoints: safetensors where the checkpoint has them, pickled weights only with
eval.allow_pickle (and a warning).

Neither bleurt-pytorch nor unbabel-comet is a dependency: each is stood in for by a small module put in
sys.modules. BLEURT's stand-in loads through transformers' own from_pretrained (a tiny BERT), COMET's
unpickles as Lightning does, so a refused pickle is one that was never read: the trapped pickles below
create a marker file when unpickled.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from delia.core.config import EvalConfig, RunConfig
from delia.core.errors import ConfigError, DeliaError
from delia.evaluate import score
from delia.evaluate.translation import bleurt_scores, comet_scores

HYPS, REFS, SRCS = ["a cat sat", "the dog ran off"], ["a cat sat down", "the dog ran"], ["x", "y"]


class Trap:
    """Unpickling this runs `Path(marker).touch()`: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


# ------------------------------------------------------------------------------------------- BLEURT


class WordTokenizer:
    """Enough of BleurtTokenizer for bleurt_scores: word ids from a hash, padded to the longest pair."""

    @classmethod
    def from_pretrained(cls, path: str) -> WordTokenizer:
        return cls()

    def __call__(self, refs: list[str], hyps: list[str], **_: Any) -> dict[str, torch.Tensor]:
        rows = [[1 + hash(word) % 90 for word in f"{r} {h}".split()] for r, h in zip(refs, hyps, strict=True)]
        width = max(len(row) for row in rows)
        ids = torch.tensor([row + [0] * (width - len(row)) for row in rows])
        return {"input_ids": ids, "attention_mask": (ids > 0).long()}


@pytest.fixture()
def bleurt(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """A bleurt_pytorch stand-in whose model is transformers' BERT; returns the from_pretrained calls."""
    from transformers import BertForSequenceClassification

    calls: list[dict[str, Any]] = []

    class Bleurt(BertForSequenceClassification):
        @classmethod
        def from_pretrained(cls, path: str, **options: Any) -> Any:
            calls.append({"path": path, **options})
            return BertForSequenceClassification.from_pretrained(path, **options)

    module = types.ModuleType("bleurt_pytorch")
    module.BleurtForSequenceClassification = Bleurt  # type: ignore[attr-defined]
    module.BleurtTokenizer = WordTokenizer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bleurt_pytorch", module)
    return calls


def tiny_bert(directory: Path, safetensors: bool) -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    model = BertForSequenceClassification(config.__class__(**config.to_dict(), num_labels=1)).eval()
    if safetensors:
        model.save_pretrained(directory)
    else:  # the classic pickled checkpoint
        model.config.save_pretrained(directory)
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
    return model


def test_bleurt_loads_safetensors_without_a_warning(
    bleurt: list[dict[str, Any]], tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    model = tiny_bert(tmp_path, safetensors=True)
    scores = bleurt_scores(HYPS, REFS, str(tmp_path))
    with torch.inference_mode():
        expected = model(**WordTokenizer()(REFS, HYPS)).logits.flatten().tolist()
    # The saved weights, not a fresh init; fp32 logits near 0 differ in the 1e-10s between batchings.
    assert scores == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert bleurt[0]["use_safetensors"] is True
    assert not [w for w in recwarn if "allow_pickle" in str(w.message)]


def test_a_pickled_bleurt_is_refused_naming_the_key_unless_allowed(
    bleurt: list[dict[str, Any]], tmp_path: Path
) -> None:
    model = tiny_bert(tmp_path, safetensors=False)
    cfg = EvalConfig(bootstrap=10, bleurt_checkpoint=str(tmp_path))
    with pytest.raises(ConfigError, match=r"eval\.bleurt_checkpoint: .* is pickled.*eval\.allow_pickle=true"):
        score("translation", HYPS, REFS, cfg)
    assert bleurt == []  # refused before anything was loaded
    allowed = cfg.model_copy(update={"allow_pickle": True})
    with pytest.warns(UserWarning, match="eval.allow_pickle: unpickling the BLEURT checkpoint"):
        result = score("translation", HYPS, REFS, allowed)
    with torch.inference_mode():
        expected = model(**WordTokenizer()(REFS, HYPS)).logits.flatten().tolist()
    assert [row["bleurt"] for row in result["per_example"]] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert bleurt[0]["use_safetensors"] is False


def test_a_bleurt_dir_without_weights_is_one_line(bleurt: list[dict[str, Any]], tmp_path: Path) -> None:
    with pytest.raises(DeliaError, match="has no weights"):
        bleurt_scores(HYPS, REFS, str(tmp_path))
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(DeliaError, match="must be a directory"):
        bleurt_scores(HYPS, REFS, str(tmp_path / "weights.safetensors"))


# -------------------------------------------------------------------------------------------- COMET


class FakeComet(torch.nn.Module):
    """Scores every segment with its head's bias: which weights were loaded shows in the scores."""

    def __init__(self, hidden: int = 4, load_pretrained_weights: bool = True) -> None:
        super().__init__()
        self.head = torch.nn.Linear(hidden, 1)

    def predict(self, data: list[dict[str, str]], batch_size: int, gpus: int) -> Any:
        return types.SimpleNamespace(scores=[float(self.head.bias.detach()) for _ in data])


@pytest.fixture()
def comet(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A comet stand-in; load_from_checkpoint unpickles the file as Lightning's loader does."""
    unpickled: list[str] = []

    def load_from_checkpoint(path: str) -> FakeComet:
        unpickled.append(path)
        checkpoint = torch.load(path, weights_only=False)
        model = FakeComet()
        model.load_state_dict(checkpoint["state_dict"])
        return model

    package = types.ModuleType("comet")
    package.load_from_checkpoint = load_from_checkpoint  # type: ignore[attr-defined]
    models = types.ModuleType("comet.models")
    models.str2model = {"regression_metric": FakeComet}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "comet", package)
    monkeypatch.setitem(sys.modules, "comet.models", models)
    return unpickled


def comet_dir(root: Path, bias: float, safetensors: bool, trap: Path | None = None) -> Path:
    """COMET's layout: MODEL/hparams.yaml and MODEL/checkpoints/model.(ckpt|safetensors)."""
    from safetensors.torch import save_file

    (root / "checkpoints").mkdir(parents=True)
    (root / "hparams.yaml").write_text("class_identifier: regression_metric\nhidden: 4\nunused_option: 1\n")
    state = {"head.weight": torch.zeros(1, 4), "head.bias": torch.tensor([bias])}
    if safetensors:
        save_file(state, str(root / "checkpoints" / "model.safetensors"))
    payload: dict[str, Any] = {"state_dict": state, **({"callbacks": Trap(trap)} if trap else {})}
    torch.save(payload, root / "checkpoints" / "model.ckpt")
    return root


def test_comet_takes_safetensors_over_the_ckpt_beside_it(comet: list[str], tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    model = comet_dir(tmp_path / "wmt22", bias=0.25, safetensors=True, trap=marker)
    for given in (model, model / "checkpoints" / "model.ckpt", model / "checkpoints" / "model.safetensors"):
        assert comet_scores(HYPS, REFS, SRCS, str(given)) == [0.25, 0.25]
    assert comet == [] and not marker.exists()


def test_a_pickled_comet_is_refused_unread_unless_allowed(comet: list[str], tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    model = comet_dir(tmp_path / "wmt22", bias=0.75, safetensors=False, trap=marker)
    cfg = EvalConfig(bootstrap=10, comet_checkpoint=str(model / "checkpoints" / "model.ckpt"))
    with pytest.raises(ConfigError, match=r"eval\.comet_checkpoint: .*model\.ckpt is pickled"):
        score("translation", HYPS, REFS, cfg, sources=SRCS)
    assert comet == [] and not marker.exists()
    allowed = cfg.model_copy(update={"allow_pickle": True})
    with pytest.warns(UserWarning, match="unpickling the COMET checkpoint"):
        result = score("translation", HYPS, REFS, allowed, sources=SRCS)
    assert result["values"]["comet"]["value"] == pytest.approx(0.75)
    assert marker.exists()  # the opt-in really unpickles: that is what the flag and the warning are for


def test_comet_safetensors_missing_weights_or_hparams_are_one_line(comet: list[str], tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = comet_dir(tmp_path / "wmt22", bias=0.5, safetensors=True)
    weights = model / "checkpoints" / "model.safetensors"
    save_file({"head.weight": torch.zeros(1, 4)}, str(weights))
    with pytest.raises(DeliaError, match=r"lacks 1 weights, e\.g\. head\.bias"):
        comet_scores(HYPS, REFS, SRCS, str(weights))
    (model / "hparams.yaml").unlink()
    with pytest.raises(DeliaError, match=r"cannot read .*hparams\.yaml"):
        comet_scores(HYPS, REFS, SRCS, str(weights))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DeliaError, match=r"no checkpoints/model\.safetensors"):
        comet_scores(HYPS, REFS, SRCS, str(empty))


def test_allow_pickle_is_off_and_left_out_of_hashes_at_its_default() -> None:
    config = RunConfig()
    assert config.eval.allow_pickle is False
    assert "allow_pickle" not in config.eval.model_dump() and "allow_pickle" not in config.to_yaml()
    opted = RunConfig.model_validate({"eval": {"allow_pickle": True}})
    assert opted.eval.model_dump()["allow_pickle"] is True
    assert opted.stage_hash("eval") != config.stage_hash("eval")
