"""A real scheduler: a 3-task SLURM job array of a small audit with ``--umd-shard auto``, merged,
equals the unsharded run of the same audit (timings aside).

Needs a SLURM cluster this process can submit to (``scripts/slurm_single_node.sh`` starts one on
a Debian host, as root; ``.ci/run`` does). Skipped where there is none, unless
``UMD_REQUIRE_SLURM=1`` (CI), where a missing SLURM fails the test instead.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from umdbench.results import read_results
from umdbench.umd_fixtures.synthetic import build_synthetic_cohort

ROOT = Path(__file__).resolve().parents[1]
AUDIT = ["--umd-models", "unet-ct,classical-otsu", "--umd-organs", "liver,spleen",
         "--umd-subjects", "3", "--umd-no-report", "-p", "no:cacheprovider", "-q"]
#: What differs between two runs of the same audit on different machines or at other times.
RUN_DEPENDENT = {"duration_s", "worker", "inference_seconds", "timing"}


def _slurm_or_skip() -> None:
    problem = None
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        problem = "no sbatch/sinfo on PATH (start one: scripts/slurm_single_node.sh, as root)"
    else:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                               timeout=30)
        if state.returncode != 0 or not state.stdout.strip():
            problem = f"sinfo finds no SLURM controller: {state.stderr.strip()[:200]}"
    if problem is None:
        return
    if os.environ.get("UMD_REQUIRE_SLURM") == "1":
        pytest.fail(f"UMD_REQUIRE_SLURM=1 but {problem}")
    pytest.skip(problem)


def _pytest_command(cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pytest", str(ROOT / "benchmarks"), "-n", "0", *AUDIT,
            "--umd-cache", str(cache), *extra]


def _environment() -> dict[str, str]:
    """This environment without an xdist worker's variables (the jobs inherit it)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}


def _comparable(document: dict[str, Any]) -> dict[str, Any]:
    def strip(entry: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in entry.items() if k not in RUN_DEPENDENT}

    return {
        "cases": [strip(c) for c in document["cases"]],
        "records": [strip(r) for r in document["records"]],
        "gaps": document["run"]["gaps"],
        "models": document["models"],
        "cohort": document["run"]["cohort"],
    }


def test_a_slurm_job_array_of_shards_merges_to_the_unsharded_run(tmp_path: Path) -> None:
    _slurm_or_skip()
    cache = tmp_path / "cache"
    build_synthetic_cohort(n_subjects=3, seed=0, cache_dir=cache)  # once, before any task
    shards = tmp_path / "shards"
    task = shlex.join(_pytest_command(cache, "--umd-shard", "auto", "--umd-results",
                                      f"{shards}/shard-TASK/results.json"))
    task = task.replace("TASK", "$SLURM_ARRAY_TASK_ID")  # expanded by the job's shell
    submit = ["sbatch", "--array=1-3", "--wait", "--job-name=umd-test-shards",
              "--cpus-per-task=1", f"--chdir={tmp_path}",
              f"--output={tmp_path}/slurm-%A_%a.out", "--wrap", task]
    array = subprocess.Popen(submit, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=_environment())
    single = subprocess.run(
        _pytest_command(cache, "--umd-results", str(tmp_path / "single" / "results.json")),
        capture_output=True, text=True, timeout=900, cwd=tmp_path, env=_environment())
    try:
        submitted, _ = array.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        array.kill()
        subprocess.run(["scancel", "--name=umd-test-shards"], check=False)
        raise
    logs = "\n".join(p.read_text()[-1500:] for p in sorted(tmp_path.glob("slurm-*.out")))
    assert single.returncode in (0, 1), single.stdout[-3000:] + single.stderr[-3000:]
    # pytest exits 1 when a case fails (a finding); sbatch --wait passes the worst task's code
    assert array.returncode in (0, 1), f"{submitted}\n{logs}"
    results = sorted(shards.glob("shard-*/results.json"))
    assert [p.parent.name for p in results] == ["shard-1", "shard-2", "shard-3"], logs
    indices = [read_results(p)["run"]["shard"]["index"] for p in results]
    assert indices == [1, 2, 3]  # from SLURM_ARRAY_TASK_ID, not from the command line

    merged_path = tmp_path / "merged.json"
    merge = subprocess.run([sys.executable, "-m", "umdbench.cli", "merge", *map(str, results),
                            "-o", str(merged_path)], capture_output=True, text=True, timeout=300)
    assert merge.returncode == 0, merge.stdout + merge.stderr
    merged = read_results(merged_path)
    unsharded = read_results(tmp_path / "single" / "results.json")
    assert merged["complete"] and merged["run"]["missing_shards"] == []
    assert _comparable(merged) == _comparable(unsharded)
    plan = merged["run"]["shard"]["plan"]
    assert len({u["shard"] for u in plan["units"]}) == 3  # every task had work
