"""`delia report DIR`: report.md and report.html from results.json (+ probes/summary.json, search.json).

Tables in the paper's layouts: Table 1 L2 per block (probes), Table 2 metric vs task size, Table 3
translation, Table 4 ablations. Every number is "mean [95% CI] (seeds, n eval)". A cell that was planned
but has no result reads "missing"; a combination the grid never had reads "not in grid". Nothing is filled
in from elsewhere.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from delia.core.errors import DeliaError
from delia.experiment.document import Document
from delia.experiment.plots import plot_repr_curves, plot_search, plot_vs_ratio, plot_vs_size

TRANSLATION_METRICS = ("chrf++", "bleu")
MISSING = "missing"
NOT_IN_GRID = "not in grid"
ABLATIONS = (
    ("DELIA", True, True),
    ("w/o diverse", False, True),
    ("w/o diversify", True, False),
    ("w/o all", False, False),
)
Key = tuple[Any, ...]


def load_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def fmt_number(metric: str, value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:.1f}" if metric in TRANSLATION_METRICS else f"{value:.3f}"


def fmt_summary(row: dict[str, Any], planned_seeds: int | None = None) -> str:
    metric = row["metric"]
    seeds = (
        f"{row['n_seeds']}/{planned_seeds}"
        if planned_seeds and planned_seeds > row["n_seeds"]
        else row["n_seeds"]
    )
    ci = f"[{fmt_number(metric, row['ci_low'])}, {fmt_number(metric, row['ci_high'])}]"
    unit = "seed, bootstrap" if seeds == 1 else "seeds"  # "1/3" (seeds missing) stays plural
    return f"{fmt_number(metric, row['mean'])} {ci} ({seeds} {unit}, n={row['n_eval']})"


def ratio_text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:g}"


class Results:
    """Indexes over results.json for the table builders."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.summary = {(*self.key(r), r["metric"]): r for r in data["summary"]}
        self.planned: dict[Key, list[int]] = {}
        for cell in data["grid"]["planned"]:
            self.planned.setdefault(self.key(cell), []).append(cell["seed"])
        self.method_order = [m["name"] for m in data.get("methods", [])]
        self.metrics = data["spec"]["metrics"]

    @staticmethod
    def key(row: dict[str, Any]) -> Key:
        return (row.get("variant"), row["method"], row["task_size"], row["ratio"])

    def text(self, key: Key, metric: str) -> str:
        row = self.summary.get((*key, metric))
        if row is not None:
            return fmt_summary(row, len(self.planned.get(key, [])))
        return MISSING if key in self.planned else NOT_IN_GRID

    def series(self, variant: Any = None) -> list[tuple[str, float | None]]:
        """(method, ratio) pairs planned for a variant, in the grid's method order then by ratio."""
        pairs = {(k[1], k[3]) for k in self.planned if k[0] == variant}
        order = {m: i for i, m in enumerate(self.method_order)}
        return sorted(pairs, key=lambda p: (order.get(p[0], len(order)), -1 if p[1] is None else p[1]))

    def sizes(self) -> list[int | None]:
        return sorted({k[2] for k in self.planned}, key=lambda s: -1 if s is None else s)

    def variants(self) -> list[Any]:
        return sorted({k[0] for k in self.planned}, key=lambda v: v or "")

    def headline(self) -> tuple[int | None, float | None]:
        spec = self.data["spec"]["headline"]
        sizes = [s for s in self.sizes() if s is not None]
        ratios = [k[3] for k in self.planned if k[3] is not None]
        size = spec["task_size"] if spec["task_size"] is not None else max(sizes, default=None)
        ratio = spec["ratio"] if spec["ratio"] is not None else max(ratios, default=None)
        return size, ratio

    def headline_metric(self) -> str:
        return self.data["spec"]["headline"]["metric"] or self.metrics[0]


def method_label(method: str, ratio: float | None) -> str:
    return method if ratio is None else f"{method} (r={ratio:g})"


def table_by_size(doc: Document, res: Results, metric: str, variant: Any = None) -> None:
    sizes = res.sizes()
    header = ["method", *[f"n={s if s is not None else 'all'}" for s in sizes]]
    rows = [
        [method_label(m, r), *[res.text((variant, m, s, r), metric) for s in sizes]]
        for m, r in res.series(variant)
    ]
    doc.table(header, rows)


def table_translation(doc: Document, res: Results) -> bool:
    metrics = [m for m in TRANSLATION_METRICS if m in res.metrics]
    if not metrics:
        return False
    size, _ = res.headline()
    variants = res.variants()
    header = ["method", *[f"{v or 'task'} {m}" for v in variants for m in metrics]]
    pairs = list(dict.fromkeys(p for v in variants for p in res.series(v)))
    rows = [
        [method_label(m, r), *[res.text((v, m, size, r), x) for v in variants for x in metrics]]
        for m, r in pairs
    ]
    doc.table(header, rows)
    return True


def table_ablations(doc: Document, res: Results) -> bool:
    entries = [m for m in res.data.get("methods", []) if m["method"] == "delia"]
    if len(entries) < 2:
        return False
    size, ratio = res.headline()
    header = ["variant", "entry", "ratio", *res.metrics]
    rows = []
    for title, diverse, diversify in ABLATIONS:
        matching = [
            e for e in entries if (e["delia"]["diverse"], e["delia"]["diversify"]) == (diverse, diversify)
        ]
        if not matching:
            rows.append([title, NOT_IN_GRID, "-", *[NOT_IN_GRID for _ in res.metrics]])
        for entry in matching:
            used = next((r for m, r in res.series() if m == entry["name"] and r in (None, ratio)), ratio)
            key = (None, entry["name"], size, used)
            rows.append([title, entry["name"], ratio_text(used), *[res.text(key, m) for m in res.metrics]])
    doc.table(header, rows)
    return True


def table_repr(doc: Document, probes: dict[str, Any] | None) -> bool:
    rows_in = (probes or {}).get("repr") or []
    if not rows_in:
        return False
    keywords = list(dict.fromkeys(r["keyword"] for r in rows_in))
    header = ["method", *[f"{k} @ {w}" for k in keywords for w in ("first", "middle", "last")]]
    rows = []
    for method in dict.fromkeys(r["method"] for r in rows_in):
        line = [method]
        for keyword in keywords:
            found = [r for r in rows_in if r["method"] == method and r["keyword"] == keyword]
            if found and not found[0]["applicable"]:
                line += [f"n/a ({found[0]['reason']})"] + ["n/a"] * 2
                continue
            by_where = {r["where"]: r for r in found}
            line += [_probe_cell(by_where.get(w), 2) for w in ("first", "middle", "last")]
        rows.append(line)
    doc.table(header, rows)
    return True


def _probe_cell(row: dict[str, Any] | None, digits: int) -> str:
    if row is None:
        return MISSING
    ci = "" if row["ci_low"] is None else f" [{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}]"
    block = f", block {row['block']}" if "block" in row else ""
    seeds = "1 seed" if row["n_seeds"] == 1 else f"{row['n_seeds']} seeds"
    return f"{row['mean']:.{digits}f}{ci} ({seeds}{block})"


def table_divergent(doc: Document, probes: dict[str, Any] | None) -> bool:
    rows_in = (probes or {}).get("divergent") or []
    if not rows_in:
        return False
    stats = list(dict.fromkeys(r["stat"] for r in rows_in))
    rows = []
    for method in dict.fromkeys(r["method"] for r in rows_in):
        found = {r["stat"]: r for r in rows_in if r["method"] == method}
        n = next(iter(found.values()))["n_prompts"]
        rows.append([method, str(n), *[_probe_cell(found.get(s), 3) for s in stats]])
    doc.table(["method", "prompts", *stats], rows)
    return True


def headline_comparison(res: Results) -> list[str]:
    """DELIA against every other method on the headline slice, per variant, stated plainly (CI overlap)."""
    return [line for variant in res.variants() for line in _compare_in_variant(res, variant)]


def _compare_in_variant(res: Results, variant: Any) -> list[str]:
    metric = res.headline_metric()
    size, ratio = res.headline()
    where = f"{variant}: " if variant is not None else ""
    delia = res.summary.get((variant, "delia", size, ratio, metric))
    if delia is None:
        slice_ = f"task size {size}, ratio {ratio_text(ratio)}"
        return [f"{where}no finished `delia` cells at {slice_}: no comparison."]
    lines = []
    for method, r in res.series(variant):
        other = res.summary.get((variant, method, size, r, metric))
        if method == "delia" or other is None or (r is not None and r != ratio):
            continue
        diff = delia["mean"] - other["mean"]
        overlap = not (delia["ci_low"] > other["ci_high"] or other["ci_low"] > delia["ci_high"])
        verdict = "CIs overlap: not a clear difference" if overlap else "CIs do not overlap"
        word = "higher" if diff > 0 else "lower" if diff < 0 else "equal"
        lines.append(
            f"{where}delia (r={ratio_text(ratio)}) vs {method_label(method, r)}: "
            f"{fmt_number(metric, delia['mean'])} vs {fmt_number(metric, other['mean'])}, "
            f"DELIA {word} by {fmt_number(metric, abs(diff))} ({verdict})"
        )
    return lines


def coverage(doc: Document, data: dict[str, Any]) -> None:
    planned = data["grid"]["planned"]
    finished = {row["cell"] for row in data["cells"]}
    doc.paragraph(
        f"Planned cells: {len(planned)}; finished: {len(finished)}; missing: {len(data['missing'])}; "
        f"failed: {len(data['failed'])}; "
        f"skipped (the method rejects the ratio): {len(data['grid']['skipped'])}."
    )
    if data["missing"]:
        shown = data["missing"][:60]
        more = f" ... and {len(data['missing']) - 60} more" if len(data["missing"]) > 60 else ""
        doc.paragraph("Missing cells (planned, no result yet): " + ", ".join(f"`{m}`" for m in shown) + more)
    doc.bullets([f"failed `{f['name']}`: {f['error']}" for f in data["failed"]])
    doc.bullets([f"skipped `{s['name']}`: {s['reason']}" for s in data["grid"]["skipped"]])


def cost_table(doc: Document, data: dict[str, Any]) -> None:
    per_cell: dict[str, dict[str, Any]] = {}
    for row in data["cells"]:
        per_cell.setdefault(row["cell"], row)
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in per_cell.values():
        by_method.setdefault(method_label(row["method"], row["ratio"]), []).append(row)
    rows = []
    for label, members in by_method.items():
        steps = [m["train_steps"] for m in members if m["train_steps"] is not None]
        # Older results.json files have only the last invocation's wall time.
        walls = [m.get("compute_seconds") or m["wall_seconds"] for m in members if m.get("wall_seconds")]
        rows.append(
            [
                label,
                str(len(members)),
                f"{sum(steps) / len(steps):.0f}" if steps else "-",
                f"{sum(walls) / len(walls) / 60:.1f}" if walls else "-",
            ]
        )
    header = ["method", "finished cells", "mean optimizer steps", "mean min per cell (sum of its stages)"]
    doc.table(header, rows)


def setup(doc: Document, data: dict[str, Any], out: Path) -> None:
    spec = data["spec"]
    source = spec.get("source") or "EXPERIMENT.yaml"
    doc.heading("How to regenerate")
    lines = [f"delia experiment {source}", f"delia report {out}"]
    if (out / "search.json").exists():
        lines.insert(1, f"delia experiment {source} --search ratio")
    doc.code("\n".join(lines))
    doc.paragraph(
        f"Finished cells are skipped, so the first command only runs what is missing. Last invocation: "
        f"`{data['command']}` at {data['written_at']}."
    )
    doc.heading("Setup")
    grid = spec["grid"]
    base = spec["base"] if isinstance(spec["base"], str) else "(inline)"
    doc.bullets(
        [
            f"base run config: `{base}`; overrides for every cell: "
            + (", ".join(f"`{s}`" for s in spec["set"]) or "none"),
            "methods: "
            + ", ".join(
                f"`{m['name']}`" + (f" ({', '.join(m['set'])})" if m["set"] else "")
                for m in data.get("methods", [])
            ),
            f"task sizes: {grid['task_sizes']}; diverse ratios: {grid['ratios']}; seeds: {grid['seeds']}"
            + (f"; variants: {', '.join(grid['variants'])}" if grid["variants"] else ""),
            "methods that ignore the ratio run once per (size, seed) and show ratio `-`",
            f"95% CIs: {data['ci']['over_seeds']} (not clipped to the metric's range) with 2+ seeds; "
            f"with 1 seed, the cell's {data['ci']['single_seed']}",
            "json_format: the answer's earliest {...} parses (JSON or Python literal) to a dict with the "
            "required keys; label_accuracy: its label equals the reference (docs/metrics.md)",
        ]
    )
    if spec.get("notes"):
        doc.heading("What was cut, and why")
        doc.bullets(spec["notes"])


def write_report(out: Path) -> tuple[Path, Path]:
    """Build report.md and report.html in `out` from the files an experiment wrote there."""
    data = load_json(out / "results.json")
    search = load_json(out / "search.json")
    if data is None and search is None:
        raise DeliaError(f"{out}: no results.json or search.json (run `delia experiment CONFIG` first)")
    if data is None:
        return write_search_report(out, search)
    res = Results(data)
    probes = load_json(out / "probes" / "summary.json")
    plots = out / "plots"
    doc = Document(f"Experiment `{data['experiment']}`")
    setup(doc, data, out)
    doc.heading("Coverage")
    coverage(doc, data)
    size, ratio = res.headline()
    metric = res.headline_metric()
    doc.heading("Headline comparison")
    doc.paragraph(f"{metric} at task size {size}, ratio {ratio_text(ratio)} (95% CIs as in the tables):")
    doc.bullets(headline_comparison(res))
    doc.heading("Table 1: L2 distance of <sep> to keywords per block")
    size_p = (probes or {}).get("task_size")
    doc.paragraph(
        f"`delia probe repr` on the cells at task size {size_p}, "
        f"ratio {ratio_text((probes or {}).get('ratio'))}; "
        "mean over seeds of the template-averaged L2 at the first / middle / last block."
    )
    if not table_repr(doc, probes):
        doc.paragraph("Not run (no probes/summary.json, or no trained cell with the token).")
    for variant in res.variants():
        for m in res.metrics:
            if m in TRANSLATION_METRICS:
                continue
            name = f" ({variant})" if variant else ""
            doc.heading(f"Table 2: {m} vs task size{name}")
            table_by_size(doc, res, m, variant)
    if any(m in TRANSLATION_METRICS for m in res.metrics):
        doc.heading("Table 3: translation (chrF++ and BLEU, sacreBLEU 0-100)")
        table_translation(doc, res)
    doc.heading("Table 4: ablations")
    doc.paragraph(f"Task size {size}; DELIA and w/o diversify at ratio {ratio_text(ratio)}.")
    if not table_ablations(doc, res):
        doc.paragraph("Not run: the grid has no DELIA ablation entries.")
    if table_divergent_heading(doc, probes):
        table_divergent(doc, probes)
    doc.heading("Cost")
    cost_table(doc, data)
    figures(doc, res, probes, search, out, plots)
    if search is not None:
        search_section(doc, search, out)
    recheck = load_json(out / "recheck.json")
    if recheck is not None:
        recheck_section(doc, recheck)
    doc.heading("Every summary row")
    doc.table(
        ["variant", "method", "size", "ratio", "metric", "mean [95% CI] (seeds, n)", "seed values", "CI"],
        [
            [
                str(r.get("variant") or "-"),
                r["method"],
                str(r["task_size"]),
                ratio_text(r["ratio"]),
                r["metric"],
                fmt_summary(r),
                ", ".join(fmt_number(r["metric"], v) for v in r["values"]),
                r["ci_method"],
            ]
            for r in data["summary"]
        ],
    )
    md, page = out / "report.md", out / "report.html"
    md.write_text(doc.to_markdown(out), encoding="utf-8")
    page.write_text(doc.to_html(), encoding="utf-8")
    return md, page


def write_search_report(out: Path, search: dict[str, Any]) -> tuple[Path, Path]:
    """A report for a directory holding only a ratio search."""
    if not (out / "search.png").exists():
        plot_search(search, out / "search.png")
    doc = Document(f"Ratio search `{search['experiment']}`")
    source = search.get("source") or "EXPERIMENT.yaml"
    doc.heading("How to regenerate")
    doc.code(f"delia experiment {source} --search ratio\ndelia report {out}")
    if search.get("notes"):
        doc.heading("What was cut, and why")
        doc.bullets(search["notes"])
    search_section(doc, search, out)
    md, page = out / "report.md", out / "report.html"
    md.write_text(doc.to_markdown(out), encoding="utf-8")
    page.write_text(doc.to_html(), encoding="utf-8")
    return md, page


def table_divergent_heading(doc: Document, probes: dict[str, Any] | None) -> bool:
    if not (probes or {}).get("divergent"):
        return False
    doc.heading("State space at the first answer token (probe divergent)")
    doc.paragraph("Mean over seeds of the per-prompt means; each method on its own evaluation prompts.")
    return True


def figures(
    doc: Document,
    res: Results,
    probes: dict[str, Any] | None,
    search: dict[str, Any] | None,
    out: Path,
    plots: Path,
) -> None:
    doc.heading("Figures")
    summary = res.data["summary"]
    for metric in res.metrics:
        if len(res.sizes()) > 1 and (
            path := plot_vs_size(summary, metric, plots / f"{_slug(metric)}_vs_size.png")
        ):
            doc.image(path, f"{metric} vs task size")
        if path := plot_vs_ratio(summary, metric, plots / f"{_slug(metric)}_vs_ratio.png"):
            doc.image(path, f"{metric} vs diverse ratio")
    if probes and (path := plot_repr_curves(probes.get("repr_curves") or {}, plots / "l2_per_block.png")):
        doc.image(path, "L2 per block")
    loss_png = out / "probes" / "losscurve" / "losscurve.png"
    if loss_png.exists():
        target = plots / "task_loss_curves.png"
        plots.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(loss_png, target)
        variant = (probes or {}).get("variant")
        where = f"{variant}, " if variant is not None else ""
        doc.image(target, f"task-loss curves ({where}first probed seed, x = fraction of training)")
    if search is not None and not (out / "search.png").exists():
        plot_search(search, out / "search.png")


def recheck_section(doc: Document, recheck: dict[str, Any]) -> None:
    doc.heading("Reproducibility check")
    doc.paragraph(
        f"Cell `{recheck['cell']}` rerun from scratch "
        f"(`delia experiment CONFIG --recheck {recheck['cell']}`, "
        f"{recheck['seconds'] / 60:.1f} min, {recheck['checked_at']}):"
    )
    doc.table(
        [
            "metric",
            "stored",
            "rerun",
            "difference",
            "summary 95% CI",
            "inside it",
            "cell bootstrap CI",
            "inside it",
        ],
        [
            [
                c["metric"],
                fmt_number(c["metric"], c["stored"]),
                fmt_number(c["metric"], c["rerun"]),
                fmt_number(c["metric"], c["difference"]),
                f"[{fmt_number(c['metric'], c['summary_ci'][0])}, "
                f"{fmt_number(c['metric'], c['summary_ci'][1])}]",
                "yes" if c["within_summary_ci"] else "no",
                f"[{fmt_number(c['metric'], c['cell_bootstrap_ci'][0])}, "
                f"{fmt_number(c['metric'], c['cell_bootstrap_ci'][1])}]",
                "yes" if c["within_cell_ci"] else "no",
            ]
            for c in recheck["checks"]
        ],
    )


def search_section(doc: Document, search: dict[str, Any], out: Path) -> None:
    doc.heading("Ratio search")
    best = search["argmax"]
    doc.paragraph(
        f"{search['algorithm']}; method `{search['method']}`, task size {search['task_size']}, seeds "
        f"{search['seeds']}, validation metric `{search['metric']}`, range [{search['settings']['lo']:g}, "
        f"{search['settings']['hi']:g}], {search['evaluations']} evaluations. "
        f"Best ratio: **{best['ratio']}** "
        f"({search['metric']} {best['value']:.3f})."
    )
    doc.table(
        ["order", "ratio", search["metric"], "95% CI", "seeds", "n eval", "steps"],
        [
            [
                str(p["order"]),
                str(p["ratio"]),
                f"{p['value']:.3f}",
                f"[{p['ci_low']:.3f}, {p['ci_high']:.3f}]" if p.get("ci_low") is not None else "-",
                str(p.get("n_seeds", "?")),
                str(p.get("n_eval", "?")),
                str(p.get("train_steps", "?")),
            ]
            for p in search["points"]
        ],
    )
    if (out / "search.png").exists():
        doc.image(out / "search.png", "ratio search")


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text)
