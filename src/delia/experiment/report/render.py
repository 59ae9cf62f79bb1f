"""report.md and report.html: the tables and figures as one Document, with how to regenerate it."""

from __future__ import annotations

import shutil
from pathlib import Path

from delia.core.io import atomic_write
from delia.experiment.document import Document
from delia.experiment.measures import HELDOUT_LOSS
from delia.experiment.paired import CORPUS_METRICS, SENTENCE
from delia.experiment.records import ExperimentResults, ProbesSummary
from delia.experiment.report.effects import measures_note, measures_table, phrasing_table
from delia.experiment.report.headline import NOT_RECORDED, facts_table, paired_table, truncation_flags
from delia.experiment.report.plots import plot_repr_curves, plot_search, plot_vs_ratio, plot_vs_size
from delia.experiment.report.tables import (
    TRANSLATION_METRICS,
    ResultIndex,
    Table,
    cost_table,
    headline_comparison,
    ratio_text,
    recheck_table,
    search_table,
    summary_table,
    table_ablations,
    table_by_size,
    table_divergent,
    table_repr,
    table_translation,
)
from delia.experiment.search_records import RecheckReport, SearchResult


def add_table(doc: Document, table: Table) -> None:
    doc.table(table.header, table.rows)


def setup(doc: Document, results: ExperimentResults, out: Path) -> None:
    spec = results.spec
    source = spec.source or "EXPERIMENT.yaml"
    doc.heading("How to regenerate")
    lines = [f"delia experiment {source}", f"delia report {out}"]
    if (out / "search.json").exists():
        lines.insert(1, f"delia experiment {source} --search ratio")
    doc.code("\n".join(lines))
    doc.paragraph(
        f"Finished cells are skipped, so the first command only runs what is missing. Last invocation: "
        f"`{results.command}` at {results.written_at}."
    )
    doc.heading("Setup")
    grid = spec.grid
    base = spec.base if isinstance(spec.base, str) else "(inline)"
    doc.bullets(
        [
            f"base run config: `{base}`; overrides for every cell: "
            + (", ".join(f"`{s}`" for s in spec.set) or "none"),
            "methods: "
            + ", ".join(f"`{m.name}`" + (f" ({', '.join(m.set)})" if m.set else "") for m in results.methods),
            f"task sizes: {grid.task_sizes}; diverse ratios: {grid.ratios}; seeds: {grid.seeds}"
            + (f"; variants: {', '.join(grid.variants)}" if grid.variants else ""),
            "methods that ignore the ratio run once per (size, seed) and show ratio `-`",
            f"95% CIs: {results.ci.over_seeds} (not clipped to the metric's range) with 2+ seeds; "
            f"with 1 seed, the cell's {results.ci.single_seed}",
            "json_format: the answer's earliest {...} parses (JSON or Python literal) to a dict with the "
            "required keys; label_accuracy: its label equals the reference (docs/metrics.md)",
        ]
    )
    if spec.notes:
        doc.heading("What was cut, and why")
        doc.bullets(spec.notes)


def paired_section(doc: Document, results: ExperimentResults, index: ResultIndex) -> None:
    """The report's lead: DELIA minus common IT and minus step-matched common IT on the same items."""
    doc.heading("Headline: DELIA minus its controls, paired on the same eval items")
    table = paired_table(results, index)
    if table is None and not results.facts:  # the two fields arrived together: an older file has neither
        doc.paragraph(NOT_RECORDED.format(what="paired differences"))
    elif table is None:
        doc.paragraph(
            "No DELIA cell and control cell (common_it, common_it_matched) finished at the same variant, "
            "size and seed: nothing to pair."
        )
    else:
        doc.paragraph(
            "Per eval item, DELIA's score minus the control's, from the two cells' predictions at the same "
            "seed; the mean over seeds and items, with a 95% percentile bootstrap that resamples seeds and "
            "items together (each replicate draws seeds with replacement and items with replacement). The "
            "items-only interval leaves out the spread between seeds; the last column is each method's own "
            "mean with its t-interval over seeds (secondary)."
        )
        corpus = [m for m in results.spec.metrics if m in CORPUS_METRICS]
        if corpus:
            sentence = ", ".join(SENTENCE + m for m in corpus)
            doc.paragraph(
                f"{', '.join(corpus)} are corpus-level scores, not means of per-item scores: they are paired "
                f"as the mean of their sentence-level scores ({sentence}), on the same 0-100 scale but not "
                "the corpus figure the per-method rows show."
            )
        add_table(doc, table)
    flags = truncation_flags(results)
    if flags:
        doc.paragraph("Cells with more truncated answers than the flag:")
        doc.bullets(flags)


def phrasing_section(doc: Document, results: ExperimentResults, index: ResultIndex) -> None:
    doc.heading("Seen and unseen instruction phrasings")
    tables = [(m, table) for m in index.metrics if (table := phrasing_table(results, index, m))]
    if not tables:
        doc.paragraph(
            "Not measured: no eval example carried a phrasing group (the halueval builder tags them when "
            "`holdout_instructions` or `eval_instructions` is set; `phrasing: both` asks every context "
            "both ways, docs/data-formats.md)."
        )
        return
    doc.paragraph(
        "Each score on the eval items asked with a phrasing the task set keeps (seen) and on those asked "
        "with one held out of it or written for evaluation (unseen), mean [95% CI] over seeds with the "
        "group's truncated share. Trained on: items whose phrasing is the instruction of a task example the "
        "cell trained on (its mix/mixed.jsonl), summed over the slice's cells; below the full task set, or "
        "with rewritten instructions, a seen phrasing can be missing from training, and an unseen one "
        "trained on would be a leak."
    )
    for _, table in tables:
        add_table(doc, table)


def measures_section(doc: Document, results: ExperimentResults, index: ResultIndex) -> None:
    doc.heading("Held-out task loss and side effects on ordinary questions")
    table = measures_table(index)
    if table is None:
        doc.paragraph(
            "Not measured: no cell has per-cell probe results (they run with the probes: `delia experiment "
            "CONFIG --no-run` without `--no-probes` measures the finished cells)."
        )
        return
    with_ratio = any(r.metric == HELDOUT_LOSS and r.ratio is not None for r in results.summary)
    doc.paragraph(measures_note(with_ratio))
    add_table(doc, table)


def facts_section(doc: Document, results: ExperimentResults) -> None:
    doc.heading("Per-cell facts (from the run directories)")
    table = facts_table(results)
    if table is None:
        doc.paragraph(NOT_RECORDED.format(what="per-cell facts"))
        return
    doc.paragraph(
        "Diversified: the run's plan.json asks for rewrites and its diversify/ stage exists. Rewrites "
        "accepted: diversify/task.report.json (accepted / requested; examples left without one keep their "
        "instruction) and the stage manifest's example counts. Steps: train/manifest.json. Truncated: the "
        "eval metric `truncated` (answers cut off by eval.max_new_tokens). Where eval items carry phrasing "
        "groups: per group, the scored items whose phrasing is the instruction of a task example in the "
        "cell's mix/mixed.jsonl."
    )
    add_table(doc, table)


def coverage(doc: Document, results: ExperimentResults) -> None:
    finished = {row.cell for row in results.cells}
    missing = results.missing
    doc.paragraph(
        f"Planned cells: {len(results.grid.planned)}; finished: {len(finished)}; missing: {len(missing)}; "
        f"failed: {len(results.failed)}; "
        f"skipped (the method rejects the ratio): {len(results.grid.skipped)}."
    )
    if missing:
        more = f" ... and {len(missing) - 60} more" if len(missing) > 60 else ""
        doc.paragraph(
            "Missing cells (planned, no result yet): " + ", ".join(f"`{m}`" for m in missing[:60]) + more
        )
    doc.bullets([f"failed `{f.name}`: {f.error}" for f in results.failed])
    doc.bullets([f"skipped `{s.name}`: {s.reason}" for s in results.grid.skipped])


def probe_tables(doc: Document, probes: ProbesSummary | None) -> None:
    doc.heading("Table 1: L2 distance of <sep> to keywords per block")
    doc.paragraph(
        f"`delia probe repr` on the cells at task size {probes.task_size if probes else None}, "
        f"ratio {ratio_text(probes.ratio if probes else None)}; "
        "mean over seeds of the template-averaged L2 at the first / middle / last block."
    )
    if table := table_repr(probes):
        add_table(doc, table)
    else:
        doc.paragraph("Not run (no probes/summary.json, or no trained cell with the token).")


def result_tables(doc: Document, index: ResultIndex) -> None:
    for variant in index.variants():
        for metric in index.metrics:
            if metric in TRANSLATION_METRICS:
                continue
            name = f" ({variant})" if variant else ""
            doc.heading(f"Table 2: {metric} vs task size{name}")
            add_table(doc, table_by_size(index, metric, variant))
    if table := table_translation(index):
        doc.heading("Table 3: translation (chrF++ and BLEU, sacreBLEU 0-100)")
        add_table(doc, table)
    size, ratio = index.headline()
    doc.heading("Table 4: ablations")
    doc.paragraph(f"Task size {size}; DELIA and w/o diversify at ratio {ratio_text(ratio)}.")
    if table := table_ablations(index):
        add_table(doc, table)
    else:
        doc.paragraph("Not run: the grid has no DELIA ablation entries.")


def divergent_section(doc: Document, probes: ProbesSummary | None) -> None:
    if table := table_divergent(probes):
        doc.heading("State space at the first answer token (probe divergent)")
        doc.paragraph("Mean over seeds of the per-prompt means; each method on its own evaluation prompts.")
        add_table(doc, table)


def figures(
    doc: Document, index: ResultIndex, results: ExperimentResults, probes: ProbesSummary | None, out: Path
) -> None:
    doc.heading("Figures")
    plots = out / "plots"
    for metric in index.metrics:
        if len(index.sizes()) > 1 and (
            path := plot_vs_size(results.summary, metric, plots / f"{file_stem(metric)}_vs_size.png")
        ):
            doc.image(path, f"{metric} vs task size")
        if path := plot_vs_ratio(results.summary, metric, plots / f"{file_stem(metric)}_vs_ratio.png"):
            doc.image(path, f"{metric} vs diverse ratio")
    loss_plot = plots / f"{HELDOUT_LOSS}_vs_ratio.png"
    if path := plot_vs_ratio(results.summary, HELDOUT_LOSS, loss_plot):
        doc.image(path, "Figure 3: held-out task loss at the end of training vs diverse ratio")
    if probes and (path := plot_repr_curves(probes.repr_curves, plots / "l2_per_block.png")):
        doc.image(path, "L2 per block")
    loss_png = out / "probes" / "losscurve" / "losscurve.png"
    if loss_png.exists():
        target = plots / "task_loss_curves.png"
        plots.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(loss_png, target)
        variant = probes.variant if probes else None
        where = f"{variant}, " if variant is not None else ""
        doc.image(target, f"task-loss curves ({where}first probed seed, x = fraction of training)")


def recheck_section(doc: Document, recheck: RecheckReport) -> None:
    doc.heading("Reproducibility check")
    doc.paragraph(
        f"Cell `{recheck.cell}` rerun from scratch "
        f"(`delia experiment CONFIG --recheck {recheck.cell}`, "
        f"{recheck.seconds / 60:.1f} min, {recheck.checked_at}):"
    )
    add_table(doc, recheck_table(recheck))


def search_section(doc: Document, search: SearchResult, out: Path) -> None:
    if not (out / "search.png").exists():
        plot_search(search, out / "search.png")
    doc.heading("Ratio search")
    best = search.argmax
    doc.paragraph(
        f"{search.algorithm}; method `{search.method}`, task size {search.task_size}, seeds "
        f"{search.seeds}, validation metric `{search.metric}`, range [{search.settings.lo:g}, "
        f"{search.settings.hi:g}], {search.evaluations} evaluations. "
        f"Best ratio: **{best.ratio}** "
        f"({search.metric} {best.value:.3f})."
    )
    add_table(doc, search_table(search))
    doc.image(out / "search.png", "ratio search")


def experiment_document(
    results: ExperimentResults,
    probes: ProbesSummary | None,
    search: SearchResult | None,
    recheck: RecheckReport | None,
    out: Path,
) -> Document:
    index = ResultIndex.of(results)
    doc = Document(f"Experiment `{results.experiment}`")
    paired_section(doc, results, index)
    phrasing_section(doc, results, index)
    measures_section(doc, results, index)
    setup(doc, results, out)
    doc.heading("Coverage")
    coverage(doc, results)
    facts_section(doc, results)
    size, ratio = index.headline()
    doc.heading("Per-method means (secondary: t-intervals over seeds)")
    metric = index.headline_metric()
    doc.paragraph(f"{metric} at task size {size}, ratio {ratio_text(ratio)} (95% CIs as in the tables):")
    doc.bullets(headline_comparison(index))
    probe_tables(doc, probes)
    result_tables(doc, index)
    divergent_section(doc, probes)
    doc.heading("Cost")
    add_table(doc, cost_table(results.cells))
    figures(doc, index, results, probes, out)
    if search is not None:
        search_section(doc, search, out)
    if recheck is not None:
        recheck_section(doc, recheck)
    doc.heading("Every summary row")
    add_table(doc, summary_table(results.summary))
    return doc


def search_document(search: SearchResult, out: Path) -> Document:
    """The report of a directory holding only a ratio search."""
    doc = Document(f"Ratio search `{search.experiment}`")
    source = search.source or "EXPERIMENT.yaml"
    doc.heading("How to regenerate")
    doc.code(f"delia experiment {source} --search ratio\ndelia report {out}")
    if search.notes:
        doc.heading("What was cut, and why")
        doc.bullets(search.notes)
    search_section(doc, search, out)
    return doc


def write_document(doc: Document, out: Path) -> tuple[Path, Path]:
    md, page = out / "report.md", out / "report.html"
    atomic_write(md, doc.to_markdown(out))
    atomic_write(page, doc.to_html())
    return md, page


def file_stem(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text)
