"""The pipeline: one run directory, its stages cached (see delia.pipeline.cache and delia.pipeline.driver).

task -> [the method's own stages] -> diversify -> sample -> mix -> train -> eval
"""

from __future__ import annotations

from delia.pipeline.driver import run, run_dir_of
from delia.pipeline.effective import check_special_tokens
from delia.pipeline.stages import STAGE_NAMES
from delia.pipeline.stages.task import load_eval_examples, load_task_examples
from delia.pipeline.summary import summary_row, write_summary

__all__ = [
    "STAGE_NAMES",
    "check_special_tokens",
    "load_eval_examples",
    "load_task_examples",
    "run",
    "run_dir_of",
    "summary_row",
    "write_summary",
]
