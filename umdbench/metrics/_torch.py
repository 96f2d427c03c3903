"""Torch backend (CUDA, or CPU tensors for testing): same algorithm and same results as the
CPU backend. Codes, borders and the near-offset search run on the device in float64; the far
phase is a chunked brute-force nearest corner; the summaries reuse the numpy code on the
(small) per-surfel arrays so both backends round alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from umdbench.metrics._distances import SurfaceDistances, offsets_by_length
from umdbench.metrics._summary import assd, nsd, robust_hausdorff
from umdbench.metrics._surfels import _BITS, area_table
from umdbench.metrics.engine import empty_figures, nsd_key, overlap_figures

__all__ = ["multilabel_metrics", "organ_metrics", "surface_distances"]

Spacing = tuple[float, float, float]
Figures = dict[str, float | int]


def _device(backend: str) -> torch.device:
    return torch.device("cpu" if backend == "torch-cpu" else backend)


def _tensor(array: Any, name: str, device: torch.device) -> torch.Tensor:
    tensor = array if isinstance(array, torch.Tensor) else torch.as_tensor(np.asarray(array))
    if tensor.ndim != 3:
        raise ValueError(f"`{name}` must be 3D, got shape {tuple(tensor.shape)}")
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"`{name}` must hold only finite values, got NaN/inf voxels")
    return tensor.to(device)


def _codes(mask: torch.Tensor) -> torch.Tensor:
    padded = torch.nn.functional.pad(mask.to(torch.uint8), (1, 1, 1, 1, 1, 1))
    nx, ny, nz = (n + 1 for n in mask.shape)
    codes = torch.zeros((nx, ny, nz), dtype=torch.uint8, device=mask.device)
    for a, b, c, bit in _BITS:
        codes |= padded[a : a + nx, b : b + ny, c : c + nz] << bit
    return codes


def _length(delta: torch.Tensor, spacing: Spacing) -> torch.Tensor:
    d = delta.to(torch.float64)
    return torch.sqrt(
        (d[:, 0] * spacing[0]) ** 2 + (d[:, 1] * spacing[1]) ** 2 + (d[:, 2] * spacing[2]) ** 2
    )


def _directed(
    coords: torch.Tensor, target: torch.Tensor, target_coords: torch.Tensor, spacing: Spacing
) -> torch.Tensor:
    dist = torch.full((len(coords),), float("inf"), dtype=torch.float64, device=coords.device)
    if len(target_coords) == 0:
        return dist
    delta_np, length_np = offsets_by_length(spacing, 2.0 * max(spacing))
    margin = np.abs(delta_np).max(axis=0)
    padded = torch.nn.functional.pad(
        target, (int(margin[2]),) * 2 + (int(margin[1]),) * 2 + (int(margin[0]),) * 2
    )
    strides = torch.tensor(padded.stride(), device=coords.device)
    flat = padded.reshape(-1)
    index = ((coords + torch.as_tensor(margin, device=coords.device)) * strides).sum(1)
    hit = flat[index]
    dist[hit] = 0.0
    todo = torch.nonzero(~hit).flatten()
    shifts = (torch.tensor(delta_np, device=coords.device) * strides).sum(1).tolist()
    for shift, step in zip(shifts, length_np.tolist(), strict=True):
        if len(todo) == 0:
            break
        hit = flat[index[todo] + shift]
        dist[todo[hit]] = step
        todo = todo[~hit]
    for chunk in torch.split(todo, 4096):
        dist[chunk] = _far(coords[chunk], target_coords, spacing)
    return dist


def _far(coords: torch.Tensor, target_coords: torch.Tensor, spacing: Spacing) -> torch.Tensor:
    scale = torch.tensor(spacing, dtype=torch.float64, device=coords.device)
    query = coords.to(torch.float64) * scale
    best = torch.full((len(coords),), float("inf"), dtype=torch.float64, device=coords.device)
    nearest = torch.zeros(len(coords), dtype=torch.long, device=coords.device)
    for start in range(0, len(target_coords), 16384):
        block = target_coords[start : start + 16384].to(torch.float64) * scale
        value, index = torch.cdist(query, block).min(dim=1)
        better = value < best
        best[better], nearest[better] = value[better], index[better] + start
    return _length(coords - target_coords[nearest], spacing)


def surface_distances(pred: torch.Tensor, ref: torch.Tensor, spacing: Spacing) -> SurfaceDistances:
    """Surfel distances of two boolean tensors of one grid (see the CPU backend)."""
    table = torch.tensor(area_table(spacing), device=pred.device)
    parts = []
    for mask in (pred, ref):
        codes = _codes(mask)
        border = (codes != 0) & (codes != 255)
        parts.append((border, torch.nonzero(border), table[codes[border].long()]))
    (b_p, c_p, a_p), (b_r, c_r, a_r) = parts
    d_r, d_p = _directed(c_r, b_p, c_p, spacing), _directed(c_p, b_r, c_r, spacing)
    return SurfaceDistances(
        dist_ref=d_r.cpu().numpy(),
        area_ref=a_r.cpu().numpy(),
        dist_pred=d_p.cpu().numpy(),
        area_pred=a_p.cpu().numpy(),
    )


def _box(mask: torch.Tensor) -> tuple[slice, ...] | None:
    points = torch.nonzero(mask)
    if len(points) == 0:
        return None
    low, high = points.min(0).values.tolist(), points.max(0).values.tolist()
    return tuple(slice(lo, hi + 1) for lo, hi in zip(low, high, strict=True))


def _figures(
    pred: torch.Tensor, ref: torch.Tensor, spacing: Spacing, tolerances: Sequence[float]
) -> Figures:
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    tp = int((pred & ref).sum())
    figures = overlap_figures(tp, n_pred - tp, n_ref - tp, spacing)
    if n_pred == 0 or n_ref == 0:
        figures.update(empty_figures(n_pred, n_ref, tolerances))
        return figures
    box = _box(pred | ref)
    assert box is not None  # both masks are non-empty here
    sd = surface_distances(pred[box], ref[box], spacing)
    figures.update({nsd_key(t): nsd(sd, t) for t in tolerances})
    figures.update(
        {"hd95": robust_hausdorff(sd, 95.0), "hd": robust_hausdorff(sd, 100.0), "assd": assd(sd)}
    )
    return figures


def organ_metrics(
    pred: Any, ref: Any, spacing: Spacing, tolerances: Sequence[float], backend: str
) -> Figures:
    device = _device(backend)
    pred_t, ref_t = _tensor(pred, "pred", device) != 0, _tensor(ref, "ref", device) != 0
    if pred_t.shape != ref_t.shape:
        raise ValueError(
            f"prediction and reference must share a grid, got shapes {tuple(pred_t.shape)} and "
            f"{tuple(ref_t.shape)}: resample the prediction to the reference grid first"
        )
    return _figures(pred_t, ref_t, spacing, tolerances)


def multilabel_metrics(
    pred_labels: Any,
    ref_labels: Any,
    organs: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]],
    spacing: Spacing,
    tolerances: Sequence[float],
    backend: str,
) -> dict[str, Figures]:
    device = _device(backend)
    pred_t = _tensor(pred_labels, "pred_labels", device)
    ref_t = _tensor(ref_labels, "ref_labels", device)
    if pred_t.shape != ref_t.shape:
        raise ValueError(
            f"prediction and reference must share a grid, got shapes {tuple(pred_t.shape)} and "
            f"{tuple(ref_t.shape)}: resample the prediction to the reference grid first"
        )
    result = {}
    for name, (p_values, r_values) in organs.items():
        pred_m = torch.isin(pred_t, torch.tensor(p_values, device=device))
        ref_m = torch.isin(ref_t, torch.tensor(r_values, device=device))
        result[name] = _figures(pred_m, ref_m, spacing, tolerances)
    return result
