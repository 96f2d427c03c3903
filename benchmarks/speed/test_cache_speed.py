"""Cached load vs nibabel's load of a gzip 512 x 512 x 300 int16 volume (target: >= 10x).

Run alone: ``pytest benchmarks/speed/test_cache_speed.py -n 0 -s``. Both sides return the
float32 array the suite hands to models and read every voxel (``max``), so the lazy memory map
is not timed as free. The cached side is a warm cache (decoded once, then in the page cache), as
every model after the first and every later run sees it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from umdbench.cohort import Scan, ScanLoader
from umdbench.data import CachedScanLoader
from umdbench.data.geometry import save_nifti_atomic

pytestmark = pytest.mark.speed
SHAPE = (512, 512, 300)


@pytest.fixture(scope="module")
def big_scan(tmp_path_factory: pytest.TempPathFactory) -> Scan:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("cache speed benchmark needs -n 0 (pytest-benchmark is off under xdist)")
    folder = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(0)
    z = np.linspace(-1, 1, SHAPE[2], dtype=np.float32)
    y, x = np.ogrid[-1:1:512j, -1:1:512j]
    body = ((x**2 + y**2) < 0.8).astype(np.float32)
    volume = (body[..., None] * (40 + 30 * z) - 1000 * (1 - body[..., None])).astype(np.int16)
    volume += rng.integers(-20, 20, SHAPE, dtype=np.int16)  # CT-like noise, realistic gzip ratio
    save_nifti_atomic(volume, np.diag([0.8, 0.8, 1.5, 1.0]), folder / "ct.nii.gz")
    labels = np.zeros(SHAPE, np.uint8)
    labels[200:300, 200:300, 100:200] = 1
    save_nifti_atomic(labels, np.diag([0.8, 0.8, 1.5, 1.0]), folder / "labels.nii.gz")
    return Scan("big", "s", "CT", folder / "ct.nii.gz", folder / "labels.nii.gz", {"liver": (1,)})


_TIMES: dict[str, float] = {}


def _read_all(loader: ScanLoader, scan: Scan) -> float:
    return float(loader.image(scan).array.max())  # reads every voxel


def test_nibabel_gzip_load(benchmark, big_scan: Scan) -> None:
    loader = ScanLoader()
    benchmark.pedantic(_read_all, args=(loader, big_scan), rounds=3, iterations=1, warmup_rounds=0)
    _TIMES["nibabel"] = benchmark.stats.stats.median


def test_cached_load(benchmark, big_scan: Scan, tmp_path: Path) -> None:
    loader = CachedScanLoader(tmp_path)
    expected = _read_all(ScanLoader(), big_scan)
    assert _read_all(loader, big_scan) == expected  # the first call decodes and fills the cache
    benchmark.pedantic(_read_all, args=(loader, big_scan), rounds=10, iterations=1, warmup_rounds=1)
    _TIMES["cached"] = benchmark.stats.stats.median
    if "nibabel" in _TIMES:
        ratio = _TIMES["nibabel"] / _TIMES["cached"]
        print(
            f"\ncache speed: nibabel gzip {_TIMES['nibabel']:.3f} s,"
            f" cached {_TIMES['cached']:.3f} s, ratio {ratio:.1f}x (target >= 10x)"
        )
