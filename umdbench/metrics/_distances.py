"""Exact surfel-to-surface distances on the CPU (numpy / scipy).

Every distance is exact in float64 and computed like scipy's EDT (``sqrt((dx s0)^2 + (dy s1)^2
+ (dz s2)^2)`` on integer corner offsets), so values match DeepMind's package up to ties:

1. *near*: corner offsets sorted by length up to ``radius`` mm are tried in order on the still
   unresolved surfels (one gather into a padded boolean grid per offset, into preallocated
   buffers); the first offset that lands on the other surface gives the distance. Good
   predictions resolve almost every surfel here, with no distance transform at all.
2. *far*: the few surfels left query a KD-tree of the other surface's corners.

Near hits also give each surfel a small integer rank of its distance, so the robust Hausdorff
needs no sort of all surfels (``SurfaceDistances.sorted_ref``/``sorted_pred``: the (distance,
area) pairs in DeepMind's order, built by counting).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from umdbench.metrics._surfels import area_table, border_pair, neighbour_codes

__all__ = [
    "SurfaceDistances",
    "exact_length",
    "neighbour_codes",
    "offsets_by_length",
    "surface_distances",
]

Spacing = tuple[float, float, float]
Sorted = tuple[np.ndarray, np.ndarray]


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
    pred: np.ndarray, ref: np.ndarray, spacing: Spacing, radius: float | None = None
) -> SurfaceDistances:
    """Surfel distances between two non-empty boolean masks of one (cropped) grid."""
    radius = 3.0 * max(spacing) if radius is None else radius
    pred, ref = pred.astype(bool, copy=False), ref.astype(bool, copy=False)
    mixed, corners, code_p, code_r = border_pair(pred, ref)
    _, cy, cz = mixed.shape
    x, rest = np.divmod(corners, cy * cz)
    y, z = np.divmod(rest, cz)
    coords = np.stack([x, y, z], axis=1)
    bits = mixed.reshape(-1)[corners]
    is_p, is_r = (bits & 1).astype(bool), (bits & 2).astype(bool)
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
