"""Evaluation: batched generation, the paper's json_format metric, translation metrics, bootstrap CIs."""

from delia.evaluate.generate import METRICS_FILE, PREDICTIONS_FILE, evaluate_model
from delia.evaluate.metrics import score

__all__ = ["METRICS_FILE", "PREDICTIONS_FILE", "evaluate_model", "score"]
