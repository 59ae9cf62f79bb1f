"""Translation metrics: sacreBLEU BLEU and chrF++ with signatures; BLEURT / COMET from local checkpoints.

Learned-metric checkpoints are loaded from safetensors where they have them: a BLEURT directory's
`*.safetensors`, COMET's `checkpoints/model.safetensors` (its `state_dict`) beside `hparams.yaml`, preferred
over the pickled `model.ckpt`. Pickled weights (which run code when loaded) need `eval.allow_pickle: true`
and are loaded with a warning.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from delia.core.errors import ConfigError, DeliaError
from delia.evaluate.bootstrap import figure, sacrebleu_ci


def corpus_figures(
    hypotheses: Sequence[str], references: Sequence[str], n_resamples: int, seed: int = 0
) -> tuple[dict[str, dict[str, Any]], dict[str, str], list[dict[str, float]]]:
    """(figures, signatures, per-example sentence scores) for BLEU and chrF++ on a 0-100 scale."""
    from sacrebleu.metrics import BLEU, CHRF

    metrics = {"bleu": BLEU(), "chrf++": CHRF(word_order=2)}
    sentence_metrics = {"bleu": BLEU(effective_order=True), "chrf++": CHRF(word_order=2)}
    figures: dict[str, dict[str, Any]] = {}
    signatures: dict[str, str] = {}
    for name, metric in metrics.items():
        corpus = metric.corpus_score(list(hypotheses), [list(references)])
        low, high = sacrebleu_ci(metric, hypotheses, references, n_resamples, seed)
        figures[name] = {"value": corpus.score, "n": len(hypotheses), "ci_low": low, "ci_high": high}
        signatures[name] = str(metric.get_signature())
    per_example = [
        {name: metric.sentence_score(hyp, [ref]).score for name, metric in sentence_metrics.items()}
        for hyp, ref in zip(hypotheses, references, strict=True)
    ]
    return figures, signatures, per_example


def _checkpoint(path: str, name: str) -> Path:
    checkpoint = Path(path).expanduser()
    if not checkpoint.exists():
        raise DeliaError(f"{name} checkpoint {path} does not exist (give a local checkpoint path)")
    return checkpoint


def _allow_pickled(weights: Path, name: str, key: str, allow_pickle: bool) -> None:
    """Refuse pickled weights unless eval.allow_pickle is set; when it is, say what is being risked."""
    if not allow_pickle:
        raise ConfigError(
            key,
            f"{name} checkpoint {weights} is pickled, and unpickling runs any code it holds: give one "
            "with safetensors weights, or set eval.allow_pickle=true if you trust where it came from",
        )
    warnings.warn(
        f"eval.allow_pickle: unpickling the {name} checkpoint {weights} (it can run code)", stacklevel=3
    )


def bleurt_uses_safetensors(path: Path, allow_pickle: bool) -> bool:
    """True: the directory has safetensors weights; False: pickled ones only, which the user allowed."""
    if not path.is_dir():
        raise DeliaError(f"BLEURT checkpoint {path} must be a directory (config.json, weights, tokenizer)")
    if any(path.glob("*.safetensors")):
        return True
    pickled = sorted(path.glob("*.bin"))
    if not pickled:
        raise DeliaError(f"BLEURT checkpoint {path} has no weights (model.safetensors)")
    _allow_pickled(pickled[0], "BLEURT", "eval.bleurt_checkpoint", allow_pickle)
    return False


def bleurt_scores(
    hypotheses: Sequence[str],
    references: Sequence[str],
    checkpoint: str,
    batch_size: int = 16,
    allow_pickle: bool = False,
) -> list[float]:
    """Per-segment BLEURT from a local PyTorch BLEURT checkpoint directory (the bleurt-pytorch package)."""
    path = _checkpoint(checkpoint, "BLEURT")
    safetensors = bleurt_uses_safetensors(path, allow_pickle)
    try:
        import torch
        from bleurt_pytorch import BleurtForSequenceClassification, BleurtTokenizer
    except ImportError:
        raise DeliaError("BLEURT needs the bleurt-pytorch package: pip install bleurt-pytorch") from None
    model = BleurtForSequenceClassification.from_pretrained(str(path), use_safetensors=safetensors).eval()
    tokenizer = BleurtTokenizer.from_pretrained(str(path))
    scores: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(hypotheses), batch_size):
            refs = list(references[start : start + batch_size])
            hyps = list(hypotheses[start : start + batch_size])
            inputs = tokenizer(refs, hyps, padding="longest", truncation=True, return_tensors="pt")
            scores.extend(model(**inputs).logits.flatten().tolist())
    return scores


def comet_weights(path: Path, allow_pickle: bool) -> tuple[Path, bool]:
    """(weights file, whether safetensors) for a COMET model directory or a file in its checkpoints/:
    checkpoints/model.safetensors is taken over a pickled .ckpt beside it."""
    folder = path / "checkpoints" if path.is_dir() else path.parent
    safe = path if path.suffix == ".safetensors" else folder / "model.safetensors"
    if safe.is_file():
        return safe, True
    pickled = path if path.is_file() else folder / "model.ckpt"
    if not pickled.is_file():
        raise DeliaError(f"COMET checkpoint {path} has no checkpoints/model.safetensors (or model.ckpt)")
    _allow_pickled(pickled, "COMET", "eval.comet_checkpoint", allow_pickle)
    return pickled, False


def comet_from_safetensors(weights: Path) -> Any:
    """The COMET model that hparams.yaml (two levels up, COMET's layout) describes, with these weights:
    what comet.load_from_checkpoint builds, without unpickling a Lightning checkpoint."""
    import yaml
    from comet.models import str2model
    from safetensors.torch import load_file

    hparams_file = weights.parents[1] / "hparams.yaml"
    try:
        hparams = yaml.safe_load(hparams_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise DeliaError(f"COMET checkpoint {weights}: cannot read {hparams_file} ({err})") from None
    model_class = str2model.get(hparams.get("class_identifier"))
    if model_class is None:
        raise DeliaError(f"{hparams_file}: unknown class_identifier {hparams.get('class_identifier')!r}")
    accepted = inspect.signature(model_class.__init__).parameters
    options = {key: value for key, value in hparams.items() if key in accepted}
    if (
        "load_pretrained_weights" in accepted
    ):  # the encoder's weights are in the checkpoint, as COMET loads it
        options["load_pretrained_weights"] = False
    model = model_class(**options)
    missing, _ = model.load_state_dict(load_file(str(weights)), strict=False)
    if missing:  # a head left at its random init would give scores that mean nothing
        raise DeliaError(f"COMET checkpoint {weights} lacks {len(missing)} weights, e.g. {missing[0]}")
    return model.eval()


def comet_scores(
    hypotheses: Sequence[str],
    references: Sequence[str],
    sources: Sequence[str],
    checkpoint: str,
    batch_size: int = 16,
    allow_pickle: bool = False,
) -> list[float]:
    """Per-segment COMET from a local checkpoint (the unbabel-comet package), CPU unless CUDA exists."""
    weights, safetensors = comet_weights(_checkpoint(checkpoint, "COMET"), allow_pickle)
    try:
        import torch
        from comet import load_from_checkpoint
    except ImportError:
        raise DeliaError("COMET needs the unbabel-comet package: pip install unbabel-comet") from None
    model = comet_from_safetensors(weights) if safetensors else load_from_checkpoint(str(weights))
    data = [
        {"src": src, "mt": hyp, "ref": ref}
        for src, hyp, ref in zip(sources, hypotheses, references, strict=True)
    ]
    output = model.predict(data, batch_size=batch_size, gpus=1 if torch.cuda.is_available() else 0)
    return [float(s) for s in output.scores]


def learned_figures(
    hypotheses: Sequence[str],
    references: Sequence[str],
    sources: Sequence[str] | None,
    bleurt_checkpoint: str | None,
    comet_checkpoint: str | None,
    n_resamples: int,
    seed: int = 0,
    allow_pickle: bool = False,
) -> tuple[dict[str, dict[str, Any]], dict[str, list[float]]]:
    """BLEURT / COMET figures (mean of segment scores, with CI) for the checkpoints the user gave."""
    per_metric: dict[str, list[float]] = {}
    if bleurt_checkpoint:
        per_metric["bleurt"] = bleurt_scores(
            hypotheses, references, bleurt_checkpoint, allow_pickle=allow_pickle
        )
    if comet_checkpoint:
        if sources is None:
            raise DeliaError("COMET needs the source sentences (a 'source' field per prediction)")
        per_metric["comet"] = comet_scores(
            hypotheses, references, sources, comet_checkpoint, allow_pickle=allow_pickle
        )
    figures = {name: figure(scores, n_resamples, seed) for name, scores in per_metric.items()}
    return figures, per_metric
