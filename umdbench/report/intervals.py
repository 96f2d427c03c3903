"""How sure the measured figure is: a subject bootstrap of the macro mean of one model on one arm.

The measured Dice of a model on an arm is the macro mean of :func:`umdbench.report.tables.
measured_means` (mean over organs of each organ's mean over subjects). Its 95% interval comes
from a seeded percentile bootstrap over *subjects*: the cohort is what was sampled, so whole
subjects are resampled with replacement (all their organs together) and the macro mean is
recomputed. An organ none of the resampled subjects has just drops out of that resample's mean.

Every (model, arm) uses the same ``seed``, so one model's interval does not move when another
model is added to the run. Fewer than two subjects: no interval (NaN), as in
:mod:`umdbench.report.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from umdbench.report.tables import finite_number, measured_means, model_label

__all__ = ["MeasuredInterval", "measured_with_interval"]

#: Bound on one chunk of the resampling matrix (resamples x subjects), to bound memory.
_CHUNK_CELLS = 2_000_000


@dataclass(frozen=True)
class MeasuredInterval:
    """The macro mean, its percentile-bootstrap 95% interval and how many subjects it rests on."""

    mean: float
    low: float
    high: float
    n_subjects: int


def _subject_grid(
    records: Iterable[Mapping[str, Any]], metric: str
) -> dict[tuple[str, str], dict[str, dict[str, list[float]]]]:
    """(label, modality) -> organ -> subject -> figures of ``ok`` records with a finite value."""
    out: dict[tuple[str, str], dict[str, dict[str, list[float]]]] = {}
    for r in records:
        if r.get("status", "ok") != "ok" or not finite_number(r.get(metric)):
            continue
        key = (model_label(r["model"], r.get("protocol")), r["modality"])
        organs = out.setdefault(key, {})
        organs.setdefault(r["organ"], {}).setdefault(str(r["subject"]), []).append(float(r[metric]))
    return out


def _matrix(by_organ: Mapping[str, Mapping[str, list[float]]]) -> np.ndarray:
    """Subjects x organs: each cell the subject's mean figure for the organ, NaN where none."""
    subjects = sorted({s for values in by_organ.values() for s in values})
    organs = sorted(by_organ)
    grid = np.full((len(subjects), len(organs)), np.nan)
    for j, organ in enumerate(organs):
        for i, subject in enumerate(subjects):
            values = by_organ[organ].get(subject)
            if values:
                grid[i, j] = float(np.mean(values))
    return grid


def _bootstrap_macro(grid: np.ndarray, seed: int, n_boot: int) -> tuple[float, float]:
    """Percentile 95% interval of the macro mean, resampling rows (subjects) with replacement.

    A resample is a count per subject; organ means are count-weighted means over the subjects
    that have the organ, so organs absent from a resample (count 0) leave the macro mean.
    """
    n_subjects = grid.shape[0]
    present = np.isfinite(grid).astype(float)
    values = np.where(present > 0, grid, 0.0)
    rng = np.random.default_rng(seed)
    macro = np.empty(n_boot)
    step = max(1, _CHUNK_CELLS // max(1, n_subjects))
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        idx = rng.integers(0, n_subjects, size=(stop - start, n_subjects))
        counts = np.zeros((stop - start, n_subjects))
        np.add.at(counts, (np.arange(stop - start)[:, None], idx), 1.0)
        sums, weights = counts @ values, counts @ present
        with np.errstate(invalid="ignore", divide="ignore"):
            organ_means = sums / weights  # NaN where the organ dropped out
        macro[start:stop] = np.nanmean(organ_means, axis=1)  # every resample has >= 1 organ
    low, high = np.percentile(macro, [2.5, 97.5])
    return float(low), float(high)


def measured_with_interval(
    document: Mapping[str, Any],
    metric: str = "dice",
    seed: int = 0,
    n_boot: int = 2000,
) -> dict[tuple[str, str], MeasuredInterval]:
    """(model label, modality) -> the measured macro mean of ``metric`` with its 95% interval.

    ``mean`` is exactly ``measured_means(records, metric)[(label, modality)]``, so the figure
    and the tables agree to the last digit.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    records = list(document.get("records", []))
    means = measured_means(records, metric)
    out: dict[tuple[str, str], MeasuredInterval] = {}
    for key, by_organ in sorted(_subject_grid(records, metric).items()):
        grid = _matrix(by_organ)
        n = grid.shape[0]
        low, high = _bootstrap_macro(grid, seed, n_boot) if n >= 2 else (math.nan, math.nan)
        out[key] = MeasuredInterval(means[key], low, high, n)
    return out
