"""The report's figures as PNG bytes, drawn with matplotlib's Agg canvas, each with its data.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot): no global state,
no GUI backend, safe inside a pytest session and on headless CI machines. Every :class:`Plot`
carries the numbers it draws as a :class:`~umdbench.report.tables.Table`, so a reader can check
a figure against a spreadsheet (the report writes ``plots/<name>.csv`` beside the PNG).

The *primary* figures answer the study's questions at a glance: the illusion figure (published
vs measured), the forest plot of paired gaps, and the model x organ heatmap. The per-model
figures (paired lines, distributions) are the evidence behind them.
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
from matplotlib.ticker import MaxNLocator

from umdbench.organs import CANONICAL_ORGANS, MODALITIES
from umdbench.report.intervals import MeasuredInterval, measured_with_interval
from umdbench.report.stats import ALL_ORGANS, PairedRow, document_comparisons, paired_table
from umdbench.report.tables import Table, model_label, published_figure

__all__ = [
    "Plot",
    "all_plots",
    "distribution_plots",
    "forest_plot",
    "heatmap_plot",
    "illusion_plot",
    "paired_plots",
]

_DPI = 90
_ARM_COLOURS = {"CT": "#1f77b4", "PET_CT": "#d62728", "MRI": "#2ca02c", "PET_MRI": "#9467bd"}
#: Comparison colours, in the order comparisons first appear (tab10 without the arm colours).
_COMPARISON_COLOURS = ("#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
                       "#1f77b4", "#d62728")
#: Metrics where lower is better: no [0, 1] axis, and A−B > 0 means B is better.
_DISTANCE_METRICS = ("hd95",)


@dataclass(frozen=True)
class Plot:
    """One figure: a file-safe name, a caption, the PNG and the numbers it draws."""

    name: str
    title: str
    png: bytes
    data: Table
    primary: bool = False


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


def _safe(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)


def _unit_axis(metric: str) -> bool:
    """Dice, NSD: bounded in [0, 1], so every figure shares that axis."""
    return metric not in _DISTANCE_METRICS


# -- the illusion figure --------------------------------------------------------------------
def _models_of_labels(records: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    return {model_label(r["model"], r.get("protocol")): r["model"] for r in records}


def _illusion_rows(document: Mapping[str, Any], measured: Mapping[tuple[str, str],
                   MeasuredInterval], metric: str) -> list[tuple[Any, ...]]:
    """Per measured model label, one CSV row per arm measured or published there."""
    models = _models_of_labels(document.get("records", []))
    rows = []
    for label in sorted({label for label, _ in measured}):
        claims = (document.get("models", {}).get(models[label]) or {}).get("literature") or {}
        arms = _order({a for lab, a in measured if lab == label} | set(claims), MODALITIES)
        for arm in arms:
            value, citation = published_figure(document, models[label], arm, metric)
            m = measured.get((label, arm))
            if m is None and value is None:
                continue
            rows.append((label, arm, value, m.mean if m else None, m.low if m else None,
                         m.high if m else None, m.n_subjects if m else 0, citation))
    return rows


def illusion_plot(document: Mapping[str, Any], metric: str = "dice", seed: int = 0,
                  n_boot: int = 2000) -> Plot | None:
    """Published figure beside the measured one (with its subject-bootstrap 95% interval), per
    model and arm: the generalization illusion in one picture. None when nothing was measured."""
    measured = measured_with_interval(document, metric, seed=seed, n_boot=n_boot)
    if not measured:
        return None
    rows = _illusion_rows(document, measured, metric)
    labels = list(dict.fromkeys(r[0] for r in rows))
    arms = _order({r[1] for r in rows}, MODALITIES)
    figure = Figure(figsize=(7.0, 0.26 * len(rows) + 0.25 * len(labels) + 1.9),
                    layout="constrained")
    ax = figure.subplots()
    _draw_illusion(ax, rows, labels, arms)
    if _unit_axis(metric):
        ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(f"{metric} (dot: measured here, bar: 95% CI over subjects; "
                  "hollow diamond: published)", fontsize=8)
    ax.set_title(f"Published vs measured {metric}, per model and arm", fontsize=10)
    columns = ("model", "modality", "literature", "measured", "ci_low", "ci_high",
               "n_subjects", "citation")
    data = Table(f"Published vs measured {metric}", columns, tuple(rows),
                 "measured: macro mean over organs; CI: seeded percentile bootstrap over "
                 f"subjects ({n_boot} resamples, seed {seed}).")
    return Plot(f"illusion_{_safe(metric)}", f"Published vs measured {metric} (95% CI)",
                _png(figure), data, primary=True)


def _draw_illusion(ax: Any, rows: Sequence[tuple[Any, ...]], labels: list[str],
                   arms: list[str]) -> None:
    """One band per model (top to bottom), one line per arm inside it."""
    step = 0.8 / max(1, len(arms))
    ticks = []
    for i, label in enumerate(labels):
        centre = -float(i)
        ticks.append(centre)
        for label_, arm, published, mean, low, high, _n, _cite in rows:
            if label_ != label:
                continue
            y = centre + (arms.index(arm) - (len(arms) - 1) / 2) * -step
            colour = _ARM_COLOURS.get(arm, "grey")
            _draw_pair(ax, y, colour, published, mean, low, high)
        if i:
            ax.axhline(centre + 0.5, color="#dddddd", lw=0.8)
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.set_ylim(-len(labels) + 0.5, 0.5)
    for arm in arms:
        ax.plot([], [], "o", color=_ARM_COLOURS.get(arm, "grey"), label=arm)
    ax.plot([], [], "D", mfc="none", color="black", label="published")
    ax.figure.legend(fontsize=7, loc="outside lower center", ncols=len(arms) + 1)
    ax.grid(axis="x", color="#eeeeee")


def _draw_pair(ax: Any, y: float, colour: str, published: float | None, mean: float | None,
               low: float | None, high: float | None) -> None:
    if mean is not None and published is not None:
        ax.plot([published, mean], [y, y], ":", color=colour, lw=1.0)
    if mean is not None:
        if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
            ax.plot([low, high], [y, y], "-", color=colour, lw=2.0, solid_capstyle="butt")
        ax.plot([mean], [y], "o", color=colour, ms=6)
    if published is not None:
        ax.plot([published], [y], "D", mfc="white", mec=colour, mew=1.5, ms=7)


# -- the forest plot of paired gaps --------------------------------------------------------
def _forest_rows(rows: Sequence[PairedRow], metric: str) -> list[PairedRow]:
    keep = [r for r in rows if r.metric == metric and math.isfinite(r.stats.mean_diff)]
    organ_order = {o: i for i, o in enumerate(_organ_order({r.organ for r in keep}))}
    comparisons = list(dict.fromkeys(r.comparison for r in keep))
    return sorted(keep, key=lambda r: (model_label(r.model, r.protocol), organ_order[r.organ],
                                       comparisons.index(r.comparison)))


def _organ_order(organs: Iterable[str]) -> list[str]:
    """Canonical organ order, the subject-level pooled row last."""
    organs = set(organs)
    return _order(organs - {ALL_ORGANS}, CANONICAL_ORGANS) + (
        [ALL_ORGANS] if ALL_ORGANS in organs else [])


def forest_plot(rows: Sequence[PairedRow], metric: str = "dice") -> Plot | None:
    """Per model, the mean paired A−B difference per organ and comparison with its 95% interval;
    the subject-level pooled row last. None when no comparison has a finite mean."""
    keep = _forest_rows(rows, metric)
    if not keep:
        return None
    labels = list(dict.fromkeys(model_label(r.model, r.protocol) for r in keep))
    comparisons = list(dict.fromkeys(r.comparison for r in keep))
    colours = {c: _COMPARISON_COLOURS[i % len(_COMPARISON_COLOURS)]
               for i, c in enumerate(comparisons)}
    n_organs = max(len({r.organ for r in keep if model_label(r.model, r.protocol) == label})
                   for label in labels)
    columns = min(len(labels), 3)
    height = (0.22 * n_organs * max(1, len(comparisons)) ** 0.5 + 1.1) * math.ceil(
        len(labels) / columns) + 0.8
    figure = Figure(figsize=(4.2 * columns + 0.4, height), layout="constrained")
    for ax, label in zip(_axes_grid(figure, len(labels), columns), labels, strict=True):
        _draw_forest(ax, [r for r in keep if model_label(r.model, r.protocol) == label],
                     comparisons, colours)
        ax.set_title(label, fontsize=9)
    for comparison in comparisons:
        figure.axes[0].plot([], [], "o", color=colours[comparison], label=comparison)
    figure.legend(loc="outside lower center", ncols=min(len(comparisons), 4), fontsize=7)
    figure.suptitle(_forest_caption(metric), fontsize=9)
    return Plot(f"forest_{_safe(metric)}", f"Paired {metric} gaps per organ (mean A−B, 95% CI)",
                _png(figure), _forest_table(keep, metric), primary=True)


def _forest_caption(metric: str) -> str:
    meaning = ("A−B > 0: B is better (lower distance)" if metric in _DISTANCE_METRICS
               else "A−B > 0: a drop from A to B")
    return f"Paired {metric} differences, mean A−B with 95% bootstrap CI ({meaning})"


def _draw_forest(ax: Any, rows: Sequence[PairedRow], comparisons: list[str],
                 colours: Mapping[str, str]) -> None:
    organs = _organ_order({r.organ for r in rows})
    step = 0.7 / max(1, len(comparisons))
    for r in rows:
        y = -organs.index(r.organ) - (comparisons.index(r.comparison)
                                      - (len(comparisons) - 1) / 2) * step
        colour = colours[r.comparison]
        if math.isfinite(r.stats.ci_low) and math.isfinite(r.stats.ci_high):
            ax.plot([r.stats.ci_low, r.stats.ci_high], [y, y], "-", color=colour, lw=1.6)
        ax.plot([r.stats.mean_diff], [y], "o", color=colour, ms=4.5)
    ax.axvline(0.0, color="black", lw=0.8)
    if ALL_ORGANS in organs and len(organs) > 1:
        ax.axhline(-len(organs) + 1.5, color="#999999", lw=0.8, ls="--")
    names = ["all organs (per subject)" if o == ALL_ORGANS else o for o in organs]
    ax.set_yticks([-i for i in range(len(organs))], names, fontsize=7)
    ax.set_ylim(-len(organs) + 0.5, 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", color="#eeeeee")


def _forest_table(rows: Sequence[PairedRow], metric: str) -> Table:
    columns = ("model", "organ", "comparison", "n_pairs", "mean_diff", "ci_low", "ci_high",
               "wilcoxon_p", "holm_p")
    body = tuple((model_label(r.model, r.protocol), r.organ, r.comparison, r.stats.n_pairs,
                  r.stats.mean_diff, r.stats.ci_low, r.stats.ci_high, r.stats.p_value, r.p_holm)
                 for r in rows)
    return Table(f"Paired {metric} differences (A−B)", columns, body)


# -- the heatmap ---------------------------------------------------------------------------
def heatmap_plot(document: Mapping[str, Any], metric: str = "dice") -> Plot | None:
    """Model x organ mean figure, one panel per modality; grey where nothing was measured.

    Models, organs and arms without a single measured figure are left out (a model whose
    weights were missing would otherwise be a whole grey row); None when nothing is left.
    """
    values = _values(document.get("records", []), metric)
    if not values:
        return None
    labels = sorted({k[0] for k in values})
    organs = _order({k[2] for k in values}, CANONICAL_ORGANS)
    arms = _order({k[1] for k in values}, MODALITIES)
    figure = Figure(figsize=(3.2 * len(arms) + 1.5, 0.45 * len(labels) + 2.2),
                    layout="constrained")
    axes = _axes_grid(figure, len(arms), len(arms))
    image = None
    for ax, arm in zip(axes, arms, strict=True):
        grid = np.full((len(labels), len(organs)), np.nan)
        for (label, arm_, organ), subject_values in values.items():
            if arm_ == arm:
                grid[labels.index(label), organs.index(organ)] = np.mean(
                    list(subject_values.values()))
        image = _draw_heatmap(ax, grid, labels, organs, arm, _colour_limits(values, metric))
    if image is not None:
        figure.colorbar(image, ax=axes, shrink=0.8, label=f"mean {metric}")
    figure.suptitle(f"Mean {metric} per model and organ, by modality")
    rows = tuple((label, arm, organ, float(np.mean(list(values[(label, arm, organ)].values()))),
                  len(values[(label, arm, organ)]))
                 for label in labels for arm in arms for organ in organs
                 if (label, arm, organ) in values)
    data = Table(f"Mean {metric} per model, arm and organ",
                 ("model", "modality", "organ", "mean", "n_subjects"), rows)
    return Plot(f"heatmap_{_safe(metric)}", f"Mean {metric}: model x organ, per modality",
                _png(figure), data, primary=True)


def _colour_limits(values: Mapping[tuple, dict[str, float]], metric: str) -> tuple[float, float]:
    """One colour scale for every panel (there is one colour bar): [0, 1] for Dice and NSD."""
    if _unit_axis(metric):
        return 0.0, 1.0
    means = [float(np.mean(list(v.values()))) for v in values.values()]
    return min(means), max(means)


def _draw_heatmap(ax: Any, grid: np.ndarray, labels: list[str], organs: list[str], arm: str,
                  limits: tuple[float, float]) -> Any:
    ax.set_facecolor("#cccccc")
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="auto",
                      vmin=limits[0], vmax=limits[1])
    ax.set_xticks(range(len(organs)), organs, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels if ax.get_subplotspec().is_first_col() else [],
                  fontsize=7)
    ax.set_title(arm)
    if grid.size <= 120:
        low, high = image.get_clim()
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                dark = (v - low) < 0.6 * (high - low) if high > low else True
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if dark else "black")
    return image


# -- per-model figures ---------------------------------------------------------------------
def _paired_organs(values: Mapping[tuple, dict[str, float]], label: str, arm_a: str,
                   arm_b: str) -> list[str]:
    """Organs where at least one subject has a figure on both arms (so a panel has a line)."""
    organs = {k[2] for k in values if k[0] == label and k[1] == arm_a
              and set(values[k]) & set(values.get((label, arm_b, k[2]), {}))}
    return _order(organs, CANONICAL_ORGANS)


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
            organs = _paired_organs(values, label, arm_a, arm_b)
            if organs:
                plots.append(_paired_figure(values, label, arm_a, arm_b, organs, metric))
    return plots


def _paired_figure(values: Mapping[tuple, dict[str, float]], label: str, arm_a: str, arm_b: str,
                   organs: list[str], metric: str) -> Plot:
    columns = min(len(organs), 5)
    figure = Figure(figsize=(2.2 * columns, 2.4 * math.ceil(len(organs) / columns) + 0.6))
    rows = []
    for ax, organ in zip(_axes_grid(figure, len(organs), columns), organs, strict=True):
        a, b = values[(label, arm_a, organ)], values[(label, arm_b, organ)]
        both = sorted(set(a) & set(b))
        for subject in both:
            drop = a[subject] > b[subject]
            ax.plot([0, 1], [a[subject], b[subject]], "-o", ms=3, lw=0.8, alpha=0.7,
                    color="#d62728" if drop else "#1f77b4")
            rows.append((label, organ, subject, arm_a, a[subject], arm_b, b[subject]))
        ax.plot([0, 1], [np.mean([a[s] for s in both]), np.mean([b[s] for s in both])],
                "-", lw=2.5, color="black")
        ax.set_xticks([0, 1], [arm_a, arm_b], fontsize=7)
        ax.set_xlim(-0.3, 1.3)
        if _unit_axis(metric):
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{organ} (n={len(both)})", fontsize=8)
    figure.suptitle(f"{label}: {metric}, {arm_a} vs {arm_b} (red: lower on {arm_b}; "
                    "black: mean)", fontsize=9)
    name = f"paired_{_safe(label)}_{arm_a}_{arm_b}_{_safe(metric)}"
    data = Table(f"{label}: paired {metric}, {arm_a} vs {arm_b}",
                 ("model", "organ", "subject", "arm_a", "value_a", "arm_b", "value_b"),
                 tuple(rows))
    return Plot(name, f"{label}: paired {metric}, {arm_a} vs {arm_b}", _png(figure), data)


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
    rows = []
    for i, arm in enumerate(arms):
        positions, data = [], []
        for j, organ in enumerate(organs):
            subject_values = values.get((label, arm, organ), {})
            if subject_values:
                positions.append(j + (i - (len(arms) - 1) / 2) * width)
                data.append(list(subject_values.values()))
                rows += [(label, arm, organ, s, v) for s, v in subject_values.items()]
        if data:
            _draw_boxes(ax, positions, data, width, _ARM_COLOURS.get(arm, "grey"), rng)
        ax.plot([], [], "s", color=_ARM_COLOURS.get(arm, "grey"), label=arm)
    ax.set_xticks(range(len(organs)), organs, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, ncols=len(arms), loc="best")
    ax.set_title(f"{label}: per-subject {metric} by organ and modality", fontsize=9)
    table = Table(f"{label}: per-subject {metric}",
                  ("model", "modality", "organ", "subject", "value"), tuple(rows))
    return Plot(f"distribution_{_safe(label)}_{_safe(metric)}", f"{label}: per-subject {metric}",
                _png(figure), table)


def _draw_boxes(ax: Any, positions: list[float], data: list[list[float]], width: float,
                colour: str, rng: np.random.Generator) -> None:
    boxes = ax.boxplot(data, positions=positions, widths=width * 0.85, patch_artist=True,
                       showfliers=False, manage_ticks=False)
    for patch in boxes["boxes"]:
        patch.set(facecolor=colour, alpha=0.35)
    for x, ys in zip(positions, data, strict=True):
        ax.scatter(x + rng.uniform(-width / 4, width / 4, len(ys)), ys, s=6, color=colour)


# -- all of them ---------------------------------------------------------------------------
def all_plots(
    document: Mapping[str, Any],
    metric: str = "dice",
    paired: Sequence[PairedRow] | None = None,
    seed: int = 0,
    n_boot: int = 2000,
) -> list[Plot]:
    """Every figure of the report, primary ones first (illusion, forest, heatmap), then each
    model's paired and distribution figures; none when no record holds ``metric``.

    ``paired`` is the document's paired table when the caller has it (computed here otherwise,
    for ``metric`` only); ``seed`` and ``n_boot`` drive the illusion figure's intervals.
    """
    if not _values(document.get("records", []), metric):
        return []
    if paired is None:
        paired = paired_table(document, metrics=(metric,), seed=seed, n_boot=n_boot)
    primary = [illusion_plot(document, metric, seed=seed, n_boot=n_boot),
               forest_plot(paired, metric), heatmap_plot(document, metric)]
    per_model = _by_model([*paired_plots(document, metric), *distribution_plots(document, metric)])
    return [p for p in primary if p is not None] + per_model


def _by_model(plots: Sequence[Plot]) -> list[Plot]:
    """Each model's figures together (paired ones, then its distribution), in model order."""
    def model(plot: Plot) -> str:
        return str(plot.data.rows[0][0])
    order = list(dict.fromkeys(sorted(model(p) for p in plots)))
    return sorted(plots, key=lambda p: order.index(model(p)))
