"""The buffering diagnostic: how LoRA gradients of task batches and diverse batches relate.

Over `n` task-only and `n` diverse-only batches (examples drawn by `source` from a mixed file, seeded), each
batch's gradient g is the gradient of the training loss (delia.train's collate and LabelLoss: mean next-token
loss over the final assistant turn's tokens) with respect to every LoRA parameter (names containing "lora_"),
flattened to one float32 vector; the model is in eval mode (no dropout).
  cosine        mean / min / max of cos(g_i, g_j) over task-task pairs (i<j), diverse-diverse pairs (i<j)
                and task-diverse pairs (all i, j)
  norms         mean and std of ||g|| per source
  cancellation  ||mean_i g_i|| / mean_i ||g_i|| per source: 1 when the batches push the same way; about
                1/sqrt(n) when their directions are unrelated; lower when they cancel
  biased dirs   the top-k right singular vectors V of the (uncentred) matrix of half the task gradients: the
                directions task updates consistently push. On the other, held-out half we report
                fraction = ||V g|| / ||g|| for task gradients, diverse gradients and mixed gradients
                g_mix = w g_task + (1 - w) g_diverse (w = 1 / (1 + ratio), a batch's expected task share:
                arithmetic, labelled so), the same for real mixed batches (probe/mixed.py), the absolute
                component ||V g|| of task and mixed gradients, and sqrt(k / P'), the fraction a random
                direction would have among the P' coordinates that receive any gradient.
  mixed batches each task batch with round(ratio x batch size) diverse examples in one batch, its gradient
                taken as training takes it: cosine with the task gradient and norms, beside the arithmetic.
  findings      sentences built from these numbers saying what supports the paper and what goes against it.
A fresh LoRA (B = 0 at init) only has gradients on its B matrices; a loaded adapter gives gradients on both.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from delia.core.errors import DeliaError
from delia.core.example import Example
from delia.core.io import write_json
from delia.probe.gradient_text import findings, findings_markdown, summary_rows
from delia.probe.loading import ProbeTarget, load_target
from delia.probe.mixed import (
    MixedBatch,
    MixedGradient,
    build_mixed_batches,
    mixed_batch_gradient,
    mixed_report,
    summed_gradient,
)
from delia.probe.plots import plot_gradients
from delia.probe.tables import write_table
from delia.train.collate import MicroBatch, encode_examples, pad

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class BatchGradient:
    source: str
    vector: torch.Tensor
    loss: float
    label_tokens: int


def encode_batch(tokenizer: PreTrainedTokenizerBase, examples: list[Example], max_length: int) -> MicroBatch:
    """The train module's padded micro-batch: same tokenisation and assistant-only targets as training."""
    encoded = encode_examples(examples, tokenizer, max_length)
    if not encoded:
        raise DeliaError(f"no example of a batch has an answer token within --max-length {max_length}")
    source_index = {source: i for i, source in enumerate(sorted({item.source for item in encoded}))}
    return pad(encoded, source_index, tokenizer.pad_token_id)


def attach_fresh_lora(
    model: PreTrainedModel, r: int, alpha: int, target_modules: list[str] | str
) -> PeftModel:
    from peft import LoraConfig, get_peft_model  # peft imports transformers: only for a fresh LoRA

    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=target_modules, task_type="CAUSAL_LM"
    )
    return get_peft_model(model, config).eval()


def lora_parameters(model: PreTrainedModel) -> list[torch.nn.Parameter]:
    """Every LoRA weight, made trainable; everything else frozen."""
    params = []
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
        if "lora_" in name:
            params.append(param)
    if not params:
        raise DeliaError("the model has no LoRA parameters (names containing 'lora_')")
    return params


def batch_gradient(
    model: PreTrainedModel, params: list[torch.nn.Parameter], batch: MicroBatch
) -> tuple[torch.Tensor, float]:
    """Flattened gradient of the batch's mean loss per label token (the training loss), and that loss."""
    summed, outputs = summed_gradient(model, params, batch)
    return summed / batch.n_labels, float(outputs.loss_sum.detach()) / batch.n_labels


def sample_batches(
    examples: list[Example], n_batches: int, batch_size: int, seed: int
) -> list[list[Example]]:
    """Up to n_batches disjoint batches from a seeded shuffle."""
    order = list(examples)
    random.Random(seed).shuffle(order)
    count = min(n_batches, len(order) // batch_size)
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(count)]


def split_by_source(examples: list[Example], task_source: str, diverse_source: str) -> tuple[list, list]:
    task = [ex for ex in examples if ex.source == task_source and ex.response]
    diverse = [ex for ex in examples if ex.source == diverse_source and ex.response]
    return task, diverse


def compute_gradients(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    batches: list[tuple[str, list[Example]]],
    max_length: int,
    progress: bool = True,
) -> list[BatchGradient]:
    params = lora_parameters(model)
    out = []
    for source, examples in tqdm(batches, desc="gradients", unit="batch", disable=not progress):
        batch = encode_batch(tokenizer, examples, max_length)
        vector, loss = batch_gradient(model, params, batch)
        out.append(BatchGradient(source, vector, loss, batch.n_labels))
    return out


def compute_mixed_gradients(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    batches: list[MixedBatch],
    max_length: int,
    micro_batch_size: int,
    task_source: str = "task",
    progress: bool = True,
) -> list[MixedGradient]:
    """The gradient of each real mixed batch, as one training step would take it (probe/mixed.py)."""
    params = lora_parameters(model)
    return [
        mixed_batch_gradient(
            model, params, tokenizer, batch.examples, max_length, micro_batch_size, task_source
        )
        for batch in tqdm(batches, desc="mixed batches", unit="batch", disable=not progress)
    ]


def cosine_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity of the rows (float64)."""
    unit = torch.nn.functional.normalize(vectors.double(), dim=-1)
    return unit @ unit.T


def pair_stats(
    cosines: torch.Tensor, rows: list[int], cols: list[int], distinct: bool
) -> dict[str, float] | None:
    values = [float(cosines[i, j]) for i in rows for j in cols if (i < j if distinct else True)]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "n_pairs": len(values)}


def cancellation(vectors: torch.Tensor) -> float:
    """||mean g|| / mean ||g||."""
    vectors = vectors.double()
    return float(vectors.mean(0).norm() / vectors.norm(dim=-1).mean().clamp_min(1e-30))


def principal_directions(vectors: torch.Tensor, k: int) -> torch.Tensor:
    """[k, P] top right singular vectors of the uncentred gradient matrix."""
    _, _, vh = torch.linalg.svd(vectors.double(), full_matrices=False)
    return vh[:k]


def subspace_component(vectors: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """||V g|| per row."""
    return (vectors.double() @ directions.T).norm(dim=-1)


def active_coordinates(*matrices: torch.Tensor) -> int:
    """Number of coordinates with a non-zero gradient in any row."""
    nonzero = torch.zeros(matrices[0].shape[1], dtype=torch.bool)
    for matrix in matrices:
        nonzero |= (matrix != 0).any(0)
    return max(int(nonzero.sum()), 1)


def biased_direction_report(
    task: torch.Tensor,
    diverse: torch.Tensor,
    ratio: float,
    top_k: int,
    measured: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Fit V on the first half of task gradients; measure the held-out half, diverse, and mixed gradients
    (arithmetic, and `measured`: real mixed batches whose row i holds task batch i's examples)."""
    n_fit = task.shape[0] // 2
    if n_fit < top_k or task.shape[0] - n_fit < 1:
        raise DeliaError(f"need at least {2 * top_k} task batches for --top-k {top_k}, got {task.shape[0]}")
    directions = principal_directions(task[:n_fit], top_k)
    held_out = task[n_fit:].double()
    pairs = diverse.double()[torch.arange(held_out.shape[0]) % diverse.shape[0]]
    weight = 1.0 / (1.0 + ratio)
    mixed = weight * held_out + (1.0 - weight) * pairs

    def fraction(vectors: torch.Tensor) -> float:
        return float((subspace_component(vectors, directions) / vectors.norm(dim=-1).clamp_min(1e-30)).mean())

    component_task = float(subspace_component(held_out, directions).mean())
    component_mixed = float(subspace_component(mixed, directions).mean())
    fractions = {"task": fraction(held_out), "diverse": fraction(diverse), "mixed": fraction(mixed)}
    components = {"task": component_task, "mixed": component_mixed}
    if measured is not None and measured.shape[0] > n_fit:
        fractions["mixed_measured"] = fraction(measured[n_fit:])
        components["mixed_measured"] = float(subspace_component(measured[n_fit:], directions).mean())
    return {
        "top_k": top_k,
        "fit_batches": n_fit,
        "held_out_task_batches": held_out.shape[0],
        "ratio": ratio,
        "task_weight": weight,
        "mixed_is": "arithmetic: task_weight x g_task + (1 - task_weight) x g_diverse; see mixed_measured",
        # A random direction within the coordinates that get gradients at all (fresh LoRA: B only).
        "fraction": {**fractions, "random_baseline": math.sqrt(top_k / active_coordinates(task, diverse))},
        "fraction_shrink_mixed_over_task": fractions["mixed"] / fractions["task"]
        if fractions["task"]
        else None,
        "component": components,
    }


def norm_stats(vectors: torch.Tensor) -> dict[str, float]:
    norms = vectors.double().norm(dim=-1).tolist()
    return {"mean": statistics.fmean(norms), "std": statistics.pstdev(norms)}


def gradient_report(
    gradients: list[BatchGradient],
    ratio: float,
    top_k: int = 1,
    mixed: list[tuple[MixedBatch, MixedGradient]] | None = None,
) -> dict[str, Any]:
    """Every figure in the module docstring, from per-batch gradients tagged "task" or "diverse", and the
    real mixed batches (each holding the task batch of its `task_batch` index) when given."""
    task_rows = [i for i, g in enumerate(gradients) if g.source == "task"]
    diverse_rows = [i for i, g in enumerate(gradients) if g.source == "diverse"]
    if len(task_rows) < 2 or len(diverse_rows) < 2:
        raise DeliaError(
            f"need at least 2 task and 2 diverse batches, got {len(task_rows)} and {len(diverse_rows)}"
        )
    vectors = torch.stack([g.vector for g in gradients])
    task, diverse = vectors[task_rows], vectors[diverse_rows]
    cosines = cosine_matrix(vectors)
    n_task, n_diverse = len(task_rows), len(diverse_rows)
    mixed = sorted(mixed or [], key=lambda pair: pair[0].task_batch)
    measured = torch.stack([g.vector for _, g in mixed]) if mixed else None
    report = {
        "n_params": int(vectors.shape[1]),
        "n_params_with_gradient": active_coordinates(vectors),
        "batches": {"task": n_task, "diverse": n_diverse},
        "cosine": {
            "task_task": pair_stats(cosines, task_rows, task_rows, distinct=True),
            "diverse_diverse": pair_stats(cosines, diverse_rows, diverse_rows, distinct=True),
            "task_diverse": pair_stats(cosines, task_rows, diverse_rows, distinct=False),
        },
        "norms": {"task": norm_stats(task), "diverse": norm_stats(diverse)},
        "cancellation": {
            "task": cancellation(task),
            "diverse": cancellation(diverse),
            "unrelated_baseline_task": 1 / math.sqrt(n_task),
            "unrelated_baseline_diverse": 1 / math.sqrt(n_diverse),
        },
        "biased_directions": biased_direction_report(task, diverse, ratio, top_k, measured),
        "per_batch": [
            {
                "source": g.source,
                "loss": g.loss,
                "label_tokens": g.label_tokens,
                "norm": float(g.vector.norm()),
            }
            for g in gradients
        ],
        "cosine_matrix": [[round(float(c), 6) for c in row] for row in cosines],
    }
    if measured is not None:
        batches, found = [b for b, _ in mixed], [g for _, g in mixed]
        report["mixed_batches"] = mixed_report(task, diverse, measured, batches, found, ratio)
    report["findings"] = findings(report)
    return report


@dataclass(frozen=True)
class FreshLora:
    """The LoRA attached to a base model when no adapter is given (defaults: the config's lora section)."""

    r: int = 16
    alpha: int = 32
    target_modules: tuple[str, ...] | str = ("q_proj", "k_proj", "v_proj", "o_proj")  # or "all-linear"


def run_gradient_probe(
    target: ProbeTarget,
    examples: list[Example],
    out_dir: Path,
    n_batches: int = 8,
    batch_size: int = 4,
    max_length: int = 512,
    ratio: float | None = None,
    top_k: int = 1,
    fresh_lora: FreshLora | None = None,
    sources: tuple[str, str] = ("task", "diverse"),
    seed: int = 0,
    device: str = "cpu",
    mixed: bool = True,
) -> dict[str, Any]:
    """Gradients of `n_batches` task, diverse and (unless `mixed` is False) real mixed batches; write
    gradients.json, .csv, .md (the table, then the findings) and .png."""
    task, diverse = split_by_source(examples, *sources)
    if not task or not diverse:
        raise DeliaError(
            f"the data needs answered examples with source {sources[0]!r} and {sources[1]!r}; "
            f"found {len(task)} and {len(diverse)}"
        )
    ratio = len(diverse) / len(task) if ratio is None else ratio
    task_batches = sample_batches(task, n_batches, batch_size, seed)
    batches = [("task", b) for b in task_batches]
    batches += [("diverse", b) for b in sample_batches(diverse, n_batches, batch_size, seed)]
    model, tokenizer = load_target(target, device)
    if target.adapter_dir is None:
        fresh_lora = fresh_lora or FreshLora()
        modules = fresh_lora.target_modules
        torch.manual_seed(seed)  # LoRA A is drawn at random
        model = attach_fresh_lora(
            model, fresh_lora.r, fresh_lora.alpha, modules if isinstance(modules, str) else list(modules)
        )
    gradients = compute_gradients(model, tokenizer, batches, max_length)
    mixed_batches = build_mixed_batches(task_batches, diverse, ratio, seed) if mixed else []
    # Micro-batches of the batch size keep memory bounded; summed, they are the whole batch's gradient.
    found = compute_mixed_gradients(model, tokenizer, mixed_batches, max_length, batch_size, sources[0])
    report = gradient_report(gradients, ratio, top_k, list(zip(mixed_batches, found, strict=True)))
    report["settings"] = {
        "run": target.name,
        "model": target.model_spec,
        "adapter": str(target.adapter_dir or ""),
        "fresh_lora": None if target.adapter_dir else asdict(fresh_lora),
        "batch_size": batch_size,
        "max_length": max_length,
        "seed": seed,
        "sources": list(sources),
        "examples": {"task": len(task), "diverse": len(diverse)},
    }
    labels = [f"{g.source[0].upper()}{i}" for i, g in enumerate(gradients)]
    table = summary_rows(report)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "gradients.json", report)
    write_table(out_dir, "gradients", table)
    with open(out_dir / "gradients.md", "a", encoding="utf-8") as handle:
        handle.write(findings_markdown(report["findings"]))
    plot_gradients(report, labels, out_dir / "gradients.png")
    return {"report": report, "table": table, "findings": report["findings"], "out_dir": str(out_dir)}
