"""A short run of the main job that checks verdicts, not that every case passes.

    python scripts/ci_smoke.py

Runs ``pytest benchmarks -n 4`` on a small matrix (3 subjects, a few organs) and checks: pytest
ended normally (0 or 1, never an internal, usage or no-tests error); the results file holds
every case exactly once, says it is complete, has no erroring case, and its journal exists; the verdicts the study predicts hold (the CT-only UNet passes CT and
fails PET; its CT~PET_CT gap fails); the models that cannot run here are listed once (in
run.models_not_run and the terminal), with no case; the report was written and opens with its
findings. Then, where ``../shared/samples``
exists, the real samples cohort through the same suite: deepbet's and HD-BET's real weights on
the SPM12 T1 and PET templates must give their Dice in the results; and the real ibsi-sts
sarcoma cohort (CT, PET, MRI of 20 patients): the classical floor on its three arms, every
subject scored, the three paired comparisons made, the citations in the report.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ORGANS = ("liver", "kidney_left", "lung", "brain")
ARMS = ("CT", "PET_CT", "MRI", "PET_MRI")

EXPECTED_CASES = {
    "unet-ct-CT-liver": "passed",
    "unet-ct-CT-lung": "passed",
    "unet-ct-PET_CT-liver": "failed",
    "unet-ct-PET_MRI-liver": "failed",
    # the PET_CT nnU-Net baseline: liver 0.93 on its own arm, nothing on CT (default audit)
    "nnunet-pet_ct-PET_CT-liver": "passed",
    "nnunet-pet_ct-CT-liver": "failed",
}
EXPECTED_GAPS = {
    "unet-ct-liver-CT~PET_CT": "failed",
    "nnunet-pet_ct-liver-CT~PET_CT": "failed",
}


SAMPLES = REPO.parent / "shared" / "samples"
EXPECTED_SAMPLES = {
    "deepbet-MRI-brain": "passed",
    "deepbet-PET_MRI-brain": "passed",
    "hd-bet-MRI-brain": "passed",
    "hd-bet-PET_MRI-brain": "passed",
}


def run_main_job(out: Path, *options: str) -> tuple[int, str]:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "benchmarks",
        "-n",
        "4",
        "-p",
        "no:cacheprovider",
        "-q",
        "--no-header",
        "-rN",
        "--umd-results",
        str(out / "results.json"),
        *options,
    ]
    print("$", " ".join(command), flush=True)
    process = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    return process.returncode, process.stdout + process.stderr


def check(out: Path, status: int, output: str) -> list[str]:
    problems = []
    if status not in (0, 1):
        problems.append(
            f"pytest exited {status} (0 or 1 expected: 2+ is an interruption, usage error or no tests)"
        )
        return problems
    document = json.loads((out / "results.json").read_text())
    ids = Counter(case["case_id"] for case in document["cases"])
    problems += [f"case {c} appears {n} times" for c, n in ids.items() if n != 1]
    if document.get("complete") is not True or document.get("missing_cases"):
        problems.append(f"results say incomplete, missing {document.get('missing_cases')}")
    errors = [c["case_id"] for c in document["cases"] if c["outcome"] == "error"]
    problems += [f"case {c} is an error: {document_message(document, c)}" for c in errors]
    journal = out / "results.journal"
    if not any(journal.glob("records-*.jsonl")):
        problems.append(f"no journal written under {journal}")
    for model in ("unet-ct", "unet-multimodal", "classical-otsu", "nnunet-ct",
                  "nnunet-pet_ct", "nnunet-mri", "nnunet-pet_mri"):
        if not any(case["model"] == model for case in document["cases"]):
            problems.append(f"no case of built-in model {model}")
    outcome = {case["case_id"]: case["outcome"] for case in document["cases"]}
    gaps = {gap["gap_id"]: gap["outcome"] for gap in document["run"]["gaps"]}
    for expected, found in ((EXPECTED_CASES, outcome), (EXPECTED_GAPS, gaps)):
        for case_id, verdict in expected.items():
            if found.get(case_id) != verdict:
                problems.append(f"{case_id}: expected {verdict}, got {found.get(case_id)}")
    for name in ("report.html", "report.md", "cases.csv"):
        if not (out / name).is_file():
            problems.append(f"{name} was not written")
    if "mean Dice per model and arm" not in output:
        problems.append("the terminal summary table is missing")
    return problems + check_not_run(out, document, output)


#: Built-in models whose weights or code are not on a CI machine: listed once, never run.
NOT_HERE = ("vista3d", "sam-med3d", "sam-med3d-turbo", "seganypet", "nninteractive", "voxtell",
            "segvol", "sat-pro", "totalsegmentator", "totalsegmentator-mr")


def check_not_run(out: Path, document: dict, output: str) -> list[str]:
    """Models that cannot run here leave the matrix with one line each, and the report opens
    with its findings."""
    problems = []
    listed = {item["model"] for item in document["run"].get("models_not_run", [])}
    problems += [f"{m}: not listed in run.models_not_run" for m in NOT_HERE if m not in listed]
    problems += [f"{m}: has cases, though it cannot run here" for m in
                 sorted(listed & {c["model"] for c in document["cases"]})]
    if f"{len(listed)} model(s) not run here" not in output:
        problems.append("the terminal does not list the models not run")
    markdown = (out / "report.md").read_text() if (out / "report.md").is_file() else ""
    if not markdown.startswith("# umdbench audit report\n\n## Findings\n"):
        problems.append("report.md does not open with its findings")
    return problems


def document_message(document: dict, case_id: str) -> str:
    case = next(c for c in document["cases"] if c["case_id"] == case_id)
    return str(case.get("message", ""))[:300]


def check_samples(out: Path, status: int) -> list[str]:
    if status not in (0, 1):
        return [f"samples run: pytest exited {status}"]
    document = json.loads((out / "results.json").read_text())
    outcome = {case["case_id"]: case for case in document["cases"]}
    problems = []
    for case_id, verdict in EXPECTED_SAMPLES.items():
        case = outcome.get(case_id, {})
        if case.get("outcome") != verdict:
            problems.append(f"samples: {case_id}: expected {verdict}, got {case.get('outcome')}")
        else:
            print(f"samples: {case_id} Dice {case['value']:.3f} ({verdict})")
    return problems


IBSI_STS = SAMPLES / "ibsi_sts"
IBSI_ARMS = ("CT", "PET_CT", "MRI")
IBSI_COMPARISONS = ("CT~PET_CT", "CT~MRI", "PET_CT~MRI")


def check_ibsi_sts(out: Path, status: int) -> list[str]:
    """The classical floor on the real sarcoma cohort: 3 cases of 20 scored subjects each."""
    if status not in (0, 1):
        return [f"ibsi-sts run: pytest exited {status}"]
    document = json.loads((out / "results.json").read_text())
    problems = []
    for arm in IBSI_ARMS:
        case_id = f"classical-otsu-{arm}-tumor-box"
        case = next((c for c in document["cases"] if c["case_id"] == case_id), None)
        ok = [r for r in document["records"]
              if r["case_id"] == case_id and r.get("status") == "ok" and r.get("dice") is not None]
        if case is None or case["outcome"] not in ("passed", "failed") or len(ok) != 20:
            problems.append(f"ibsi-sts: {case_id}: {case and case['outcome']}, {len(ok)} of 20 scored")
        else:
            print(f"ibsi-sts: {case_id} mean Dice {case['value']:.3f} over {len(ok)} patients")
    gaps = {g["comparison"]: g for g in document["run"]["gaps"] if g["model"] == "classical-otsu"}
    for comparison in IBSI_COMPARISONS:
        if gaps.get(comparison, {}).get("n_pairs") != 20:
            problems.append(f"ibsi-sts: the {comparison} comparison is missing or not over 20 pairs")
    if "doi:10.7937/K9/TCIA.2015.7GO2GSKS" not in (out / "report.md").read_text():
        problems.append("ibsi-sts: the report does not cite the TCIA collection")
    return problems


def run_real_data(
    folder: Path, check_run: Callable[[Path, int], list[str]], *options: str
) -> list[str]:
    """The main job on a real dataset in ``folder`` (skipped, and said, when it is absent)."""
    if not folder.is_dir():
        print(f"{folder.name} run skipped: {folder} is absent")
        return []
    with tempfile.TemporaryDirectory(prefix=f"umd-smoke-{folder.name}-") as out:
        status, output = run_main_job(Path(out), *options)
        print(output[-3000:])
        return check_run(Path(out), status)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="umd-smoke-") as folder:
        out = Path(folder)
        status, output = run_main_job(
            out,
            "--umd-subjects",
            "3",
            "--umd-organs",
            ",".join(ORGANS),
        )  # the default selection: models whose weights are not here are listed, not run
        print(output[-6000:])
        problems = check(out, status, output)
    problems += run_real_data(
        SAMPLES, check_samples, "--umd-dataset", "samples",
        "--umd-models", "deepbet,hd-bet,classical-otsu",
    )  # fmt: skip
    problems += run_real_data(
        IBSI_STS, check_ibsi_sts, "--umd-dataset", "ibsi-sts", "--umd-models", "classical-otsu"
    )
    if problems:
        print("smoke FAILED:\n  " + "\n  ".join(problems))
        return 1
    print("smoke passed: the expected verdicts hold")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
