"""The experiment report's figures (matplotlib, Agg). Error bars are the summary's 95% CIs."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from delia.experiment.measures import HELDOUT_LOSS
from delia.experiment.records import SummaryRow
from delia.experiment.report.tables import TRANSLATION_METRICS
from delia.experiment.search_records import SearchResult
from delia.probe.plots import DPI, save_figure


def error_bars(rows: list[SummaryRow]) -> list[list[float]]:
    """Asymmetric error-bar lengths from each row's CI (0 where the CI is unknown)."""
    below = [r.mean - r.ci_low if r.ci_low is not None else 0.0 for r in rows]
    above = [r.ci_high - r.mean if r.ci_high is not None else 0.0 for r in rows]
    return [below, above]


def draw_means(
    ax: Axes, xs: list[float], rows: list[SummaryRow], colour: str, label: str, linestyle: str = "-"
) -> None:
    """One series: the rows' means at `xs` with their 95% CIs as error bars."""
    ax.errorbar(
        xs,
        [r.mean for r in rows],
        yerr=error_bars(rows),
        marker="o",
        capsize=3,
        color=colour,
        linestyle=linestyle,
        label=label,
    )


def series_label(row: SummaryRow) -> str:
    variant = f"{row.variant}: " if row.variant else ""
    ratio = f" (r={row.ratio:g})" if row.ratio is not None else ""
    return f"{variant}{row.method}{ratio}"


def rate_limits(ax: Axes, rows: list[SummaryRow], metric: str) -> None:
    """A rate's axis spans 0..1 (wider when a t-interval leaves it), so panels compare at a glance."""
    if metric in TRANSLATION_METRICS or metric == HELDOUT_LOSS:  # not a rate
        return
    lows = [r.ci_low for r in rows if r.ci_low is not None] + [r.mean for r in rows]
    highs = [r.ci_high for r in rows if r.ci_high is not None] + [r.mean for r in rows]
    ax.set_ylim(min(-0.03, *lows) - 0.02, max(1.03, *highs) + 0.02)


def plot_vs_size(summary: list[SummaryRow], metric: str, path: Path) -> Path | None:
    """Metric against task size, one line per method (and ratio)."""
    rows = [r for r in summary if r.metric == metric and r.task_size is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    series: dict[str, list[SummaryRow]] = {}
    for row in rows:
        series.setdefault(series_label(row), []).append(row)
    for index, (label, members) in enumerate(sorted(series.items())):
        members.sort(key=lambda r: r.task_size)
        linestyle = "-" if index < 10 else "--"
        draw_means(ax, [r.task_size for r in members], members, f"C{index % 10}", label, linestyle)
    seeds = sorted({r.n_seeds for r in rows})
    ax.set_xticks(sorted({r.task_size for r in rows}))
    rate_limits(ax, rows, metric)
    ax.set_xlabel("task examples")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs task size (mean over {'/'.join(map(str, seeds))} seeds, 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save_figure(fig, path)


def plot_vs_ratio(summary: list[SummaryRow], metric: str, path: Path) -> Path | None:
    """Metric against diverse ratio (symlog x), one line per ratio-reading method and size; ratio-free
    methods as horizontal dashed lines."""
    rows = [r for r in summary if r.metric == metric]
    with_ratio = [r for r in rows if r.ratio is not None]
    if not with_ratio:
        return None
    sizes = sorted({r.task_size for r in rows}, key=lambda s: -1 if s is None else s)
    fig, axes = plt.subplots(
        1, len(sizes), figsize=(5 * len(sizes) + 2.5, 4.3), squeeze=False, sharey=True, layout="constrained"
    )
    labels = sorted({(r.variant or "", r.method) for r in rows})
    colours = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    for ax, size in zip(axes[0], sizes, strict=True):
        for label in labels:
            members = [r for r in rows if (r.variant or "", r.method) == label and r.task_size == size]
            if not members:
                continue
            name = f"{label[0]}: {label[1]}" if label[0] else label[1]
            if members[0].ratio is None:
                ax.axhline(members[0].mean, linestyle="--", color=colours[label], label=name)
                continue
            members.sort(key=lambda r: r.ratio)
            draw_means(ax, [r.ratio for r in members], members, colours[label], name)
        rate_limits(ax, rows, metric)
        ax.set_xscale("symlog", linthresh=1)
        ticks = sorted({r.ratio for r in with_ratio})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_xlabel("diverse ratio r (symlog)")
        ax.set_title(f"task size {size if size is not None else 'all'}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{metric} (95% CI)")
    handles, names = axes[0][-1].get_legend_handles_labels()
    if not handles:
        handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=7, loc="outside right center")
    # Its constrained layout places the legend outside: save_figure's tight_layout would undo that.
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_repr_curves(curves: dict[str, dict[str, list[float]]], path: Path) -> Path | None:
    """L2(<sep>, keyword) per hidden-state index, one line per method (mean over seeds)."""
    keywords = [k for k, per_method in curves.items() if per_method]
    if not keywords:
        return None
    fig, axes = plt.subplots(1, len(keywords), figsize=(5.5 * len(keywords) + 1.5, 4), squeeze=False)
    for ax, keyword in zip(axes[0], keywords, strict=True):
        for index, (method, curve) in enumerate(sorted(curves[keyword].items())):
            ax.plot(range(len(curve)), curve, color=f"C{index % 10}", label=method)
        ax.set_xlabel("hidden-state index (0 = embeddings, l = block l)")
        ax.set_ylabel("L2 distance")
        ax.set_title(f"L2(<sep>, {keyword!r}) per block")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save_figure(fig, path)


def plot_search(result: SearchResult, path: Path) -> Path:
    """Evaluated ratios with their CIs, numbered in evaluation order, the argmax marked."""
    points = sorted(result.points, key=lambda p: p.ratio)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    errors = [
        [p.value - p.ci_low if p.ci_low is not None else 0.0 for p in points],
        [p.ci_high - p.value if p.ci_high is not None else 0.0 for p in points],
    ]
    ax.errorbar(
        [p.ratio for p in points],
        [p.value for p in points],
        yerr=errors,
        marker="o",
        capsize=3,
        linestyle=":",
        color="C0",
    )
    for point in result.points:
        ax.annotate(
            f"#{point.order}",
            (point.ratio, point.value),
            textcoords="offset points",
            xytext=(4, 6),
            fontsize=8,
        )
    best = result.argmax
    ax.scatter(
        [best.ratio],
        [best.value],
        s=160,
        facecolors="none",
        edgecolors="C3",
        linewidths=2,
        label=f"argmax: ratio {best.ratio} ({best.value:.3f})",
        zorder=5,
    )
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xticks([p.ratio for p in points], [str(p.ratio) for p in points])
    ax.set_xlabel("diverse ratio r (symlog)")
    ax.set_ylabel(f"validation {result.metric}")
    ax.set_title(f"ratio search: {result.method}, task size {result.task_size}, {len(result.seeds)} seed(s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
