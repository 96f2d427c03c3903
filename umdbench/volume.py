"""A volume is voxels plus the affine that places them in world (RAS+, mm) space.

The affine is the single source of truth for geometry: spacing, orientation and origin are
derived from it, never stored beside it (the torchio lesson).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["Volume", "load_volume", "save_volume"]


@dataclass(frozen=True)
class Volume:
    """A 3D array on a grid. ``array[i, j, k]`` sits at world point ``affine @ [i, j, k, 1]``."""

    array: np.ndarray
    affine: np.ndarray

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"a volume must be 3D, got shape {self.array.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got shape {self.affine.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.array.shape

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis."""
        sizes = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(sizes[0]), float(sizes[1]), float(sizes[2]))

    @property
    def orientation(self) -> str:
        """Axis codes such as ``RAS`` or ``LPS`` (the direction each array axis points to)."""
        return "".join(nib.orientations.aff2axcodes(self.affine))

    def same_grid(self, other: Volume, atol_mm: float = 1e-3) -> bool:
        """True when both volumes share shape and affine (to ``atol_mm``)."""
        return self.shape == other.shape and bool(
            np.allclose(self.affine, other.affine, atol=atol_mm)
        )

    def with_array(self, array: np.ndarray) -> Volume:
        """The same grid holding other voxels."""
        return Volume(array, self.affine)


def load_volume(path: str | Path, dtype: type | None = None) -> Volume:
    """Read a NIfTI file; the error names the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"volume file not found: {path}")
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)  # type: ignore[attr-defined]
    except Exception as error:  # nibabel raises many types for corrupt files
        raise ValueError(
            f"cannot read {path}: {error} (is the file complete and NIfTI?)"
        ) from error
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path} must hold a 3D volume, got shape {data.shape}")
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    return Volume(np.asarray(data), np.asarray(image.affine, dtype=np.float64))  # type: ignore[attr-defined]


def save_volume(volume: Volume, path: str | Path) -> Path:
    """Write a NIfTI file with the volume's affine as both qform and sform."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(volume.array, volume.affine)
    image.set_qform(volume.affine, code=1)
    image.set_sform(volume.affine, code=1)
    nib.save(image, str(path))
    return path
