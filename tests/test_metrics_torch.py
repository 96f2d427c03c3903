"""Torch backend: the numba backend's algorithm on tensors, so every figure is equal (==).

On CPU tensors (``device="torch-cpu"``) always; on CUDA too when a GPU is present. Exact
equality of the distance arrays (same surfels, same order), of the sorted (distance, area)
pairs and of every figure; DeepMind's ``surface-distance`` within 1e-6 where
tests/test_metrics.py checks the numba backend against it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from umdbench.metrics import _distances, _surfels, multilabel_metrics, organ_metrics

torch = pytest.importorskip("torch")
_torch = pytest.importorskip("umdbench.metrics._torch")
pytest.importorskip("surface_distance.metrics")
from _references import deepmind  # noqa: E402  (after the importorskip above)

pytestmark = pytest.mark.skipif(
    not _surfels.COMPILED, reason="numba is not installed: the torch backend mirrors its kernels"
)

SURFACE_KEYS = ("nsd_1mm", "nsd_2mm", "hd95", "hd", "assd")
DEVICES = [
    "torch-cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]
spacings = st.tuples(*[st.floats(0.3, 3.0, allow_nan=False)] * 3)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread: these tensors are tiny, and idle threads spinning on a shared CPU
    cost far more than they save (tenfold here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tensor_device(device: str) -> str:
    return "cpu" if device == "torch-cpu" else device


def blobs(seed: int, shape: tuple[int, int, int] = (24, 20, 16), p: float = 0.3) -> np.ndarray:
    """Random lumpy mask: thresholded smoothed noise."""
    from scipy import ndimage

    noise = np.random.default_rng(seed).random(shape)
    smooth = ndimage.gaussian_filter(noise, 2.0)
    return smooth > np.quantile(smooth, 1 - p)


def box(shape: tuple[int, int, int], *slices: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(a, b) for a, b in slices)] = True
    return mask


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def assert_same_figures(ours: dict[str, Any], numba: dict[str, Any]) -> None:
    assert ours.keys() == numba.keys()
    for key, value in numba.items():
        assert same(ours[key], value), (key, ours[key], value)


def assert_same_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float, float], device: str
) -> None:
    """Equal surfel arrays in the same order, and equal sorted (distance, area) pairs."""
    numba = _distances.surface_distances(pred, ref, spacing, compiled=True)
    dev = tensor_device(device)
    ours = _torch.surface_distances(
        torch.from_numpy(pred).to(dev), torch.from_numpy(ref).to(dev), spacing
    )
    for field in ("dist_ref", "area_ref", "dist_pred", "area_pred"):
        np.testing.assert_array_equal(getattr(ours, field), getattr(numba, field), field)
    for field in ("sorted_ref", "sorted_pred"):
        want = getattr(numba, field)
        if want is None:  # an empty surface: nothing to sort
            continue
        got = getattr(ours, field)
        assert got is not None
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w, field)


def assert_same(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float, float], device: str
) -> dict[str, Any]:
    """Distances and every figure of the torch backend equal the numba backend's."""
    assert_same_distances(pred, ref, spacing, device)
    ours = organ_metrics(pred, ref, spacing, device=device)
    assert_same_figures(ours, organ_metrics(pred, ref, spacing, device="cpu"))
    return ours


def assert_matches_deepmind(ours: dict[str, Any], theirs: dict[str, float]) -> None:
    for key in SURFACE_KEYS:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6, rel=1e-9), key


# --- hand-made shapes ------------------------------------------------------------------------


def _far_false_positives() -> tuple[np.ndarray, np.ndarray]:
    ref = box((90, 40, 30), (5, 20), (5, 20), (5, 12))
    pred = np.roll(ref, 2, axis=1)
    pred[80:84, 30:33, 25:27] = True  # ~60 voxels away along axis 0
    pred[40:42, 2:4, 20:22] = True
    return pred, ref


def _beyond_rank_table() -> tuple[np.ndarray, np.ndarray]:
    ref = box((70, 70, 30), (2, 8), (2, 8), (2, 5))
    pred = ref.copy()
    for x, y, z in ((22, 22, 15), (26, 3, 2), (45, 10, 20), (12, 55, 25), (60, 60, 2)):
        pred[x : x + 2, y : y + 2, z : z + 2] = True
    return pred, ref


def _long_rows() -> tuple[np.ndarray, np.ndarray]:
    ref = box((6, 310, 5), (1, 4), (2, 6), (1, 3))
    pred = box((6, 310, 5), (2, 5), (296, 300), (2, 4)) | box((6, 310, 5), (1, 3), (3, 7), (1, 3))
    return pred, ref


def _shell() -> tuple[np.ndarray, np.ndarray]:
    grid = np.indices((21, 19, 17)) - np.array([10, 9, 8])[:, None, None, None]
    radius = np.sqrt((grid**2).sum(0))
    return (radius <= 7) & (radius > 4), radius <= 6


CASES: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "cube shifted one voxel": (
        box((10, 10, 10), (3, 7), (2, 6), (2, 6)),
        box((10, 10, 10), (2, 6), (2, 6), (2, 6)),
    ),
    "single voxels far apart": (
        box((30, 5, 40), (1, 2), (1, 2), (1, 2)),
        box((30, 5, 40), (27, 28), (3, 4), (35, 36)),
    ),
    "line against a plane": (
        box((12, 14, 16), (5, 6), (6, 7), (0, 16)),
        box((12, 14, 16), (0, 12), (0, 14), (10, 11)),
    ),
    "spherical shell against a ball": _shell(),
    "touching every border": (np.ones((8, 9, 7), bool), box((8, 9, 7), (0, 8), (0, 4), (0, 7))),
    "touching opposite borders": (
        box((9, 8, 10), (0, 2), (0, 8), (0, 10)),
        box((9, 8, 10), (7, 9), (0, 8), (0, 10)),
    ),
    "far false positives": _far_false_positives(),
    "beyond the rank table": _beyond_rank_table(),
    "rows longer than the uint8 cap": _long_rows(),
    "lumpy blobs": (blobs(1, (30, 26, 14)), blobs(51, (30, 26, 14))),
}
SPACINGS = [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0), (0.8, 0.8, 2.0), (2.0, 0.6, 0.7), (1.7, 0.45, 0.9)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("spacing", SPACINGS, ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_hand_made_shapes_equal_numba_and_deepmind(
    case: str, spacing: tuple[float, float, float], device: str
) -> None:
    pred, ref = CASES[case]
    ours = assert_same(pred, ref, spacing, device)
    assert_same(ref, pred, spacing, device)
    assert_matches_deepmind(ours, deepmind(pred, ref, spacing))


def test_hand_computed_cube() -> None:
    pred, ref = CASES["cube shifted one voxel"]
    figures = organ_metrics(pred, ref, (2.0, 1.0, 1.0), device="torch-cpu")
    assert figures["hd"] == 2.0 and figures["nsd_2mm"] == 1.0
    assert (figures["tp"], figures["fp"], figures["fn"]) == (48, 16, 16)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_masks(device: str) -> None:
    empty, some = np.zeros((6, 7, 5), bool), box((6, 7, 5), (1, 3), (2, 5), (0, 5))
    for pred, ref in ((empty, empty), (some, empty), (empty, some)):
        assert_same_distances(pred, ref, (0.8, 0.8, 2.0), device)
        ours = organ_metrics(pred, ref, (0.8, 0.8, 2.0), device=device)
        assert_same_figures(ours, organ_metrics(pred, ref, (0.8, 0.8, 2.0), device="cpu"))


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_inputs_and_multilabel(device: str) -> None:
    ref_l = np.zeros((30, 24, 18), np.uint8)
    pred_l = np.zeros_like(ref_l)
    for k, seed in ((1, 4), (2, 5), (3, 6)):
        ref_l[blobs(seed, ref_l.shape, 0.1)] = k
        pred_l[blobs(seed + 20, ref_l.shape, 0.1)] = k
    spacing = (0.8, 0.8, 2.0)
    organs: dict[str, Any] = {"one": (1, 1), "pair": ((2, 3), (2, 3)), "absent": (9, 9)}
    ours = multilabel_metrics(pred_l, ref_l, organs, spacing, device=device)
    numba = multilabel_metrics(pred_l, ref_l, organs, spacing, device="cpu")
    assert ours.keys() == numba.keys()
    for name in organs:
        assert_same_figures(ours[name], numba[name])
    dev = tensor_device(device)
    as_float = organ_metrics(
        torch.from_numpy(pred_l == 1).float().to(dev),
        torch.from_numpy(ref_l == 1).to(torch.uint8).to(dev),
        spacing,
        device=device,
    )
    assert_same_figures(as_float, numba["one"])


# --- random masks ----------------------------------------------------------------------------


@given(seed_a=st.integers(0, 10_000), seed_b=st.integers(0, 10_000), spacing=spacings)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_blobs_equal_numba_and_deepmind(
    seed_a: int, seed_b: int, spacing: tuple[float, float, float]
) -> None:
    a, b = blobs(seed_a), blobs(seed_b)
    a[-3:, -3:, -2:] = True  # a far-off corner blob
    ours = assert_same(a, b, spacing, "torch-cpu")
    assert_matches_deepmind(ours, deepmind(a, b, spacing))


@given(
    seed=st.integers(0, 10_000),
    shape=st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(1, 12)),
    density=st.sampled_from([0.02, 0.2, 0.6]),
    spacing=spacings,
    reach=st.sampled_from([0.5, 2.0, 16.0]),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_voxels_equal_numba(
    seed: int,
    shape: tuple[int, int, int],
    density: float,
    spacing: tuple[float, float, float],
    reach: float,
) -> None:
    """Salt-and-pepper masks (many surfels, ties, borders, often one empty), whatever the first
    column reach of the torch scan (small ones force its retries with longer lists)."""
    rng = np.random.default_rng(seed)
    a, b = rng.random(shape) < density, rng.random(shape) < density
    old, _distances.FIRST_REACH = _distances.FIRST_REACH, reach
    try:
        assert_same_distances(a, b, spacing, "torch-cpu")
        ours = organ_metrics(a, b, spacing, device="torch-cpu")
    finally:
        _distances.FIRST_REACH = old
    assert_same_figures(ours, organ_metrics(a, b, spacing, device="cpu"))


def test_square_root_is_correctly_rounded() -> None:
    """torch's CPU sqrt (SLEEF) can be one ulp off; the backend's must equal numpy's."""
    values = np.random.default_rng(0).random(100_000) * 1e4
    got = _torch._sqrt(torch.from_numpy(values)).numpy()
    np.testing.assert_array_equal(got, np.sqrt(values))
