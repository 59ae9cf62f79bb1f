"""`train`: LoRA (and the plan's special tokens and hooks) on the mixed file, resuming from the partial
directory's checkpoints after a crash; the adapter is linked as `runs/<name>/adapter`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from delia.core.config import RunConfig
from delia.core.registry import STAGES
from delia.data.io import read_examples
from delia.pipeline.cache import StageResult
from delia.pipeline.context import RunContext, RunState
from delia.pipeline.stages.base import PlannedStage, StageKey, copy_if_exists, link

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class TrainStage(PlannedStage):
    name: ClassVar[str] = "train"
    sections: ClassVar[tuple[str, ...]] = ("model", "tokens", "lora", "train")  # and the method's own
    upstream: ClassVar[tuple[str, ...]] = ("mix",)

    def key(self, state: RunState) -> StageKey | None:
        if not state.plan.train:
            return None
        effective = state.effective
        hooks = type(state.plan.hooks).__name__ if state.plan.hooks is not None else None
        mix_key = state.context.results["mix"].manifest["hash"]
        upstream = (mix_key, f"method={effective.method}", f"hooks={hooks}")
        return StageKey(effective.stage_hash(*self.sections, *effective.method_sections(), upstream=upstream))

    def compute(self, state: RunState, out: Path) -> dict[str, Any]:
        from delia.train import fit  # torch

        effective = state.effective
        examples = read_examples(state.context.results["mix"].dir / "mixed.jsonl")
        held_out = state.evals[: effective.train.eval_examples] if effective.train.eval_every else None
        resume = (out / "checkpoints").exists()
        model, tokenizer, token_ids = model_for_training(state.context, effective)
        trained = fit(
            effective,
            model,
            tokenizer,
            token_ids,
            examples,
            out,
            eval_examples=held_out,
            hooks=state.plan.hooks,
            resume=resume,
        )
        state.context.trained = (trained.model, trained.tokenizer)
        result = trained.result
        return {
            "steps": result.steps,
            "final_loss": result.final_loss,
            "train_seconds": result.seconds,
            "tokens_per_second": result.tokens_per_second,
            "counts": {"examples": result.n_examples},
            "max_steps": effective.train.max_steps,
        }

    def collect(self, state: RunState, result: StageResult | None) -> None:
        if result is None:
            return
        link(state.context.dir / "adapter", Path("train") / "adapter")
        copy_if_exists(result.dir / "train_log.jsonl", state.context.dir / "train_log.jsonl")
        state.adapter = result.dir / "adapter"


def model_for_training(
    context: RunContext, effective: RunConfig
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, list[int]]:
    """The base model already loaded for sampling, with the plan's tokens added; else a fresh load."""
    base = context.take_base_model()
    if base is None:
        from delia.train import load_for_training  # torch

        return load_for_training(effective)
    from delia.train.tokens import add_special_tokens  # torch

    model, tokenizer = base
    if not effective.tokens.add:
        return model, tokenizer, []
    # As delia.train.load_for_training does for a freshly loaded model.
    add_special_tokens(model, tokenizer, effective.tokens, seed=effective.seed)
    return model, tokenizer, [tokenizer.convert_tokens_to_ids(t) for t in dict.fromkeys(effective.tokens.add)]


STAGES.register(TrainStage.name)(TrainStage())
