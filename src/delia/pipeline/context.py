"""The state of one run: what any stage may use (`RunContext`, a method's extra stages included) and what
the planned stages hand each other (`RunState`: the plan, the effective config, the examples in flight)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from delia.core import models
from delia.core.config import BackendConfig, RunConfig
from delia.core.example import Example
from delia.generation import make_backend
from delia.generation.base import Backend
from delia.methods.base import MethodPlan
from delia.pipeline.cache import Log, StageResult

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    ModelAndTokenizer = tuple[PreTrainedModel, PreTrainedTokenizerBase]


@dataclass
class RunContext:
    """One run's `delia.core.stage.StageContext`; the base model is loaded at most once, on first need."""

    config: RunConfig
    dir: Path
    log: Log
    results: dict[str, StageResult] = field(default_factory=dict)
    trained: ModelAndTokenizer | None = None  # the model trained in this process, reused by eval
    _base: ModelAndTokenizer | None = None

    def base_model(self) -> ModelAndTokenizer:
        if self._base is None:
            cfg = self.config.model
            self.log(f"loading {cfg.name}")
            tokenizer = models.load_tokenizer(cfg.name, trust_remote_code=cfg.trust_remote_code)
            model = models.load_model(
                cfg.name, cfg.device, cfg.dtype, trust_remote_code=cfg.trust_remote_code
            )
            self._base = (model.eval(), tokenizer)
        return self._base

    def take_base_model(self) -> ModelAndTokenizer | None:
        """Hand the loaded base model over to training (which changes it in place), if one is loaded."""
        base, self._base = self._base, None
        return base

    def backend(self, backend_cfg: BackendConfig) -> Backend:
        uses_base = backend_cfg.kind == "local" and backend_cfg.model is None
        model, tokenizer = self.base_model() if uses_base else (None, None)
        return make_backend(backend_cfg, self.config.model.name, model=model, tokenizer=tokenizer)


@dataclass
class RunState:
    """A planned run in flight: each stage reads what the ones before it left here and adds its own."""

    context: RunContext
    plan: MethodPlan
    effective: RunConfig  # the config with the plan written in (delia.pipeline.effective)
    task: list[Example]  # the task examples as the next stage sees them
    evals: list[Example]  # the eval examples as the task stage read them
    diverse: Path | None = None  # the diverse data to mix in, when the plan uses any
    adapter: Path | None = None  # the trained adapter, when the plan trains

    @property
    def config(self) -> RunConfig:
        return self.context.config

    @cached_property
    def eval_inputs(self) -> list[Example]:
        """The eval examples as given to the model: limited, then transformed by the plan (once per run)."""
        limit = self.config.eval.limit
        chosen = self.evals[:limit] if limit is not None else self.evals
        return self.plan.eval_transform(chosen) if self.plan.eval_transform is not None else chosen
