"""`eval`: the trained model (or the base model, for a plan that does not train) answers the eval examples
as the plan gives them; predictions and metrics are copied to the top of the run directory. The manifest
records the token budget the answers had (`eval.max_new_tokens: auto` resolved to a number)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from delia.core.registry import STAGES
from delia.evaluate import evaluate_model
from delia.methods import load_trained
from delia.pipeline.cache import StageResult, examples_hash
from delia.pipeline.context import RunState
from delia.pipeline.stages.base import PlannedStage, StageKey, copy_if_exists

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class EvalStage(PlannedStage):
    name: ClassVar[str] = "eval"
    sections: ClassVar[tuple[str, ...]] = ("model", "eval", "seed")  # and the method's own
    upstream: ClassVar[tuple[str, ...]] = ("task", "train")

    def key(self, state: RunState) -> StageKey | None:
        if not state.evals:
            return None
        config, plan = state.config, state.plan
        train = state.context.results.get("train")
        upstream = (
            train.manifest["hash"] if train else "untrained",
            examples_hash(state.eval_inputs),
            f"method={config.method}",
            f"generation={sorted(plan.generation_options)}",
        )
        if config.eval.max_new_tokens == "auto":
            # `auto` budgets over the task's answers too, which a plan that does not train has in no key;
            # only then, so that a fixed budget's key stays what it was before `auto` read the task.
            upstream = (*upstream, examples_hash(state.task))
        sections = (*self.sections, *config.method_sections())
        return StageKey(state.effective.stage_hash(*sections, upstream=upstream))

    def compute(self, state: RunState, out: Path) -> dict[str, Any]:
        config = state.config
        model, tokenizer = model_to_evaluate(state)
        metrics = evaluate_model(
            model,
            tokenizer,
            state.eval_inputs,
            config.eval,
            out,
            seed=config.seed,
            generation_options=state.plan.generation_options,
            task_examples=state.task,
        )
        return {"counts": {"eval": len(state.eval_inputs)}, **manifest_fields(metrics)}

    def collect(self, state: RunState, result: StageResult | None) -> None:
        if result is None:
            return
        for name in ("predictions.jsonl", "metrics.json"):
            copy_if_exists(result.dir / name, state.context.dir / name)


def model_to_evaluate(state: RunState) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model when the plan does not train; else the model trained in this process, or the adapter
    a finished earlier run left."""
    context = state.context
    if state.adapter is None:
        return context.base_model()
    if context.trained is not None:
        return context.trained
    model = context.config.model
    return load_trained(model.name, state.adapter, device=model.device)


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    return {name: round(float(v["value"]), 4) for name, v in metrics.get("values", {}).items()}


BUDGET_FIELDS = (
    "max_new_tokens",
    "max_new_tokens_config",
    "longest_reference_tokens",
    "longest_task_answer_tokens",
)


def manifest_fields(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline figures, the token budget the answers had (`auto` resolved to a number) and, when the
    eval examples carry phrasing groups, each group's headline figures."""
    generation = metrics.get("generation", {})
    fields: dict[str, Any] = {
        "metrics": headline(metrics),
        "generation": {name: generation[name] for name in BUDGET_FIELDS if name in generation},
    }
    if "by_phrasing" in metrics:
        fields["by_phrasing"] = {
            group: {"n": figures["n"], **headline(figures)}
            for group, figures in metrics["by_phrasing"].items()
        }
    return fields


STAGES.register(EvalStage.name)(EvalStage())
