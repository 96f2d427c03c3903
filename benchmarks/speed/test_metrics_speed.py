"""Speed of the metrics engine against MONAI and DeepMind surface-distance, side by side.

Run with ``pytest benchmarks/speed/test_metrics_speed.py -n 0 -s``: each test times our engine
with pytest-benchmark, times the reference in the same run, checks equal values and prints the
ratio. Under xdist pytest-benchmark is disabled, so these skip there. With numba installed, its
kernels compile once per installation (cached on disk) and load on the first call of a
process: the liver test's warm-up round absorbs that, and the all-organs test prints its own
first call apart from the timed rounds.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from umdbench.metrics import multilabel_metrics, organ_metrics
from umdbench.metrics.phantom import ORGANS, SPACING, whole_body_pair

pytestmark = pytest.mark.speed


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    return whole_body_pair(seed=0)


@pytest.fixture
def bench(benchmark: Any) -> Any:
    if benchmark.disabled:
        pytest.skip("pytest-benchmark is disabled (xdist or --benchmark-disable): run with -n 0")
    return benchmark


def best_of(function: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(rounds):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def report(bench: Any, name: str, reference_s: float) -> None:
    ours = bench.stats.stats.min
    ratio = reference_s / ours
    bench.extra_info.update({"reference_s": reference_s, "ratio": ratio})
    print(f"\n{name}: reference {reference_s:.3f} s, ours {ours:.3f} s, ratio {ratio:.3g}x")


def test_dice_all_organs_vs_monai(bench: Any, pair: tuple[np.ndarray, np.ndarray]) -> None:
    torch = pytest.importorskip("torch")
    from monai.metrics import DiceMetric

    ref, pred = pair
    organs = {name: (v, v) for name, (v, _, _) in ORGANS.items()}

    def monai_dice() -> dict[str, float]:
        out = {}
        for name, (value, _, _) in ORGANS.items():
            p = torch.from_numpy(pred == value)[None, None].float()
            r = torch.from_numpy(ref == value)[None, None].float()
            metric = DiceMetric(include_background=True, reduction="none")
            out[name] = float(torch.as_tensor(metric(p, r)).reshape(-1)[0])
        return out

    reference_s, expected = best_of(monai_dice, 1)
    ours = bench.pedantic(
        multilabel_metrics,
        args=(pred, ref, organs, SPACING),
        kwargs={"surface": False},
        rounds=3,
        warmup_rounds=1,
    )
    for name, value in expected.items():
        assert ours[name]["dice"] == pytest.approx(value, rel=1e-6)
    report(bench, "Dice, 13 organs vs MONAI DiceMetric per organ", reference_s)


def deepmind_surface(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    from surface_distance import metrics as sd_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sd = sd_metrics.compute_surface_distances(ref, pred, SPACING)
    return (
        sd_metrics.compute_surface_dice_at_tolerance(sd, 2.0),
        sd_metrics.compute_robust_hausdorff(sd, 95),
    )


def test_surface_liver_vs_deepmind(bench: Any, pair: tuple[np.ndarray, np.ndarray]) -> None:
    pytest.importorskip("surface_distance")
    ref, pred = pair
    value = ORGANS["liver"][0]
    ref_m, pred_m = ref == value, pred == value
    reference_s, (nsd2, hd95) = best_of(lambda: deepmind_surface(pred_m, ref_m), 2)
    ours = bench.pedantic(organ_metrics, args=(pred_m, ref_m, SPACING), rounds=3, warmup_rounds=1)
    assert ours["nsd_2mm"] == pytest.approx(nsd2, abs=1e-6)
    assert ours["hd95"] == pytest.approx(hd95, abs=1e-6)
    report(bench, "NSD+HD95, liver vs DeepMind surface-distance", reference_s)


def test_surface_all_organs_vs_deepmind(bench: Any, pair: tuple[np.ndarray, np.ndarray]) -> None:
    pytest.importorskip("surface_distance")
    ref, pred = pair
    organs = {name: (v, v) for name, (v, _, _) in ORGANS.items()}

    def deepmind_all() -> dict[str, tuple[float, float]]:
        return {n: deepmind_surface(pred == v, ref == v) for n, (v, _, _) in ORGANS.items()}

    reference_s, expected = best_of(deepmind_all, 1)
    first_s, _ = best_of(lambda: multilabel_metrics(pred, ref, organs, SPACING), 1)
    print(f"\nfirst multilabel call of this process, untimed (kernels and tables load): {first_s:.3f} s")
    ours = bench.pedantic(
        multilabel_metrics, args=(pred, ref, organs, SPACING), rounds=3, warmup_rounds=0
    )
    for name, (nsd2, hd95) in expected.items():
        assert ours[name]["nsd_2mm"] == pytest.approx(nsd2, abs=1e-6), name
        assert ours[name]["hd95"] == pytest.approx(hd95, abs=1e-6), name
    report(bench, "NSD+HD95, 13 organs vs DeepMind surface-distance", reference_s)


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


TORCH_DEVICES = [
    "torch-cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not cuda_available(), reason="no CUDA device")),
]


@pytest.mark.parametrize("device", TORCH_DEVICES)
def test_surface_liver_torch_vs_numba(
    bench: Any, pair: tuple[np.ndarray, np.ndarray], device: str
) -> None:
    """The torch backend (the numba algorithm on tensors) against the numba backend, on the
    same liver masks: every figure equal (==). Masks are already tensors on the device."""
    torch = pytest.importorskip("torch")
    from umdbench.metrics._surfels import COMPILED

    if not COMPILED:
        pytest.skip("numba is not installed: the reference is the numba backend")
    ref, pred = pair
    value = ORGANS["liver"][0]
    ref_m, pred_m = ref == value, pred == value
    reference_s, expected = best_of(lambda: organ_metrics(pred_m, ref_m, SPACING), 3)
    where = "cpu" if device == "torch-cpu" else device
    pred_t, ref_t = torch.from_numpy(pred_m).to(where), torch.from_numpy(ref_m).to(where)
    ours = bench.pedantic(
        organ_metrics,
        args=(pred_t, ref_t, SPACING),
        kwargs={"device": device},
        rounds=3,
        warmup_rounds=1,
    )
    assert ours == expected
    report(bench, f"all figures, liver, torch on {device} vs the numba backend", reference_s)
    print(f"torch on {device} takes {bench.stats.stats.min / reference_s:.2f}x numba's time")
