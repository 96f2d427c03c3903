"""Metrics engine: hand-computed cases, properties, and agreement with DeepMind and MONAI."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from umdbench.metrics import (
    _distances,
    _surfels,
    aggregate,
    area_table,
    engine,
    multilabel_metrics,
    organ_metrics,
)
from umdbench.metrics._summary import robust_hausdorffs

pytest.importorskip("surface_distance.metrics")
from _references import deepmind

sd_tables = pytest.importorskip("surface_distance.lookup_tables")

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples"
SURFACE_KEYS = ("nsd_1mm", "nsd_2mm", "hd95", "hd", "assd")
spacings = st.tuples(*[st.floats(0.3, 3.0, allow_nan=False)] * 3)


def assert_matches_deepmind(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> None:
    ours, theirs = organ_metrics(pred, ref, spacing), deepmind(pred, ref, spacing)
    for key in SURFACE_KEYS:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6, rel=1e-9), key


def blobs(seed: int, shape: tuple[int, int, int] = (24, 20, 16), p: float = 0.3) -> np.ndarray:
    """Random lumpy mask: thresholded smoothed noise."""
    from scipy import ndimage

    noise = np.random.default_rng(seed).random(shape)
    smooth = ndimage.gaussian_filter(noise, 2.0)
    return smooth > np.quantile(smooth, 1 - p)


@pytest.fixture(params=["numba", "numpy"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through the numba kernels and through the plain numpy path."""
    if request.param == "numba" and not _surfels.COMPILED:
        pytest.skip("numba is not installed: only the numpy path runs")
    if request.param == "numpy":
        for module in (_surfels, _distances, engine):
            monkeypatch.setattr(module, "COMPILED", False)
    return str(request.param)


def sorted_pairs(dist: np.ndarray, area: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance, area) sorted as DeepMind sorts them, with distances that differ only in the
    last bits (equal lengths summed from different offsets) counted as equal."""
    order = np.lexsort((area, np.round(dist, 9)))
    return dist[order], area[order]


def assert_in_deepmind_order(dist: np.ndarray, area: np.ndarray) -> None:
    """Sorted by distance, then by area among equal distances: Python's order of tuples."""
    step = np.diff(dist)
    assert np.all(step >= 0)
    assert np.all(np.diff(area)[step == 0] >= 0)


# --- surfel areas -------------------------------------------------------------------------


@given(spacing=spacings)
@settings(max_examples=20, deadline=None)
def test_area_table_equals_deepmind(spacing: tuple[float, float, float]) -> None:
    expected = sd_tables.create_table_neighbour_code_to_surface_area(spacing)
    np.testing.assert_allclose(area_table(spacing), expected, rtol=1e-12, atol=1e-12)


# --- hand-computed -------------------------------------------------------------------------


def test_hand_computed_cubes() -> None:
    ref = np.zeros((10, 10, 10), bool)
    ref[2:6, 2:6, 2:6] = True  # 64 voxels
    pred = np.zeros_like(ref)
    pred[3:7, 2:6, 2:6] = True  # shifted by one voxel along axis 0: overlap 48
    figures = organ_metrics(pred, ref, (2.0, 1.0, 1.0))
    assert figures["dice"] == pytest.approx(2 * 48 / 128)
    assert figures["iou"] == pytest.approx(48 / 80)
    assert (figures["tp"], figures["fp"], figures["fn"]) == (48, 16, 16)
    assert figures["rve"] == 0.0
    assert figures["hd"] == pytest.approx(2.0)  # one voxel of 2 mm
    assert figures["nsd_2mm"] == pytest.approx(1.0)
    assert figures["voxel_ml"] == pytest.approx(0.002)


# --- edge cases (docs/metrics.md table) ------------------------------------------------------


def test_edge_cases_table() -> None:
    empty = np.zeros((6, 6, 6), bool)
    full = empty.copy()
    full[1:3, 1:3, 1:3] = True
    both = organ_metrics(empty, empty, (1, 1, 1))
    assert all(math.isnan(both[k]) for k in ("dice", "iou", "rve", *SURFACE_KEYS))
    ref_empty = organ_metrics(full, empty, (1, 1, 1))
    assert ref_empty["dice"] == 0.0 and ref_empty["nsd_2mm"] == 0.0
    assert ref_empty["hd95"] == math.inf and ref_empty["rve"] == math.inf
    pred_empty = organ_metrics(empty, full, (1, 1, 1))
    assert pred_empty["dice"] == 0.0 and pred_empty["hd"] == math.inf
    assert pred_empty["rve"] == -1.0


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_is_an_error(bad: float) -> None:
    pred = np.zeros((4, 4, 4))
    pred[1, 1, 1] = bad
    with pytest.raises(ValueError, match="`pred` must hold only finite values"):
        organ_metrics(pred, np.zeros((4, 4, 4)), (1, 1, 1))


@pytest.mark.parametrize("spacing", [(1, 1), (1, 0, 1), (1, float("nan"), 1)])
def test_bad_spacing_is_an_error(spacing: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="`spacing` must be three finite positive"):
        organ_metrics(np.ones((3, 3, 3)), np.ones((3, 3, 3)), spacing)


def test_shape_mismatch_names_the_fix() -> None:
    with pytest.raises(ValueError, match="resample the prediction"):
        organ_metrics(np.ones((3, 3, 3)), np.ones((3, 3, 4)), (1, 1, 1))


# --- properties ----------------------------------------------------------------------------


@given(seed_a=st.integers(0, 10_000), seed_b=st.integers(0, 10_000), spacing=spacings)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_symmetry_bounds_and_deepmind(
    seed_a: int, seed_b: int, spacing: tuple[float, float, float]
) -> None:
    a, b = blobs(seed_a), blobs(seed_b)
    ab, ba = organ_metrics(a, b, spacing), organ_metrics(b, a, spacing)
    for key in ("dice", "iou", *SURFACE_KEYS):
        assert ab[key] == pytest.approx(ba[key], abs=1e-12), key
    for key in ("dice", "iou", "nsd_1mm", "nsd_2mm"):
        assert 0.0 <= ab[key] <= 1.0
    assert 0.0 <= ab["hd95"] <= ab["hd"]
    assert_matches_deepmind(a, b, spacing)


@given(seed=st.integers(0, 10_000), spacing=spacings)
@settings(max_examples=15, deadline=None)
def test_equal_masks_are_perfect(seed: int, spacing: tuple[float, float, float]) -> None:
    mask = blobs(seed)
    figures = organ_metrics(mask, mask, spacing)
    assert figures["dice"] == 1.0 and figures["nsd_1mm"] == 1.0
    assert figures["hd"] == 0.0 and figures["assd"] == 0.0


@given(seed=st.integers(0, 10_000), shift=st.tuples(*[st.integers(0, 5)] * 3))
@settings(max_examples=15, deadline=None)
def test_translation_invariance(seed: int, shift: tuple[int, int, int]) -> None:
    a, b = blobs(seed), blobs(seed + 1)
    pad = [(s, 5 - s) for s in shift]
    moved = organ_metrics(np.pad(a, pad), np.pad(b, pad), (0.8, 0.8, 2.0))
    assert moved == organ_metrics(a, b, (0.8, 0.8, 2.0))


@given(seed=st.integers(0, 10_000), factor=st.sampled_from([0.5, 2.0, 4.0]))
@settings(max_examples=15, deadline=None)
def test_scaling_spacing_and_tolerance_together(seed: int, factor: float) -> None:
    a, b = blobs(seed), blobs(seed + 7)
    base = organ_metrics(a, b, (1.0, 0.5, 2.0), tolerances=(1.0,))
    scaled = organ_metrics(a, b, (factor, 0.5 * factor, 2.0 * factor), tolerances=(factor,))
    assert scaled[f"nsd_{factor:g}mm"] == pytest.approx(base["nsd_1mm"], abs=1e-12)
    for key in ("hd95", "hd", "assd"):
        assert scaled[key] == pytest.approx(base[key] * factor, rel=1e-12)


def test_anisotropic_spacing_matters_along_its_axis() -> None:
    ref = np.zeros((12, 12, 12), bool)
    ref[3:8, 3:8, 3:8] = True
    pred = np.roll(ref, 2, axis=2)
    assert organ_metrics(pred, ref, (1.0, 1.0, 3.0))["hd"] == pytest.approx(6.0)
    assert organ_metrics(pred, ref, (3.0, 3.0, 1.0))["hd"] == pytest.approx(2.0)
    assert_matches_deepmind(pred, ref, (0.7, 1.3, 3.0))


# --- MONAI Dice ----------------------------------------------------------------------------


def test_dice_equals_monai() -> None:
    torch = pytest.importorskip("torch")
    from monai.metrics import DiceMetric

    rng = np.random.default_rng(3)
    ref_l = rng.integers(0, 4, (20, 18, 16))
    pred_l = np.where(rng.random(ref_l.shape) < 0.2, rng.integers(0, 4, ref_l.shape), ref_l)
    organs = {f"o{k}": (k, k) for k in (1, 2, 3)}
    ours = multilabel_metrics(pred_l, ref_l, organs, (1, 1, 1))
    for name, (k, _) in organs.items():
        metric = DiceMetric(include_background=True, reduction="none")
        p = torch.from_numpy(pred_l == k)[None, None].float()
        r = torch.from_numpy(ref_l == k)[None, None].float()
        expected = float(torch.as_tensor(metric(p, r)).reshape(-1)[0])
        assert ours[name]["dice"] == pytest.approx(expected, rel=1e-6)


# --- multi-label and backends ----------------------------------------------------------------


def test_multilabel_equals_per_organ_calls() -> None:
    ref_l = np.zeros((30, 28, 20), np.uint8)
    pred_l = np.zeros_like(ref_l)
    for k, seed in ((1, 1), (2, 2), (3, 3)):
        ref_l[blobs(seed, ref_l.shape, 0.1)] = k
        pred_l[blobs(seed + 10, ref_l.shape, 0.1)] = k
    organs: dict[str, Any] = {"one": (1, 1), "pair": ((2, 3), (2, 3)), "absent": (9, 9)}
    result = multilabel_metrics(pred_l, ref_l, organs, (0.8, 0.8, 2.0))
    assert result["one"] == organ_metrics(pred_l == 1, ref_l == 1, (0.8, 0.8, 2.0))
    assert result["pair"] == organ_metrics(pred_l >= 2, ref_l >= 2, (0.8, 0.8, 2.0))
    assert math.isnan(result["absent"]["dice"]) and result["absent"]["n_ref"] == 0


def test_multilabel_rejects_background_value() -> None:
    with pytest.raises(ValueError, match="positive label values"):
        labels = np.ones((3, 3, 3), int)
        multilabel_metrics(labels, labels, {"x": (0, 1)}, (1, 1, 1))


@given(seed=st.integers(0, 10_000), spacing=spacings)
@settings(max_examples=10, deadline=None)
def test_torch_backend_equals_cpu_backend(seed: int, spacing: tuple[float, float, float]) -> None:
    a, b = blobs(seed), blobs(seed + 3)
    cpu = organ_metrics(a, b, spacing, device="cpu")
    torch_cpu = organ_metrics(a, b, spacing, device="torch-cpu")
    for key, value in cpu.items():
        assert torch_cpu[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key


def test_far_surfels_use_the_exact_fallback() -> None:
    ref = np.zeros((60, 20, 20), bool)
    ref[5:10, 5:10, 5:10] = True
    pred = ref.copy()
    pred[50:53, 5:8, 5:8] = True  # a false-positive blob ~40 voxels away
    assert_matches_deepmind(pred, ref, (0.8, 0.8, 2.0))
    gpu_like = organ_metrics(pred, ref, (0.8, 0.8, 2.0), device="torch-cpu")
    assert gpu_like["hd"] == organ_metrics(pred, ref, (0.8, 0.8, 2.0))["hd"]


# --- aggregation -----------------------------------------------------------------------------


def test_aggregate_counts_what_it_leaves_out() -> None:
    summary = aggregate([0.5, float("nan"), None, 1.0, float("inf")])
    assert summary["mean"] == 0.75
    assert (summary["n"], summary["n_valid"], summary["n_nan"], summary["n_inf"]) == (5, 2, 2, 1)
    assert math.isnan(aggregate([None])["mean"])


# --- real masks ------------------------------------------------------------------------------


@pytest.mark.samples
def test_real_label_map_against_shifted_and_eroded_copies(backend: str) -> None:
    path = SAMPLES / "totalsegmentator" / "example_seg_fast_force_split.nii.gz"
    if not path.exists():
        pytest.skip(f"real samples not found at {path} (see /work/shared/samples/README.md)")
    import nibabel as nib
    from scipy import ndimage

    image: Any = nib.load(path)
    labels = np.asarray(image.dataobj).astype(np.int16)
    zooms = image.header.get_zooms()
    spacing = tuple(float(s) for s in zooms[:3])
    for value in (1, 5, 7, 52):  # spleen, liver, pancreas, aorta
        ref = labels == value
        assert_matches_deepmind(np.roll(ref, (1, -2, 1), (0, 1, 2)), ref, spacing)
        assert_matches_deepmind(ndimage.binary_erosion(ref), ref, spacing)


# --- fast paths: numba kernels, counting sort, boxes -------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_deepmind_through_both_backends(backend: str, seed: int) -> None:
    a, b = blobs(seed, (30, 26, 14)), blobs(seed + 50, (30, 26, 14))
    assert_matches_deepmind(a, b, (0.8, 0.8, 2.0))
    assert_matches_deepmind(a, b, (1.7, 0.45, 0.9))


def test_counted_order_with_distances_beyond_the_rank_table() -> None:
    """Surfels between 16 and 28 coarsest voxels away (inside the rank table's cube, outside its
    ball) and farther ones must still come out in DeepMind's order."""
    ref = np.zeros((70, 70, 30), bool)
    ref[2:8, 2:8, 2:5] = True
    pred = ref.copy()
    # ~22 voxels away with every axis within 16 (ranked cube, outside the ball), ~18 away along
    # one axis (beyond the cube), and farther blobs
    for x, y, z in ((22, 22, 15), (26, 3, 2), (45, 10, 20), (12, 55, 25), (60, 60, 2)):
        pred[x : x + 2, y : y + 2, z : z + 2] = True
    sd = _distances.surface_distances(pred, ref, (1.0, 1.0, 1.0))
    assert sd.sorted_pred is not None and sd.sorted_pred[0].max() > 16 * np.sqrt(3)
    for pairs in (sd.sorted_ref, sd.sorted_pred):
        assert pairs is not None
        assert_in_deepmind_order(*pairs)
    assert_matches_deepmind(pred, ref, (1.0, 1.0, 1.0))


@pytest.mark.parametrize("spacing", [(1.0, 0.5, 1.0), (0.9, 0.3, 2.5)])
def test_gaps_longer_than_the_uint8_cap(backend: str, spacing: tuple[float, float, float]) -> None:
    """Surfels ~290 corners apart along the row axis (the finest): the int16 gaps take over."""
    ref = np.zeros((6, 310, 5), bool)
    ref[1:4, 2:6, 1:3] = True
    pred = np.zeros_like(ref)
    pred[2:5, 296:300, 2:4] = True
    pred[1:3, 3:7, 1:3] = True
    assert_matches_deepmind(pred, ref, spacing)


def test_far_false_positives_through_both_backends(backend: str) -> None:
    ref = np.zeros((90, 40, 30), bool)
    ref[5:20, 5:20, 5:12] = True
    pred = np.roll(ref, 2, axis=1)
    pred[80:84, 30:33, 25:27] = True  # ~60 voxels away along axis 0
    pred[40:42, 2:4, 20:22] = True
    assert_matches_deepmind(pred, ref, (0.8, 0.8, 2.0))
    assert_matches_deepmind(pred, ref, (2.0, 0.6, 0.7))


@given(seed=st.integers(0, 10_000), spacing=spacings, reach=st.sampled_from([0.5, 2.0, 16.0]))
@settings(max_examples=25, deadline=None)
def test_numba_search_equals_numpy_search(
    seed: int, spacing: tuple[float, float, float], reach: float
) -> None:
    """Same (distance, area) multisets and the same sorted pairs, whatever the first column
    reach (small reaches force the retry with longer column lists)."""
    if not _surfels.COMPILED:
        pytest.skip("numba is not installed")
    a, b = blobs(seed, (28, 22, 18), 0.2), blobs(seed + 9, (28, 22, 18), 0.2)
    a[-3:, -3:, -2:] = True  # a far-off corner blob
    old, _distances.FIRST_REACH = _distances.FIRST_REACH, reach
    try:
        fast = _distances.surface_distances(a, b, spacing, compiled=True)
    finally:
        _distances.FIRST_REACH = old
    slow = _distances.surface_distances(a, b, spacing, compiled=False)
    for side in ("ref", "pred"):
        want = sorted_pairs(getattr(slow, f"dist_{side}"), getattr(slow, f"area_{side}"))
        got = sorted_pairs(getattr(fast, f"dist_{side}"), getattr(fast, f"area_{side}"))
        counted = getattr(fast, f"sorted_{side}")
        assert_in_deepmind_order(*counted)
        for pairs in (got, sorted_pairs(*counted)):
            np.testing.assert_allclose(pairs[0], want[0], rtol=0, atol=1e-12)
            np.testing.assert_array_equal(pairs[1], want[1])


@given(seed=st.integers(0, 10_000), spacing=spacings)
@settings(max_examples=20, deadline=None)
def test_counted_order_gives_the_sorted_percentiles(
    seed: int, spacing: tuple[float, float, float]
) -> None:
    """Percentiles from the counting sort equal those from a full lexsort (DeepMind's order)."""
    a, b = blobs(seed, (20, 20, 12)), blobs(seed + 1, (20, 20, 12))
    sd = _distances.surface_distances(a, b, spacing)
    unsorted = _distances.SurfaceDistances(sd.dist_ref, sd.area_ref, sd.dist_pred, sd.area_pred)
    percents = (50.0, 90.0, 95.0, 99.0, 100.0)
    assert robust_hausdorffs(sd, percents) == robust_hausdorffs(unsorted, percents)


label_dtypes = st.sampled_from([np.uint8, np.int8, np.uint16, np.int16, np.int32, np.int64])


@given(
    seed=st.integers(0, 10_000),
    shape=st.tuples(*[st.integers(1, 9)] * 3),
    dtype=label_dtypes,
    density=st.sampled_from([0.0, 0.02, 0.3]),
)
@settings(max_examples=60, deadline=None)
def test_label_boxes_equal_find_objects(
    seed: int, shape: tuple[int, int, int], dtype: Any, density: float
) -> None:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    labels = ((rng.random(shape) < density) * rng.integers(1, 7, shape)).astype(dtype)
    expected = {i + 1: b for i, b in enumerate(ndimage.find_objects(labels)) if b is not None}
    assert engine.label_boxes(labels) == expected
    mask = labels != 0
    assert engine.mask_box(mask) == engine.merge_boxes(list(expected.values()))
    assert engine.mask_box(labels) == engine.mask_box(mask)


def test_multilabel_through_both_backends(backend: str) -> None:
    ref_l = np.zeros((40, 30, 24), np.uint8)
    pred_l = np.zeros_like(ref_l)
    for k, seed in ((1, 4), (2, 5), (3, 6)):
        ref_l[blobs(seed, ref_l.shape, 0.1)] = k
        pred_l[blobs(seed + 20, ref_l.shape, 0.1)] = k
    organs: dict[str, Any] = {f"o{k}": (k, k) for k in (1, 2, 3)}
    result = multilabel_metrics(pred_l, ref_l, organs, (0.8, 0.8, 2.0))
    for name, (k, _) in organs.items():
        theirs = deepmind(pred_l == k, ref_l == k, (0.8, 0.8, 2.0))
        for key in SURFACE_KEYS:
            assert result[name][key] == pytest.approx(theirs[key], abs=1e-6, rel=1e-9), key
