"""What a model's ``predict`` may return, checked before anything casts it.

A cast hides wrong outputs: NaN or probabilities cast to ``int16`` become 0 (Dice 0, status
ok), and int64 labels of 65536 and up wrap to 0, 1, 2 (an all-nonzero output once passed with
Dice 1.0). So the output is checked as returned: a numpy array on the scan's grid, of a bool,
integer or exactly integral float dtype, whose values are the model's declared label ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["OutputError", "check_label_map"]


class OutputError(ValueError):
    """``predict`` returned something that is not a label map of the model's declared ids."""


def check_label_map(labels: Any, shape: tuple[int, ...], allowed: Iterable[int]) -> np.ndarray:
    """``labels`` as an integer array when it is a valid label map on ``shape``, else raise.

    ``allowed`` holds every value the model may write (0, background, is always allowed).
    The shape is checked first, so a huge wrong output is refused before it is read.
    """
    if not isinstance(labels, np.ndarray):
        raise OutputError(f"predict must return a numpy array, got {type(labels).__name__}")
    if tuple(labels.shape) != tuple(shape):
        raise OutputError(
            f"returned a label map of shape {tuple(labels.shape)}, but the image grid is"
            f" {tuple(shape)}: predict must map its output back to the scan's grid"
        )
    if labels.dtype == bool:
        return labels
    if np.issubdtype(labels.dtype, np.floating):
        labels = _integral(labels)
    elif not np.issubdtype(labels.dtype, np.integer):
        raise OutputError(
            f"returned dtype {labels.dtype}; predict must return integer labels (or bool)"
        )
    _check_values(labels, sorted({0, *(int(v) for v in allowed)}))
    return labels


def _integral(labels: np.ndarray) -> np.ndarray:
    """A float output is accepted only when every value is finite and a whole number."""
    finite = np.isfinite(labels)
    if not finite.all():
        where = _first(~finite)
        raise OutputError(
            f"returned {labels.dtype} values that are not finite ({labels[where]} at voxel"
            f" {where}, {int((~finite).sum())} voxels): return integer labels"
        )
    fractional = labels != np.round(labels)
    if fractional.any():
        where = _first(fractional)
        raise OutputError(
            f"returned {labels.dtype} values that are not whole numbers ({float(labels[where]):g}"
            f" at voxel {where}, {int(fractional.sum())} voxels): probabilities or logits?"
            " threshold them in predict and return integer labels"
        )
    low, high = float(labels.min()), float(labels.max())
    if low < np.iinfo(np.int64).min or high > np.iinfo(np.int64).max:
        raise OutputError(f"returned values from {low:g} to {high:g}, beyond any label id")
    return labels.astype(np.int64)


def _check_values(labels: np.ndarray, allowed: list[int]) -> None:
    """Every value among ``allowed``: one pass through a lookup table, no sort."""
    low, high = int(labels.min()), int(labels.max())
    if low >= 0 and high <= allowed[-1]:
        table = np.zeros(allowed[-1] + 1, dtype=bool)
        table[allowed] = True
        bad = ~table[labels]
        if not bad.any():
            return
    else:
        bad = ~np.isin(labels, allowed)
    values = np.unique(labels[bad])
    shown = ", ".join(str(int(v)) for v in values[:5]) + (" ..." if len(values) > 5 else "")
    raise OutputError(
        f"returned label values {shown} ({int(bad.sum())} voxels, dtype {labels.dtype}) that"
        f" the model does not declare (allowed: {', '.join(str(v) for v in allowed)}); return"
        " the ids of its label_ids (promptable models: 0 and 1)"
    )


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))
