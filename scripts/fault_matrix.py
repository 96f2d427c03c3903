"""Measure what survives what: every fault model under ``-n 0`` and ``-n 2``, and interrupted runs.

    python scripts/fault_matrix.py

For each fault of :mod:`umdbench.fault_models` (injected on each model's second call) it runs
the suite on 3 subjects x CT, PET_CT, counts the records expected, kept and lost, and checks
the run completed; then it SIGKILLs and SIGTERMs a run halfway and resumes it. Prints the
README's "what survives what" table (Markdown).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAULTS = ("fault-raise", "fault-hang", "fault-exit", "fault-segfault", "fault-oom-kill",
          "fault-nan", "fault-probabilities", "fault-wrap", "fault-huge", "fault-load")
CLASSES = ("Raising", "Hanging", "Exiting", "Segfaulting", "OOMKilled", "NaNOutput",
           "Probabilities", "WrappingLabels", "HugeOutput", "LoadFailing", "Slow")
SUBJECTS, ARMS = 3, ("CT", "PET_CT")


def command(results: Path, *args: str) -> list[str]:
    models = [f"--umd-model=umdbench.fault_models:{name}" for name in CLASSES]
    return [sys.executable, "-m", "pytest", str(REPO / "benchmarks" / "test_segmentation.py"),
            "-p", "no:cacheprovider", "-q", "--umd-results", str(results), "--umd-no-report",
            "--umd-subjects", str(SUBJECTS), "--umd-modalities", ",".join(ARMS), *models, *args]


def environment(folder: Path, fault_at: str | None) -> dict[str, str]:
    env = {**os.environ, "UMD_FAULT_COUNTER": str(folder / "counters")}
    env.pop("UMD_FAULT_AT", None)
    if fault_at:
        env["UMD_FAULT_AT"] = fault_at
    return env


def fault_row(folder: Path, workers: str) -> list[str]:
    results = folder / f"n{workers}" / "results.json"
    start = time.perf_counter()
    done = subprocess.run(command(results, "-n", workers, "--umd-models", ",".join(FAULTS),
                                  "--umd-timeout", "10"),
                          cwd=REPO, capture_output=True, text=True,
                          env=environment(results.parent, "2"))  # its own call counters
    seconds = time.perf_counter() - start
    document = json.loads(results.read_text())
    records = document["records"]
    expected = (len(FAULTS) - 1) * SUBJECTS * len(ARMS)  # fault-load has no records
    errors = sum(r["status"] == "error" for r in records)
    faulty = len({r["model"] for r in records if r["status"] == "error"})
    outcomes = {c["outcome"] for c in document["cases"] if c["modality"] == "CT"}
    return [f"{len(FAULTS)} fault models, `-n {workers}`", f"exit {done.returncode}",
            str(document["complete"]).lower(), f"{len(records)} / {expected}",
            str(expected - len(records)), f"{errors} ({faulty} models)",
            "/".join(sorted(outcomes)), f"{seconds:.0f} s"]


def journal_lines(results: Path) -> int:
    folder = results.with_name(f"{results.stem}.journal")
    return sum(len(p.read_text().splitlines()) for p in folder.glob("records-*.jsonl"))


def interrupted_row(folder: Path, how: signal.Signals, workers: str) -> list[str]:
    args = ["-n", workers, "--umd-models", "fault-slow"]
    whole = folder / f"whole-{how.name}" / "results.json"
    subprocess.run(command(whole, *args), cwd=REPO, capture_output=True,
                   env=environment(folder, None))
    results = folder / f"cut-{how.name}" / "results.json"
    process = subprocess.Popen(command(results, *args), cwd=REPO, env=environment(folder, None),
                               start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    while journal_lines(results) < 2:
        time.sleep(0.1)
    if how == signal.SIGKILL:
        os.killpg(process.pid, how)
    else:
        process.send_signal(how)
    process.wait()
    cut = json.loads(results.read_text())
    kept = journal_lines(results)
    start = time.perf_counter()
    done = subprocess.run(command(results, *args, "--umd-resume"), cwd=REPO,
                          capture_output=True, env=environment(folder, None))
    seconds = time.perf_counter() - start
    resumed = json.loads(results.read_text())
    total = len(json.loads(whole.read_text())["records"])
    same = _figures(resumed) == _figures(json.loads(whole.read_text()))
    return [f"{how.name} halfway (`-n {workers}`), then `--umd-resume`",
            f"exit {done.returncode} after resume", f"{str(cut['complete']).lower()} ->"
            f" {str(resumed['complete']).lower()}", f"{len(resumed['records'])} / {total}",
            str(total - len(resumed["records"])), f"{kept} journalled, reused",
            "same figures as uninterrupted" if same else "FIGURES DIFFER", f"{seconds:.0f} s"]


def _figures(document: dict) -> list[tuple]:
    return sorted((r["case_id"], r["scan"], r["status"], r.get("dice")) for r in document["records"])


def main() -> int:
    header = ["what was tried", "pytest", "complete", "records kept / expected", "lost",
              "errors / reused", "CT verdicts / figures", "time"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="umd-faults-") as tmp:
        folder = Path(tmp)
        rows.append(fault_row(folder, "0"))
        rows.append(fault_row(folder, "2"))
        rows.append(interrupted_row(folder, signal.SIGKILL, "0"))
        rows.append(interrupted_row(folder, signal.SIGTERM, "2"))
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
