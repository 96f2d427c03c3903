"""Figures from surfel distances: NSD, robust Hausdorff, ASSD (DeepMind's definitions)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from umdbench.metrics._distances import SurfaceDistances

__all__ = ["assd", "nsd", "robust_hausdorff", "robust_hausdorffs"]


def nsd(sd: SurfaceDistances, tolerance: float) -> float:
    """Area of both surfaces within ``tolerance`` mm of the other, over the total area."""
    total = float(np.sum(sd.area_ref) + np.sum(sd.area_pred))
    if total == 0.0:
        return math.nan
    near = np.sum(sd.area_ref[sd.dist_ref <= tolerance])
    near += np.sum(sd.area_pred[sd.dist_pred <= tolerance])
    return float(near / total)


def _sorted(
    dist: np.ndarray, area: np.ndarray, pairs: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(distance, area) sorted by distance then area, as DeepMind sorts its tuples."""
    if pairs is not None:
        return pairs
    order = np.lexsort((area, dist))
    return dist[order], area[order]


def _directed_percentiles(
    dist: np.ndarray, area: np.ndarray, percents: Sequence[float]
) -> list[float]:
    """Per percent, the smallest distance (of pairs already sorted) whose cumulative area
    share reaches it; the last one if rounding keeps the share below it (DeepMind's
    arithmetic: sequential cumsum over the sorted areas, divided by their pairwise sum)."""
    if len(dist) == 0:
        return [math.inf for _ in percents]
    cumulative = np.cumsum(area) / np.sum(area)
    index = np.searchsorted(cumulative, np.asarray(percents, np.float64) / 100.0)
    return [float(dist[min(int(i), len(dist) - 1)]) for i in index]


def robust_hausdorffs(sd: SurfaceDistances, percents: Sequence[float]) -> list[float]:
    """``robust_hausdorff`` at several percents, sorting and summing each direction once."""
    if len(sd.dist_ref) == 0 and len(sd.dist_pred) == 0:
        return [math.nan for _ in percents]
    ref = _directed_percentiles(
        *_sorted(sd.dist_ref, sd.area_ref, sd.sorted_ref), percents=percents
    )
    pred = _directed_percentiles(
        *_sorted(sd.dist_pred, sd.area_pred, sd.sorted_pred), percents=percents
    )
    return [max(a, b) for a, b in zip(ref, pred, strict=True)]


def robust_hausdorff(sd: SurfaceDistances, percent: float) -> float:
    """Max over both directions of the area-weighted ``percent`` percentile of distances."""
    return robust_hausdorffs(sd, (percent,))[0]


def assd(sd: SurfaceDistances) -> float:
    """Area-weighted mean distance over the surfels of both surfaces."""
    if len(sd.dist_ref) == 0 and len(sd.dist_pred) == 0:
        return math.nan
    if len(sd.dist_ref) == 0 or len(sd.dist_pred) == 0:
        return math.inf
    weighted = np.sum(sd.dist_ref * sd.area_ref) + np.sum(sd.dist_pred * sd.area_pred)
    return float(weighted / (np.sum(sd.area_ref) + np.sum(sd.area_pred)))
