"""The gradient probe's tables and findings: flat headline rows, and plain sentences built from the numbers.

Each finding compares a measured figure with what the paper's "buffering" argument needs (or, for the
probe's own arithmetic, with the measured batch) and says whether it supports it or goes against it; the
wording follows from the comparison, nothing is fixed in advance.
"""

from __future__ import annotations

from typing import Any

SUPPORTS, AGAINST, NO_CLAIM = "supports the paper", "against the paper", "about this probe"


def summary_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """A flat two-column table of the headline figures; arithmetic and measured mixed figures labelled."""
    rows: list[dict[str, Any]] = []
    for pair, stats in report["cosine"].items():
        rows.append({"figure": f"cosine {pair.replace('_', '-')} (mean)", "value": stats and stats["mean"]})
    for source, stats in report["norms"].items():
        rows.append({"figure": f"norm {source} (mean)", "value": stats["mean"]})
    for key, value in report["cancellation"].items():
        rows.append({"figure": f"cancellation {key.replace('_', ' ')}", "value": value})
    biased = report["biased_directions"]
    labels = {"mixed": "mixed (arithmetic)", "mixed_measured": "mixed (measured batches)"}
    for key, value in biased["fraction"].items():
        name = labels.get(key, key.replace("_", " "))
        rows.append({"figure": f"fraction along top-{biased['top_k']} task dirs: {name}", "value": value})
    for key, value in biased["component"].items():
        name = labels.get(key, key)
        rows.append({"figure": f"component along top-{biased['top_k']} task dirs: {name}", "value": value})
    rows.append(
        {
            "figure": "fraction shrink (mixed arithmetic / task)",
            "value": biased["fraction_shrink_mixed_over_task"],
        }
    )
    mixed = report.get("mixed_batches")
    if mixed:
        rows.append({"figure": "mixed batches: task share of examples", "value": mixed["task_example_share"]})
        rows.append(
            {"figure": "mixed batches: task share of label tokens", "value": _mean(mixed["task_token_share"])}
        )
        for kind in ("measured", "arithmetic"):
            figures = mixed[kind]
            rows.append(
                {
                    "figure": f"cosine mixed ({kind}) with its own task batch",
                    "value": _mean(figures["cosine_with_own_task_batch"]),
                }
            )
            rows.append(
                {
                    "figure": f"cosine mixed ({kind}) with other task batches",
                    "value": _mean(figures["cosine_with_other_task_batches"]),
                }
            )
            rows.append({"figure": f"norm mixed ({kind}) / own task", "value": figures["norm_over_own_task"]})
    return rows


def _mean(stats: dict[str, float] | None) -> float | None:
    return None if stats is None else stats["mean"]


def _finding(topic: str, verdict: str, text: str) -> dict[str, str]:
    return {"topic": topic, "verdict": verdict, "text": text}


def cancellation_findings(report: dict[str, Any]) -> list[dict[str, str]]:
    """The paper: task data alone push consistently (biased features); diverse gradients largely cancel."""
    c, n = report["cancellation"], report["batches"]
    task_consistent = c["task"] > c["unrelated_baseline_task"]
    diverse_cancels = c["diverse"] <= c["unrelated_baseline_diverse"]
    return [
        _finding(
            "task consistency",
            SUPPORTS if task_consistent else AGAINST,
            f"Task batch gradients agree {'more' if task_consistent else 'no more'} than {n['task']} "
            f"unrelated vectors would: ||mean g|| / mean ||g|| = {c['task']:.3f} vs "
            f"{c['unrelated_baseline_task']:.3f} (the paper's biased features need task updates that agree).",
        ),
        _finding(
            "diverse cancellation",
            SUPPORTS if diverse_cancels else AGAINST,
            f"Diverse batch gradients cancel {'at least as much as' if diverse_cancels else 'less than'} "
            f"{n['diverse']} unrelated vectors would: ||mean g|| / mean ||g|| = {c['diverse']:.3f} vs "
            f"{c['unrelated_baseline_diverse']:.3f} (the paper says diverse gradients largely cancel).",
        ),
    ]


def biased_direction_findings(report: dict[str, Any]) -> list[dict[str, str]]:
    """Does a real mixed batch carry a smaller share of the task's biased directions than a task batch?"""
    fractions = report["biased_directions"]["fraction"]
    measured = fractions.get("mixed_measured")
    if measured is None:
        return []
    shrinks = measured < fractions["task"]
    return [
        _finding(
            "buffering along biased directions",
            SUPPORTS if shrinks else AGAINST,
            f"Real mixed batches put {measured:.3f} of their gradient along the top task directions, "
            f"held-out task batches {fractions['task']:.3f} ({'less' if shrinks else 'not less'}; "
            f"arithmetic mix {fractions['mixed']:.3f}, diverse batches {fractions['diverse']:.3f}, "
            f"a random direction {fractions['random_baseline']:.3f}).",
        )
    ]


def arithmetic_findings(report: dict[str, Any]) -> list[dict[str, str]]:
    """How the old arithmetic figure compares with the measured batch (a statement about the probe)."""
    mixed = report.get("mixed_batches")
    if not mixed:
        return []
    measured = _mean(mixed["measured"]["cosine_with_own_task_batch"])
    arithmetic = _mean(mixed["arithmetic"]["cosine_with_own_task_batch"])
    if measured is None or arithmetic is None:
        return []
    direction = "overstates" if arithmetic < measured else "understates"
    tokens = _mean(mixed["task_token_share"])
    return [
        _finding(
            "arithmetic vs measured",
            NO_CLAIM,
            f"A real mixed batch's gradient has cosine {measured:.3f} with its own task examples' gradient; "
            f"the arithmetic w g_task + (1 - w) g_diverse has {arithmetic:.3f}, so the arithmetic "
            f"{direction} the dilution. Task examples are {mixed['task_example_share']:.3f} of a mixed "
            f"batch's examples and {tokens:.3f} of its label tokens (the weight a batch's mean loss "
            "gives them).",
        )
    ]


def findings(report: dict[str, Any]) -> list[dict[str, str]]:
    """Every finding, each with its verdict and a sentence quoting the numbers it rests on."""
    return [*cancellation_findings(report), *biased_direction_findings(report), *arithmetic_findings(report)]


def findings_markdown(items: list[dict[str, str]]) -> str:
    lines = ["", "## Findings (generated from the figures above)", ""]
    lines += [f"- **{item['verdict']}** ({item['topic']}): {item['text']}" for item in items]
    return "\n".join(lines) + "\n"
