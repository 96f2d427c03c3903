"""Exact surfel-to-surface distances on the CPU (numba kernels, or numpy / scipy).

Every distance is exact in float64 and computed like scipy's EDT (``sqrt((dx s0)^2 + (dy s1)^2
+ (dz s2)^2)`` on integer corner offsets), so values match DeepMind's package up to ties.

With numba (``COMPILED``): rows run along the finest axis; per row, the gap to the nearest
surfel of the other surface (``_row_gaps``); per surfel, the columns across rows are scanned
shortest first until a column alone is no shorter than the best hit (``_nearest``, exact
because float sums of non-negative terms are monotone). Work per surfel grows as d^2.

Without numba: *near* corner offsets sorted by length up to ``radius`` mm are tried in order
on the still unresolved surfels (one gather into a padded boolean grid per offset); the few
surfels left query a KD-tree of the other surface's corners (*far*).

Either way each distance gets a small integer rank, so the robust Hausdorff needs no sort of
all surfels (``SurfaceDistances.sorted_ref``/``sorted_pred``: the (distance, area) pairs in
DeepMind's order, built by counting).
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from umdbench.metrics._surfels import (
    COMPILED,
    area_table,
    cell_or,
    corner_pair_codes,
    jit,
    neighbour_codes,
    pair_voxels,
    voxel_surfels,
)

__all__ = [
    "COMPILED",
    "SurfaceDistances",
    "exact_length",
    "neighbour_codes",
    "offsets_by_length",
    "surface_distances",
    "voxel_distances",
]

Spacing = tuple[float, float, float]
Sorted = tuple[np.ndarray, np.ndarray]
FIRST_REACH = 16.0  # first column list: this many coarsest voxels (then 4x, 16x, ...)
_NONE = 1 << 14  # row gap meaning "no surfel in this row" (int16 gaps: rows < 16384)


@jit
def _fill_row(bits: np.ndarray, bit: int, out: np.ndarray) -> None:  # pragma: no cover - jitted
    """Gap along one row to the nearest surfel flagged ``bit`` (``cell_or`` values): one read
    and one write per cell."""
    n = len(bits)
    prev, start, r_none = -_NONE, 0, n + _NONE
    for t in range(n + 1):
        if t < n and not bits[t] & (bits[t] >> 2) & bit:
            continue
        nxt = t if t < n else r_none
        for r in range(start, t):
            out[r] = min(r - prev, nxt - r)
        if t < n:
            out[t] = 0
        prev, start = t, t + 1


@jit
def _row_gaps(bits: np.ndarray, bit: int) -> np.ndarray:  # pragma: no cover - jitted
    """Per corner, the number of corners along the last axis to the nearest corner of the
    same row carrying ``bit``; ``_NONE`` or more when the row has none."""
    n_a, n_b, _ = bits.shape
    gaps = np.empty(bits.shape, np.int16)
    for a in range(n_a):
        for b in range(n_b):
            _fill_row(bits[a, b], bit, gaps[a, b])
    return gaps


@jit
def _nearest(
    qa: np.ndarray,
    qb: np.ndarray,
    qr: np.ndarray,
    gaps: np.ndarray,
    col_a: np.ndarray,
    col_b: np.ndarray,
    col_len2: np.ndarray,
    sa: float,
    sb: float,
    sr: float,
    row: int,
    limit: float,
    reach: tuple[int, int, int],
    out: np.ndarray,
    slot: np.ndarray,
) -> None:  # pragma: no cover - jitted
    """Squared distance (mm^2, summed in the original axis order like scipy) from each query
    corner to the nearest target corner in ``out``; in ``slot``, the cell of its |offset| in
    the rank table of ``_cell_ranks`` (``reach``), or -1 beyond it.
    Columns come shortest first; the scan stops once a column alone is no shorter than the
    best hit (float sums of non-negative terms are monotone, so this is exact). Columns left
    out of the list are no shorter than ``limit``; a query whose best exceeds it is marked
    ``slot[i] = -2``: the caller retries it with a longer list."""
    n_a, n_b, n_r = gaps.shape
    flat = gaps.reshape(-1)
    n_cols = len(col_len2)
    col_ta, col_tb = np.empty(n_cols), np.empty(n_cols)
    col_off = np.empty(n_cols, np.int64)
    for c in range(n_cols):
        col_ta[c], col_tb[c] = (col_a[c] * sa) ** 2, (col_b[c] * sb) ** 2
        col_off[c] = (col_a[c] * n_b + col_b[c]) * n_r
    for i in range(len(qa)):
        best, best_c, best_g = np.inf, 0, 0
        base = (qa[i] * n_b + qb[i]) * n_r + qr[i]
        inner = min(qa[i], n_a - 1 - qa[i]), min(qb[i], n_b - 1 - qb[i])
        for c in range(n_cols):
            if col_len2[c] >= best:
                break
            da, db = col_a[c], col_b[c]
            if abs(da) > inner[0] or abs(db) > inner[1]:
                a, b = qa[i] + da, qb[i] + db
                if a < 0 or a >= n_a or b < 0 or b >= n_b:
                    continue
            g = flat[base + col_off[c]]
            if g >= _NONE:
                continue
            tr = (g * sr) ** 2
            if row == 2:
                d2 = (col_ta[c] + col_tb[c]) + tr
            elif row == 1:
                d2 = (col_ta[c] + tr) + col_tb[c]
            else:
                d2 = (tr + col_ta[c]) + col_tb[c]
            if d2 < best:
                best, best_c, best_g = d2, c, g
        best_a, best_b = abs(col_a[best_c]), abs(col_b[best_c])
        out[i] = best
        if best > limit:
            slot[i] = -2  # the list ended before the scan could stop: not yet exact
            continue
        if row == 2:
            d0, d1, d2 = best_a, best_b, best_g
        elif row == 1:
            d0, d1, d2 = best_a, best_g, best_b
        else:
            d0, d1, d2 = best_g, best_a, best_b
        if d0 <= reach[0] and d1 <= reach[1] and d2 <= reach[2]:
            slot[i] = (d0 * (reach[1] + 1) + d1) * (reach[2] + 1) + d2
        else:
            slot[i] = -1


@dataclass(frozen=True)
class SurfaceDistances:
    """Distances (mm) from each surfel of one surface to the other surface, with areas (mm^2).

    ``sorted_ref``/``sorted_pred``, when present, are (distances, areas) sorted by distance then
    area, as DeepMind sorts them; the summaries sort themselves when they are absent."""

    dist_ref: np.ndarray
    area_ref: np.ndarray
    dist_pred: np.ndarray
    area_pred: np.ndarray
    sorted_ref: Sorted | None = None
    sorted_pred: Sorted | None = None


def exact_length(delta: np.ndarray, spacing: Spacing) -> np.ndarray:
    """Length in mm of integer corner offsets (n x 3), summed in scipy's order."""
    d = delta.astype(np.float64)
    return np.sqrt(
        (d[:, 0] * spacing[0]) ** 2 + (d[:, 1] * spacing[1]) ** 2 + (d[:, 2] * spacing[2]) ** 2
    )


@functools.cache
def offsets_by_length(spacing: Spacing, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer offsets with length <= radius mm (origin excluded), shortest first."""
    reach = [int(np.floor(radius / s)) for s in spacing]
    grids = np.meshgrid(*(np.arange(-r, r + 1) for r in reach), indexing="ij")
    delta = np.stack([g.ravel() for g in grids], axis=1)
    length = exact_length(delta, spacing)
    keep = (length <= radius) & (length > 0)
    delta, length = delta[keep], length[keep]
    order = np.argsort(length, kind="stable")
    delta, length = delta[order], length[order]
    delta.setflags(write=False)
    length.setflags(write=False)
    return delta, length


@functools.cache
def _length_ranks(spacing: Spacing, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Distinct near lengths (0 first) and, per offset slot (0 = on the surface, k + 1 =
    offset k), the rank of its length among them."""
    _, length = offsets_by_length(spacing, radius)
    values, rank = np.unique(np.concatenate([[0.0], length]), return_inverse=True)
    return values, rank.astype(np.intp)


@functools.cache
def _area_ranks(spacing: Spacing) -> tuple[np.ndarray, np.ndarray]:
    """Distinct surfel areas and the rank of each code's area among them."""
    values, rank = np.unique(area_table(spacing), return_inverse=True)
    return values, rank.astype(np.intp)


def _padded(bits: np.ndarray, bit: int, margin: np.ndarray) -> np.ndarray:
    """Boolean grid of one surface, padded by ``margin`` so that every near offset stays in."""
    shape = tuple(n + 2 * m for n, m in zip(bits.shape, margin.tolist(), strict=True))
    grid = np.zeros(shape, np.uint8)
    inner = grid[tuple(slice(m, m + n) for n, m in zip(bits.shape, margin.tolist(), strict=True))]
    np.right_shift(bits, bit.bit_length() - 1, out=inner)
    np.bitwise_and(inner, 1, out=inner)
    return grid.view(bool)


def _near(flat_index: np.ndarray, grid: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Offset slot of the nearest hit per surfel: 0 = on the other surface, k + 1 = offset k,
    -1 = none within the radius."""
    flat = grid.reshape(-1)
    slot = np.full(len(flat_index), -1, np.intp)
    hit = flat.take(flat_index, mode="clip")
    slot[hit] = 0
    todo = np.flatnonzero(~hit)
    cur = flat_index[todo]
    buf = np.empty(len(cur), np.intp)
    got = np.empty(len(cur), bool)
    for k, shift in enumerate(shifts.tolist()):
        n = len(cur)
        if n == 0:
            break
        np.add(cur, shift, out=buf[:n])
        flat.take(buf[:n], out=got[:n], mode="clip")
        if got[:n].any():
            slot[todo[got[:n]]] = k + 1
            keep = ~got[:n]
            todo, cur = todo[keep], cur[keep]
    return slot


def _far(coords: np.ndarray, target_coords: np.ndarray, spacing: Spacing) -> np.ndarray:
    """Exact distance to the nearest target corner via a KD-tree."""
    scale = np.asarray(spacing, np.float64)
    tree = cKDTree(target_coords * scale, balanced_tree=False, compact_nodes=False)
    _, nearest = tree.query(coords * scale)
    return exact_length(coords - target_coords[nearest], spacing)


def _sorted_pairs(
    slot: np.ndarray, code: np.ndarray, far_dist: np.ndarray, far_area: np.ndarray, ranks: tuple
) -> Sorted:
    """(distance, area) pairs in DeepMind's order, by counting the near pairs (small integer
    keys) and sorting only the far ones."""
    (lengths, length_rank), (areas, area_rank) = ranks
    near = slot >= 0
    key = length_rank[slot[near]] * len(areas) + area_rank[code[near]]
    counts = np.bincount(key, minlength=len(lengths) * len(areas))
    present = np.flatnonzero(counts)
    reps = counts[present]
    far_order = np.lexsort((far_area, far_dist))
    dist = np.concatenate([np.repeat(lengths[present // len(areas)], reps), far_dist[far_order]])
    area = np.concatenate([np.repeat(areas[present % len(areas)], reps), far_area[far_order]])
    return dist, area


def _directed(
    coords: np.ndarray,
    code: np.ndarray,
    grid: np.ndarray,
    target_coords: np.ndarray,
    margin: np.ndarray,
    spacing: Spacing,
    radius: float,
) -> tuple[np.ndarray, np.ndarray, Sorted]:
    """Distances, areas and sorted pairs of one surface's surfels to the other surface."""
    area = area_table(spacing)[code]
    if len(target_coords) == 0:
        dist = np.full(len(code), np.inf)
        order = np.argsort(area, kind="stable")
        return dist, area, (dist[order], area[order])
    delta, _ = offsets_by_length(spacing, radius)
    strides = np.array(grid.strides, np.intp)
    flat_index = (coords + margin) @ strides
    slot = _near(flat_index, grid, delta @ strides)
    lengths, length_rank = _length_ranks(spacing, radius)
    dist = np.empty(len(slot))
    near = slot >= 0
    dist[near] = lengths[length_rank[slot[near]]]
    far = np.flatnonzero(~near)
    if len(far):
        dist[far] = _far(coords[far], target_coords, spacing)
    ranks = ((lengths, length_rank), _area_ranks(spacing))
    pairs = _sorted_pairs(slot, code, dist[far], area[far], ranks)
    return dist, area, pairs


def surface_distances(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Spacing,
    radius: float | None = None,
    compiled: bool | None = None,
) -> SurfaceDistances:
    """Surfel distances between two boolean masks of one (cropped) grid.

    ``compiled`` picks the numba kernels (default: when numba is installed); without them the
    numpy search runs, with near offsets up to ``radius`` mm (default 3 x the largest voxel)."""
    pred, ref = pred.astype(bool, copy=False), ref.astype(bool, copy=False)
    return voxel_distances(pair_voxels(pred, ref)[0], spacing, radius, compiled)


def voxel_distances(
    voxels: np.ndarray, spacing: Spacing, radius: float | None = None, compiled: bool | None = None
) -> SurfaceDistances:
    """``surface_distances`` of the two masks of a ``pair_voxels`` grid."""
    if (COMPILED if compiled is None else compiled) and max(voxels.shape) < _NONE:
        return _compiled_distances(voxels, spacing)
    mixed, coords, code_p, code_r = voxel_surfels(voxels)
    is_p, is_r = (code_p != 0) & (code_p != 255), (code_r != 0) & (code_r != 255)
    radius = 3.0 * max(spacing) if radius is None else radius
    delta, _ = offsets_by_length(spacing, radius)
    margin = np.abs(delta).max(axis=0) if len(delta) else np.zeros(3, np.intp)
    grid_p, grid_r = _padded(mixed, 1, margin), _padded(mixed, 2, margin)
    coords_p, coords_r = coords[is_p], coords[is_r]
    dist_r, area_r, sorted_r = _directed(
        coords_r, code_r[is_r], grid_p, coords_p, margin, spacing, radius
    )
    dist_p, area_p, sorted_p = _directed(
        coords_p, code_p[is_p], grid_r, coords_r, margin, spacing, radius
    )
    return SurfaceDistances(dist_r, area_r, dist_p, area_p, sorted_r, sorted_p)


@functools.lru_cache(maxsize=32)
def _columns(spacing: Spacing, row: int, reach: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Every (da, db) corner offset across the rows (axes other than ``row``) with |da|, |db|
    within ``reach``, sorted by the float length ``(da sa)^2 + (db sb)^2``."""
    sa, sb = (spacing[axis] for axis in range(3) if axis != row)
    grid_a, grid_b = np.meshgrid(
        np.arange(-reach[0], reach[0] + 1), np.arange(-reach[1], reach[1] + 1), indexing="ij"
    )
    da, db = grid_a.ravel(), grid_b.ravel()
    length2 = (da * sa) ** 2 + (db * sb) ** 2
    order = np.argsort(length2, kind="stable")
    return da[order].copy(), db[order].copy(), length2[order].copy()


@functools.lru_cache(maxsize=16)
def _cell_ranks(spacing: Spacing) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """Distinct lengths of the offsets no longer than 16 coarsest voxels and, for each cell
    (|d0|, |d1|, |d2|) of the cube around them, the rank of its length among them (-1 for the
    cube's corners beyond that ball: such offsets and all longer ones are sorted directly,
    after every ranked one, as they are longer)."""
    radius = 16.0 * max(spacing)
    reach = tuple(int(radius // s) for s in spacing)
    grids = np.meshgrid(*(np.arange(r + 1) for r in reach), indexing="ij")
    length = exact_length(np.stack([g.ravel() for g in grids], axis=1), spacing)
    inside = length <= radius
    values, rank = np.unique(length[inside], return_inverse=True)
    ranks = np.full(len(length), -1, np.intp)
    ranks[inside] = rank
    return values, ranks, (reach[0], reach[1], reach[2])


def _scan_columns(
    query: tuple[np.ndarray, np.ndarray, np.ndarray],
    gaps: np.ndarray,
    row: int,
    spacing: Spacing,
    reach: tuple[int, int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances and rank-table cells of all queries: columns up to ``FIRST_REACH``
    coarsest voxels first, then four times farther for the few queries that need it, until
    the list spans the whole grid."""
    qa, qb, qr = query
    others = [axis for axis in range(3) if axis != row]
    sa, sb, sr = spacing[others[0]], spacing[others[1]], spacing[row]
    out, slot = np.empty(len(qa)), np.empty(len(qa), np.intp)
    todo, reach_mm = None, FIRST_REACH * max(spacing)
    while todo is None or len(todo):
        cols = (int(reach_mm // sa), int(reach_mm // sb))
        complete = cols[0] >= gaps.shape[0] and cols[1] >= gaps.shape[1]
        if complete:
            cols = (min(cols[0], _bucket(gaps.shape[0])), min(cols[1], _bucket(gaps.shape[1])))
        limit = np.inf if complete else min((cols[0] + 1) * sa, (cols[1] + 1) * sb) ** 2
        da, db, length2 = _columns(spacing, row, cols)
        args = (gaps, da, db, length2, sa, sb, sr, row, limit, reach)
        if todo is None:  # first pass: every query, no copies
            _nearest(qa, qb, qr, *args, out, slot)
            todo = np.flatnonzero(slot == -2)
        else:
            part_out, part_slot = np.empty(len(todo)), np.empty(len(todo), np.intp)
            _nearest(qa[todo], qb[todo], qr[todo], *args, part_out, part_slot)
            out[todo], slot[todo] = part_out, part_slot
            todo = todo[part_slot == -2]
        reach_mm *= 4.0
    return out, slot


def _bucket(n: int) -> int:
    """Round an extent up to a power of two, so that a few cached column lists serve all."""
    return 1 << max(4, (n - 1).bit_length())


def _compiled_directed(
    bits: np.ndarray, bit: int, query: tuple[np.ndarray, ...], row: int, spacing: Spacing
) -> tuple[np.ndarray, np.ndarray, Sorted]:
    """Distances, areas and sorted pairs of one surface's surfels (``query``: their three
    coordinates in the row-last axis order of ``bits``, and their codes) to the surface
    marked by ``bit``."""
    qa, qb, qr, code = query
    area = area_table(spacing)[code]
    values, ranks, reach = _cell_ranks(spacing)
    dist2, slot = _scan_columns((qa, qb, qr), _row_gaps(bits, bit), row, spacing, reach)
    dist = np.sqrt(dist2)
    rank = np.where(slot >= 0, ranks[np.maximum(slot, 0)], -1)
    far = np.flatnonzero(rank < 0)
    identity = np.arange(len(values))
    pairs = _sorted_pairs(
        rank, code, dist[far], area[far], ((values, identity), _area_ranks(spacing))
    )
    return dist, area, pairs


@functools.cache
def _pool() -> ThreadPoolExecutor:
    """Two threads: the two directions run side by side (the kernels release the GIL)."""
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="umdbench-surface")


def _compiled_distances(voxels: np.ndarray, spacing: Spacing) -> SurfaceDistances:
    """Both directions with the numba kernels. Axes are permuted so that rows run along the
    finest axis and come last; surfels are listed in that order, so that neighbouring queries
    read neighbouring rows. Per row, the gap to the nearest surfel of the other surface; per
    surfel, a scan of the columns by length."""
    row = 2 - int(np.argmin(spacing[::-1]))
    others = [axis for axis in range(3) if axis != row]
    perm = (others[0], others[1], row)
    bits = np.empty(tuple(voxels.shape[axis] - 1 for axis in perm), np.uint8)
    cell_or(voxels, out=bits.transpose(np.argsort(perm)))
    n_p, n_r = _count_bits(bits)
    surfels = _split_surfels(voxels, bits, row, n_p, n_r)
    query_p, query_r = surfels[:4], surfels[4:]
    if n_p == 0 or n_r == 0:
        return _empty_side(query_p[3], query_r[3], spacing)
    to_p = _pool().submit(_compiled_directed, bits, 1, query_r, row, spacing)
    dist_p, area_p, sorted_p = _compiled_directed(bits, 2, query_p, row, spacing)
    dist_r, area_r, sorted_r = to_p.result()
    return SurfaceDistances(dist_r, area_r, dist_p, area_p, sorted_r, sorted_p)


@jit
def _count_bits(bits: np.ndarray) -> tuple[int, int]:  # pragma: no cover - jitted
    flat = bits.reshape(-1)
    n_p, n_r = 0, 0
    for k in range(len(flat)):
        v = flat[k] & (flat[k] >> 2)
        n_p += v & 1
        n_r += (v >> 1) & 1
    return n_p, n_r


@jit
def _split_surfels(
    voxels: np.ndarray, bits: np.ndarray, row: int, n_p: int, n_r: int
) -> tuple[np.ndarray, ...]:  # pragma: no cover - jitted
    """Row-last coordinates and codes of the pred surfels, then of the ref surfels, in the
    C order of ``bits`` (bit 7 - (4i + 2j + k) of a code is the voxel at offset (i, j, k) in the
    original axes)."""
    n_a, n_b, n_row = bits.shape
    out_p = (np.empty(n_p, np.int64), np.empty(n_p, np.int64), np.empty(n_p, np.int64))
    out_r = (np.empty(n_r, np.int64), np.empty(n_r, np.int64), np.empty(n_r, np.int64))
    code_p, code_r = np.empty(n_p, np.uint8), np.empty(n_r, np.uint8)
    i_p, i_r = 0, 0
    for a in range(n_a):
        for b in range(n_b):
            for r in range(n_row):
                v = bits[a, b, r] & (bits[a, b, r] >> 2) & 3
                if v == 0:
                    continue
                if row == 2:
                    x, y, z = a, b, r
                elif row == 1:
                    x, y, z = a, r, b
                else:
                    x, y, z = r, a, b
                p, q = corner_pair_codes(voxels, x, y, z)
                if v & 1:
                    out_p[0][i_p], out_p[1][i_p], out_p[2][i_p], code_p[i_p] = a, b, r, p
                    i_p += 1
                if v & 2:
                    out_r[0][i_r], out_r[1][i_r], out_r[2][i_r], code_r[i_r] = a, b, r, q
                    i_r += 1
    return out_p[0], out_p[1], out_p[2], code_p, out_r[0], out_r[1], out_r[2], code_r


def _empty_side(code_p: np.ndarray, code_r: np.ndarray, spacing: Spacing) -> SurfaceDistances:
    """One surface is empty: every surfel of the other is infinitely far."""
    table = area_table(spacing)
    area_p, area_r = table[code_p], table[code_r]
    dist_p, dist_r = np.full(len(area_p), np.inf), np.full(len(area_r), np.inf)
    return SurfaceDistances(dist_r, area_r, dist_p, area_p)
