"""`delia report DIR`: report.md and report.html from results.json (+ probes/summary.json, search.json,
recheck.json).

  headline.py  the lead: paired differences DELIA minus its controls, per-cell facts, truncation flags
  tables.py  the tables, from the typed records, in the paper's layouts
  render.py  the Document (Markdown and one self-contained HTML page)
  plots.py   the figures
"""

from __future__ import annotations

from pathlib import Path

from delia.core.errors import DeliaError
from delia.experiment.records import ExperimentResults, ProbesSummary, read_record
from delia.experiment.report.render import experiment_document, search_document, write_document
from delia.experiment.search_records import RecheckReport, SearchResult


def write_report(out: Path) -> tuple[Path, Path]:
    """Build report.md and report.html in `out` from the files an experiment wrote there."""
    results = read_record(out / "results.json", ExperimentResults)
    search = read_record(out / "search.json", SearchResult)
    if results is None and search is None:
        raise DeliaError(f"{out}: no results.json or search.json (run `delia experiment CONFIG` first)")
    if results is None:
        return write_document(search_document(search, out), out)
    probes = read_record(out / "probes" / "summary.json", ProbesSummary)
    recheck = read_record(out / "recheck.json", RecheckReport)
    return write_document(experiment_document(results, probes, search, recheck, out), out)


__all__ = ["write_report"]
