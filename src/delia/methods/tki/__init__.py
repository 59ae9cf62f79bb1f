"""TKI (Zhao et al., ACL Findings 2025, "Task Knowledge Injection via Interpolations and Reinstatement"):
latent task adaptation (retrieved interpolations of latent-task LoRA increments) and knowledge
reinstatement (reinstated input embeddings, an extra objective, PCGrad). See docs/tki.md for every choice
the paper leaves open. Switches: `tki.lta`, `tki.kr` (ablations)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from delia.core.config import Section
from delia.core.example import Example
from delia.methods.base import Method, MethodPlan, StageDirs

if TYPE_CHECKING:
    from delia.core.config import RunConfig
    from delia.methods.tki.hooks import TkiHooks


class TkiOptions(Section):
    lta: bool = True
    kr: bool = True
    groups: int = 16
    latents: int = 12
    top_k: int = 2
    encoder: str = "all-MiniLM-L6-v2"
    alpha: float = 1.0
    kr_steps: int = 20
    kr_lr: float = 1e-2
    kr_distance_weight: float = 0.1
    rank: int = 4  # rank of each latent increment (groups * latents of them per target linear)
    weighting: Literal["cosine", "softmax"] = "cosine"  # D_j: clamped cosine, or softmax(cos / temperature)
    temperature: float = 0.05
    inference_groups: Literal["all", "best"] = "best"  # unseen inputs: the best key's group, or all averaged
    pcgrad: bool = True  # resolve conflicts between the task loss and the KR objective (False: plain sum)


class Tki(Method):
    name = "tki"
    description = "TKI: retrieved latent-task LoRA interpolations + knowledge reinstatement with PCGrad"
    Options = TkiOptions

    def plan(self, config: RunConfig, task: list[Example], stage_dirs: StageDirs | None = None) -> MethodPlan:
        options = config.options(self.name)
        notes = []
        if not options.lta:
            notes.append("ablation: w/o latent task adaptation")
        if not options.kr:
            notes.append("ablation: w/o knowledge reinstatement")
        hooks = None
        if options.lta or options.kr:
            hooks = self.hooks_type()(config)
        else:
            notes.append("both TKI parts off: plain LoRA on the task data")
        return MethodPlan(
            use_diverse=False,
            diversify=False,
            schedule="task_only",
            ratio=0.0,
            special_tokens=[],
            hooks=hooks,
            notes=notes,
        )

    def hooks_type(self) -> type[TkiHooks]:
        from delia.methods.tki.hooks import TkiHooks  # torch + the trainer: only when a run needs them

        return TkiHooks
