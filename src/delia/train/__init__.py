"""LoRA training with assistant-only labels, packed micro-batches and exact resume.

`train_model(config, examples, out_dir)` loads the model named by the config, adds its special tokens,
trains and saves `out_dir/adapter`; `load_adapter_model` puts such an adapter back on its base model
(the PEFT part: `delia.methods.load_trained` also loads what the method's hooks saved).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from delia.core.config import RunConfig
from delia.core.example import Example
from delia.train.artifacts import load_adapter_model, save_artifacts
from delia.train.hooks import TrainerHooks
from delia.train.loop import Trained, Trainer, TrainResult

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "TrainResult",
    "Trained",
    "TrainerHooks",
    "fit",
    "load_adapter_model",
    "load_for_training",
    "train_model",
]


def load_for_training(config: RunConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, list[int]]:
    """(model, tokenizer, ids of config.tokens.add) with the tokens added and initialised."""
    from delia.core.models import load_model, load_tokenizer
    from delia.train.tokens import add_special_tokens

    spec, remote = config.model.name, config.model.trust_remote_code
    tokenizer = load_tokenizer(spec, trust_remote_code=remote)
    model = load_model(spec, device="cpu", dtype=config.model.dtype, trust_remote_code=remote)
    if not config.tokens.add:
        return model, tokenizer, []
    add_special_tokens(model, tokenizer, config.tokens, seed=config.seed)
    return model, tokenizer, [tokenizer.convert_tokens_to_ids(t) for t in dict.fromkeys(config.tokens.add)]


def fit(
    config: RunConfig,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    token_ids: list[int],
    examples: list[Example],
    out_dir: str | Path,
    *,
    eval_examples: list[Example] | None = None,
    hooks: TrainerHooks | None = None,
    resume: bool = False,
) -> Trained:
    """Train an already loaded model; saves the adapter and returns it with the in-memory model."""
    out_dir = Path(out_dir)
    trainer = Trainer(config, model, tokenizer, token_ids, examples, out_dir, eval_examples, hooks)
    result = trainer.run(resume)
    trainer.runtime.barrier()
    weights = trainer.trainable_weights()
    if trainer.runtime.is_main:
        save_artifacts(out_dir, trainer.model, tokenizer, config, token_ids, weights, trainer.hooks)
    return Trained(result, trainer.model.eval(), tokenizer)  # eval: no LoRA dropout when generating


def train_model(
    config: RunConfig,
    examples: list[Example],
    out_dir: Path,
    *,
    eval_examples: list[Example] | None = None,
    hooks: TrainerHooks | None = None,
    resume: bool = False,
) -> TrainResult:
    model, tokenizer, token_ids = load_for_training(config)
    trained = fit(
        config,
        model,
        tokenizer,
        token_ids,
        examples,
        out_dir,
        eval_examples=eval_examples,
        hooks=hooks,
        resume=resume,
    )
    return trained.result
