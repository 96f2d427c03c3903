"""Reading NIfTI with errors that say which file and what is wrong, and putting labels on an
image's grid by affine (nearest neighbour), in any orientation.

The affine is the only geometry: a label voxel lands on the image voxel whose centre is nearest
its world position; voxels of the image outside the label grid get label 0.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from umdbench.volume import BUDGET_ENV, VolumeHeaderError, check_declared_size

__all__ = [
    "VolumeReadError",
    "grid_offset_mm",
    "read_nifti",
    "resample_nearest",
    "save_nifti_atomic",
]


class VolumeReadError(ValueError):
    """A file cannot give one 3D volume; ``code`` is a :data:`PROBLEM_CODES` key."""

    def __init__(self, code: str, path: Path, message: str) -> None:
        self.code = code
        self.path = path
        super().__init__(f"{path}: {message}")


def read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``path`` into (array, affine); scaling (slope/intercept) is applied. The header
    is checked first (:func:`umdbench.volume.check_declared_size`), so a lying header is a
    one-line error naming its shape, not gigabytes allocated."""
    if not path.is_file():
        raise VolumeReadError("missing_file", path, "file not found (check the manifest path)")
    image = _checked_header(path)
    array, affine = _decode(image, path)
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise VolumeReadError(
            "not_3d", path, f"must hold one 3D volume, got shape {tuple(image.shape)} (split"
            " channels or time points into one file each)"
        )
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise VolumeReadError("unreadable", path, f"has an invalid affine {affine.tolist()}")
    return np.asarray(array), affine


def _checked_header(path: Path) -> Any:
    """The image with its header read and checked, its voxels not yet decoded."""
    try:
        image = nib.load(str(path))
    except Exception as error:  # nibabel raises many types (EOFError, zlib.error, ...)
        raise _unreadable(path, error, "") from error
    try:
        check_declared_size(image, path)
    except VolumeHeaderError as error:
        raise VolumeReadError(error.code, path, error.detail) from error
    return image


def _decode(image: Any, path: Path) -> tuple[np.ndarray, np.ndarray]:
    shape = f" shape {tuple(image.shape)} {image.get_data_dtype()}"
    try:
        return np.asanyarray(image.dataobj), np.asarray(image.affine, dtype=np.float64)
    except MemoryError as error:
        raise VolumeReadError("too_large", path, (
            f"not enough memory to decode{shape}; free memory, or lower {BUDGET_ENV} so such"
            " files are refused before decoding"
        )) from error  # fmt: skip
    except Exception as error:  # nibabel raises many types (EOFError, zlib.error, ...)
        raise _unreadable(path, error, shape) from error


def _unreadable(path: Path, error: Exception, shape: str) -> VolumeReadError:
    reason = " ".join(str(error).split())  # nibabel's messages span lines; ours is one
    return VolumeReadError(
        "unreadable",
        path,
        f"cannot decode{shape} ({type(error).__name__}: {reason}); is the file complete"
        " (a truncated download or copy) and NIfTI?",
    )


def grid_offset_mm(affine_a: np.ndarray, affine_b: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest distance (mm) between where the two affines put the corners of ``shape``."""
    ends = [(0, n - 1) for n in shape[:3]]
    corners = np.array([[i, j, k, 1.0] for i in ends[0] for j in ends[1] for k in ends[2]])
    diff = corners @ (affine_a - affine_b).T
    return float(np.linalg.norm(diff[:, :3], axis=1).max())


def resample_nearest(
    labels: np.ndarray,
    labels_affine: np.ndarray,
    target_affine: np.ndarray,
    target_shape: tuple[int, int, int],
) -> np.ndarray:
    """``labels`` on the target grid: each target voxel takes the label voxel nearest its
    world position (0 outside the label grid). Integer values are kept exactly."""
    voxel_to_voxel = np.linalg.inv(labels_affine) @ target_affine
    matrix, offset = voxel_to_voxel[:3, :3], voxel_to_voxel[:3, 3]
    if _is_permuted_diagonal(matrix):
        return _resample_axis_aligned(labels, matrix, offset, target_shape)
    return ndimage.affine_transform(
        labels, matrix, offset=offset, output_shape=target_shape, order=0, mode="grid-constant",
        cval=0, prefilter=False,
    )


def _is_permuted_diagonal(matrix: np.ndarray) -> bool:
    nonzero = np.abs(matrix) > 1e-9
    return bool((nonzero.sum(axis=0) == 1).all() and (nonzero.sum(axis=1) == 1).all())


def _resample_axis_aligned(
    labels: np.ndarray, matrix: np.ndarray, offset: np.ndarray, target_shape: tuple[int, int, int]
) -> np.ndarray:
    """Fast path (grids differ by flips, axis swaps, scale and shift): one index array per
    axis instead of a full 3D coordinate field."""
    source_axes = [int(np.flatnonzero(np.abs(matrix[:, d]) > 1e-9)[0]) for d in range(3)]
    moved = np.transpose(labels, source_axes)
    picks: list[np.ndarray] = []
    keeps: list[np.ndarray] = []
    for d, s in enumerate(source_axes):
        coords = matrix[s, d] * np.arange(target_shape[d]) + offset[s]
        rounded = np.floor(coords + 0.5).astype(np.intp)
        keep = (rounded >= 0) & (rounded < labels.shape[s])
        picks.append(rounded[keep])
        keeps.append(np.flatnonzero(keep))
    out = np.zeros(target_shape, dtype=labels.dtype)
    out[np.ix_(*keeps)] = moved[np.ix_(*picks)]
    return out


def save_nifti_atomic(array: np.ndarray, affine: np.ndarray, out: Path) -> Path:
    """Write a NIfTI under a temporary name, then ``os.replace`` it (parallel workers never see
    half a file)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{uuid.uuid4().hex}.{out.name}")
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    try:
        nib.save(image, str(tmp))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
