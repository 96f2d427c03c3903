"""The plugin as a user runs it: options, a small audit under xdist, merged results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = [
    "--umd-subjects",
    "2",
    "--umd-models",
    "classical-otsu",
    "--umd-organs",
    "liver,spleen,brain",
]


def run_suite(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict]:
    results = tmp_path / "results.json"
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(REPO / "benchmarks" / "test_segmentation.py"),
        "-p",
        "no:cacheprovider",
        "-q",
        "--umd-results",
        str(results),
        *args,
    ]
    process = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )
    document = json.loads(results.read_text()) if results.exists() else {}
    return process, document


def write_vendor_model(folder: Path, class_name: str, name: str, fill: str) -> None:
    """``vendor_seg.py`` in ``folder``: a vendor's liver model that labels all or no voxels."""
    (folder / "vendor_seg.py").write_text(
        "import numpy as np\n"
        "from umdbench.models.base import SegmentationModel\n"
        f"class {class_name}(SegmentationModel):\n"
        f"    name = {name!r}\n"
        "    organs = ('liver',)\n"
        "    label_ids = {'liver': 1}\n"
        "    def load(self, device): pass\n"
        "    def predict(self, image, modality, prompt):\n"
        f"        return {fill}(image.shape, dtype=np.int16)\n"
    )


def test_help_lists_the_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "*umdbench*",
            "*--umd-device=DEVICE*",
            "*--umd-models=PATTERNS*",
            "*--umd-results=FILE*",
            "*--umd-policy=FILE*",
        ]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--umd-organs", "livr"], "did you mean liver"),
        (["--umd-modalities", "XRAY"], "--umd-modalities must name arms"),
        (["--umd-policy", "nowhere.toml"], "--umd-policy file not found"),
    ],
)
def test_bad_options_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


@pytest.mark.slow
def test_xdist_run_merges_every_case_once_and_keeps_groups_on_one_worker(tmp_path: Path) -> None:
    process, document = run_suite(tmp_path, "-n", "4", *SMALL)
    assert process.returncode in (0, 1), process.stdout[-3000:] + process.stderr[-3000:]
    ids = [case["case_id"] for case in document["cases"]]
    expected = {
        f"classical-otsu-{arm}-{organ}-box"
        for arm in ("CT", "PET_CT", "MRI", "PET_MRI")
        for organ in ("liver", "spleen", "brain")
    }
    assert Counter(ids) == Counter(expected)  # every case exactly once
    records = Counter((r["case_id"], r["subject"]) for r in document["records"])
    assert set(records.values()) == {1} and len(records) == len(expected) * 2
    workers = defaultdict(set)
    for case in document["cases"]:
        workers[(case["model"], case["modality"])].add(case["worker"])
    assert all(len(w) == 1 for w in workers.values()), workers
    assert len({w for ws in workers.values() for w in ws}) > 1  # the work was spread
    assert "mean Dice per model and arm" in process.stdout
    assert (
        document["run"]["cohort"]["subjects"]
        and document["models"]["classical-otsu"]["tier"] == "classical"
    )


@pytest.mark.slow
def test_vendor_model_runs_without_editing_the_suite(tmp_path: Path) -> None:
    write_vendor_model(tmp_path, "Everything", "vendor-everything", "np.ones")
    process, document = run_suite(
        tmp_path,
        "--umd-model",
        "vendor_seg:Everything",
        "--umd-models",
        "vendor-everything",
        "--umd-subjects",
        "2",
        "--umd-modalities",
        "CT",
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert process.returncode == 1, process.stdout[-3000:]  # labelling everything fails the bar
    (case,) = document["cases"]
    assert case["case_id"] == "vendor-everything-CT-liver" and case["outcome"] == "failed"
    assert "worst subjects" in case["message"]
    assert document["models"]["vendor-everything"]["origin"] == "--umd-model vendor_seg:Everything"


def _policy(tmp_path: Path, max_gap: float = 0.1) -> Path:
    """Liver can never pass, spleen always does: verdicts the tests can rely on."""
    path = tmp_path / "policy.toml"
    path.write_text(
        '[[rule]]\norgan = "liver"\nmin = 1.01\nsource = "unreachable"\n'
        '[[rule]]\norgan = "spleen"\nmin = 0.0\nsource = "always"\n'
        f'[[gap]]\nmax_gap = {max_gap}\nsource = "test"\n'
    )
    return path


@pytest.mark.slow
def test_baseline_turns_known_failures_into_xfail(tmp_path: Path) -> None:
    common = [
        "--umd-subjects",
        "2",
        "--umd-models",
        "classical-otsu",
        "--umd-modalities",
        "CT",
        "--umd-organs",
        "liver,spleen",
        "--umd-policy",
        str(_policy(tmp_path)),
        "--umd-no-report",
    ]
    baseline = tmp_path / "baseline.json"
    first, _ = run_suite(
        tmp_path, *common, "--umd-baseline", str(baseline), "--umd-baseline-update"
    )
    assert first.returncode == 1 and baseline.is_file(), first.stdout[-2000:]
    known = json.loads(baseline.read_text())["known_failures"]
    assert set(known) == {"classical-otsu-CT-liver-box"}
    second, document = run_suite(tmp_path, *common, "--umd-baseline", str(baseline))
    assert second.returncode == 0, second.stdout[-3000:]
    outcomes = {c["case_id"]: c["outcome"] for c in document["cases"]}
    assert outcomes == {
        "classical-otsu-CT-liver-box": "xfailed",
        "classical-otsu-CT-spleen-box": "passed",
    }
    assert "1 known failure(s), 0 new failure(s)" in second.stdout


@pytest.mark.slow
def test_shards_split_models_and_merge_back(tmp_path: Path) -> None:
    write_vendor_model(tmp_path, "Nothing", "vendor-nothing", "np.zeros")
    common = [
        "--umd-model",
        "vendor_seg:Nothing",
        "--umd-models",
        "classical-otsu,vendor-nothing",
        "--umd-subjects",
        "2",
        "--umd-modalities",
        "CT",
        "--umd-organs",
        "liver",
        "--umd-no-report",
    ]
    env = {"PYTHONPATH": str(tmp_path)}
    shards, units = [], []
    for k in (1, 2):
        folder = tmp_path / f"shard{k}"
        folder.mkdir()
        _, document = run_suite(folder, *common, "--umd-shard", f"{k}/2", env=env)
        shards.append(folder / "results.json")
        units.append({(r["model"], r["subject"]) for r in document["records"]})
    assert not units[0] & units[1]  # each (model, subject) on one shard
    assert {m for m, _ in units[0] | units[1]} == {"classical-otsu", "vendor-nothing"}
    assert len(units[0] | units[1]) == 4
    merged = tmp_path / "merged.json"
    subprocess.run(
        [sys.executable, "-m", "umdbench.cli", "merge", *map(str, shards), "-o", str(merged)],
        check=True,
        capture_output=True,
        text=True,
    )
    ids = sorted(c["case_id"] for c in json.loads(merged.read_text())["cases"])
    assert ids == ["classical-otsu-CT-liver-box", "vendor-nothing-CT-liver"]


@pytest.mark.slow
def test_gap_cases_pair_subjects_and_report_is_written(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(REPO / "benchmarks"),
        "-p",
        "no:cacheprovider",
        "-q",
        "-n",
        "2",
        "--umd-results",
        str(results),
        "--umd-subjects",
        "3",
        "--umd-models",
        "classical-otsu",
        "--umd-organs",
        "spleen",
        "--umd-modalities",
        "CT,PET_CT",
        "--umd-policy",
        str(_policy(tmp_path, max_gap=1e-9)),  # any real difference fails the gap
    ]
    process = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert process.returncode in (0, 1), process.stdout[-3000:]
    document = json.loads(results.read_text())
    (gap,) = document["run"]["gaps"]
    assert gap["gap_id"] == "classical-otsu-spleen-CT~PET_CT-box" and gap["n_pairs"] == 3
    # the teardown report must not overwrite the failed call (a bug the CI smoke caught)
    assert gap["outcome"] == "failed" and gap["max_gap"] == pytest.approx(1e-9)
    assert process.returncode == 1
    by_arm = {
        a: {r["subject"]: r["dice"] for r in document["records"] if r["modality"] == a}
        for a in ("CT", "PET_CT")
    }
    expected = sum(by_arm["CT"][s] - by_arm["PET_CT"][s] for s in by_arm["CT"]) / 3
    assert gap["mean_diff"] == pytest.approx(expected)
    assert (tmp_path / "report.html").is_file() and "umdbench report:" in process.stdout
