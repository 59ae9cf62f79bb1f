"""The probes of an experiment, on its headline slice (one task size, one ratio), every probed seed.

  repr       `delia probe repr` on every trained cell (and the base model): Table 1 and the L2-per-block
             plot, aggregated over seeds per method.
  divergent  `delia probe divergent` per method, on that method's own evaluation prompts (its plan's eval
             transform applied: TELL's anchor, ICL's demonstrations), so each model sees what it was
             evaluated on; ICL probes the base model with its demonstrations.
  losscurve  `delia probe losscurve` over the trained cells of the first probed seed, every ratio.
Outputs go to {out}/probes/{repr,divergent,losscurve}/ plus summary.json; a probe whose targets and
settings did not change since the last time is not rerun.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path
from typing import Any

from delia.core.example import Example
from delia.core.io import read_json
from delia.data.io import read_examples
from delia.experiment.grid import cell_config, cell_dir
from delia.experiment.records import Cell, ProbeRow, ProbesSummary, slug, write_record
from delia.experiment.results import t_interval
from delia.experiment.runner import read_cell_record
from delia.experiment.spec import ExperimentSpec
from delia.methods import get_method
from delia.probe.loading import ProbeTarget

PROBES_DIR = "probes"
DIVERGENT_STATS = ("entropy", "tokens_at_mass", "p_brace")


def headline_slice(spec: ExperimentSpec, cells: list[Cell]) -> tuple[int | None, float | None]:
    sizes = [c.task_size for c in cells if c.task_size is not None]
    ratios = [c.ratio for c in cells if c.ratio is not None]
    size = spec.headline.task_size if spec.headline.task_size is not None else max(sizes, default=None)
    ratio = spec.headline.ratio if spec.headline.ratio is not None else max(ratios, default=None)
    return size, ratio


def probed_variant(cells: list[Cell]) -> str | None:
    """Probes look at one variant: the grid's first (None in a grid without variants)."""
    return cells[0].variant if cells else None


def in_slice(cell: Cell, size: int | None, ratio: float | None, variant: str | None) -> bool:
    return cell.task_size == size and cell.ratio in (None, ratio) and cell.variant == variant


def probed_cells(spec: ExperimentSpec, cells: list[Cell]) -> list[Cell]:
    """Finished cells of the headline slice, in the seeds chosen for probing."""
    size, ratio = headline_slice(spec, cells)
    seeds = spec.probes.seeds if spec.probes.seeds is not None else spec.grid.seeds
    variant = probed_variant(cells)
    return [
        c
        for c in cells
        if in_slice(c, size, ratio, variant)
        and c.seed in seeds
        and read_cell_record(cell_dir(spec, c)) is not None
    ]


def has_adapter(spec: ExperimentSpec, cell: Cell) -> bool:
    return (cell_dir(spec, cell) / "adapter" / "adapter_config.json").exists()


def target_name(cell: Cell) -> str:
    return f"{cell.method}#s{cell.seed}"


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def up_to_date(out_dir: Path, key: str) -> bool:
    marker = out_dir / "probe_key.txt"
    return marker.exists() and marker.read_text() == key


def mark_done(out_dir: Path, key: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "probe_key.txt").write_text(key)


def model_spec_of(spec: ExperimentSpec, cell: Cell) -> str:
    return cell_config(spec, cell, spec.entry(cell.method)).model.name


def run_repr(spec: ExperimentSpec, cells: list[Cell], out_dir: Path) -> dict[str, Any] | None:
    """repr.json of the base model and every trained cell (the probe's own free-form layout)."""
    from delia.probe.repr import run_repr_probe  # pulls in torch

    trained = [c for c in cells if has_adapter(spec, c)]
    if not trained:
        return None
    base = ProbeTarget("base", model_spec_of(spec, trained[0]), None)
    targets = [base] + [
        ProbeTarget(target_name(c), model_spec_of(spec, c), cell_dir(spec, c) / "adapter") for c in trained
    ]
    settings = (spec.probes.token, spec.probes.keywords, spec.probes.missing_token)
    key = fingerprint([(t.name, str(t.adapter_dir)) for t in targets], settings, _stamps(spec, trained))
    if not up_to_date(out_dir, key):
        run_repr_probe(
            targets,
            out_dir,
            spec.probes.token,
            spec.probes.keywords,
            None,
            False,
            probe_device(spec),
            spec.probes.missing_token,
        )
        mark_done(out_dir, key)
    return read_json(out_dir / "repr.json")


def probe_device(spec: ExperimentSpec) -> str:
    """The probes' device, with "auto" made concrete (the probes move tensors to it by name)."""
    from delia.core.models import pick_device

    return pick_device(spec.probes.device)


def _stamps(spec: ExperimentSpec, cells: list[Cell]) -> list[str | None]:
    """Finish times of the cells: a retrained cell invalidates its probe."""
    records = [read_cell_record(cell_dir(spec, c)) for c in cells]
    return [None if record is None else record.finished_at for record in records]


def method_prompts(spec: ExperimentSpec, cell: Cell, limit: int | None) -> list[Example]:
    """The cell's evaluation prompts as its method saw them (plan's eval transform applied), the first
    `limit` of those it was scored on (all of them with None)."""
    run_dir = cell_dir(spec, cell)
    config = cell_config(spec, cell, spec.entry(cell.method))
    evals = read_examples(run_dir / "task" / "eval.jsonl")
    evals = evals[: config.eval.limit] if config.eval.limit is not None else evals
    evals = evals[:limit]
    plan = get_method(config.method).plan(config, read_examples(run_dir / "task" / "task.jsonl"))
    return plan.eval_transform(evals) if plan.eval_transform is not None else evals


def run_divergent(spec: ExperimentSpec, cells: list[Cell], out_dir: Path) -> list[dict[str, Any]]:
    """One divergent probe per method (its seeds together), plus the base model on plain prompts."""
    from delia.probe.divergent import run_divergent_probe  # pulls in torch

    results = []
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        trained_or_prompted = has_adapter(spec, cell) or cell.base_method in ("icl", "dipmt", "ctg", "base")
        if trained_or_prompted:
            groups.setdefault(cell.method, []).append(cell)
    if not groups:
        return results
    first = next(iter(groups.values()))[0]
    base_prompts = read_examples(cell_dir(spec, first) / "task" / "eval.jsonl")[: spec.probes.divergent_limit]
    jobs = [("base", [ProbeTarget("base", model_spec_of(spec, first), None)], base_prompts)]
    for label, members in groups.items():
        targets = [
            ProbeTarget(
                target_name(c),
                model_spec_of(spec, c),
                cell_dir(spec, c) / "adapter" if has_adapter(spec, c) else None,
            )
            for c in members
        ]
        prompts = method_prompts(spec, members[0], spec.probes.divergent_limit)
        jobs.append((label, targets, prompts))
    for label, targets, prompts in jobs:
        job_dir = out_dir / slug(label)
        key = fingerprint([(t.name, str(t.adapter_dir)) for t in targets], [p.id for p in prompts])
        if not up_to_date(job_dir, key):
            run_divergent_probe(targets, prompts, job_dir, device=probe_device(spec))
            mark_done(job_dir, key)
        data = read_json(job_dir / "divergent.json")
        results.extend({**result, "method": label} for result in data["results"])
    return results


def run_losscurves(spec: ExperimentSpec, cells: list[Cell], all_cells: list[Cell], out_dir: Path) -> bool:
    from delia.probe.losscurve import run_losscurve_probe  # pulls in matplotlib

    if not cells:
        return False
    size, _ = headline_slice(spec, all_cells)
    seed = min(c.seed for c in cells)
    variant = probed_variant(all_cells)
    chosen = [
        c
        for c in all_cells
        if c.task_size == size
        and c.seed == seed
        and c.variant == variant
        and (cell_dir(spec, c) / "train_log.jsonl").exists()
        and read_cell_record(cell_dir(spec, c)) is not None
    ]
    if not chosen:
        return False
    runs = [(c.method if c.ratio is None else f"{c.method} r{c.ratio:g}", cell_dir(spec, c)) for c in chosen]
    key = fingerprint([str(p) for _, p in runs], _stamps(spec, chosen))
    if not up_to_date(out_dir, key):
        run_losscurve_probe(runs, out_dir, smooth=5, x_axis="progress")
        mark_done(out_dir, key)
    return True


def aggregate_repr(data: dict[str, Any] | None, keywords: list[str]) -> list[ProbeRow]:
    """Per method, keyword and landmark block: mean L2 over seeds with a t-interval."""
    if data is None:
        return []
    from delia.probe.repr import landmark_blocks  # pulls in torch

    per_method: dict[str, list[dict[str, Any]]] = {}
    for result in data["results"]:
        per_method.setdefault(result["run"].split("#s")[0], []).append(result)
    rows = []
    for method, results in per_method.items():
        applicable = [r for r in results if r["applicable"]]
        for keyword in keywords:
            if not applicable:
                reason = results[0]["reason"]
                rows.append(
                    ProbeRow(
                        method=method, keyword=keyword, applicable=False, reason=reason, n_seeds=len(results)
                    )
                )
                continue
            for where, block in landmark_blocks(applicable[0]["n_blocks"]).items():
                values = [r["keywords"][keyword]["l2_mean"][block] for r in applicable]
                rows.append(
                    ProbeRow(
                        method=method,
                        keyword=keyword,
                        applicable=True,
                        token_added=any(r.get("token_row") == "added_for_probe" for r in applicable),
                        where=where,
                        block=block,
                        **mean_ci(values),
                    )
                )
    return rows


def repr_curves(data: dict[str, Any] | None, keyword: str) -> dict[str, list[float]]:
    """Per method, the L2 curve over hidden-state indices averaged over seeds (applicable runs only)."""
    if data is None:
        return {}
    curves: dict[str, list[list[float]]] = {}
    for result in data["results"]:
        if result["applicable"]:
            curves.setdefault(result["run"].split("#s")[0], []).append(result["keywords"][keyword]["l2_mean"])
    return {m: [statistics.fmean(col) for col in zip(*cs, strict=True)] for m, cs in curves.items()}


def aggregate_divergent(results: list[dict[str, Any]]) -> list[ProbeRow]:
    """Per method and statistic: the mean over seeds of the per-prompt means."""
    per_method: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        per_method.setdefault(result["method"], []).append(result)
    rows = []
    for method, members in per_method.items():
        for stat in DIVERGENT_STATS:
            values = [r["summary"][stat]["mean"] for r in members if r["summary"].get(stat)]
            if values:
                n_prompts = members[0]["n_prompts"]
                rows.append(ProbeRow(method=method, stat=stat, n_prompts=n_prompts, **mean_ci(values)))
    return rows


def mean_ci(values: list[float]) -> dict[str, Any]:
    """A probe row's statistic fields: the mean over seeds and its t-interval (none for one seed)."""
    low, high = t_interval(values) if len(values) >= 2 else (None, None)
    return {
        "mean": statistics.fmean(values),
        "ci_low": low,
        "ci_high": high,
        "n_seeds": len(values),
        "values": values,
    }


def run_probes(spec: ExperimentSpec, cells: list[Cell]) -> ProbesSummary:
    """Run the configured probes on the headline slice; write and return probes/summary.json."""
    out = Path(spec.out) / PROBES_DIR
    chosen = probed_cells(spec, cells)
    size, ratio = headline_slice(spec, cells)
    summary = ProbesSummary(
        variant=probed_variant(cells), task_size=size, ratio=ratio, cells=[c.name for c in chosen]
    )
    if spec.probes.repr:
        data = run_repr(spec, chosen, out / "repr")
        summary.repr = aggregate_repr(data, spec.probes.keywords)
        summary.repr_curves = {k: repr_curves(data, k) for k in spec.probes.keywords}
    if spec.probes.divergent:
        summary.divergent = aggregate_divergent(run_divergent(spec, chosen, out / "divergent"))
    if spec.probes.losscurve:
        summary.losscurve = run_losscurves(spec, chosen, cells, out / "losscurve")
    write_record(out / "summary.json", summary, exclude_unset=True)
    return summary
