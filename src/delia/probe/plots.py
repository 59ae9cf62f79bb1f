"""PNG figures for the probes (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

DPI = 130


def save_figure(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_repr(results: list[dict[str, Any]], keywords: list[str], path: Path) -> Path:
    """Per keyword: L2 distance of the special token to it at each block (top) and the relative distance
    (bottom: L2 over the mean norm, since norms grow with depth), one line per run."""
    fig, axes = plt.subplots(2, len(keywords), figsize=(5.5 * len(keywords), 7), squeeze=False, sharex=True)
    skipped = [r["run"] for r in results if not r["applicable"]]
    token = results[0]["token"] if results else "?"
    rows = (("l2_mean", "L2 distance of hidden states"), ("relative_mean", "L2 / mean norm"))
    for column, keyword in enumerate(keywords):
        for row, (key, ylabel) in enumerate(rows):
            ax = axes[row][column]
            for result in results:
                if result["applicable"]:
                    curve = result["keywords"][keyword][key][1:]  # index 0 is the embedding output
                    label = result["run"] + (
                        " (token added: mean of pieces)"
                        if result.get("token_row") == "added_for_probe"
                        else ""
                    )
                    ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=label)
            ax.set_title(f"{'L2' if row == 0 else 'relative L2'}({token}, {keyword!r}) per block")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if ax.lines:
                ax.legend(fontsize=8)
        axes[1][column].set_xlabel("transformer block")
    if skipped:
        fig.suptitle(
            f"not applicable ({token} not a token of its tokenizer): {', '.join(skipped)}", fontsize=9
        )
    return save_figure(fig, path)


DIVERGENT_PANELS = (
    ("entropy", "entropy (nats)"),
    ("tokens_at_mass", "tokens covering {mass:.0%} of p"),
    ("p_brace", "p(token starting with '{{')"),
)


def plot_divergent(results: list[dict[str, Any]], path: Path) -> Path:
    """Bars per run (mean with std error bars) for entropy, tokens@mass and p('{')."""
    fig, axes = plt.subplots(1, len(DIVERGENT_PANELS), figsize=(4.2 * len(DIVERGENT_PANELS), 3.8))
    names = [r["run"] for r in results]
    mass = results[0]["mass"] if results else 0.9
    for ax, (key, label) in zip(axes, DIVERGENT_PANELS, strict=True):
        means = [r["summary"][key]["mean"] if r["summary"][key] else 0.0 for r in results]
        stds = [r["summary"][key]["std"] if r["summary"][key] else 0.0 for r in results]
        ax.bar(names, means, yerr=stds, capsize=4, color=[f"C{i}" for i in range(len(names))])
        for x, (value, std) in enumerate(zip(means, stds, strict=True)):
            ax.annotate(f"{value:.3g}", (x, value + std), ha="center", va="bottom", fontsize=8,
                        xytext=(0, 3), textcoords="offset points")  # fmt: skip
        ax.margins(y=0.15)
        if key == "tokens_at_mass" and min(means) > 0 and max(means) / min(means) > 30:
            ax.set_yscale("log")  # a tuned model can need 1 token where the base needs thousands
        ax.set_title(label.format(mass=mass))
        ax.tick_params(axis="x", rotation=20)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("state space at the first assistant token (mean ± std over prompts)", fontsize=10)
    return save_figure(fig, path)


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to `window` values (window 1 = unchanged)."""
    if window <= 1:
        return list(values)
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_losscurves(results: list[dict[str, Any]], path: Path, smooth: int = 1, x_axis: str = "step") -> Path:
    """Left: held-out task loss per run. Right: training loss per source (task solid, diverse dashed)."""
    fig, (held, train) = plt.subplots(1, 2, figsize=(11, 4))
    for index, result in enumerate(results):
        colour = f"C{index}"
        label = result["run"] if result["ratio"] is None else f"{result['run']} (ratio {result['ratio']:g})"
        scale = 1.0 / result["max_step"] if x_axis == "progress" and result["max_step"] else 1.0
        curve = result["curves"].get("eval_task_loss")
        if curve:
            held.plot(
                [s * scale for s in curve["step"]],
                curve["value"],
                marker="o",
                markersize=3,
                color=colour,
                label=label,
            )
        for key, style in (("loss_task", "-"), ("loss_diverse", "--")):
            curve = result["curves"].get(key)
            if curve:
                train.plot(
                    [s * scale for s in curve["step"]],
                    moving_average(curve["value"], smooth),
                    style,
                    color=colour,
                    label=f"{label}: {key.removeprefix('loss_')}",
                )
    xlabel = "fraction of training" if x_axis == "progress" else "optimizer step"
    for ax, title in (
        (held, "held-out task loss"),
        (train, "training loss by source" + (f" (mean of {smooth} steps)" if smooth > 1 else "")),
    ):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no run logged this", ha="center", va="center", transform=ax.transAxes)
    return save_figure(fig, path)


def plot_gradients(report: dict[str, Any], labels: list[str], path: Path) -> Path:
    """Left: pairwise cosine of batch gradients. Right: fraction along biased directions."""
    fig, (heat, bars) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1.1, 1]})
    matrix = report["cosine_matrix"]
    image = heat.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
    heat.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    heat.set_yticks(range(len(labels)), labels, fontsize=7)
    heat.set_title("cosine of LoRA gradients per batch")
    fig.colorbar(image, ax=heat, fraction=0.046)
    biased = report["biased_directions"]
    names = {
        "mixed": "mixed\n(arithmetic)",
        "mixed_measured": "mixed\n(measured)",
        "random_baseline": "random",
    }
    colours = {"task": "C0", "mixed": "C2", "mixed_measured": "C3", "diverse": "C1", "random_baseline": "C7"}
    keys = [
        k
        for k in ("task", "mixed", "mixed_measured", "diverse", "random_baseline")
        if k in biased["fraction"]
    ]
    values = [biased["fraction"][k] for k in keys]
    bars.bar([names.get(k, k) for k in keys], values, color=[colours[k] for k in keys])
    bars.set_title(
        f"||V g|| / ||g|| along top-{biased['top_k']} task directions\n"
        f"(held-out batches; arithmetic mix = task weight {biased['task_weight']:.2f})",
        fontsize=10,
    )
    bars.set_ylim(0, 1)
    bars.grid(axis="y", alpha=0.3)
    for x, value in enumerate(values):
        bars.text(x, value + 0.02, f"{value:.3f}", ha="center", fontsize=8)
    return save_figure(fig, path)
