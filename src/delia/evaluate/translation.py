"""Translation metrics: sacreBLEU BLEU and chrF++ with signatures; BLEURT / COMET from local checkpoints."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from delia.core.errors import DeliaError
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


def bleurt_scores(
    hypotheses: Sequence[str], references: Sequence[str], checkpoint: str, batch_size: int = 16
) -> list[float]:
    """Per-segment BLEURT from a local PyTorch BLEURT checkpoint directory (the bleurt-pytorch package)."""
    path = _checkpoint(checkpoint, "BLEURT")
    try:
        import torch
        from bleurt_pytorch import BleurtForSequenceClassification, BleurtTokenizer
    except ImportError:
        raise DeliaError("BLEURT needs the bleurt-pytorch package: pip install bleurt-pytorch") from None
    model = BleurtForSequenceClassification.from_pretrained(str(path)).eval()
    tokenizer = BleurtTokenizer.from_pretrained(str(path))
    scores: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(hypotheses), batch_size):
            refs = list(references[start : start + batch_size])
            hyps = list(hypotheses[start : start + batch_size])
            inputs = tokenizer(refs, hyps, padding="longest", truncation=True, return_tensors="pt")
            scores.extend(model(**inputs).logits.flatten().tolist())
    return scores


def comet_scores(
    hypotheses: Sequence[str],
    references: Sequence[str],
    sources: Sequence[str],
    checkpoint: str,
    batch_size: int = 16,
) -> list[float]:
    """Per-segment COMET from a local checkpoint file (the unbabel-comet package), CPU unless CUDA exists."""
    path = _checkpoint(checkpoint, "COMET")
    try:
        import torch
        from comet import load_from_checkpoint
    except ImportError:
        raise DeliaError("COMET needs the unbabel-comet package: pip install unbabel-comet") from None
    model = load_from_checkpoint(str(path))
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
) -> tuple[dict[str, dict[str, Any]], dict[str, list[float]]]:
    """BLEURT / COMET figures (mean of segment scores, with CI) for the checkpoints the user gave."""
    per_metric: dict[str, list[float]] = {}
    if bleurt_checkpoint:
        per_metric["bleurt"] = bleurt_scores(hypotheses, references, bleurt_checkpoint)
    if comet_checkpoint:
        if sources is None:
            raise DeliaError("COMET needs the source sentences (a 'source' field per prediction)")
        per_metric["comet"] = comet_scores(hypotheses, references, sources, comet_checkpoint)
    figures = {name: figure(scores, n_resamples, seed) for name, scores in per_metric.items()}
    return figures, per_metric
