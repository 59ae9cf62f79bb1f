"""The report's tables of what a headline score leaves out: the score on instruction phrasings held out of
training (seen vs unseen, results.json `by_phrasing`), which of those phrasings each cell really trained on
(the facts' `phrasings`), and the per-cell measurements (experiment.measures): held-out task loss at the
end of training, format leakage into ordinary questions, ordinary questions still answered.
"""

from __future__ import annotations

import statistics

from delia.experiment.facts import TRUNCATED_FLAG, flagged
from delia.experiment.measures import GENERAL_QA, HELDOUT_LOSS, LEAKAGE, MEASURES
from delia.experiment.records import CellFacts, ExperimentResults, GroupSummary, SliceKey, SummaryRow
from delia.experiment.report.tables import (
    NOT_IN_GRID,
    ResultIndex,
    Table,
    fmt_number,
    method_label,
)
from delia.probe.general import ANSWER_TOKENS, GENERAL_QUESTIONS

SEEN, UNSEEN = "seen", "unseen"
NOT_MEASURED = "not measured"
MEASURE_TITLES = {
    HELDOUT_LOSS: "held-out task loss (end of training)",
    LEAKAGE: "format leakage (ordinary questions answered in JSON)",
    GENERAL_QA: "ordinary questions answered correctly",
}


def group_text(group: GroupSummary, planned_seeds: int) -> str:
    """ "mean [CI] (seeds, n); truncated x", flagged when a seed's share of the group is over the flag."""
    seeds = f"{group.n_seeds}/{planned_seeds}" if planned_seeds > group.n_seeds else str(group.n_seeds)
    ci = f"[{fmt_number('', group.ci_low)}, {fmt_number('', group.ci_high)}]"
    text = f"{group.mean:.3f} {ci} ({seeds} {'seed' if seeds == '1' else 'seeds'}, n={group.n_eval})"
    shares = [share for share in group.truncated if share is not None]
    if shares:
        over = sum(flagged(share) for share in shares)
        flag = f" **{over}/{len(shares)} seeds > {TRUNCATED_FLAG:.0%}**" if over else ""
        text += f"; truncated {statistics.fmean(shares):.3f}{flag}"
    return text


def seed_gap(row: SummaryRow) -> str:
    """Unseen minus seen, the mean over the seeds that scored both."""
    groups = row.by_phrasing or {}
    if SEEN not in groups or UNSEEN not in groups or groups[SEEN].n_seeds != groups[UNSEEN].n_seeds:
        return "?"
    gaps = [u - s for s, u in zip(groups[SEEN].values, groups[UNSEEN].values, strict=True)]
    return f"{statistics.fmean(gaps):+.3f}"


def coverage_by_slice(results: ExperimentResults) -> dict[SliceKey, list[CellFacts]]:
    """Each slice's facts that hold phrasing coverage (the cells of results.json `cells`)."""
    slice_of = {row.cell: row.slice_key for row in results.cells}
    found: dict[SliceKey, list[CellFacts]] = {}
    for fact in results.facts:
        if fact.phrasings and fact.cell in slice_of:
            found.setdefault(slice_of[fact.cell], []).append(fact)
    return found


def trained_text(facts: list[CellFacts], group: str) -> str:
    """Items of the group whose phrasing the cells trained on, summed over the slice's cells."""
    counts = [fact.phrasings[group] for fact in facts if fact.phrasings and group in fact.phrasings]
    if not counts:
        return "-"
    trained, items = sum(c.trained for c in counts), sum(c.items for c in counts)
    return f"{trained}/{items} ({trained / items:.0%})" if items else "-"


def phrasing_table(results: ExperimentResults, index: ResultIndex, metric: str) -> Table | None:
    """One row per slice whose `metric` was scored per phrasing group; None when none was."""
    rows = [
        row for row in results.summary if row.metric == metric and row.by_phrasing and SEEN in row.by_phrasing
    ]
    if not rows:
        return None
    coverage = coverage_by_slice(results)
    variants = any(row.variant for row in rows)
    header = ["size", "method", f"{metric}: seen phrasings", "unseen phrasings", "unseen - seen (seed mean)"]
    header += ["seen items trained on", "unseen items trained on"]
    body = []
    for row in sorted(rows, key=lambda r: series_order(index, r)):
        planned = len(index.planned.get(row.slice_key, []))
        groups = row.by_phrasing or {}
        line = [
            str(row.task_size),
            method_label(row.method, row.ratio),
            group_text(groups[SEEN], planned),
            group_text(groups[UNSEEN], planned) if UNSEEN in groups else NOT_IN_GRID,
            seed_gap(row),
            trained_text(coverage.get(row.slice_key, []), SEEN),
            trained_text(coverage.get(row.slice_key, []), UNSEEN),
        ]
        body.append([row.variant or "-", *line] if variants else line)
    return Table(["variant", *header] if variants else header, body)


def series_order(index: ResultIndex, row: SummaryRow) -> tuple[str, int, int, float]:
    """Variant, then size, then the grid's method order, then ratio."""
    order = {method.name: i for i, method in enumerate(index.methods)}
    return (
        row.variant or "",
        -1 if row.task_size is None else row.task_size,
        order.get(row.method, len(order)),
        -1.0 if row.ratio is None else row.ratio,
    )


def measure_text(row: SummaryRow | None, planned_seeds: int) -> str:
    if row is None:
        return NOT_MEASURED
    seeds = f"{row.n_seeds}/{planned_seeds}" if planned_seeds > row.n_seeds else str(row.n_seeds)
    ci = "" if row.ci_low is None or row.n_seeds < 2 else f" [{row.ci_low:.3f}, {row.ci_high:.3f}]"
    return f"{row.mean:.3f}{ci} ({seeds} {'seed' if seeds == '1' else 'seeds'}, n={row.n_eval})"


def measures_table(index: ResultIndex) -> Table | None:
    """One row per planned slice: each per-cell measurement's mean over seeds (t-interval with 2+ seeds);
    None when no cell was measured."""
    if not any(key[-1] in MEASURES for key in index.summary):
        return None
    header = ["size", "method", *[MEASURE_TITLES[m] for m in MEASURES]]
    variants = len(index.variants()) > 1
    body = []
    for variant in index.variants():
        for size in index.sizes():
            for method, ratio in index.series(variant):
                key = (variant, method, size, ratio)
                if key not in index.planned:
                    continue
                planned = len(index.planned[key])
                cells = [measure_text(index.row(key, m), planned) for m in MEASURES]
                line = [str(size), method_label(method, ratio), *cells]
                body.append([variant or "-", *line] if variants else line)
    return Table(["variant", *header] if variants else header, body)


def phrasing_facts_text(fact: CellFacts) -> str:
    """A facts-table cell: per group, items whose phrasing the cell trained on."""
    if not fact.phrasings:
        return "-"
    return "; ".join(
        f"{group} {count.trained}/{count.items} ({count.phrasings} phrasings)"
        for group, count in fact.phrasings.items()
    )


def measures_note(figure_3: bool) -> str:
    """The paragraph under the measurements table."""
    figure = " Figure 3 below plots the held-out task loss against the diverse ratio." if figure_3 else ""
    return (
        "Per cell, after training (experiment.cell_probes; stored in each run directory's probes/): the "
        "pooled per-token loss of the eval examples' reference answers as the method evaluated them; and "
        f"{len(GENERAL_QUESTIONS)} ordinary questions with known answers (probe.general, the demo's set), "
        f"asked with no format token or instruction, greedy, {ANSWER_TOKENS} new tokens: the share answered "
        "in the task's JSON format anyway (format "
        "leakage, lower is better) and the share naming the known fact. Mean over seeds, with the t-interval "
        f"over seeds for 2+ seeds. Not measured: no up-to-date result in the run directory, or (held-out "
        "loss) no eval example keeps an answer token within train.max_length; its probes/heldout_loss.json "
        f"says why.{figure}"
    )
