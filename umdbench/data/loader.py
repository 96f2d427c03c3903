"""The loader the suite uses for dataset cohorts: cached decoding, labels on the image's grid,
and validation whose errors name subject, arm and file.

``image(scan)`` is float32; ``labels(scan)`` is an integer volume on the image's grid: the same
grid up to ``grid_tolerance_mm``, else resampled by affine (nearest neighbour) when the scan says
``labels_grid_may_differ`` (a PET on a coarser grid than its session's CT), else refused. Checks
run once, when a volume is first decoded; the cache keeps their results beside the voxels.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from umdbench.cohort import Scan, ScanLoader
from umdbench.data.cache import VolumeCache
from umdbench.data.errors import Problem, ScanError
from umdbench.data.geometry import VolumeReadError, grid_offset_mm, read_nifti, resample_nearest
from umdbench.data.scan import allowed_label_values
from umdbench.volume import Volume

__all__ = ["DEFAULT_GRID_TOLERANCE_MM", "CachedScanLoader", "validate_scan"]

#: Largest corner offset (mm) at which labels still count as on the image's grid.
DEFAULT_GRID_TOLERANCE_MM = 0.5


class CachedScanLoader(ScanLoader):
    """A :class:`ScanLoader` backed by the decoded-volume cache under ``cache_dir`` (``None``:
    decode every time, as validation of a single file does)."""

    def __init__(
        self, cache_dir: Path | None, grid_tolerance_mm: float = DEFAULT_GRID_TOLERANCE_MM
    ) -> None:
        if grid_tolerance_mm < 0:
            raise ValueError(f"grid_tolerance_mm must be >= 0, got {grid_tolerance_mm}")
        self.cache = VolumeCache(Path(cache_dir) / "volumes") if cache_dir is not None else None
        self.grid_tolerance_mm = float(grid_tolerance_mm)

    def image(self, scan: Scan) -> Volume:
        return self._image(scan)[0]

    def labels(self, scan: Scan) -> Volume:
        return self._labels(scan)[0]

    def organ_voxels(self, scan: Scan) -> dict[str, int]:
        """Voxels of each mapped organ in the labels on the image grid (0: empty organ)."""
        return dict(self._labels(scan)[1]["organ_voxels"])

    def _image(self, scan: Scan) -> tuple[Volume, dict[str, Any]]:
        _check_import(scan)
        _check_exists(scan, scan.image)
        return self._cached(scan, [scan.image], "image:float32", lambda: _decode_image(scan))

    def _labels(self, scan: Scan) -> tuple[Volume, dict[str, Any]]:
        image, _ = self._image(scan)
        _check_exists(scan, scan.labels)
        grid = (image.shape, np.round(image.affine, 4).tolist())
        transform = (
            f"labels-on-grid:{grid}:may_differ={scan.labels_grid_may_differ}"
            f":tol={self.grid_tolerance_mm}:map={sorted(allowed_label_values(scan))}"
            f":organs={sorted((o, tuple(v)) for o, v in scan.label_map.items())}"
        )
        return self._cached(
            scan, [scan.labels], transform, lambda: self._decode_labels(scan, image)
        )

    def _cached(
        self, scan: Scan, sources: list[Path], transform: str, build: Any
    ) -> tuple[Volume, dict[str, Any]]:
        try:
            if self.cache is None:
                volume, facts = build()
                return volume, dict(facts)
            return self.cache.get(sources, transform, build)
        except VolumeReadError as error:
            raise ScanError([_problem(scan, error.code, error.path, str(error))]) from error

    def _decode_labels(self, scan: Scan, image: Volume) -> tuple[Volume, Mapping[str, Any]]:
        array, affine = read_nifti(scan.labels)
        array = _integer_labels(array, scan.labels)
        _check_values(scan, array)
        array = self._on_image_grid(scan, array, affine, image)
        organ_voxels = {
            organ: int(np.count_nonzero(np.isin(array, np.asarray(ids))))
            for organ, ids in scan.label_map.items()
        }
        return Volume(array, image.affine), {"organ_voxels": organ_voxels}

    def _on_image_grid(
        self, scan: Scan, labels: np.ndarray, affine: np.ndarray, image: Volume
    ) -> np.ndarray:
        if labels.shape == image.shape:
            offset = grid_offset_mm(affine, image.affine, image.shape)
            if offset <= self.grid_tolerance_mm:
                return labels
        else:
            offset = float("inf")
        if not scan.labels_grid_may_differ:
            raise VolumeReadError("grid_mismatch", scan.labels, _mismatch_message(
                labels.shape, affine, image, offset, self.grid_tolerance_mm, scan.image
            ))  # fmt: skip
        resampled = resample_nearest(labels, affine, image.affine, image.shape)
        if labels.any() and not resampled.any():
            raise VolumeReadError(
                "no_overlap", scan.labels,
                f"no labelled voxel lands inside image {scan.image} (they do not overlap in"
                " world space; check both affines)",
            )  # fmt: skip
        return resampled


def _check_import(scan: Scan) -> None:
    error = getattr(scan, "import_error", None)
    if error:
        raise ScanError([_problem(scan, "import_failed", scan.labels, error)])


def _check_exists(scan: Scan, path: Path) -> None:
    if not Path(path).is_file():
        message = f"file not found: {path} (fix the path in the manifest, or restore the file)"
        raise ScanError([_problem(scan, "missing_file", path, message)])


def _problem(
    scan: Scan, code: str, path: Path | None, message: str, severity: str = "error"
) -> Problem:
    return Problem(code, severity, scan.subject, scan.modality, path, message)


def _decode_image(scan: Scan) -> tuple[Volume, Mapping[str, Any]]:
    array, affine = read_nifti(scan.image)
    array = array.astype(np.float32, copy=False)
    finite = np.isfinite(array)
    if not finite.all():
        bad = np.argwhere(~finite)
        raise VolumeReadError(
            "non_finite", scan.image,
            f"{len(bad)} voxels are NaN or infinite (first at voxel {bad[0].tolist()}); fix"
            " the image or drop this scan from the manifest",
        )  # fmt: skip
    return Volume(array, affine), {}


def _integer_labels(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype.kind == "f":
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise VolumeReadError(
                "non_integer_labels", path,
                "holds values that are not whole numbers (a probability map? threshold it"
                " into a label file first)",
            )  # fmt: skip
        array = rounded
    if array.dtype.kind not in "uif" and array.dtype != bool:
        raise VolumeReadError("unreadable", path, f"has voxel type {array.dtype}, not numbers")
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    for dtype in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return array.astype(dtype, copy=False)
    return array.astype(np.int64, copy=False)


def _check_values(scan: Scan, array: np.ndarray) -> None:
    allowed = allowed_label_values(scan)
    low = int(array.min()) if array.size else 0
    if low >= 0:
        present = np.flatnonzero(np.bincount(array.ravel().astype(np.int64)))
    else:
        present = np.unique(array)
    unknown = sorted(int(v) for v in present if int(v) not in allowed)
    if unknown:
        raise VolumeReadError(
            "unknown_label_values", scan.labels,
            f"holds label values {unknown[:10]} that the label map does not name (named:"
            f" {sorted(allowed)[:20]}...); give the right label map for this file",
        )  # fmt: skip


def _mismatch_message(
    shape: tuple[int, ...],
    affine: np.ndarray,
    image: Volume,
    offset: float,
    tolerance: float,
    image_path: Path,
) -> str:
    labels = Volume(np.empty((1, 1, 1)), affine)
    where = "differ by more than" if np.isfinite(offset) else "have another shape; tolerance"
    return (
        f"labels (shape {shape}, spacing {np.round(labels.spacing, 3).tolist()},"
        f" {labels.orientation}) are not on the grid of image {image_path} (shape {image.shape},"
        f" spacing {np.round(image.spacing, 3).tolist()}, {image.orientation}): corners"
        f" {where} {tolerance} mm (offset {offset:.3g} mm). Set labels_grid_may_differ in the"
        " manifest to resample them by affine (nearest neighbour), or fix the files"
    )


def validate_scan(scan: Scan, loader: CachedScanLoader | None = None) -> list[Problem]:
    """Every problem of one scan: errors (the scan cannot be used; ``loader`` would raise
    :class:`ScanError`) and warnings (an organ empty in this scan). Never raises for a bad scan."""
    loader = loader if loader is not None else CachedScanLoader(None)
    try:
        organ_voxels = loader.organ_voxels(scan)
    except ScanError as error:
        return list(error.problems)
    return [
        _problem(
            scan, "empty_organ", scan.labels,
            f"organ {organ!r} (labels {list(scan.label_map[organ])}) has no voxel on the image"
            " grid; this subject is left out of that organ's mean and counted as"
            " empty_reference",
            severity="warning",
        )
        for organ, count in organ_voxels.items()
        if count == 0
    ]
