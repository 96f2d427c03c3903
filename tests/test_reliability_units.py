"""The parts of a reliable run, one at a time: output checks, outcome wording, the journal, the
content-keyed prediction cache and the host process (fast; the whole-run tests are in
test_reliability.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from umdbench.cases import Case
from umdbench.cohort import Cohort
from umdbench.fault_models import Raising, Segfaulting
from umdbench.inference import InferenceRequest
from umdbench.isolation import ChildHost, HostFailure, ModelHandle, ModelSpec, load_model
from umdbench.journal import JournalWriter, begin_journal, read_journal
from umdbench.models.base import SegmentationModel
from umdbench.outputs import OutputError, check_label_map
from umdbench.policy import Threshold
from umdbench.prediction_cache import PredictionCache
from umdbench.runner import CaseOutcome, CaseRunner

SHAPE = (4, 5, 6)


def _labels(dtype: Any, fill: float = 1) -> np.ndarray:
    out = np.zeros(SHAPE, dtype=dtype)
    out[1:3, 1:3, 1:3] = fill
    return out


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (_labels(np.float32, np.nan), "not finite (nan at voxel (1, 1, 1), 8 voxels)"),
        (_labels(np.float32, 0.7), "not whole numbers (0.7 at voxel (1, 1, 1), 8 voxels)"),
        (_labels(np.int64, 1) + 65536, "label values 65536, 65537"),
        (_labels(np.int16, 3), "label values 3 (8 voxels, dtype int16)"),
        (_labels(np.int16, -1), "label values -1"),
        (np.zeros((4, 5, 7), dtype=np.int16), "shape (4, 5, 7), but the image grid is (4, 5, 6)"),
        (_labels(np.complex64), "dtype complex64"),
        ([[0]], "must return a numpy array, got list"),
    ],
)
def test_bad_outputs_are_refused_before_any_cast(labels: Any, message: str) -> None:
    with pytest.raises(OutputError) as raised:
        check_label_map(labels, SHAPE, [1, 2])
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "labels", [_labels(bool), _labels(np.uint8, 2), _labels(np.float64, 2), _labels(np.int64, 1)]
)
def test_good_outputs_pass_unchanged_in_value(labels: np.ndarray) -> None:
    checked = check_label_map(labels, SHAPE, [1, 2])
    assert np.array_equal(checked.astype(np.int64), labels.astype(np.int64))


def test_an_erroring_case_leads_with_its_errors_not_a_figure() -> None:
    outcome = CaseOutcome(Case("m", "CT", "liver"), Threshold("dice", 0.5, "bar"), records=[])
    outcome.value, outcome.n_valid, outcome.n_errors = 1.0, 2, 1
    outcome.messages = ["error: model m on s2/CT (/d/s2.nii.gz) raised RuntimeError: boom"]
    assert outcome.is_error and not outcome.passed
    lines = outcome.failure_message().splitlines()
    assert (
        lines[0]
        == "m-CT-liver: error: 1 of 3 subject(s) could not be scored, so the case has no verdict"
    )
    assert lines[1].startswith("error: model m on s2/CT") and "1.000" in lines[2]


def test_journal_survives_a_torn_last_line_and_a_new_run_keeps_the_old_one(tmp_path: Path) -> None:
    folder = tmp_path / "results.journal"
    begin_journal(folder, {"options": {"seed": 0}}, resume=False)
    writer = JournalWriter(folder, "gw0")
    writer.append({"case_id": "a-CT-liver", "scan": "s1/CT", "dice": float("nan")})
    writer.close()
    with open(writer.path, "a") as handle:
        handle.write('{"case_id": "a-CT-liver", "sca')  # killed mid-write
    records, torn = read_journal(folder)
    assert list(records) == [("a-CT-liver", "s1/CT")] and torn == 1
    begin_journal(folder, {"options": {"seed": 0}}, resume=True)  # same run: accepted
    with pytest.raises(ValueError, match=r"refused: .* in options\.seed"):
        begin_journal(folder, {"options": {"seed": 1}}, resume=True)
    begin_journal(folder, {"options": {"seed": 1}}, resume=False)
    assert read_journal(folder)[0] == {}
    assert read_journal(folder.with_name("results.journal.previous"))[0] == records


def test_resume_without_a_journal_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--umd-resume: no journal at .*nothing was interrupted"):
        begin_journal(tmp_path / "results.journal", {}, resume=True)


class Counting(SegmentationModel):
    """Labels bright voxels 1; counts its calls (in-process)."""

    name = "counting"
    organs = ("liver",)
    label_ids: ClassVar = {"liver": 1}
    calls = 0

    def load(self, device: str) -> None: ...

    def predict(self, image, modality, prompt):  # type: ignore[no-untyped-def]
        type(self).calls += 1
        return ((image.array > 50) & (image.array < 150)).astype(np.int16)


class _Registry:
    def get(self, name: str) -> type[SegmentationModel]:
        return Counting


def _run(cohort: Cohort, folder: Path, run_id: str) -> CaseOutcome:
    cache = PredictionCache(folder, run_id=run_id)
    runner = CaseRunner(cohort, _Registry(), "cpu", cache, isolation="none")  # type: ignore[arg-type]
    return runner.run_case(Case("counting", "CT", "liver"), Threshold("dice", 0.5, "bar"))


def test_prediction_cache_follows_file_content_and_marks_reuse(
    tiny_cohort: Cohort, tmp_path: Path
) -> None:
    Counting.calls = 0
    first = _run(tiny_cohort, tmp_path / "cache", "run-a")
    assert Counting.calls == 2 and not any(r.get("cached_from") for r in first.records)
    again = _run(tiny_cohort, tmp_path / "cache", "run-b")
    assert Counting.calls == 2  # nothing changed: reused, and said so
    assert {r["cached_from"]["run_id"] for r in again.records} == {"run-a"}
    scan = tiny_cohort.scans_of("CT")[1]
    os.utime(scan.image, ns=(1, 1))  # a repaired scan: same path, new file
    repaired = _run(tiny_cohort, tmp_path / "cache", "run-c")
    assert Counting.calls == 3  # only that scan predicted again
    fresh = [r["scan"] for r in repaired.records if "cached_from" not in r]
    assert fresh == [scan.key]


def test_host_process_reports_a_crash_and_serves_the_next_request(tiny_cohort: Cohort) -> None:
    assert ModelSpec.of(Segfaulting) is not None
    scan = tiny_cohort.scans_of("CT")[0]
    os.environ["UMD_FAULT_AT"] = "1"  # the first call crashes, the next one works
    os.environ["UMD_FAULT_COUNTER"] = str(scan.image.parent / "counters")
    host = ChildHost("cpu", timeout=60)
    try:
        status, weights = load_model(Segfaulting, host)
        assert (status, weights) == ("ok", "none")
        model = ModelHandle(Segfaulting, host, weights)
        request = InferenceRequest(scan.load_image(), "CT", scan.key, str(scan.image))
        with pytest.raises(
            HostFailure, match=r"on s0/CT \(.*\): the model's process crashed with SIGSEGV"
        ):
            model.infer(request)
        result = model.infer(request)  # a fresh host, the model loaded again
        assert result.labels.shape == scan.load_image().shape and host.restarts == 1
    finally:
        os.environ.pop("UMD_FAULT_AT", None)
        os.environ.pop("UMD_FAULT_COUNTER", None)
        host.close()


def test_vendor_exception_names_its_own_line(tiny_cohort: Cohort) -> None:
    from umdbench.isolation import InProcessHost

    host = InProcessHost("cpu")
    load_model(Raising, host)
    scan = tiny_cohort.scans_of("CT")[0]
    request = InferenceRequest(scan.load_image(), "CT", scan.key, str(scan.image))
    status, message = host.request("infer", ("fault-raise", request), "where")
    assert status == "error" and "raised RuntimeError: injected fault" in message
    assert "fault_models.py:" in message


def test_records_file_is_json_lines(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, "main")
    writer.append({"case_id": "c", "scan": "s", "value": 1})
    writer.append({"case_id": "c", "scan": "t", "value": 2})
    lines = writer.path.read_text().splitlines()
    assert [json.loads(line)["scan"] for line in lines] == ["s", "t"]


def test_collect_only_leaves_the_last_results_alone(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_audit="def test_segmentation(umd_case):\n    pass\n")
    results = pytester.path / "results.json"
    results.write_text('{"schema_version": 1, "last": "run"}')
    outcome = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "--umd-results",
                                 str(results), "--umd-subjects", "1")  # fmt: skip
    assert outcome.ret == pytest.ExitCode.OK
    assert json.loads(results.read_text())["last"] == "run"
    assert not results.with_name("results.journal").exists()
