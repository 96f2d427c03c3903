"""A volume is voxels plus the affine that places them in world (RAS+, mm) space.

The affine is the single source of truth for geometry: spacing, orientation and origin are
derived from it, never stored beside it (the torchio lesson).

Before any file is decoded, :func:`check_declared_size` compares what its header declares with
the file and with a memory budget, because nibabel allocates the declared size first: a
89-byte ``.nii.gz`` declaring 1024^3 voxels took 4.3 GB before it failed, 30000^3 gave a bare
``MemoryError``. The rules:

- uncompressed: the file must hold ``offset + declared bytes``, else it is truncated;
- ``.gz``: deflate cannot expand more than 1032:1 (one 258-byte match per 2 bits), so a header
  declaring more than ``1032 x file size`` cannot be honest. gzip's ISIZE trailer is not used:
  it is the size modulo 2^32 of the *last* member only (bgzip and pigz write many), so a
  mismatch proves nothing;
- every file: the decoded size (shape x itemsize, 8 bytes a voxel when slope/intercept scaling
  applies) must fit :func:`max_volume_bytes`: ``$UMD_MAX_VOLUME_BYTES``, else half the
  physical memory.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

__all__ = [
    "BUDGET_ENV",
    "Volume",
    "VolumeHeaderError",
    "check_declared_size",
    "load_volume",
    "max_volume_bytes",
    "save_volume",
]

#: Environment variable overriding the decoded-size budget (bytes; K/M/G/T suffixes, base 1024).
BUDGET_ENV = "UMD_MAX_VOLUME_BYTES"
#: Largest expansion of a deflate stream (the bound zlib's authors give).
DEFLATE_MAX_RATIO = 1032
_FALLBACK_BUDGET = 8 << 30  # where the physical memory cannot be read
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


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


class VolumeHeaderError(ValueError):
    """A header declares what the file cannot hold or memory cannot take; ``code`` (a
    ``umdbench.data.PROBLEM_CODES`` key) is ``unreadable`` (truncated), ``too_large`` or
    ``missing_file`` (no data file); ``detail`` is the message without the path."""

    def __init__(self, code: str, path: Path, detail: str) -> None:
        self.code = code
        self.path = path
        self.detail = detail
        super().__init__(f"{path}: {detail}")


def max_volume_bytes() -> int:
    """The decoded-size budget: ``$UMD_MAX_VOLUME_BYTES`` (read on each call, so a test or a
    run can set it), else half the physical memory."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    if text:
        match = re.fullmatch(r"(\d+)\s*([KMGT]?)I?B?", text.upper())
        if not match or int(match[1]) <= 0:
            raise ValueError(f"{BUDGET_ENV} must be a positive byte count such as 8G, got {text!r}")
        return int(match[1]) * _UNITS[match[2]]
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (AttributeError, ValueError, OSError):
        return _FALLBACK_BUDGET


def _size(n: int) -> str:
    """``4.29 GB (4294967296 bytes)``: readable, and exact for comparing with ``ls -l``."""
    value, unit = float(n), "bytes"
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if value < 1000 or unit == "PB":
            break
        value /= 1000
    return f"{n} bytes" if unit == "bytes" else f"{value:.3g} {unit} ({n} bytes)"


def _declared(image: Any) -> tuple[tuple[int, ...], np.dtype, int, bool]:
    """Shape, on-disk dtype, data offset and whether scaling applies, as the header says."""
    proxy = image.dataobj
    shape = tuple(int(n) for n in getattr(proxy, "shape", image.shape))
    dtype = np.dtype(getattr(proxy, "dtype", image.get_data_dtype()))
    offset = int(getattr(proxy, "offset", 0) or 0)
    slope, inter = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
    scaled = (slope, inter) != (1.0, 0.0) and not (math.isnan(slope) or math.isnan(inter))
    return shape, dtype, offset, bool(scaled)


def _data_file(image: Any, path: Path) -> Path:
    holder = getattr(image, "file_map", {}).get("image")
    name = getattr(holder, "filename", None)
    return Path(name) if name else path


def check_declared_size(image: Any, path: Path) -> None:
    """Refuse, before decoding, a header the file cannot honour or memory cannot take (see the
    module docstring); ``image`` is what ``nib.load`` returned (header read, voxels not)."""
    shape, dtype, offset, scaled = _declared(image)
    what = f"header declares shape {shape} {dtype.name}"
    if math.prod(shape) == 0:
        raise VolumeHeaderError("unreadable", path, f"{what}: no voxels (a corrupt header?)")
    declared = math.prod(shape) * dtype.itemsize
    _check_file_holds(_data_file(image, path), path, offset, declared, what)
    decoded = math.prod(shape) * max(dtype.itemsize, 8 if scaled else 0)
    budget = max_volume_bytes()
    if decoded > budget:
        raise VolumeHeaderError("too_large", path, (
            f"{what}: {_size(decoded)} decoded{' (scaled to float64)' if scaled else ''}, over the"
            f" memory budget of {_size(budget)}; crop or resample the volume, or raise"
            f" {BUDGET_ENV} on a machine with the memory"
        ))  # fmt: skip


def _check_file_holds(data_file: Path, path: Path, offset: int, declared: int, what: str) -> None:
    """Uncompressed: exactly; gzip: by deflate's largest ratio; bz2/zstd: not checked."""
    try:
        size = data_file.stat().st_size
    except OSError as error:  # an Analyze .hdr without its .img
        raise VolumeHeaderError(
            "missing_file", path, f"cannot read its data file ({error})"
        ) from error
    name = data_file.name.lower()
    if not name.endswith((".gz", ".bz2", ".zst")) and size < offset + declared:
        raise VolumeHeaderError("unreadable", path, (
            f"{what}, {_size(declared)} from byte {offset}, but the file has {size} bytes:"
            " truncated (a partial download or copy); fetch or copy the file again"
        ))  # fmt: skip
    if name.endswith(".gz") and offset + declared > DEFLATE_MAX_RATIO * size:
        raise VolumeHeaderError("unreadable", path, (
            f"{what}, {_size(declared)}, but a {size}-byte gzip file decompresses to at most"
            f" {DEFLATE_MAX_RATIO * size} bytes: truncated or a corrupt header; fetch the file"
            " again or fix its header"
        ))  # fmt: skip


def load_volume(path: str | Path, dtype: type | None = None) -> Volume:
    """Read a NIfTI file; the error names the file and what is wrong with it (a header that
    declares more than the file or the memory budget holds: :class:`VolumeHeaderError`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"volume file not found: {path}")
    try:
        image = nib.load(str(path))
    except Exception as error:  # nibabel raises many types for corrupt files
        raise ValueError(
            f"cannot read {path}: {error} (is the file complete and NIfTI?)"
        ) from error
    check_declared_size(image, path)
    try:
        data = np.asanyarray(image.dataobj)  # type: ignore[attr-defined]
    except Exception as error:  # nibabel raises many types for corrupt files
        shape = tuple(image.shape)  # type: ignore[attr-defined]
        reason = " ".join(str(error).split())  # nibabel's messages span lines
        raise ValueError(
            f"cannot read {path} (shape {shape}): {type(error).__name__}: {reason} (is the file"
            " complete and NIfTI?)"
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
