"""Known-gap baseline: known failures, new failures, newly passing, passing."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from umdbench.baseline import load_baseline, write_baseline
from umdbench.report.synthetic import synthetic_results


@pytest.fixture
def baseline_path(tmp_path: Path) -> Path:
    return write_baseline(synthetic_results(seed=0), tmp_path / "baseline.json")


def _case(document: dict, outcome: str) -> dict:
    return next(c for c in document["cases"] if c["outcome"] == outcome)


def test_records_failed_cases_with_their_figure(baseline_path: Path) -> None:
    document = synthetic_results(seed=0)
    baseline = load_baseline(baseline_path)
    failed = {c["case_id"] for c in document["cases"] if c["outcome"] == "failed"}
    assert set(baseline.known) == failed
    case = _case(document, "failed")
    known = baseline.expectation(case["case_id"])
    assert known is not None and known.metric == "dice"
    assert known.value == pytest.approx(case["value"]) and known.threshold == case["threshold"]
    assert f"dice {case['value']:.3f}" in known.reason()
    assert baseline.expectation(_case(document, "passed")["case_id"]) is None
    assert baseline.expectation(_case(document, "skipped")["case_id"]) is None


def test_classify_outcomes(baseline_path: Path) -> None:
    document = synthetic_results(seed=0)
    baseline = load_baseline(baseline_path)
    failed, passed = _case(document, "failed")["case_id"], _case(document, "passed")["case_id"]
    assert baseline.classify(failed, passed=False) == "known-failure"
    assert baseline.classify(failed, passed=True) == "newly-passing"
    assert baseline.classify(passed, passed=False) == "new-failure"
    assert baseline.classify(passed, passed=True) == "passing"


def test_review_of_a_later_run(baseline_path: Path) -> None:
    later = copy.deepcopy(synthetic_results(seed=0))
    newly_failing, newly_passing = _case(later, "passed"), _case(later, "failed")
    newly_failing["outcome"], newly_passing["outcome"] = "failed", "passed"
    dropped = next(c for c in later["cases"] if c["outcome"] == "failed")
    later["cases"].remove(dropped)
    review = load_baseline(baseline_path).review(later)
    assert review.new_failures == [newly_failing["case_id"]]
    assert review.newly_passing == [newly_passing["case_id"]]
    assert review.not_run == [dropped["case_id"]]
    assert not review.ok
    assert any("NEW FAILURE" in line for line in review.summary_lines())
    same = load_baseline(baseline_path).review(synthetic_results(seed=0))
    assert same.ok and not same.newly_passing and len(same.known_failures) > 0


def test_xfail_outcomes_of_a_run_under_a_baseline(baseline_path: Path, tmp_path: Path) -> None:
    document = copy.deepcopy(synthetic_results(seed=0))
    known = _case(document, "failed")
    known["outcome"] = "xfailed"  # what the plugin records for a known failure
    fixed = _case(document, "failed")
    fixed["outcome"] = "xpassed"
    review = load_baseline(baseline_path).review(document)
    assert known["case_id"] in review.known_failures and review.ok
    assert review.newly_passing == [fixed["case_id"]]
    rewritten = load_baseline(write_baseline(document, tmp_path / "again.json"))
    assert known["case_id"] in rewritten.known and fixed["case_id"] not in rewritten.known


def test_errors_recorded_only_when_asked(tmp_path: Path) -> None:
    document = copy.deepcopy(synthetic_results(seed=0))
    broken = _case(document, "passed")
    broken["outcome"] = "error"
    assert broken["case_id"] not in load_baseline(write_baseline(document, tmp_path / "a")).known
    with_errors = write_baseline(document, tmp_path / "b", include_errors=True)
    assert load_baseline(with_errors).known[broken["case_id"]].outcome == "error"


def test_bad_baseline_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--umd-baseline-update"):
        load_baseline(tmp_path / "none.json")
    (tmp_path / "x.json").write_text("[")
    with pytest.raises(ValueError, match=r"x\.json is not valid JSON"):
        load_baseline(tmp_path / "x.json")
    (tmp_path / "v.json").write_text(json.dumps({"baseline_version": 99}))
    with pytest.raises(ValueError, match="must have baseline_version 1, got 99"):
        load_baseline(tmp_path / "v.json")
    (tmp_path / "m.json").write_text(json.dumps({"baseline_version": 1,
                                                 "known_failures": {"c": {"bogus": 1}}}))
    with pytest.raises(ValueError, match="malformed known_failures"):
        load_baseline(tmp_path / "m.json")
    with pytest.raises(ValueError, match="must be a results document"):
        write_baseline({"records": []}, tmp_path / "z.json")
