"""Aggregation that never averages NaN or inf silently: it says how many values it used."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

__all__ = ["aggregate"]


def aggregate(values: Iterable[float | int | None]) -> dict[str, float | int]:
    """Mean, median, std and min/max of the finite values, with the counts of the rest.

    ``None`` and NaN count as ``n_nan`` (undefined: both masks empty, or missing), +/-inf as
    ``n_inf`` (a distance to an empty surface); neither enters the figures.
    """
    array = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    finite = array[np.isfinite(array)]
    n = len(finite)
    return {
        "mean": float(np.mean(finite)) if n else math.nan,
        "median": float(np.median(finite)) if n else math.nan,
        "std": float(np.std(finite, ddof=1)) if n > 1 else math.nan,
        "min": float(np.min(finite)) if n else math.nan,
        "max": float(np.max(finite)) if n else math.nan,
        "n": len(array),
        "n_valid": n,
        "n_nan": int(np.count_nonzero(np.isnan(array))),
        "n_inf": int(np.count_nonzero(np.isinf(array))),
    }
