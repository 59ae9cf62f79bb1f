"""The built-in stages, one module each, registered in `delia.core.registry.STAGES` under their names.

`STAGE_NAMES` is their order. `task` runs first, before the method plans the run (the plan reads the task
examples); the rest are `PlannedStage`s that read the plan and what the stages before them left behind.
"""

from __future__ import annotations

STAGE_NAMES = ("task", "diversify", "sample", "mix", "train", "eval")
