"""Harness overhead: the suite's wall time for one model on one arm against a bare loop.

Run alone: ``pytest benchmarks/speed/test_harness_overhead.py -n 0 -s -p no:cacheprovider``.
Two fresh subprocesses, timed from outside, side by side in one run:

- **suite**: the audit as a user runs it, ``python -m pytest benchmarks --umd-models unet-ct
  --umd-modalities CT -n 0`` (pytest start-up and collection, the model host process, metrics
  for 13 organs per subject, journal, results and the report included), writing to a private
  results folder. ``-m "not speed" --benchmark-disable`` leaves out what the main job
  (``pytest benchmarks -n 4``) skips anyway: the speed benchmarks (this one among them) and
  the ``-n 0`` timing mode;
- **bare**: ``python -c`` a loop that loads the same 8 CT scans with the suite's own scan loader
  (:class:`umdbench.data.CachedScanLoader`) and calls the model's ``predict`` on each, nothing
  else. Both pay the interpreter and the torch import.

Both read the same warm cache (``$UMD_CACHE_DIR`` or ``~/.cache/umdbench``): the cohort is
generated and every CT scan decoded once before anything is timed. The rounds alternate (bare,
then suite; ``$UMD_OVERHEAD_ROUNDS``, default 3) so that load from elsewhere on the machine
falls on both; pytest-benchmark times the suite, the bare loop is timed in its ``setup``, and
the medians and their ratio (target: at most 1.10x on CPU, 1.05x on GPU) are printed and kept
in ``extra_info``. A benchmark, not a timed test: no time or ratio is asserted, only that both
subprocesses succeeded.

Under xdist (the main job) pytest-benchmark is off, so this skips before starting anything,
as the other speed benchmarks do.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.speed

REPO = Path(__file__).resolve().parents[2]
MODEL = "unet-ct"
ARM = "CT"
SUBJECTS = 8
ROUNDS = int(os.environ.get("UMD_OVERHEAD_ROUNDS", "3"))
#: Set in both subprocesses, so a suite run started here never starts this benchmark again.
CHILD_ENV = "UMD_HARNESS_OVERHEAD_CHILD"

#: The bare loop: the suite's own loader and device choice, the model's own load and predict.
BARE_LOOP = f"""
from umdbench.data import CachedScanLoader
from umdbench.devices import resolve_device
from umdbench.registry import ModelRegistry
from umdbench.session import default_cache_dir
from umdbench.umd_fixtures.synthetic import build_synthetic_cohort

device = resolve_device("auto")
cache = default_cache_dir()
cohort = build_synthetic_cohort(n_subjects={SUBJECTS}, seed=0, cache_dir=cache)
loader = CachedScanLoader(cache)
model = ModelRegistry().get({MODEL!r})()
model.check_available(device)
model.load(device)
for scan in cohort.scans_of({ARM!r}):
    labels = model.predict(loader.image(scan), {ARM!r}, None)
if device.startswith("cuda"):
    import torch

    torch.cuda.synchronize()
print("bare loop:", len(cohort.scans_of({ARM!r})), "scans")
"""


@pytest.fixture
def bench(benchmark: Any) -> Any:
    if benchmark.disabled or os.environ.get(CHILD_ENV):
        pytest.skip("harness overhead benchmark needs -n 0 (pytest-benchmark is off under xdist)")
    return benchmark


@pytest.fixture
def warm_cache() -> Path:
    """Generate the cohort and decode every scan of the arm into the cache, untimed."""
    from umdbench.data import CachedScanLoader
    from umdbench.session import default_cache_dir
    from umdbench.umd_fixtures.synthetic import build_synthetic_cohort

    cache = default_cache_dir()
    cohort = build_synthetic_cohort(n_subjects=SUBJECTS, seed=0, cache_dir=cache)
    loader = CachedScanLoader(cache)
    for scan in cohort.scans_of(ARM):
        loader.image(scan)
        loader.labels(scan)
    return cache


def _run(command: list[str], cache: Path, log: Path) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "UMD_CACHE_DIR": str(cache), CHILD_ENV: "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    log.write_text(f"$ {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    return seconds, done


def test_harness_overhead(bench: Any, warm_cache: Path, tmp_path: Path) -> None:
    bare_command = [sys.executable, "-c", BARE_LOOP]
    bare_times: list[float] = []
    suite_runs: list[subprocess.CompletedProcess] = []

    def bare_round() -> None:  # pytest-benchmark's setup: before each suite round, untimed there
        seconds, done = _run(bare_command, warm_cache, tmp_path / f"bare-{len(bare_times)}.log")
        assert done.returncode == 0, f"the bare loop failed:\n{done.stderr[-3000:]}"
        bare_times.append(seconds)

    def suite_round() -> None:
        results = tmp_path / f"suite-{len(suite_runs)}" / "results.json"
        command = [
            sys.executable, "-m", "pytest", "benchmarks", "-p", "no:cacheprovider",
            "--umd-models", MODEL, "--umd-modalities", ARM, "-n", "0",
            "-m", "not speed", "--benchmark-disable", "--umd-results", str(results), "-q",
        ]  # fmt: skip
        _, done = _run(command, warm_cache, tmp_path / f"suite-{len(suite_runs)}.log")
        suite_runs.append(done)
        # exit 1 is a normal audit (failing cases are findings); anything else is the suite's
        assert done.returncode in (0, 1), f"the suite failed ({done.returncode}):\n{done.stdout[-3000:]}"
        assert results.is_file(), f"the suite wrote no results:\n{done.stdout[-3000:]}"

    bench.pedantic(suite_round, setup=bare_round, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    suite_s = bench.stats.stats.median
    bare_s = statistics.median(bare_times)
    ratio = suite_s / bare_s
    bench.extra_info.update(
        {
            "model": MODEL,
            "arm": ARM,
            "suite_s": suite_s,
            "bare_s": bare_s,
            "ratio": ratio,
            "suite_rounds_s": list(bench.stats.stats.data),
            "bare_rounds_s": bare_times,
        }
    )
    rounds = ", ".join(
        f"{b:.1f}/{s:.1f}" for b, s in zip(bare_times, bench.stats.stats.data, strict=True)
    )
    print(
        f"\nharness overhead, {MODEL} on {ARM} ({SUBJECTS} scans): suite {suite_s:.1f} s,"
        f" bare {bare_s:.1f} s, ratio {ratio:.2f}x (medians of {ROUNDS} rounds, bare/suite:"
        f" {rounds}; target <= 1.10x on CPU, <= 1.05x on GPU)"
    )
