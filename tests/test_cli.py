"""The ``umdbench`` command, through ``main(argv)`` and once as the installed console script."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from umdbench.cli import main
from umdbench.report.compare import Tolerances, compare_documents
from umdbench.report.synthetic import synthetic_results
from umdbench.results import write_results


def _write(document: dict, path: Path) -> Path:
    return write_results(path, **{k: document[k] for k in ("run", "models", "cases", "records")})


def _shift(document: dict, case_id: str, key: str, delta: float) -> dict:
    changed = copy.deepcopy(document)
    for record in changed["records"]:
        if record["case_id"] == case_id and record.get(key) is not None:
            record[key] += delta
    return changed


@pytest.fixture
def old(tmp_path: Path) -> Path:
    return _write(synthetic_results(seed=0), tmp_path / "old.json")


def test_report_command(old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(old), "-o", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.html").exists() and (tmp_path / "rep" / "cases.csv").exists()
    assert "report.html" in capsys.readouterr().out


def test_report_default_folder_sits_beside_the_results(old: Path) -> None:
    assert main(["report", str(old)]) == 0
    assert (old.parent / "report" / "report.md").exists()


def test_compare_identical_runs_exit_zero(old: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(old), str(old)]) == 0
    assert "0 regression(s)" in capsys.readouterr().out


def test_compare_flags_a_dice_drop(old: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    worse = _write(_shift(synthetic_results(seed=0), "segvol-CT-liver-box", "dice", -0.05),
                   tmp_path / "new.json")
    assert main(["compare", str(old), str(worse)]) == 1
    out = capsys.readouterr().out
    assert "regression  segvol-CT-liver-box" in out and "-0.050" in out
    assert main(["compare", str(old), str(worse), "--dice-tol", "0.06"]) == 0


def test_compare_improvement_and_nsd_and_time() -> None:
    base = synthetic_results(seed=0)
    better = _shift(base, "unet-ct-PET_CT-liver", "dice", 0.05)
    better = _shift(better, "unet-ct-PET_CT-liver", "nsd_2mm", -0.03)
    slower = _shift(better, "segvol-MRI-aorta-box", "inference_seconds", 1.0)
    changes = {(c.case_id, c.quantity): c.kind for c in compare_documents(base, slower)}
    assert changes == {("unet-ct-PET_CT-liver", "dice"): "improvement",
                       ("unet-ct-PET_CT-liver", "nsd_2mm"): "regression",
                       ("segvol-MRI-aorta-box", "time_s"): "regression"}
    loose = Tolerances(nsd=0.05, time=10.0)
    assert {c.kind for c in compare_documents(base, slower, loose)} == {"improvement"}


def test_compare_outcome_and_case_set_changes() -> None:
    base = synthetic_results(seed=0)
    new = copy.deepcopy(base)
    passed = next(c for c in new["cases"] if c["outcome"] == "passed")
    passed["outcome"] = "error"
    removed = new["cases"].pop()
    changes = {(c.case_id, c.quantity): c.kind for c in compare_documents(base, new)}
    assert changes[(passed["case_id"], "outcome")] == "regression"
    assert changes[(removed["case_id"], "case")] == "removed"
    assert {c.kind for c in compare_documents(new, base)} >= {"added", "improvement"}


def test_baseline_commands(old: Path, tmp_path: Path) -> None:
    baseline = tmp_path / "base.json"
    assert main(["baseline", str(old), "-o", str(baseline)]) == 0
    assert main(["check-baseline", str(baseline), str(old)]) == 0
    document = copy.deepcopy(synthetic_results(seed=0))
    next(c for c in document["cases"] if c["outcome"] == "passed")["outcome"] = "failed"
    assert main(["check-baseline", str(baseline), str(_write(document, tmp_path / "n.json"))]) == 1


def test_compare_fails_on_missing_cases_unless_allowed(
    old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = copy.deepcopy(synthetic_results(seed=0))
    gone = sorted(c["case_id"] for c in document["cases"])[:7]
    document["cases"] = [c for c in document["cases"] if c["case_id"] not in gone]
    new = _write(document, tmp_path / "new.json")
    assert main(["compare", str(old), str(new)]) == 1
    out = capsys.readouterr().out
    assert f"MISSING: 7 case(s) of {old} missing (absent or newly skipped) from {new}: {gone[0]}, " in out
    assert f"{gone[4]} ... and 2 more (fails; --allow-missing to accept)" in out
    assert gone[5] not in out.splitlines()[-1]
    assert main(["compare", str(old), str(new), "--allow-missing"]) == 0
    assert "missing: 7 case(s)" in capsys.readouterr().out
    assert main(["compare", str(new), str(old)]) == 0  # added cases do not fail
    ran = next(c for c in document["cases"] if c["outcome"] == "passed")
    ran["outcome"], ran["value"] = "skipped", None  # weights gone on the nightly machine
    skipped = _write(document, tmp_path / "skipped.json")
    capsys.readouterr()
    assert main(["compare", str(new), str(skipped)]) == 1
    assert f"MISSING: 1 case(s) of {new} missing (absent or newly skipped) from {skipped}: {ran['case_id']}" in capsys.readouterr().out


def test_check_baseline_fails_on_baseline_cases_not_run(
    old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline = tmp_path / "base.json"
    assert main(["baseline", str(old), "-o", str(baseline)]) == 0
    document = copy.deepcopy(synthetic_results(seed=0))
    absent = next(c for c in document["cases"] if c["outcome"] == "failed")
    document["cases"].remove(absent)
    skipped = next(c for c in document["cases"] if c["outcome"] == "failed")
    skipped["outcome"] = "skipped"
    results = _write(document, tmp_path / "r.json")
    capsys.readouterr()
    assert main(["check-baseline", str(baseline), str(results)]) == 1
    out = capsys.readouterr().out
    assert "MISSING: 2 baseline case(s) not run (absent or skipped)" in out
    assert absent["case_id"] in out and skipped["case_id"] in out
    assert main(["check-baseline", str(baseline), str(results), "--allow-missing"]) == 0
    assert "(allowed by --allow-missing)" in capsys.readouterr().out


def test_an_interrupted_run_fails_compare_and_check_baseline(
    old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline = tmp_path / "base.json"
    assert main(["baseline", str(old), "-o", str(baseline)]) == 0
    content = json.loads(old.read_text())
    not_run = [f"case-{i}" for i in range(8)]
    content.update(complete=False, missing_cases=not_run)
    interrupted = tmp_path / "interrupted.json"
    interrupted.write_text(json.dumps(content))
    capsys.readouterr()
    for argv in (["compare", str(old)], ["check-baseline", str(baseline)]):
        assert main([*argv, str(interrupted)]) == 1
        out = capsys.readouterr().out
        assert f"INCOMPLETE: {interrupted} is an interrupted run (complete: false), 8 case(s)" in out
        assert "case-4 ... and 3 more" in out
        assert main([*argv, str(interrupted), "--allow-missing"]) == 0
        assert "incomplete: " in capsys.readouterr().out


def test_bad_files_exit_two_with_the_name(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
    (tmp_path / "v.json").write_text('{"schema_version": 7}')
    assert main(["compare", str(tmp_path / "v.json"), str(tmp_path / "v.json")]) == 2
    assert "schema_version 7" in capsys.readouterr().err


def test_bad_options_are_usage_errors(old: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["compare", str(old), str(old), "--time-tol", "-0.1"])
    assert info.value.code == 2 and "must be a number >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["merge", str(old)])  # -o is required


@pytest.mark.skipif(shutil.which("umdbench") is None, reason="console script not installed "
                    "(pip install -e .)")
def test_console_script_runs(old: Path, tmp_path: Path) -> None:
    help_text = subprocess.run(["umdbench", "--help"], capture_output=True, text=True, check=True)
    for command in ("report", "merge", "compare", "baseline", "check-baseline"):
        assert command in help_text.stdout
    merged = tmp_path / "m.json"
    result = subprocess.run(["umdbench", "merge", str(old), "-o", str(merged)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and merged.exists(), result.stderr
