"""Torch backend (CUDA, or CPU tensors for the tests): the numba backend's algorithm
(``_distances``), vectorised over surfels and run on the tensors' device in float64, so that
distances and every figure equal the numba ones bit for bit (``tests/test_metrics_torch.py``).

As there: axes are permuted so that rows run along the finest axis and come last, and surfels
are listed in the C order of that grid (the numba order, so the summaries' float sums agree).
Per row, the gap to the nearest surfel of the other surface (a cumulative max and min along
the rows). Per surfel, the columns across rows shortest first, in blocks for all unresolved
surfels at once; a surfel leaves once the next column alone is no shorter than its best hit
(exact: float sums of non-negative terms are monotone). Column lists are the numba ones
(``FIRST_REACH`` coarsest voxels, then four times farther for the surfels whose best lies
beyond), less the columns that leave the grid. Each term is rounded as the kernel rounds it;
the square root is IEEE (CUDA's, or numpy's: torch's CPU one may be one ulp off). The
(distance, area) pairs are sorted on the device; the summaries reuse the numpy code on those
per-surfel arrays, so both backends round alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from umdbench.metrics import _distances
from umdbench.metrics._distances import SurfaceDistances, _bucket, _columns
from umdbench.metrics._summary import assd, nsd, robust_hausdorffs
from umdbench.metrics._surfels import _BITS, area_table
from umdbench.metrics.engine import empty_figures, nsd_key, overlap_figures

__all__ = ["multilabel_metrics", "organ_metrics", "surface_distances"]

Spacing = tuple[float, float, float]
Figures = dict[str, float | int]
Query = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
BLOCK = 1 << 21  # (surfel, column) pairs per step of the column scan: bounds its memory
_PLANES = 1 << 24  # corners per step of the row gaps


def _device(backend: str) -> torch.device:
    return torch.device("cpu" if backend == "torch-cpu" else backend)


def _tensor(array: Any, name: str, device: torch.device) -> torch.Tensor:
    tensor = array if isinstance(array, torch.Tensor) else torch.as_tensor(np.asarray(array))
    if tensor.ndim != 3:
        raise ValueError(f"`{name}` must be 3D, got shape {tuple(tensor.shape)}")
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"`{name}` must hold only finite values, got NaN/inf voxels")
    return tensor.to(device)


def _mask(tensor: torch.Tensor) -> torch.Tensor:
    """Non-zero = inside; a boolean tensor as it is (``!= 0`` would widen it to int64)."""
    return tensor if tensor.dtype == torch.bool else tensor != 0


def _codes(mask: torch.Tensor) -> torch.Tensor:
    """``_surfels.neighbour_codes`` on the device: the 8-bit code of every voxel corner."""
    padded = torch.nn.functional.pad(mask.to(torch.uint8), (1, 1, 1, 1, 1, 1))
    nx, ny, nz = (n + 1 for n in mask.shape)
    codes = torch.zeros((nx, ny, nz), dtype=torch.uint8, device=mask.device)
    for a, b, c, bit in _BITS:
        codes |= padded[a : a + nx, b : b + ny, c : c + nz] << bit
    return codes


def _row_axis(spacing: Spacing) -> tuple[int, tuple[int, int, int]]:
    """The numba backend's row axis (the finest, the last one among ties) and the axis order
    that puts it last."""
    row = 2 - int(np.argmin(spacing[::-1]))
    others = [axis for axis in range(3) if axis != row]
    return row, (others[0], others[1], row)


def _surfels(
    mask: torch.Tensor, perm: tuple[int, int, int], table: torch.Tensor
) -> tuple[torch.Tensor, Query, torch.Tensor]:
    """Surfel flags of the row-last corner grid, the surfels' row-last coordinates in its C
    order (the numba order) and their areas."""
    codes = _codes(mask).permute(perm).contiguous()
    flag = (codes != 0) & (codes != 255)
    coords = torch.nonzero(flag)
    qa, qb, qr = coords.unbind(1)
    return flag, (qa, qb, qr), table[codes[qa, qb, qr].long()]


def _row_gaps(flag: torch.Tensor) -> torch.Tensor:
    """Per corner, the corners along the last axis to the nearest flagged one of its row
    (``_distances._row_gaps``, from a cumulative max and min); ``n_r`` when the row has none.
    The grid is padded by one such row on each side of the other two axes, so that clamped
    offsets land on "none" instead of needing bounds checks."""
    n_a, n_b, n_r = flag.shape
    dtype = torch.int16 if n_r < 1 << 15 else torch.int32
    pos = torch.arange(n_r, dtype=torch.int32, device=flag.device)
    gaps = torch.full((n_a + 2, n_b + 2, n_r), n_r, dtype=dtype, device=flag.device)
    step = max(1, _PLANES // max(1, n_b * n_r))
    for start in range(0, n_a, step):
        part = flag[start : start + step]
        prev = torch.where(part, pos, -n_r).cummax(2).values
        nxt = torch.where(part, pos, 2 * n_r).flip(2).cummin(2).values.flip(2)
        gap = torch.minimum(pos - prev, nxt - pos).clamp_(max=n_r)
        gaps[1 + start : 1 + start + len(part), 1 : n_b + 1] = gap
    return gaps


class _Columns(NamedTuple):
    """A column list, shortest first: offsets across rows, the squared mm terms ``(da sa)^2``
    and ``(db sb)^2`` and their sum (rounded as the numba kernel rounds them)."""

    da: torch.Tensor
    db: torch.Tensor
    ta: torch.Tensor
    tb: torch.Tensor
    length2: torch.Tensor

    def part(self, start: int, stop: int) -> _Columns:
        """Columns ``start`` to ``stop`` (views)."""
        return _Columns(*(field[start:stop] for field in self))


def _column_list(
    spacing: Spacing, row: int, cols: tuple[int, int], extent: tuple[int, int], device: torch.device
) -> _Columns:
    """The numba backend's column list (``_distances._columns``, cached) on the device,
    without the columns that leave a grid of ``extent`` rows from any corner: they never hit,
    and the kernel's bound checks skip them one by one."""
    sa, sb = (spacing[axis] for axis in range(3) if axis != row)
    da, db, length2 = _columns(spacing, row, cols)
    keep = (np.abs(da) < extent[0]) & (np.abs(db) < extent[1])
    da, db, length2 = da[keep], db[keep], length2[keep]
    arrays = (da, db, (da * sa) ** 2, (db * sb) ** 2, length2)
    return _Columns(*(torch.as_tensor(a, device=device) for a in arrays))


def _column_d2(
    query: Query, columns: _Columns, gaps: torch.Tensor, tr: torch.Tensor, row: int
) -> torch.Tensor:
    """Squared distance (mm^2) from each query (padded coordinates) to the nearest target
    corner of each column, summed in the original axis order like the numba kernel; ``tr``
    maps a gap to its squared mm, inf for "none" (rows off the grid or without a target)."""
    qa, qb, qr = query
    n_a, n_b, n_r = gaps.shape
    a = (qa[:, None] + columns.da).clamp_(0, n_a - 1)
    b = (qb[:, None] + columns.db).clamp_(0, n_b - 1)
    index = a.mul_(n_b).add_(b).mul_(n_r).add_(qr[:, None])
    d2 = tr[gaps.reshape(-1)[index].long()]
    if row == 2:  # (ta + tb) + tr
        return d2.add_(columns.length2)
    return d2.add_(columns.ta).add_(columns.tb)  # (tr + ta) + tb, = (ta + tr) + tb for row 1


def _scan_list(
    query: Query,
    best: torch.Tensor,
    start: int,
    gaps: torch.Tensor,
    tr: torch.Tensor,
    columns: _Columns,
    row: int,
) -> torch.Tensor:
    """Best squared distance of each query over one column list from column ``start`` on
    (``best``: over the columns before it): blocks of columns, shortest first, for all
    unresolved queries at once; a query leaves once the next column alone is no shorter than
    its best (as the numba kernel stops)."""
    n_cols = len(columns.length2)
    best = best.clone()
    live = torch.arange(len(best), device=gaps.device)
    width = 2
    while len(live) and start < n_cols:
        width = max(1, min(2 * width, BLOCK // len(live)))
        stop = min(n_cols, start + width)
        q = (query[0][live], query[1][live], query[2][live])
        found = _column_d2(q, columns.part(start, stop), gaps, tr, row).amin(1)
        best[live] = torch.minimum(best[live], found)
        if stop < n_cols:
            live = live[best[live] > columns.length2[stop]]
        start = stop
    return best


def _scan(query: Query, gaps: torch.Tensor, row: int, spacing: Spacing) -> torch.Tensor:
    """Squared distances of all queries to the surface of ``gaps`` (``_row_gaps``), with the
    column lists of ``_distances._scan_columns``: up to ``FIRST_REACH`` coarsest voxels first,
    then four times farther for the queries whose best lies beyond the list, until it spans
    the grid. A longer list's columns shorter than the last limit all lie in the last list,
    so a retry starts at that limit from the best found so far."""
    sa, sb = (spacing[axis] for axis in range(3) if axis != row)
    n_a, n_b, n_r = gaps.shape[0] - 2, gaps.shape[1] - 2, gaps.shape[2]
    tr = torch.arange(n_r + 1, dtype=torch.float64, device=gaps.device) * spacing[row]
    tr = tr * tr
    tr[n_r] = torch.inf
    padded = (query[0] + 1, query[1] + 1, query[2])
    out = torch.full((len(query[0]),), torch.inf, dtype=torch.float64, device=gaps.device)
    todo = torch.arange(len(out), device=gaps.device)
    reach_mm, done = _distances.FIRST_REACH * max(spacing), 0.0
    while len(todo):
        cols = (int(reach_mm // sa), int(reach_mm // sb))
        complete = cols[0] >= n_a and cols[1] >= n_b
        if complete:
            cols = (min(cols[0], _bucket(n_a)), min(cols[1], _bucket(n_b)))
        limit = np.inf if complete else min((cols[0] + 1) * sa, (cols[1] + 1) * sb) ** 2
        columns = _column_list(spacing, row, cols, (n_a, n_b), gaps.device)
        start = int(torch.searchsorted(columns.length2, done))
        part = (padded[0][todo], padded[1][todo], padded[2][todo])
        best = _scan_list(part, out[todo], start, gaps, tr, columns, row)
        out[todo] = best
        todo, done = todo[best > limit], limit
        reach_mm *= 4.0
    return out


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    """Correctly rounded square root, as numpy's and numba's: CUDA's float64 ``sqrt`` is IEEE
    (0 ulp), but torch's CPU kernels (SLEEF) may be one ulp off, so other devices use numpy."""
    if x.device.type == "cuda":
        return torch.sqrt(x)
    return torch.from_numpy(np.sqrt(x.cpu().numpy())).to(x.device)


def _sorted(dist: torch.Tensor, area: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(distance, area) pairs by distance then area (DeepMind's order), from two stable sorts
    on the device; equal to the numba backend's counted order."""
    order = torch.sort(area, stable=True).indices
    order = order[torch.sort(dist[order], stable=True).indices]
    return dist[order].cpu().numpy(), area[order].cpu().numpy()


def surface_distances(pred: torch.Tensor, ref: torch.Tensor, spacing: Spacing) -> SurfaceDistances:
    """Surfel distances of two boolean tensors of one grid, on their device; the same arrays,
    in the same order, as the numba backend's ``_distances.surface_distances``."""
    row, perm = _row_axis(spacing)
    table = torch.tensor(area_table(spacing), device=pred.device)
    flag_p, query_p, area_p = _surfels(pred, perm, table)
    flag_r, query_r, area_r = _surfels(ref, perm, table)
    if len(area_p) == 0 or len(area_r) == 0:  # every surfel of the other is infinitely far
        area_r_np, area_p_np = area_r.cpu().numpy(), area_p.cpu().numpy()
        inf_r, inf_p = np.full(len(area_r_np), np.inf), np.full(len(area_p_np), np.inf)
        return SurfaceDistances(inf_r, area_r_np, inf_p, area_p_np)
    dist_p = _sqrt(_scan(query_p, _row_gaps(flag_r), row, spacing))
    dist_r = _sqrt(_scan(query_r, _row_gaps(flag_p), row, spacing))
    return SurfaceDistances(
        dist_ref=dist_r.cpu().numpy(),
        area_ref=area_r.cpu().numpy(),
        dist_pred=dist_p.cpu().numpy(),
        area_pred=area_p.cpu().numpy(),
        sorted_ref=_sorted(dist_r, area_r),
        sorted_pred=_sorted(dist_p, area_p),
    )


def _box(mask: torch.Tensor) -> tuple[slice, ...] | None:
    """Bounding box of the True voxels; None when there are none."""
    points = torch.nonzero(mask)
    if len(points) == 0:
        return None
    low, high = points.min(0).values.tolist(), points.max(0).values.tolist()
    return tuple(slice(lo, hi + 1) for lo, hi in zip(low, high, strict=True))


def _figures(
    pred: torch.Tensor, ref: torch.Tensor, spacing: Spacing, tolerances: Sequence[float]
) -> Figures:
    """Every figure of one organ, counted and measured in the union box of the two masks
    (exact: no voxel of either lies outside it)."""
    box = _box(pred | ref)
    if box is None:
        figures = overlap_figures(0, 0, 0, spacing)
        figures.update(empty_figures(0, 0, tolerances))
        return figures
    pred, ref = pred[box], ref[box]
    n_pred, n_ref = int(torch.count_nonzero(pred)), int(torch.count_nonzero(ref))
    tp = int(torch.count_nonzero(pred & ref))
    figures = overlap_figures(tp, n_pred - tp, n_ref - tp, spacing)
    if n_pred == 0 or n_ref == 0:
        figures.update(empty_figures(n_pred, n_ref, tolerances))
        return figures
    sd = surface_distances(pred, ref, spacing)
    figures.update({nsd_key(t): nsd(sd, t) for t in tolerances})
    hd95, hd = robust_hausdorffs(sd, (95.0, 100.0))
    figures.update({"hd95": hd95, "hd": hd, "assd": assd(sd)})
    return figures


def organ_metrics(
    pred: Any, ref: Any, spacing: Spacing, tolerances: Sequence[float], backend: str
) -> Figures:
    device = _device(backend)
    pred_t, ref_t = _mask(_tensor(pred, "pred", device)), _mask(_tensor(ref, "ref", device))
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
