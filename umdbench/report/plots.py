"""The report's figures as PNG bytes, drawn with matplotlib's Agg canvas.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot): no global state,
no GUI backend, safe inside a pytest session and on headless CI machines.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from umdbench.organs import CANONICAL_ORGANS, MODALITIES
from umdbench.report.stats import document_comparisons
from umdbench.report.tables import model_label

__all__ = ["Plot", "all_plots", "distribution_plots", "heatmap_plot", "paired_plots"]

_DPI = 90
_ARM_COLOURS = {"CT": "#1f77b4", "PET_CT": "#d62728", "MRI": "#2ca02c", "PET_MRI": "#9467bd"}


@dataclass(frozen=True)
class Plot:
    """One figure: a file-safe name, a caption and the PNG."""

    name: str
    title: str
    png: bytes


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    return buffer.getvalue()


def _values(records: Iterable[Mapping[str, Any]], metric: str) -> dict[tuple, dict[str, float]]:
    """(label, modality, organ) -> subject -> finite figure of ``ok`` records."""
    out: dict[tuple, dict[str, float]] = {}
    for r in records:
        value = r.get(metric)
        if r.get("status", "ok") != "ok" or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            key = (model_label(r["model"], r.get("protocol")), r["modality"], r["organ"])
            out.setdefault(key, {})[str(r["subject"])] = float(value)
    return out


def _order(names: Iterable[str], reference: Sequence[str]) -> list[str]:
    names = set(names)
    return [n for n in reference if n in names] + sorted(names - set(reference))


def _axes_grid(figure: Figure, n: int, columns: int) -> list[Any]:
    rows = math.ceil(n / columns)
    grid = figure.subplots(rows, columns, squeeze=False)
    flat = list(grid.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return flat[:n]


def heatmap_plot(document: Mapping[str, Any], metric: str = "dice") -> Plot:
    """Model x organ mean figure, one panel per modality; grey where nothing was measured."""
    values = _values(document.get("records", []), metric)
    cases = document.get("cases", [])
    labels = sorted({model_label(c["model"], c.get("protocol")) for c in cases})
    organs = _order({c["organ"] for c in cases}, CANONICAL_ORGANS)
    arms = _order({c["modality"] for c in cases}, MODALITIES)
    figure = Figure(figsize=(3.2 * len(arms) + 1.5, 0.45 * len(labels) + 2.2))
    axes = _axes_grid(figure, len(arms), len(arms))
    image = None
    for ax, arm in zip(axes, arms, strict=True):
        grid = np.full((len(labels), len(organs)), np.nan)
        for i, label in enumerate(labels):
            for j, organ in enumerate(organs):
                subject_values = values.get((label, arm, organ))
                if subject_values:
                    grid[i, j] = np.mean(list(subject_values.values()))
        image = _draw_heatmap(ax, grid, labels, organs, arm)
    if image is not None:
        figure.colorbar(image, ax=axes, shrink=0.8, label=f"mean {metric}")
    figure.suptitle(f"Mean {metric} per model and organ, by modality")
    return Plot(f"heatmap_{metric}", f"Mean {metric}: model x organ, per modality", _png(figure))


def _draw_heatmap(ax: Any, grid: np.ndarray, labels: list[str], organs: list[str], arm: str) -> Any:
    ax.set_facecolor("#cccccc")
    image = ax.imshow(np.ma.masked_invalid(grid), vmin=0.0, vmax=1.0, cmap="viridis",
                      aspect="auto")
    ax.set_xticks(range(len(organs)), organs, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels if ax.get_subplotspec().is_first_col() else [],
                  fontsize=7)
    ax.set_title(arm)
    if grid.size <= 120:
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if v < 0.6 else "black")
    return image


def paired_plots(
    document: Mapping[str, Any],
    metric: str = "dice",
    comparisons: Sequence[tuple[str, str]] | None = None,
) -> list[Plot]:
    """Per model and comparison, one panel per organ linking each subject's two arms."""
    values = _values(document.get("records", []), metric)
    if comparisons is None:
        comparisons = document_comparisons(document)
    plots = []
    for label in sorted({k[0] for k in values}):
        for arm_a, arm_b in comparisons:
            organs = _order({k[2] for k in values if k[0] == label and k[1] == arm_a
                             and (label, arm_b, k[2]) in values}, CANONICAL_ORGANS)
            if organs:
                plots.append(_paired_figure(values, label, arm_a, arm_b, organs, metric))
    return plots


def _paired_figure(values: Mapping[tuple, dict[str, float]], label: str, arm_a: str, arm_b: str,
                   organs: list[str], metric: str) -> Plot:
    columns = min(len(organs), 5)
    figure = Figure(figsize=(2.2 * columns, 2.4 * math.ceil(len(organs) / columns) + 0.6))
    for ax, organ in zip(_axes_grid(figure, len(organs), columns), organs, strict=True):
        a, b = values[(label, arm_a, organ)], values[(label, arm_b, organ)]
        both = sorted(set(a) & set(b))
        for subject in both:
            drop = a[subject] > b[subject]
            ax.plot([0, 1], [a[subject], b[subject]], "-o", ms=3, lw=0.8, alpha=0.7,
                    color="#d62728" if drop else "#1f77b4")
        if both:
            ax.plot([0, 1], [np.mean([a[s] for s in both]), np.mean([b[s] for s in both])],
                    "-", lw=2.5, color="black")
        ax.set_xticks([0, 1], [arm_a, arm_b], fontsize=7)
        ax.set_xlim(-0.3, 1.3)
        ax.set_ylim(-0.02, 1.02) if metric != "hd95" else None
        ax.set_title(f"{organ} (n={len(both)})", fontsize=8)
    figure.suptitle(f"{label}: {metric}, {arm_a} vs {arm_b} (red: lower on {arm_b}; "
                    "black: mean)", fontsize=9)
    name = f"paired_{_safe(label)}_{arm_a}_{arm_b}_{metric}"
    return Plot(name, f"{label}: paired {metric}, {arm_a} vs {arm_b}", _png(figure))


def distribution_plots(document: Mapping[str, Any], metric: str = "dice") -> list[Plot]:
    """Per model, the per-subject figures of every organ, one box per modality."""
    values = _values(document.get("records", []), metric)
    return [_distribution_figure(values, label, metric)
            for label in sorted({k[0] for k in values})]


def _distribution_figure(values: Mapping[tuple, dict[str, float]], label: str, metric: str) -> Plot:
    keys = [k for k in values if k[0] == label]
    organs = _order({k[2] for k in keys}, CANONICAL_ORGANS)
    arms = _order({k[1] for k in keys}, MODALITIES)
    figure = Figure(figsize=(max(5.0, 1.1 * len(organs) * len(arms) / 2), 3.4))
    ax = figure.subplots()
    width = 0.8 / len(arms)
    rng = np.random.default_rng(0)  # jitter only; fixed so reports are reproducible
    for i, arm in enumerate(arms):
        positions, data = [], []
        for j, organ in enumerate(organs):
            subject_values = list(values.get((label, arm, organ), {}).values())
            if subject_values:
                positions.append(j + (i - (len(arms) - 1) / 2) * width)
                data.append(subject_values)
        if data:
            _draw_boxes(ax, positions, data, width, _ARM_COLOURS.get(arm, "grey"), rng)
        ax.plot([], [], "s", color=_ARM_COLOURS.get(arm, "grey"), label=arm)
    ax.set_xticks(range(len(organs)), organs, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, ncols=len(arms), loc="best")
    ax.set_title(f"{label}: per-subject {metric} by organ and modality", fontsize=9)
    return Plot(f"distribution_{_safe(label)}_{metric}", f"{label}: per-subject {metric}",
                _png(figure))


def _draw_boxes(ax: Any, positions: list[float], data: list[list[float]], width: float,
                colour: str, rng: np.random.Generator) -> None:
    boxes = ax.boxplot(data, positions=positions, widths=width * 0.85, patch_artist=True,
                       showfliers=False, manage_ticks=False)
    for patch in boxes["boxes"]:
        patch.set(facecolor=colour, alpha=0.35)
    for x, ys in zip(positions, data, strict=True):
        ax.scatter(x + rng.uniform(-width / 4, width / 4, len(ys)), ys, s=6, color=colour)


def _safe(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)


def all_plots(document: Mapping[str, Any], metric: str = "dice") -> list[Plot]:
    """Every figure of the report; none when no record holds ``metric``."""
    if not _values(document.get("records", []), metric):
        return []
    return [heatmap_plot(document, metric), *paired_plots(document, metric),
            *distribution_plots(document, metric)]
