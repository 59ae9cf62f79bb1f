"""The report's lead: DELIA minus its controls, paired over the same eval items (results.json `paired`),
and the per-cell facts read from the run directories (results.json `facts`), with truncation flags.

Files written before these fields load with them empty; the report then says they were not recorded
rather than filling anything in.
"""

from __future__ import annotations

from delia.experiment.facts import TRUNCATED_FLAG, flagged
from delia.experiment.paired import SENTENCE, paired_metric
from delia.experiment.records import CellFacts, ExperimentResults, PairedRow, RewriteCounts
from delia.experiment.report.effects import group_text, phrasing_facts_text
from delia.experiment.report.tables import ResultIndex, Table, fmt_number, fmt_summary, ratio_text

NOT_RECORDED = (
    "Not recorded: this results.json was written before {what} were kept. Rerun "
    "`delia experiment EXPERIMENT.yaml --no-run` with the run directories present to compute them."
)


def paired_table(results: ExperimentResults, index: ResultIndex) -> Table | None:
    """One row per (slice, control, metric), the headline metric first; the per-method t-intervals over
    seeds as the last, secondary column."""
    if not results.paired:
        return None
    headline = paired_metric(index.headline_metric())
    rows = sorted(
        results.paired,
        key=lambda r: (r.metric != headline, r.metric, r.phrasing or "", r.variant or "", r.control),
    )
    variants = any(r.variant for r in rows)
    header = ["comparison", "size", "ratio", "metric", "difference [95% CI, seeds x items]", "reading"]
    header += ["items-only CI", "seeds", "items", "per-method means [t over seeds]"]
    if variants:
        header.insert(0, "variant")
    body = []
    for row in rows:
        line = [
            f"delia - {row.control}",
            str(row.task_size),
            ratio_text(row.ratio),
            row.metric if row.phrasing is None else f"{row.metric} ({row.phrasing} phrasings)",
            difference_text(row),
            reading(row),
            f"[{signed(row.items_ci_low)}, {signed(row.items_ci_high)}]",
            ", ".join(map(str, row.seeds)),
            str(row.n_items),
            method_means(row, index),
        ]
        body.append([row.variant or "-", *line] if variants else line)
    return Table(header, body)


def signed(value: float) -> str:
    return f"{value:+.3f}"


def difference_text(row: PairedRow) -> str:
    return f"**{signed(row.difference)}** [{signed(row.ci_low)}, {signed(row.ci_high)}]"


def reading(row: PairedRow) -> str:
    """What the interval says, with the seed caveat when seeds could not be resampled."""
    if row.ci_low > 0:
        text = "DELIA higher (interval above 0)"
    elif row.ci_high < 0:
        text = "DELIA lower (interval below 0)"
    else:
        text = "no clear difference (interval contains 0)"
    return text + ("; 1 seed: seed spread not covered" if row.n_seeds == 1 else "")


def method_means(row: PairedRow, index: ResultIndex) -> str:
    """Each side's summary row (mean and t-interval over its seeds), as the tables print it; for a corpus
    metric's sentence-level pairing, the two means of sentence scores (no summary row holds them)."""
    if row.metric.startswith(SENTENCE):
        return f"delia {row.delia_mean:.3f}; {row.control} {row.control_mean:.3f} (means of sentence scores)"
    texts = []
    for label, ratio in (("delia", row.ratio), (row.control, row.control_ratio)):
        summary = index.row((row.variant, label, row.task_size, ratio), row.metric)
        group = (summary.by_phrasing or {}).get(row.phrasing or "") if summary else None
        if row.phrasing is not None:
            texts.append(f"{label} {group_text(group, 0) if group else '?'}")
        else:
            texts.append(f"{label} {fmt_summary(summary) if summary else '?'}")
    return "; ".join(texts)


def facts_table(results: ExperimentResults) -> Table | None:
    if not results.facts:
        return None
    header = ["cell", "diversified", "rewrites accepted", "optimizer steps", "truncated", "flag"]
    rows = [
        [
            f"`{fact.cell}`",
            diversified_text(fact),
            rewrites_text(fact.rewrites),
            "?" if fact.train_steps is None else str(fact.train_steps),
            fmt_number("truncated", fact.truncated),
            f"**> {TRUNCATED_FLAG:.0%} truncated**" if flagged(fact.truncated) else "",
        ]
        for fact in results.facts
    ]
    if any(fact.phrasings for fact in results.facts):  # a column only where eval items carry groups
        header.append("eval items whose phrasing it trained on")
        for row, fact in zip(rows, results.facts, strict=True):
            row.append(phrasing_facts_text(fact))
    return Table(header, rows)


def diversified_text(fact: CellFacts) -> str:
    if fact.plan_diversify is None:
        return "? (no plan.json)"
    if fact.diversified:
        return "yes"
    if fact.plan_diversify:
        return "no (the plan asked for it; no diversify stage)"
    return "no (plan: diversify false)"


def rewrites_text(counts: RewriteCounts | None) -> str:
    if counts is None:
        return "-"
    accepted = f"{unknown(counts.accepted)}/{unknown(counts.requested)}"
    split = f" (llm {unknown(counts.accepted_llm)}, rule {unknown(counts.accepted_rule)})"
    examples = f"; task examples {unknown(counts.examples_in)} -> {unknown(counts.examples_out)}"
    return f"{accepted}{split}; {unknown(counts.fallbacks)} without one{examples}"


def unknown(value: int | None) -> str:
    return "?" if value is None else str(value)


def truncation_flags(results: ExperimentResults) -> list[str]:
    """One line per cell whose truncated share is over the flag, from the facts (or the cell rows of a
    file written before the facts were kept)."""
    shares = {fact.cell: fact.truncated for fact in results.facts}
    for row in results.cells:
        if row.cell not in shares:
            shares[row.cell] = row.truncated if row.truncated is not None else None
        if shares[row.cell] is None and row.metric == "truncated":
            shares[row.cell] = row.value
    return [
        f"`{cell}`: {share:.1%} of its answers truncated (over {TRUNCATED_FLAG:.0%}); "
        "its scores measure the token budget as well as the model"
        for cell, share in shares.items()
        if flagged(share)
    ]
