"""Per-organ figures for one prediction against one reference on one grid (CPU backend).

Every surface figure follows DeepMind's ``surface-distance`` definitions (see docs/metrics.md);
empty masks follow the table there: both empty -> NaN everywhere, one empty -> overlap 0 and
distances inf. Work is confined to the union bounding box of the two masks, which is exact
for every figure (all surfels lie inside it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from umdbench.metrics._distances import voxel_distances
from umdbench.metrics._summary import assd, nsd, robust_hausdorffs
from umdbench.metrics._surfels import COMPILED, jit, pair_voxels

__all__ = [
    "DEFAULT_TOLERANCES",
    "check_spacing",
    "check_tolerances",
    "crop_figures",
    "empty_figures",
    "label_boxes",
    "mask_box",
    "merge_boxes",
    "nsd_key",
    "overlap_figures",
    "to_mask",
    "union_box",
]

Spacing = tuple[float, float, float]
DEFAULT_TOLERANCES: tuple[float, ...] = (1.0, 2.0)


def nsd_key(tolerance: float) -> str:
    """``nsd_2mm`` for 2.0, ``nsd_1.5mm`` for 1.5."""
    return f"nsd_{tolerance:g}mm"


def check_spacing(spacing: Any) -> Spacing:
    """Three finite positive voxel sizes in mm, as floats."""
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError) as e:
        raise TypeError(f"`spacing` must be three numbers in mm, got {spacing!r}") from e
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"`spacing` must be three finite positive numbers in mm, got {spacing!r}")
    return values[0], values[1], values[2]


def check_tolerances(tolerances: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(t) for t in tolerances)
    if not all(math.isfinite(t) and t >= 0 for t in values):
        raise ValueError(f"`tolerances` must be finite non-negative mm, got {tolerances!r}")
    return values


def to_mask(array: Any, name: str) -> np.ndarray:
    """A 3D boolean mask (non-zero = inside); non-finite values are an error, not 'inside'."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"`{name}` must be a numpy array, got {type(array).__name__}")
    if array.ndim != 3:
        raise ValueError(f"`{name}` must be 3D, got shape {array.shape}")
    if array.dtype == bool:
        return array
    if array.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise ValueError(
                f"`{name}` must hold only finite values, got {bad} NaN/inf voxels: "
                "check the model output (a failed forward pass often yields NaN)"
            )
    elif array.dtype.kind not in "iu":
        raise TypeError(f"`{name}` must be a boolean, integer or float array, got {array.dtype}")
    return array != 0


def empty_figures(n_pred: int, n_ref: int, tolerances: Sequence[float]) -> dict[str, float]:
    """Figures when at least one mask is empty (the edge-case table of docs/metrics.md)."""
    if n_pred == 0 and n_ref == 0:
        value, distance, rve = math.nan, math.nan, math.nan
    else:
        value, distance = 0.0, math.inf
        rve = math.inf if n_ref == 0 else -1.0
    figures = {"dice": value, "iou": value}
    figures.update({nsd_key(t): value for t in tolerances})
    figures.update({"hd95": distance, "hd": distance, "assd": distance, "rve": rve})
    return figures


def overlap_figures(tp: int, fp: int, fn: int, spacing: Spacing) -> dict[str, float | int]:
    """Dice, IoU, relative volume error and the counts they come from."""
    n_pred, n_ref = tp + fp, tp + fn
    union = tp + fp + fn
    return {
        "dice": math.nan if union == 0 else 2.0 * tp / (n_pred + n_ref),
        "iou": math.nan if union == 0 else tp / union,
        "rve": _rve(n_pred, n_ref),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "n_ref": n_ref,
        "n_pred": n_pred,
        "voxel_ml": float(np.prod(spacing)) / 1000.0,
    }


def _rve(n_pred: int, n_ref: int) -> float:
    if n_ref == 0:
        return math.nan if n_pred == 0 else math.inf
    return (n_pred - n_ref) / n_ref


def crop_figures(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Spacing,
    tolerances: Sequence[float],
    surface: bool = True,
) -> dict[str, float | int]:
    """All figures for two boolean masks already cropped around both (CPU backend);
    ``surface=False`` gives the overlap figures only."""
    if not surface:
        n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
        tp = int(np.count_nonzero(pred & ref))
        return overlap_figures(tp, n_pred - tp, n_ref - tp, spacing)
    voxels, (n_pred, n_ref, tp) = pair_voxels(pred, ref)
    figures = overlap_figures(tp, n_pred - tp, n_ref - tp, spacing)
    if n_pred == 0 or n_ref == 0:
        figures.update(empty_figures(n_pred, n_ref, tolerances))
        return figures
    sd = voxel_distances(voxels, spacing)
    figures.update({nsd_key(t): nsd(sd, t) for t in tolerances})
    hd95, hd = robust_hausdorffs(sd, (95.0, 100.0))
    figures.update({"hd95": hd95, "hd": hd, "assd": assd(sd)})
    return figures


def _byte_rows(array: np.ndarray) -> np.ndarray:
    """The array as one row of machine words per index of axis 0 (uint64 when the row's bytes
    allow it), so that "any non-zero" runs 8 voxels per operation."""
    rows = np.ascontiguousarray(array).reshape(array.shape[0], -1).view(np.uint8)
    return rows.view(np.uint64) if rows.shape[1] % 8 == 0 else rows


def mask_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of the non-zero voxels of a 3D array (a mask or a label map): axis 0 from
    one max per row of words, the other two from the bitwise OR of the occupied rows."""
    if mask.size == 0:
        return None
    words = _byte_rows(mask)
    xs = np.flatnonzero(words.max(axis=1))
    if len(xs) == 0:
        return None
    slab = np.bitwise_or.reduce(words[xs[0] : xs[-1] + 1], axis=0)
    plane = slab.view(np.uint8).reshape(mask.shape[1], -1)
    ys, zs = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    item = mask.dtype.itemsize
    return (
        slice(int(xs[0]), int(xs[-1]) + 1),
        slice(int(ys[0]), int(ys[-1]) + 1),
        slice(int(zs[0]) // item, int(zs[-1]) // item + 1),
    )


def union_box(*masks: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of the union of boolean masks; None when all are empty."""
    boxes = [box for box in (mask_box(m) for m in masks) if box]
    return merge_boxes(boxes)


def label_boxes(labels: np.ndarray) -> Mapping[int, tuple[slice, ...]]:
    """Bounding box of every positive label value, from the bounding box of all labels only
    (whole-body maps are mostly background): with numba, one scan of the rows that hold any
    label (found eight bytes at a time); otherwise one ``find_objects`` pass."""
    outer = mask_box(labels)
    if outer is None:
        return {}
    inner = np.ascontiguousarray(labels[outer])
    if COMPILED and inner.dtype.itemsize <= 2:
        return _scanned_boxes(inner, outer)
    boxes = ndimage.find_objects(inner)
    return {
        i + 1: tuple(
            slice(o.start + b.start, o.start + b.stop) for o, b in zip(outer, box, strict=True)
        )
        for i, box in enumerate(boxes)
        if box is not None
    }


def _scanned_boxes(labels: np.ndarray, outer: tuple[slice, ...]) -> Mapping[int, tuple[slice, ...]]:
    nx, ny, nz = labels.shape
    rows = labels.reshape(nx * ny, nz).view(np.uint8)
    width = next(w for w in (8, 4, 2, 1) if rows.shape[1] % w == 0)
    busy = np.flatnonzero(rows.view(f"u{width}").max(axis=1))
    top = max(int(labels.max()), 0) if len(busy) else 0
    lows, highs = _row_boxes(labels.reshape(nx * ny, nz), busy, ny, top)
    return {
        value: tuple(
            slice(o.start + int(lo), o.start + int(hi) + 1)
            for o, lo, hi in zip(outer, lows[value], highs[value], strict=True)
        )
        for value in range(1, top + 1)
        if highs[value, 0] >= 0
    }


@jit
def _row_boxes(
    rows: np.ndarray, busy: np.ndarray, ny: int, top: int
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - jitted
    """Per label value, the lowest and highest (x, y, z) over the listed rows."""
    lows = np.full((top + 1, 3), np.iinfo(np.int64).max, np.int64)
    highs = np.full((top + 1, 3), -1, np.int64)
    for k in busy:
        x, y = k // ny, k % ny
        row = rows[k]
        for z in range(len(row)):
            v = row[z]
            if v <= 0:
                continue
            if x < lows[v, 0]:
                lows[v, 0] = x
            if x > highs[v, 0]:
                highs[v, 0] = x
            if y < lows[v, 1]:
                lows[v, 1] = y
            if y > highs[v, 1]:
                highs[v, 1] = y
            if z < lows[v, 2]:
                lows[v, 2] = z
            if z > highs[v, 2]:
                highs[v, 2] = z
    return lows, highs


def merge_boxes(boxes: Sequence[tuple[slice, ...]]) -> tuple[slice, ...] | None:
    if not boxes:
        return None
    return tuple(
        slice(min(b[axis].start for b in boxes), max(b[axis].stop for b in boxes))
        for axis in range(3)
    )
