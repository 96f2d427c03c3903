"""Surface elements ("surfels") of a binary mask, as DeepMind's ``surface-distance`` defines them.

A surfel sits on a voxel *corner*: the 2x2x2 voxels around the corner form an 8-bit code, and the
corner is on the surface when those voxels are neither all inside nor all outside. Its area is
the marching-cubes surface inside that 2x2x2 cell (edge-midpoint vertices). We derive the
triangles from scikit-image's Lorensen marching cubes; a cell and its complement have the same
surface, and the table uses the triangulation of whichever side has at most four inside
corners (this matches DeepMind's table to rounding; a test checks it).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

numba: Any
try:
    import numba
except ImportError:  # plain numpy everywhere
    numba = None

__all__ = [
    "COMPILED",
    "OUTSIDE",
    "area_table",
    "border_pair",
    "cell_or",
    "corner_pair_codes",
    "jit",
    "neighbour_codes",
    "pair_voxels",
    "voxel_surfels",
]

COMPILED = numba is not None


def jit(function: Any) -> Any:
    """Compile with numba when it is installed (cached on disk, GIL released); otherwise the
    function stays plain Python and callers take their numpy path."""
    return numba.njit(cache=True, nogil=True)(function) if COMPILED else function


# Bit of the voxel at offset (a, b, c) in the 2x2x2 cell: (0, 0, 0) is the high bit.
_BITS = tuple((a, b, c, 7 - (4 * a + 2 * b + c)) for a in (0, 1) for b in (0, 1) for c in (0, 1))


def _cell(code: int) -> np.ndarray:
    cell = np.zeros((2, 2, 2))
    for a, b, c, bit in _BITS:
        cell[a, b, c] = (code >> bit) & 1
    return cell


@functools.cache
def _unit_normals() -> tuple[np.ndarray, ...]:
    """Per code, the triangles' area-weighted normals at unit spacing (n x 3)."""
    from skimage.measure import marching_cubes

    normals: list[np.ndarray] = []
    for code in range(256):
        inside = code if bin(code).count("1") <= 4 else 255 - code
        if inside in (0, 255):
            normals.append(np.zeros((0, 3)))
            continue
        verts, faces, _, _ = marching_cubes(_cell(inside), 0.5, method="lorensen")
        tri = verts[faces]
        normals.append(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]) / 2.0)
    return tuple(normals)


@functools.cache
def area_table(spacing: tuple[float, float, float]) -> np.ndarray:
    """Surfel area in mm^2 for each of the 256 codes; scaling a triangle by the spacing scales
    its normal by the cofactors (s1 s2, s0 s2, s0 s1)."""
    s0, s1, s2 = spacing
    cofactors = np.array([s1 * s2, s0 * s2, s0 * s1])
    table = np.zeros(256)
    for code, normals in enumerate(_unit_normals()):
        table[code] = float(np.linalg.norm(normals * cofactors, axis=1).sum())
    table.setflags(write=False)
    return table


def neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """Code of every corner of the mask's voxels: shape ``mask.shape + 1`` per axis, uint8.

    Corner ``c`` is shared by voxels ``c - 1`` and ``c`` along each axis; voxels outside the
    array count as background.
    """
    padded = np.zeros(tuple(n + 2 for n in mask.shape), np.uint8)
    padded[1:-1, 1:-1, 1:-1] = mask
    nx, ny, nz = (n + 1 for n in mask.shape)
    codes = np.zeros((nx, ny, nz), np.uint8)
    for a, b, c, bit in _BITS:
        codes |= padded[a : a + nx, b : b + ny, c : c + nz] << np.uint8(bit)
    return codes


OUTSIDE = 12  # voxel code of "neither mask": bits 2 and 3 are the complements of bits 0 and 1


def cell_or(voxels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Per corner, the OR of its 2x2x2 voxels of a ``pair_voxels`` grid, reduced axis by axis
    (three passes). Bit k (k = 0 pred, 1 ref) of the corner's surfel flag is
    ``bit k & bit k+2`` of the result: some voxel inside and some voxel outside."""
    step = voxels[:-1] | voxels[1:]
    step = step[:, :-1] | step[:, 1:]
    return np.bitwise_or(step[:, :, :-1], step[:, :, 1:], out=out)


def _mixed(voxels: np.ndarray) -> np.ndarray:
    """Per corner, the surfel flags (bit 0: pred, bit 1: ref) from ``cell_or``."""
    cells = cell_or(voxels)
    np.bitwise_and(cells, cells >> 2, out=cells)
    np.bitwise_and(cells, 3, out=cells)
    return cells


def pair_voxels(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Both boolean masks in one padded uint8 grid and the counts (n_pred, n_ref, n_both) that
    Dice needs, from one pass when numba is present. Voxel code: bit 0 pred, bit 1 ref, bits 2
    and 3 their complements (so one OR over a cell tells "some inside" and "some outside");
    the padding is ``OUTSIDE``."""
    voxels = np.full(tuple(n + 2 for n in pred.shape), OUTSIDE, np.uint8)
    pred_u8, ref_u8 = pred.view(np.uint8), ref.view(np.uint8)
    if COMPILED:
        n_pred, n_ref, n_both = _fill_voxels(pred_u8, ref_u8, voxels)
        return voxels, (int(n_pred), int(n_ref), int(n_both))
    inner = voxels[1:-1, 1:-1, 1:-1]
    np.left_shift(ref_u8, 1, out=inner)
    np.bitwise_or(inner, pred_u8, out=inner)
    np.multiply(inner, 3, out=inner)
    np.subtract(OUTSIDE, inner, out=inner)  # 12 - 3 (p + 2 r): 12, 9, 6 or 3
    both = int(np.count_nonzero(pred & ref))
    return voxels, (int(np.count_nonzero(pred)), int(np.count_nonzero(ref)), both)


def border_pair(
    pred: np.ndarray, ref: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Surfel corners of two boolean masks of one grid (see ``voxel_surfels``)."""
    return voxel_surfels(pair_voxels(pred, ref)[0])


def voxel_surfels(voxels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Surfel corners of the two masks of a ``pair_voxels`` grid, found in one sweep.

    Returns the corner grid of mixed bits (bit 0: pred surfel, bit 1: ref surfel; shape
    ``mask.shape + 1``), the coordinates (n x 3, C order) of the corners that carry any bit,
    and their pred and ref codes (uint8; 0 or 255 where that mask has no surfel). Codes are
    computed only on that boundary band.
    """
    mixed = _mixed(voxels)
    if COMPILED:
        return (mixed, *_corner_codes(voxels, mixed, np.count_nonzero(mixed)))
    coords = np.stack(np.nonzero(mixed), axis=1)
    _, vy, vz = voxels.shape
    base = (coords[:, 0] * vy + coords[:, 1]) * vz + coords[:, 2]
    flat = voxels.reshape(-1)
    code_p = np.zeros(len(coords), np.uint8)
    code_r = np.zeros(len(coords), np.uint8)
    for a, b, c, bit in _BITS:
        cell = flat.take(base + ((a * vy + b) * vz + c), mode="clip")
        code_p |= (cell & 1) << np.uint8(bit)
        code_r |= ((cell >> 1) & 1) << np.uint8(bit)
    return mixed, coords, code_p, code_r


@jit
def _fill_voxels(
    pred: np.ndarray, ref: np.ndarray, voxels: np.ndarray
) -> tuple[int, int, int]:  # pragma: no cover - jitted
    nx, ny, nz = pred.shape
    n_pred, n_ref, n_both = 0, 0, 0
    for x in range(nx):
        for y in range(ny):
            for z in range(nz):
                p, r = pred[x, y, z] != 0, ref[x, y, z] != 0
                voxels[x + 1, y + 1, z + 1] = 12 - 3 * (p + 2 * r)
                n_pred += p
                n_ref += r
                n_both += p & r
    return n_pred, n_ref, n_both


@jit
def corner_pair_codes(
    voxels: np.ndarray, x: int, y: int, z: int
) -> tuple[int, int]:  # pragma: no cover - jitted
    """The pred and ref neighbour codes of the corner at (x, y, z) of a paired-voxel grid (bit 0
    pred, bit 1 ref); bit 7 - (4a + 2b + c) of a code is the voxel at offset (a, b, c). The one
    definition of the bit layout that ``area_table`` is indexed with."""
    p, r = 0, 0
    for a in range(2):
        for b in range(2):
            for c in range(2):
                v = voxels[x + a, y + b, z + c]
                bit = 7 - (4 * a + 2 * b + c)
                p |= (v & 1) << bit
                r |= ((v >> 1) & 1) << bit
    return p, r


@jit
def _corner_codes(
    voxels: np.ndarray, mixed: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - jitted
    """Coordinates of the ``count`` corners with a mixed bit and their pred and ref codes,
    in one scan of the corner grid, eight corners per step (most steps are all zero); bit
    7 - (4a + 2b + c) of a code is the voxel at (a, b, c)."""
    _, cy, cz = mixed.shape
    flat = mixed.reshape(-1)
    n_words = len(flat) // 8
    words = flat[: n_words * 8].view(np.uint64)
    coords = np.empty((count, 3), np.int64)
    code_p = np.empty(count, np.uint8)
    code_r = np.empty(count, np.uint8)
    i = 0
    for w in range(n_words + 1):
        if w < n_words and words[w] == 0:
            continue
        for k in range(8 * w, min(8 * w + 8, len(flat))):
            if flat[k] == 0:
                continue
            x, rest = divmod(k, cy * cz)
            y, z = divmod(rest, cz)
            p, r = corner_pair_codes(voxels, x, y, z)
            coords[i, 0], coords[i, 1], coords[i, 2] = x, y, z
            code_p[i], code_r[i] = p, r
            i += 1
    return coords, code_p, code_r
