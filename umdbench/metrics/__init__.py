"""Segmentation metrics for one prediction against one reference on one grid.

``organ_metrics`` is the call the suite makes; it returns plain floats and ints so a record is
JSON-ready. Conventions (see the README's edge-case table): Dice of two empty masks is NaN and
the subject is counted as ``empty_reference`` and left out of means.
"""

from __future__ import annotations

import numpy as np

__all__ = ["confusion_counts", "dice", "organ_metrics"]


def confusion_counts(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int]:
    """True positives, false positives, false negatives of two boolean masks."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction and reference must share a shape, got {pred.shape} and {ref.shape}")
    pred = pred.astype(bool, copy=False)
    ref = ref.astype(bool, copy=False)
    tp = int(np.count_nonzero(pred & ref))
    return tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(ref)) - tp


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """2|A∩B| / (|A|+|B|); NaN when both are empty."""
    tp, fp, fn = confusion_counts(pred, ref)
    denominator = 2 * tp + fp + fn
    return float("nan") if denominator == 0 else 2.0 * tp / denominator


def organ_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float, float]
) -> dict[str, float | int]:
    """Every figure the audit records for one organ of one scan."""
    tp, fp, fn = confusion_counts(pred, ref)
    denominator = 2 * tp + fp + fn
    return {
        "dice": float("nan") if denominator == 0 else 2.0 * tp / denominator,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "n_ref": tp + fn,
        "n_pred": tp + fp,
        "voxel_ml": float(np.prod(spacing)) / 1000.0,
    }
