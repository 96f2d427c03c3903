"""What survives what: faulty models, interrupted runs, resumed runs (the plugin as users run it).

Every fault of :mod:`umdbench.fault_models` is injected on one subject (the model's second
call) and the run must go on: that subject is an error naming the model, the subject, the file
and the signal, exit code or limit; every other record is kept; no case is retried.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from umdbench.fault_models import FAULT_MODELS

REPO = Path(__file__).resolve().parents[1]

#: model -> what its subject's error must say
FAULTS = {
    "fault-raise": "raised RuntimeError: injected fault",
    "fault-hang": "no answer after 5 s (--umd-timeout 5)",
    "fault-exit": "exited with status 3",
    "fault-segfault": "crashed with SIGSEGV (exit -11)",
    "fault-oom-kill": "killed by SIGKILL (exit -9): the kernel's out-of-memory killer",
    "fault-nan": "values that are not finite",
    "fault-probabilities": "values that are not whole numbers",
    "fault-wrap": "label values 65536, 65537",
    "fault-huge": "shape (30000, 30000, 30000)",
}


def _command(results: Path, *args: str) -> list[str]:
    models = [f"--umd-model=umdbench.fault_models:{cls.__name__}" for cls in FAULT_MODELS]
    return [
        sys.executable, "-m", "pytest", str(REPO / "benchmarks" / "test_segmentation.py"),
        "-p", "no:cacheprovider", "-q", "--umd-results", str(results), "--umd-no-report",
        *models, *args,
    ]  # fmt: skip


def _env(tmp_path: Path, fault_at: str | None) -> dict[str, str]:
    env = {**os.environ, "UMD_FAULT_COUNTER": str(tmp_path / "counters")}
    env.pop("UMD_FAULT_AT", None)
    if fault_at is not None:
        env["UMD_FAULT_AT"] = fault_at
    return env


def _run(tmp_path: Path, results: Path, *args: str, fault_at: str | None = None) -> Any:
    return subprocess.run(
        _command(results, *args), cwd=REPO, capture_output=True, text=True, timeout=900,
        env=_env(tmp_path, fault_at),
    )  # fmt: skip


def test_every_fault_costs_only_its_subject(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    done = _run(
        tmp_path, results, "-n", "2", "--umd-models", ",".join([*FAULTS, "fault-load"]),
        "--umd-subjects", "3", "--umd-modalities", "CT", "--umd-timeout", "5", fault_at="2",
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "node down" not in output and "replacing crashed worker" not in output, output[-3000:]
    document = json.loads(results.read_text())
    assert document["complete"] is True and document["missing_cases"] == []
    cases = {case["model"]: case for case in document["cases"]}
    assert set(cases) == {*FAULTS, "fault-load"}
    for model, expected in FAULTS.items():
        case = cases[model]
        records = [r for r in document["records"] if r["model"] == model]
        assert case["outcome"] == "error", (model, case)
        assert len(records) == 3, (model, records)  # nothing lost, nothing twice
        errors = [r for r in records if r["status"] == "error"]
        assert [r["status"] for r in records].count("ok") == 2, (model, records)
        (error,) = errors
        assert expected in error["error"], (model, error["error"])
        assert f"model {model} on {error['scan']} ({error['image']})" in error["error"]
        assert case["message"].startswith(f"{case['case_id']}: error: 1 of 3 subject(s)")
        assert "got " not in case["message"].splitlines()[0]
    load = cases["fault-load"]
    assert load["outcome"] == "error" and "fault_models.py:" in load["message"]
    assert "could not be loaded: load('cpu') raised OSError" in load["message"]


def test_a_crash_without_xdist_is_one_error_not_a_dead_run(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    done = _run(
        tmp_path, results, "-n", "0", "--umd-models", "fault-segfault", "--umd-subjects", "2",
        "--umd-modalities", "CT,PET_CT", fault_at="1",
    )  # fmt: skip
    assert done.returncode == 1, (done.stdout + done.stderr)[-3000:]
    document = json.loads(results.read_text())
    statuses = sorted((r["scan"], r["status"]) for r in document["records"])
    assert statuses == [
        ("s0-000/CT", "error"), ("s0-000/PET_CT", "ok"), ("s0-001/CT", "ok"),
        ("s0-001/PET_CT", "ok"),
    ]  # fmt: skip
    assert "SIGSEGV" in next(r["error"] for r in document["records"] if r["error"])


def _journal_lines(results: Path) -> int:
    folder = results.with_name(f"{results.stem}.journal")
    return sum(len(p.read_text().splitlines()) for p in folder.glob("records-*.jsonl"))


def _interrupt(tmp_path: Path, results: Path, args: list[str], after: int, how: int) -> None:
    """Start a run, wait until ``after`` records are journalled, send ``how`` to it."""
    process = subprocess.Popen(
        _command(results, *args), cwd=REPO, env=_env(tmp_path, None), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while _journal_lines(results) < after:
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "no records journalled in 300 s"
        time.sleep(0.1)
    if how == signal.SIGKILL:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        process.send_signal(how)
    process.wait(timeout=120)


SLOW = ["--umd-models", "fault-slow", "--umd-subjects", "4", "--umd-modalities", "CT,PET_CT"]
TIMINGS = {"inference_seconds", "timing", "prediction_reused", "resumed", "duration_s", "worker"}


def _comparable(document: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    cases = [{k: v for k, v in c.items() if k not in TIMINGS} for c in document["cases"]]
    records = [{k: v for k, v in r.items() if k not in TIMINGS} for r in document["records"]]
    return cases, records


def test_sigkill_halfway_then_resume_gives_the_uninterrupted_results(tmp_path: Path) -> None:
    whole = tmp_path / "whole" / "results.json"
    assert _run(tmp_path, whole, "-n", "0", *SLOW).returncode == 1  # the bar is out of reach
    interrupted = tmp_path / "interrupted" / "results.json"
    _interrupt(tmp_path, interrupted, ["-n", "0", *SLOW], after=3, how=signal.SIGKILL)
    placeholder = json.loads(interrupted.read_text())
    assert placeholder["complete"] is False and placeholder["run"]["state"] == "running"
    journalled = _journal_lines(interrupted)
    assert 3 <= journalled < 8
    resumed = _run(tmp_path, interrupted, "-n", "0", *SLOW, "--umd-resume")
    assert resumed.returncode == 1, resumed.stdout[-3000:]
    document = json.loads(interrupted.read_text())
    assert document["complete"] is True
    assert sum(bool(r.get("resumed")) for r in document["records"]) == journalled
    assert _comparable(document) == _comparable(json.loads(whole.read_text()))
    changed = _run(tmp_path, interrupted, "-n", "0", *SLOW, "--umd-subjects", "3", "--umd-resume")
    assert changed.returncode == pytest.ExitCode.USAGE_ERROR, changed.stdout[-2000:]
    assert "--umd-resume refused" in changed.stderr
    assert "in options.subjects, cohort." in changed.stderr, changed.stderr


def test_sigterm_writes_an_incomplete_results_file(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    _interrupt(tmp_path, results, ["-n", "2", *SLOW], after=2, how=signal.SIGTERM)
    document = json.loads(results.read_text())
    assert document["complete"] is False and document["run"]["state"] == "interrupted"
    assert document["missing_cases"], document["cases"]
    assert {c["case_id"] for c in document["cases"]}.isdisjoint(document["missing_cases"])
