"""Held-out task loss of a finished run's model: the paper's Figure 3 plots it at the end of training
against the diverse ratio.

The loss is the mean per-token cross-entropy of the reference answers of eval examples (each example's final
assistant turn), under the train module's tokenisation and loss: prompt tokens masked, examples cut at
`max_length`, an example with no answer token left dropped, losses pooled over all answer tokens (as the
trainer's own `eval_loss` pools them, so a long answer weighs more than a short one). The model is in eval
mode and nothing is generated. Examples without a reference answer are skipped and counted.

`heldout_task_loss(model, tokenizer, examples)` is the number; `run_heldout_task_loss(run_dir)` loads a run's
adapter (with whatever its method saved) and measures its `task/eval.jsonl`, without the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from delia.core.config import TrainConfig
from delia.core.errors import DeliaError
from delia.core.example import Example
from delia.core.models import EMBEDDED
from delia.data.io import read_examples
from delia.probe.loading import adapter_base_model, load_model_and_tokenizer, resolve_adapter_dir
from delia.probe.losscurve import mix_ratio
from delia.train.collate import Encoded, EncodeStats, encode_examples, pad
from delia.train.loss import LabelLoss

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

EVAL_FILE = Path("task") / "eval.jsonl"
RUN_CONFIG = Path("train") / "config.yaml"


@dataclass(frozen=True)
class LossSettings:
    max_length: int = TrainConfig().max_length  # tokens per example, as train.max_length cuts them
    batch_size: int = 8  # examples per forward; the pooled loss does not depend on it


def pooled_answer_loss(
    model: PreTrainedModel, pad_id: int, encoded: list[Encoded], batch_size: int
) -> tuple[float, int]:
    """(sum of answer-token losses / their count, the count), in eval mode without gradients. Batches
    are cut from the examples sorted by length: the pooled loss does not depend on the grouping, and
    in eval order 32-example batches of the sep-json eval set were 35 % padding (3.5 % sorted)."""
    encoded = sorted(encoded, key=lambda item: len(item.input_ids))
    source_index = {source: i for i, source in enumerate(sorted({item.source for item in encoded}))}
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            batch = pad(encoded[start : start + batch_size], source_index, pad_id)
            total += float(LabelLoss(model)(batch.to(device)).loss_sum)
            count += batch.n_labels
    model.train(was_training)
    return total / count, count


def heldout_loss_figures(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    settings: LossSettings = LossSettings(),
) -> dict[str, Any]:
    """The loss with what it rests on: examples given, with a reference, used, cut, dropped; label tokens."""
    answered = [example for example in examples if example.response]
    stats = EncodeStats()
    encoded = encode_examples(answered, tokenizer, settings.max_length, stats) if answered else []
    if not encoded:
        raise DeliaError(
            f"none of {len(examples)} examples has a reference answer with a token within max_length "
            f"{settings.max_length}: no held-out task loss"
        )
    loss, count = pooled_answer_loss(model, tokenizer.pad_token_id, encoded, settings.batch_size)
    return {
        "loss": loss,
        "examples": len(examples),
        "with_reference": len(answered),
        "used": len(encoded),
        "truncated": stats.truncated,
        "dropped": stats.dropped,
        "label_tokens": count,
        "max_length": settings.max_length,
    }


def heldout_task_loss(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    max_length: int = LossSettings.max_length,
    batch_size: int = LossSettings.batch_size,
) -> float:
    """Mean per-token loss of the examples' reference answers (module docstring)."""
    return heldout_loss_figures(model, tokenizer, examples, LossSettings(max_length, batch_size))["loss"]


def run_max_length(run_dir: Path) -> int:
    """The run's own train.max_length (its resolved train/config.yaml), else the schema's default."""
    config = run_dir / RUN_CONFIG
    if config.exists():
        try:
            value = (
                (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("train", {}).get("max_length")
            )
        except (yaml.YAMLError, AttributeError):
            value = None
        if isinstance(value, int) and value > 0:
            return value
    return TrainConfig().max_length


def run_heldout_task_loss(
    run_dir: str | Path,
    examples: list[Example] | None = None,
    model_spec: str | None = None,
    limit: int | None = None,
    max_length: int | None = None,
    batch_size: int = 8,
    device: str = "cpu",
) -> dict[str, Any]:
    """Held-out task loss of a finished run's adapter, with the run's diverse ratio for Figure 3.

    `examples` default to the run's `task/eval.jsonl`; a method whose eval prompts differ from the raw eval
    examples (its plan's eval transform) should be given them transformed, as its own eval saw them.
    `model_spec` defaults to the adapter's base model (else the embedded one); `max_length` to the run's
    train.max_length.
    """
    run_dir = Path(run_dir)
    adapter_dir = resolve_adapter_dir(run_dir)
    if examples is None:
        if not (run_dir / EVAL_FILE).exists():
            raise DeliaError(f"{run_dir / EVAL_FILE} does not exist: give the eval examples")
        examples = read_examples(run_dir / EVAL_FILE)
    examples = examples[:limit] if limit is not None else examples
    spec = model_spec or adapter_base_model(adapter_dir) or EMBEDDED  # as probe_targets resolves it
    max_length = max_length or run_max_length(run_dir)
    model, tokenizer = load_model_and_tokenizer(spec, adapter_dir, device)
    figures = heldout_loss_figures(model, tokenizer, examples, LossSettings(max_length, batch_size))
    return {"run": str(run_dir), "adapter": str(adapter_dir), "ratio": mix_ratio(run_dir), **figures}
