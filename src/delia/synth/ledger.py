"""Per-axis bookkeeping for diversification: what was drawn, tried, accepted and rejected, and why."""

from __future__ import annotations

from collections import Counter
from typing import Any

from delia.synth.axes import axis_kind


class AxisLedger:
    """Per-axis counts: drawn, attempts and acceptances by method, rejection reasons."""

    SAMPLES = 3  # rejected rewrites kept per axis, to show in the report what the rewriter did

    def __init__(self, axes: list[str]) -> None:
        self.rows: dict[str, Counter[str]] = {axis: Counter() for axis in dict.fromkeys(axes)}
        self.rejected: dict[str, list[dict[str, str]]] = {axis: [] for axis in self.rows}

    def count(self, axis: str, key: str) -> None:
        self.rows[axis][key] += 1

    def reject(self, axis: str, method: str, reason: str, text: str) -> None:
        self.count(axis, f"reject:{method}:{reason}")
        if len(self.rejected[axis]) < self.SAMPLES:
            self.rejected[axis].append({"method": method, "reason": reason, "text": text[:300]})

    def summary(self) -> dict[str, Any]:
        out = {}
        for axis, row in self.rows.items():
            accepted = row["llm_accepted"] + row["rule_accepted"]
            out[axis] = {
                "kind": axis_kind(axis),
                "drawn": row["drawn"],
                "accepted": accepted,
                "acceptance": round(accepted / row["drawn"], 3) if row["drawn"] else None,
                "llm_attempts": row["llm_attempts"],
                "llm_accepted": row["llm_accepted"],
                "llm_acceptance": round(row["llm_accepted"] / row["llm_attempts"], 3)
                if row["llm_attempts"]
                else None,
                "rule_attempts": row["rule_attempts"],
                "rule_accepted": row["rule_accepted"],
                "rejections": {k[7:]: v for k, v in sorted(row.items()) if k.startswith("reject:")},
                "rejected_samples": self.rejected[axis],
            }
        return out
