"""Validation and the cached loader of umdbench.data on small trees the tests write."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from umdbench.data import CachedScanLoader, DatasetScan, ScanError, validate_scan
from umdbench.data.cache import VolumeCache
from umdbench.data.geometry import save_nifti_atomic

AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])


def _labels() -> np.ndarray:
    labels = np.zeros((10, 10, 8), np.uint8)
    labels[2:6, 2:6, 2:5] = 1
    labels[6:9, 6:9, 4:7] = 2
    return labels


def _scan(tmp_path: Path, image=None, labels=None, label_affine=AFFINE, may_differ=False, **kw):
    image = (
        np.random.default_rng(0).normal(0, 1, (10, 10, 8)).astype(np.float32)
        if image is None
        else image
    )
    labels = _labels() if labels is None else labels
    save_nifti_atomic(image, AFFINE, tmp_path / "img.nii.gz")
    save_nifti_atomic(labels, label_affine, tmp_path / "lab.nii.gz")
    return DatasetScan(
        "sub-1", "petct", kw.pop("modality", "CT"),
        tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz",
        kw.pop("label_map", {"liver": (1,), "spleen": (2,)}), may_differ,
        label_names=kw.pop("label_names", {1: "liver", 2: "spleen"}), **kw,
    )  # fmt: skip


def _cache(loader: CachedScanLoader) -> VolumeCache:
    assert loader.cache is not None
    return loader.cache


@pytest.fixture
def loader(tmp_path: Path) -> CachedScanLoader:
    return CachedScanLoader(tmp_path / "cache")


def _codes(error: pytest.ExceptionInfo[ScanError]) -> tuple[str, ...]:
    return error.value.codes


def test_good_scan_loads_float32_and_labels_on_image_grid(tmp_path, loader):
    scan = _scan(tmp_path)
    image, labels = loader.image(scan), loader.labels(scan)
    assert image.array.dtype == np.float32 and image.same_grid(labels)
    np.testing.assert_array_equal(labels.array, _labels())
    assert validate_scan(scan, loader) == []


def test_missing_file_names_subject_arm_and_file(tmp_path, loader):
    scan = _scan(tmp_path)
    scan.image.unlink()
    with pytest.raises(ScanError) as info:
        loader.image(scan)
    assert _codes(info) == ("missing_file",)
    assert "sub-1/CT" in str(info.value) and "img.nii.gz" in str(info.value)


def test_truncated_gzip_is_unreadable(tmp_path, loader):
    scan = _scan(tmp_path)
    data = scan.image.read_bytes()
    scan.image.write_bytes(data[: len(data) // 2])
    with pytest.raises(ScanError, match="truncated") as info:
        loader.image(scan)
    assert _codes(info) == ("unreadable",)


def test_corrupt_gzip_is_unreadable(tmp_path, loader):
    scan = _scan(tmp_path)
    scan.image.write_bytes(gzip.compress(b"not a nifti header at all" * 20))
    with pytest.raises(ScanError) as info:
        loader.image(scan)
    assert _codes(info) == ("unreadable",)


def test_4d_image_is_refused(tmp_path, loader):
    scan = _scan(tmp_path, image=np.zeros((10, 10, 8, 3), np.float32))
    with pytest.raises(ScanError, match="3D") as info:
        loader.image(scan)
    assert _codes(info) == ("not_3d",)


def test_non_finite_voxels_are_refused(tmp_path, loader):
    image = np.zeros((10, 10, 8), np.float32)
    image[3, 4, 5] = np.nan
    scan = _scan(tmp_path, image=image)
    with pytest.raises(ScanError, match=r"\[3, 4, 5\]") as info:
        loader.image(scan)
    assert _codes(info) == ("non_finite",)


def test_label_values_not_in_the_map_are_refused(tmp_path, loader):
    labels = _labels()
    labels[0, 0, 0] = 7
    scan = _scan(tmp_path, labels=labels)
    with pytest.raises(ScanError, match=r"\[7\]") as info:
        loader.labels(scan)
    assert _codes(info) == ("unknown_label_values",)


def test_probability_map_as_labels_is_refused(tmp_path, loader):
    scan = _scan(tmp_path, labels=_labels().astype(np.float32) * 0.4)
    with pytest.raises(ScanError) as info:
        loader.labels(scan)
    assert _codes(info) == ("non_integer_labels",)


def test_empty_organ_is_a_warning_and_the_loader_does_not_fail(tmp_path, loader):
    labels = _labels()
    labels[labels == 2] = 0
    scan = _scan(tmp_path, labels=labels)
    assert loader.labels(scan).array.max() == 1
    problems = validate_scan(scan, loader)
    assert [(p.code, p.severity) for p in problems] == [("empty_organ", "warning")]
    assert "spleen" in problems[0].message and loader.organ_voxels(scan)["spleen"] == 0


def test_labels_on_another_grid_are_refused_unless_allowed(tmp_path, loader):
    shifted = AFFINE.copy()
    shifted[:3, 3] = [4.0, 0, 0]  # two voxels off
    scan = _scan(tmp_path, label_affine=shifted)
    with pytest.raises(ScanError, match="labels_grid_may_differ") as info:
        loader.labels(scan)
    assert _codes(info) == ("grid_mismatch",)


def test_labels_within_tolerance_count_as_same_grid(tmp_path, loader):
    nudged = AFFINE.copy()
    nudged[:3, 3] = [0.1, 0, 0]
    scan = _scan(tmp_path, label_affine=nudged)
    np.testing.assert_array_equal(loader.labels(scan).array, _labels())


def test_allowed_labels_on_a_finer_grid_are_resampled_by_affine(tmp_path, loader):
    fine = np.repeat(np.repeat(np.repeat(_labels(), 2, 0), 2, 1), 3, 2)
    fine_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    fine_affine[:3, 3] = [-0.5, -0.5, -1.0]  # voxel centres of the 2x2x3 blocks
    scan = _scan(
        tmp_path, labels=fine, label_affine=fine_affine, may_differ=True, modality="PET_CT"
    )
    labels = loader.labels(scan)
    assert labels.same_grid(loader.image(scan))
    np.testing.assert_array_equal(labels.array, _labels())


def test_labels_that_miss_the_image_are_refused(tmp_path, loader):
    far = AFFINE.copy()
    far[:3, 3] = [500.0, 0, 0]
    scan = _scan(tmp_path, label_affine=far, may_differ=True)
    with pytest.raises(ScanError) as info:
        loader.labels(scan)
    assert _codes(info) == ("no_overlap",)


def test_import_error_fails_that_scan_only(tmp_path, loader):
    bad = _scan(tmp_path, import_error="cannot merge its masks: boom")
    with pytest.raises(ScanError, match="boom"):
        loader.image(bad)
    (tmp_path / "ok").mkdir()
    assert loader.image(_scan(tmp_path / "ok")).shape == (10, 10, 8)


def test_cache_decodes_once_and_survives_touch(tmp_path, loader):
    scan = _scan(tmp_path)
    first = loader.image(scan)
    assert (_cache(loader).misses, _cache(loader).hits) == (1, 0)
    again = CachedScanLoader(tmp_path / "cache")  # another worker / run
    np.testing.assert_array_equal(again.image(scan).array, first.array)
    assert (_cache(again).misses, _cache(again).hits) == (0, 1)
    os.utime(scan.image, ns=(1, 1))  # new mtime, same content: hashed, old entry reused
    again.image(scan)
    assert _cache(again).misses == 0


def test_cache_sees_changed_content(tmp_path, loader):
    scan = _scan(tmp_path)
    loader.image(scan)
    save_nifti_atomic(np.ones((10, 10, 8), np.float32), AFFINE, scan.image)
    assert loader.image(scan).array.min() == 1.0
    assert _cache(loader).misses == 2


def test_writing_into_a_loaded_image_does_not_change_the_cache(tmp_path, loader):
    scan = _scan(tmp_path)
    image = loader.image(scan)
    original = np.array(image.array)
    image.array[:] = 42  # copy-on-write pages
    np.testing.assert_array_equal(CachedScanLoader(tmp_path / "cache").image(scan).array, original)


def test_cache_leaves_no_temporary_files(tmp_path, loader):
    scan = _scan(tmp_path)
    loader.labels(scan)
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_negative_tolerance_is_refused(tmp_path):
    with pytest.raises(ValueError, match="grid_tolerance_mm must be >= 0, got -1"):
        CachedScanLoader(tmp_path, grid_tolerance_mm=-1)


def _load_in_worker(args: tuple[str, str]) -> float:
    cache_dir, folder = args
    scan = DatasetScan(
        "sub-1", "petct", "CT", Path(folder) / "img.nii.gz", Path(folder) / "lab.nii.gz",
        {"liver": (1,), "spleen": (2,)}, label_names={1: "liver", 2: "spleen"},
    )  # fmt: skip
    loader = CachedScanLoader(Path(cache_dir))
    return float(loader.image(scan).array.sum()) + float(loader.labels(scan).array.sum())


def test_parallel_workers_share_one_cache(tmp_path):
    from concurrent.futures import ProcessPoolExecutor

    scan = _scan(tmp_path)
    expected = float(np.asarray(CachedScanLoader(None).image(scan).array).sum()) + float(
        _labels().sum()
    )
    with ProcessPoolExecutor(2) as pool:
        results = list(pool.map(_load_in_worker, [(str(tmp_path / "c"), str(tmp_path))] * 4))
    assert results == [pytest.approx(expected)] * 4
    assert not [p for p in (tmp_path / "c").rglob("*") if ".tmp" in p.name]


@settings(max_examples=20, deadline=None)
@given(
    array=arrays(
        np.float32, st.tuples(*[st.integers(1, 5)] * 3), elements=st.floats(-1e3, 1e3, width=32)
    ),
    origin=st.tuples(*[st.floats(-100, 100)] * 3),
    spacing=st.tuples(*[st.floats(0.3, 5)] * 3),
)
def test_cache_round_trip_keeps_voxels_and_affine(tmp_path_factory, array, origin, spacing):
    folder = tmp_path_factory.mktemp("c")
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    save_nifti_atomic(array, affine, folder / "i.nii.gz")
    scan = DatasetScan("s", "x", "MRI", folder / "i.nii.gz", folder / "l.nii.gz", {})
    for _ in range(2):  # decode, then from the cache
        volume = CachedScanLoader(folder / "cache").image(scan)
        np.testing.assert_array_equal(volume.array, array)
        np.testing.assert_allclose(volume.affine, affine, atol=1e-4)
