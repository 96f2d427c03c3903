"""Segmentation metrics for one prediction against one reference on one grid.

``organ_metrics`` is the call the suite makes per organ; ``multilabel_metrics`` gives every
organ of two label maps from one call. Both return plain floats and ints (JSON-ready) with the
keys ``dice``, ``iou``, ``nsd_1mm``, ``nsd_2mm``, ``hd95``, ``hd``, ``assd``, ``rve``, ``tp``,
``fp``, ``fn``, ``n_ref``, ``n_pred``, ``voxel_ml``. Surface figures follow DeepMind's
``surface-distance`` definitions exactly. Empty masks (docs/metrics.md has the table): both
empty -> NaN everywhere (left out of means, counted); one empty -> overlap figures 0, distances
inf. Non-finite input is an error. The backend follows ``device``: "cpu" (numba kernels;
numpy/scipy where numba is absent) or a CUDA device (torch); "auto" picks CUDA when present.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from umdbench.metrics._distances import SurfaceDistances, surface_distances
from umdbench.metrics._surfels import area_table
from umdbench.metrics.aggregate import aggregate
from umdbench.metrics.engine import (
    DEFAULT_TOLERANCES,
    check_spacing,
    check_tolerances,
    crop_figures,
    empty_figures,
    label_boxes,
    merge_boxes,
    nsd_key,
    overlap_figures,
    to_mask,
    union_box,
)

__all__ = [
    "DEFAULT_TOLERANCES",
    "SurfaceDistances",
    "aggregate",
    "area_table",
    "confusion_counts",
    "dice",
    "multilabel_metrics",
    "nsd_key",
    "organ_metrics",
    "resolve_backend",
    "surface_distances",
]

Figures = dict[str, float | int]
LabelValues = int | Iterable[int]


def confusion_counts(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int]:
    """True positives, false positives, false negatives of two masks."""
    pred, ref = to_mask(pred, "pred"), to_mask(ref, "ref")
    _same_shape(pred, ref)
    tp = int(np.count_nonzero(pred & ref))
    return tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(ref)) - tp


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """2|A∩B| / (|A|+|B|); NaN when both are empty."""
    tp, fp, fn = confusion_counts(pred, ref)
    denominator = 2 * tp + fp + fn
    return float("nan") if denominator == 0 else 2.0 * tp / denominator


def resolve_backend(device: Any) -> str:
    """``"cpu"`` or a torch CUDA device string; ``"auto"`` means CUDA when available."""
    name = str(device)
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu" or name.startswith("cuda") or name == "torch-cpu":
        return name
    raise ValueError(f"`device` must be 'cpu', 'cuda[:N]', 'torch-cpu' or 'auto', got {device!r}")


def organ_metrics(
    pred: Any,
    ref: Any,
    spacing: Sequence[float],
    *,
    tolerances: Sequence[float] = DEFAULT_TOLERANCES,
    device: Any = "cpu",
) -> Figures:
    """Every figure the audit records for one organ of one scan (masks: non-zero = inside)."""
    spacing3, tols = check_spacing(spacing), check_tolerances(tolerances)
    backend = resolve_backend(device)
    if backend != "cpu":
        from umdbench.metrics import _torch

        return _torch.organ_metrics(pred, ref, spacing3, tols, backend)
    pred_m, ref_m = to_mask(_to_numpy(pred), "pred"), to_mask(_to_numpy(ref), "ref")
    _same_shape(pred_m, ref_m)
    box = union_box(pred_m, ref_m)
    if box is None:
        figures = overlap_figures(0, 0, 0, spacing3)
        figures.update(empty_figures(0, 0, tols))
        return figures
    return crop_figures(pred_m[box], ref_m[box], spacing3, tols)


def multilabel_metrics(
    pred_labels: Any,
    ref_labels: Any,
    organs: Mapping[str, tuple[LabelValues, LabelValues]],
    spacing: Sequence[float],
    device: Any = "cpu",
    *,
    tolerances: Sequence[float] = DEFAULT_TOLERANCES,
    surface: bool = True,
) -> dict[str, Figures]:
    """Figures of every organ of two label maps; ``organs`` maps a name to the (prediction,
    reference) label value(s) that make it, e.g. ``{"lung": (7, (10, 11, 12, 13, 14))}``.
    ``surface=False`` (CPU backend) gives the overlap figures only, for Dice-only audits."""
    spacing3, tols = check_spacing(spacing), check_tolerances(tolerances)
    values = {name: _organ_values(name, pair) for name, pair in organs.items()}
    backend = resolve_backend(device)
    if backend != "cpu":
        from umdbench.metrics import _torch

        return _torch.multilabel_metrics(pred_labels, ref_labels, values, spacing3, tols, backend)
    pred_l = _check_labels(_to_numpy(pred_labels), "pred_labels")
    ref_l = _check_labels(_to_numpy(ref_labels), "ref_labels")
    _same_shape(pred_l, ref_l)
    boxes_p, boxes_r = label_boxes(pred_l), label_boxes(ref_l)
    result: dict[str, Figures] = {}
    for name, (p_values, r_values) in values.items():
        box = merge_boxes(
            [boxes_p[v] for v in p_values if v in boxes_p]
            + [boxes_r[v] for v in r_values if v in boxes_r]
        )
        if box is None:
            figures = overlap_figures(0, 0, 0, spacing3)
            figures.update(empty_figures(0, 0, tols))
        else:
            pred_m, ref_m = _members(pred_l[box], p_values), _members(ref_l[box], r_values)
            figures = crop_figures(pred_m, ref_m, spacing3, tols, surface)
        result[name] = figures
    return result


def _members(labels: np.ndarray, values: tuple[int, ...]) -> np.ndarray:
    if len(values) == 1:
        return labels == values[0]
    return np.isin(labels, values)


def _organ_values(name: str, pair: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    try:
        pred_values, ref_values = pair
        out = tuple(
            tuple(int(v) for v in ([vals] if isinstance(vals, (int, np.integer)) else vals))
            for vals in (pred_values, ref_values)
        )
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"`organs[{name!r}]` must be (prediction values, reference values), got {pair!r}"
        ) from e
    if not all(out) or min(min(out[0]), min(out[1])) <= 0:
        raise ValueError(
            f"`organs[{name!r}]` must name positive label values on both sides "
            f"(0 is background), got {pair!r}"
        )
    return out[0], out[1]


def _check_labels(labels: Any, name: str) -> np.ndarray:
    if not isinstance(labels, np.ndarray) or labels.ndim != 3:
        raise ValueError(f"`{name}` must be a 3D numpy label map, got {type(labels).__name__}")
    if labels.dtype == bool:
        return labels.view(np.uint8)
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)):
            raise ValueError(f"`{name}` must hold only finite values, got NaN/inf voxels")
        if not np.array_equal(labels, np.round(labels)):
            raise ValueError(f"`{name}` must hold integer label values, got fractions")
        return labels.astype(np.int32)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"`{name}` must be an integer label map, got dtype {labels.dtype}")
    return labels


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"prediction and reference must share a grid, got shapes {a.shape} and {b.shape}: "
            "resample the prediction to the reference grid first"
        )


def _to_numpy(array: Any) -> Any:
    """Torch tensors are accepted on the CPU backend too."""
    if hasattr(array, "detach") and hasattr(array, "cpu"):
        return array.detach().cpu().numpy()
    return array
