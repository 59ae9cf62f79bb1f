"""The report's tables, built from the typed records, in the paper's layouts: Table 1 L2 per block
(probes), Table 2 metric vs task size, Table 3 translation, Table 4 ablations (the paper's four rows).

Every number is "mean [95% CI] (seeds, n eval)"; a format score also carries the slice's truncated share,
flagged when a cell's is over 5%. A cell that was planned but has no result reads "missing"; a combination
the grid never had reads "not in grid". Nothing is filled in from elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from delia.experiment.facts import TRUNCATED_FLAG, flagged
from delia.experiment.records import (
    Cell,
    CellRow,
    ExperimentResults,
    MethodRow,
    ProbeRow,
    ProbesSummary,
    SliceKey,
    SummaryRow,
)
from delia.experiment.search_records import RecheckReport, SearchResult
from delia.experiment.spec import Headline

TRANSLATION_METRICS = ("chrf++", "bleu")
FORMAT_METRICS = ("json_format", "strict_json")  # scores an answer cut off by the token budget fails
MISSING = "missing"
NOT_IN_GRID = "not in grid"
# The paper's ablation rows: (title, delia.diverse, delia.diversify).
ABLATIONS = (
    ("DELIA", True, True),
    ("w/o diverse", False, True),
    ("w/o diversify", True, False),
    ("w/o all", False, False),
)
LANDMARKS = ("first", "middle", "last")
Series = tuple[str, float | None]  # (method label, ratio)


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


def fmt_number(metric: str, value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:.1f}" if metric in TRANSLATION_METRICS else f"{value:.3f}"


def fmt_summary(row: SummaryRow, planned_seeds: int | None = None) -> str:
    metric = row.metric
    seeds = f"{row.n_seeds}/{planned_seeds}" if planned_seeds and planned_seeds > row.n_seeds else row.n_seeds
    ci = f"[{fmt_number(metric, row.ci_low)}, {fmt_number(metric, row.ci_high)}]"
    unit = "seed, bootstrap" if seeds == 1 else "seeds"  # "1/3" (seeds missing) stays plural
    return f"{fmt_number(metric, row.mean)} {ci} ({seeds} {unit}, n={row.n_eval})"


def ratio_text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:g}"


def method_label(method: str, ratio: float | None) -> str:
    return method if ratio is None else f"{method} (r={ratio:g})"


def slice_key(cell: Cell) -> SliceKey:
    return (cell.variant, cell.method, cell.task_size, cell.ratio)


class ResultIndex:
    """Summary rows and planned seeds by slice, for the table builders."""

    def __init__(
        self,
        summary: list[SummaryRow],
        planned: list[Cell],
        methods: list[MethodRow],
        metrics: list[str],
        headline: Headline,
        cells: list[CellRow] | None = None,
    ) -> None:
        self.summary = {(*row.slice_key, row.metric): row for row in summary}
        self.truncated = truncated_shares(cells or [])
        self.planned: dict[SliceKey, list[int]] = {}
        for cell in planned:
            self.planned.setdefault(slice_key(cell), []).append(cell.seed)
        self.methods = methods
        self.metrics = metrics
        self.headline_spec = headline

    @classmethod
    def of(cls, results: ExperimentResults) -> ResultIndex:
        spec = results.spec
        return cls(
            results.summary, results.grid.planned, results.methods, spec.metrics, spec.headline, results.cells
        )

    def row(self, key: SliceKey, metric: str) -> SummaryRow | None:
        return self.summary.get((*key, metric))

    def text(self, key: SliceKey, metric: str) -> str:
        row = self.row(key, metric)
        if row is not None:
            note = self.truncation_note(key) if metric in FORMAT_METRICS else ""
            return fmt_summary(row, len(self.planned.get(key, []))) + note
        return MISSING if key in self.planned else NOT_IN_GRID

    def truncation_note(self, key: SliceKey) -> str:
        """ "; truncated 0.139" (mean over the slice's cells), flagged when any cell is over the flag."""
        shares = self.truncated.get(key)
        if not shares:
            return ""
        over = sum(flagged(share) for share in shares)
        flag = f" **{over}/{len(shares)} cells > {TRUNCATED_FLAG:.0%}**" if over else ""
        return f"; truncated {sum(shares) / len(shares):.3f}{flag}"

    def series(self, variant: str | None = None) -> list[Series]:
        """(method, ratio) pairs planned for a variant, in the grid's method order then by ratio."""
        pairs = {(key[1], key[3]) for key in self.planned if key[0] == variant}
        order = {method.name: i for i, method in enumerate(self.methods)}
        return sorted(pairs, key=lambda p: (order.get(p[0], len(order)), -1 if p[1] is None else p[1]))

    def sizes(self) -> list[int | None]:
        return sorted({key[2] for key in self.planned}, key=lambda s: -1 if s is None else s)

    def variants(self) -> list[str | None]:
        return sorted({key[0] for key in self.planned}, key=lambda v: v or "")

    def headline(self) -> tuple[int | None, float | None]:
        sizes = [s for s in self.sizes() if s is not None]
        ratios = [key[3] for key in self.planned if key[3] is not None]
        size = self.headline_spec.task_size
        ratio = self.headline_spec.ratio
        return (
            size if size is not None else max(sizes, default=None),
            ratio if ratio is not None else max(ratios, default=None),
        )

    def headline_metric(self) -> str:
        return self.headline_spec.metric or self.metrics[0]


def truncated_shares(cells: list[CellRow]) -> dict[SliceKey, list[float]]:
    """Each slice's per-cell truncated shares: a row's `truncated`, or (in a file written before that field)
    the cell's row of the `truncated` metric."""
    per_cell: dict[str, tuple[SliceKey, float]] = {}
    for row in cells:
        if row.truncated is not None:
            per_cell[row.cell] = (row.slice_key, row.truncated)
        elif row.metric == "truncated":
            per_cell.setdefault(row.cell, (row.slice_key, row.value))
    shares: dict[SliceKey, list[float]] = {}
    for key, share in per_cell.values():
        shares.setdefault(key, []).append(share)
    return shares


def table_by_size(index: ResultIndex, metric: str, variant: str | None = None) -> Table:
    sizes = index.sizes()
    header = ["method", *[f"n={s if s is not None else 'all'}" for s in sizes]]
    rows = [
        [method_label(m, r), *[index.text((variant, m, s, r), metric) for s in sizes]]
        for m, r in index.series(variant)
    ]
    return Table(header, rows)


def table_translation(index: ResultIndex) -> Table | None:
    metrics = [m for m in TRANSLATION_METRICS if m in index.metrics]
    if not metrics:
        return None
    size, _ = index.headline()
    variants = index.variants()
    header = ["method", *[f"{v or 'task'} {m}" for v in variants for m in metrics]]
    pairs = list(dict.fromkeys(p for v in variants for p in index.series(v)))
    rows = [
        [method_label(m, r), *[index.text((v, m, size, r), x) for v in variants for x in metrics]]
        for m, r in pairs
    ]
    return Table(header, rows)


def table_ablations(index: ResultIndex) -> Table | None:
    entries = [m for m in index.methods if m.method == "delia"]
    if len(entries) < 2:
        return None
    size, ratio = index.headline()
    header = ["variant", "entry", "ratio", *index.metrics]
    rows = []
    for title, diverse, diversify in ABLATIONS:
        matching = [e for e in entries if (e.delia.diverse, e.delia.diversify) == (diverse, diversify)]
        if not matching:
            rows.append([title, NOT_IN_GRID, "-", *[NOT_IN_GRID for _ in index.metrics]])
        for entry in matching:
            used = next((r for m, r in index.series() if m == entry.name and r in (None, ratio)), ratio)
            key = (None, entry.name, size, used)
            rows.append([title, entry.name, ratio_text(used), *[index.text(key, m) for m in index.metrics]])
    return Table(header, rows)


def table_repr(probes: ProbesSummary | None) -> Table | None:
    rows_in = probes.repr if probes is not None else []
    if not rows_in:
        return None
    keywords = list(dict.fromkeys(r.keyword for r in rows_in))
    header = ["method", *[f"{k} @ {w}" for k in keywords for w in LANDMARKS]]
    rows = []
    for method in dict.fromkeys(r.method for r in rows_in):
        added = any(r.token_added for r in rows_in if r.method == method)
        line = [f"{method} (token added for the probe)" if added else method]
        for keyword in keywords:
            found = [r for r in rows_in if r.method == method and r.keyword == keyword]
            if found and not found[0].applicable:
                line += [f"n/a ({found[0].reason})"] + ["n/a"] * 2
                continue
            by_where = {r.where: r for r in found}
            line += [probe_cell(by_where.get(w), 2) for w in LANDMARKS]
        rows.append(line)
    return Table(header, rows)


def probe_cell(row: ProbeRow | None, digits: int) -> str:
    if row is None:
        return MISSING
    ci = "" if row.ci_low is None else f" [{row.ci_low:.{digits}f}, {row.ci_high:.{digits}f}]"
    block = f", block {row.block}" if row.block is not None else ""
    seeds = "1 seed" if row.n_seeds == 1 else f"{row.n_seeds} seeds"
    return f"{row.mean:.{digits}f}{ci} ({seeds}{block})"


def table_divergent(probes: ProbesSummary | None) -> Table | None:
    rows_in = probes.divergent if probes is not None else []
    if not rows_in:
        return None
    stats = list(dict.fromkeys(r.stat for r in rows_in))
    rows = []
    for method in dict.fromkeys(r.method for r in rows_in):
        found = {r.stat: r for r in rows_in if r.method == method}
        n = next(iter(found.values())).n_prompts
        rows.append([method, str(n), *[probe_cell(found.get(s), 3) for s in stats]])
    return Table(["method", "prompts", *[str(s) for s in stats]], rows)


def headline_comparison(index: ResultIndex) -> list[str]:
    """DELIA against every other method on the headline slice, per variant, stated plainly (CI overlap)."""
    return [line for variant in index.variants() for line in compare_in_variant(index, variant)]


def compare_in_variant(index: ResultIndex, variant: str | None) -> list[str]:
    metric = index.headline_metric()
    size, ratio = index.headline()
    where = f"{variant}: " if variant is not None else ""
    delia = index.row((variant, "delia", size, ratio), metric)
    if delia is None:
        return [
            f"{where}no finished `delia` cells at task size {size}, ratio {ratio_text(ratio)}: no comparison."
        ]
    lines = []
    for method, r in index.series(variant):
        other = index.row((variant, method, size, r), metric)
        if method == "delia" or other is None or (r is not None and r != ratio):
            continue
        diff = delia.mean - other.mean
        overlap = not (delia.ci_low > other.ci_high or other.ci_low > delia.ci_high)
        verdict = "CIs overlap: not a clear difference" if overlap else "CIs do not overlap"
        word = "higher" if diff > 0 else "lower" if diff < 0 else "equal"
        lines.append(
            f"{where}delia (r={ratio_text(ratio)}) vs {method_label(method, r)}: "
            f"{fmt_number(metric, delia.mean)} vs {fmt_number(metric, other.mean)}, "
            f"DELIA {word} by {fmt_number(metric, abs(diff))} ({verdict})"
        )
    return lines


def cost_table(cells: list[CellRow]) -> Table:
    per_cell: dict[str, CellRow] = {}
    for row in cells:
        per_cell.setdefault(row.cell, row)
    by_method: dict[str, list[CellRow]] = {}
    for row in per_cell.values():
        by_method.setdefault(method_label(row.method, row.ratio), []).append(row)
    rows = []
    for label, members in by_method.items():
        steps = [m.train_steps for m in members if m.train_steps is not None]
        # Older results.json files have only the last invocation's wall time.
        walls = [m.compute_seconds or m.wall_seconds for m in members if m.wall_seconds]
        rows.append(
            [
                label,
                str(len(members)),
                f"{sum(steps) / len(steps):.0f}" if steps else "-",
                f"{sum(walls) / len(walls) / 60:.1f}" if walls else "-",
            ]
        )
    header = ["method", "finished cells", "mean optimizer steps", "mean min per cell (sum of its stages)"]
    return Table(header, rows)


def summary_table(summary: list[SummaryRow]) -> Table:
    header = ["variant", "method", "size", "ratio", "metric", "mean [95% CI] (seeds, n)", "seed values", "CI"]
    header.append("truncated per seed")
    rows = [
        [
            str(r.variant or "-"),
            r.method,
            str(r.task_size),
            ratio_text(r.ratio),
            r.metric,
            fmt_summary(r),
            ", ".join(fmt_number(r.metric, v) for v in r.values),
            r.ci_method,
            truncated_text(r.truncated),
        ]
        for r in summary
    ]
    return Table(header, rows)


def truncated_text(shares: list[float | None] | None) -> str:
    """Per-seed truncated shares, a flagged one in bold; "-" in a file written before they were kept."""
    if shares is None:
        return "-"
    return ", ".join("?" if s is None else f"**{s:.3f}**" if flagged(s) else f"{s:.3f}" for s in shares)


def recheck_table(recheck: RecheckReport) -> Table:
    header = ["metric", "stored", "rerun", "difference"]
    header += ["summary 95% CI", "inside it", "cell bootstrap CI", "inside it"]
    rows = []
    for check in recheck.checks:
        metric = check.metric
        rows.append(
            [
                metric,
                fmt_number(metric, check.stored),
                fmt_number(metric, check.rerun),
                fmt_number(metric, check.difference),
                f"[{fmt_number(metric, check.summary_ci[0])}, {fmt_number(metric, check.summary_ci[1])}]",
                "yes" if check.within_summary_ci else "no",
                f"[{fmt_number(metric, check.cell_bootstrap_ci[0])}, "
                f"{fmt_number(metric, check.cell_bootstrap_ci[1])}]",
                "yes" if check.within_cell_ci else "no",
            ]
        )
    return Table(header, rows)


def search_table(search: SearchResult) -> Table:
    header = ["order", "ratio", search.metric, "95% CI", "seeds", "n eval", "steps"]
    rows = [
        [
            str(p.order),
            str(p.ratio),
            f"{p.value:.3f}",
            f"[{p.ci_low:.3f}, {p.ci_high:.3f}]" if p.ci_low is not None else "-",
            unknown_if_none(p.n_seeds),
            unknown_if_none(p.n_eval),
            unknown_if_none(p.train_steps),
        ]
        for p in search.points
    ]
    return Table(header, rows)


def unknown_if_none(value: object) -> str:
    """A search point's optional field as text; "?" where a point lacks it."""
    return "?" if value is None else str(value)
