"""The runner against models that misbehave: every failure is a record, never a lost run."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from umdbench.cases import Case
from umdbench.cohort import Cohort
from umdbench.models.base import ModelUnavailable, PromptKind, SegmentationModel
from umdbench.policy import Threshold
from umdbench.prediction_cache import PredictionCache
from umdbench.runner import CaseRunner


class Threshold50(SegmentationModel):
    """Labels voxels of liver brightness (50..150) 1; counts its calls."""

    name = "thr"
    organs = ("liver", "spleen")
    label_ids: ClassVar = {"liver": 1, "spleen": 2}
    calls = 0

    def load(self, device: str) -> None: ...

    def predict(self, image, modality, prompt):  # type: ignore[no-untyped-def]
        type(self).calls += 1
        return ((image.array > 50) & (image.array < 150)).astype(np.int16)


class Raises(Threshold50):
    name = "raises"

    def predict(self, image, modality, prompt):  # type: ignore[no-untyped-def]
        raise RuntimeError("kernel exploded")


class WrongShape(Threshold50):
    name = "wrong-shape"

    def predict(self, image, modality, prompt):  # type: ignore[no-untyped-def]
        return np.zeros((3, 3, 3), dtype=np.int16)


class OutOfMemory(Threshold50):
    name = "oom"

    def predict(self, image, modality, prompt):  # type: ignore[no-untyped-def]
        raise MemoryError("cannot allocate 80 GiB")


class Missing(Threshold50):
    name = "missing"

    def check_available(self, device: str) -> None:
        raise ModelUnavailable("weights /w/missing.pt not found; put them there")


class BoxModel(Threshold50):
    name = "boxy"
    prompt_kind = PromptKind.BOX
    protocols = ("box",)

    def predict(self, image, modality, prompt):  # type: ignore[no-untyped-def]
        type(self).calls += 1
        out = np.zeros(image.shape, dtype=np.uint8)
        (x0, y0, z0), (x1, y1, z1) = prompt.box
        out[x0 : x1 + 1, y0 : y1 + 1, z0 : z1 + 1] = 1
        return out


class FakeRegistry:
    def __init__(self, *classes: type[SegmentationModel]) -> None:
        self.classes = {cls.name: cls for cls in classes}

    def get(self, name: str) -> type[SegmentationModel]:
        return self.classes[name]


BAR = Threshold("dice", 0.5, "test bar")


def runner(
    cohort: Cohort, *classes: type[SegmentationModel], folder: Path | None = None
) -> CaseRunner:
    return CaseRunner(cohort, FakeRegistry(*classes), "cpu", PredictionCache(folder), isolation="none")  # type: ignore[arg-type]


def test_organ_cases_of_one_scan_reuse_one_prediction(tiny_cohort: Cohort) -> None:
    Threshold50.calls = 0
    run = runner(tiny_cohort, Threshold50)
    liver = run.run_case(Case("thr", "CT", "liver"), BAR)
    spleen = run.run_case(Case("thr", "CT", "spleen"), BAR)
    assert Threshold50.calls == 2  # two CT scans, one pass each, shared by both organs
    assert liver.passed and liver.n_valid == 2 and liver.value == pytest.approx(1.0)
    assert [r["prediction_reused"] for r in spleen.records] == [True, True]
    assert spleen.value == pytest.approx(0.0)  # the model never outputs label 2


def test_predictions_are_shared_through_the_folder(tiny_cohort: Cohort, tmp_path: Path) -> None:
    Threshold50.calls = 0
    runner(tiny_cohort, Threshold50, folder=tmp_path).run_case(Case("thr", "CT", "liver"), BAR)
    other_process = runner(tiny_cohort, Threshold50, folder=tmp_path)
    outcome = other_process.run_case(Case("thr", "CT", "spleen"), BAR)
    assert Threshold50.calls == 2 and all(r["prediction_reused"] for r in outcome.records)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (Raises, "raised RuntimeError: kernel exploded"),
        (WrongShape, "returned a label map of shape (3, 3, 3)"),
        (OutOfMemory, "out of memory"),
    ],
)
def test_model_failures_become_error_records_naming_scan_and_file(
    tiny_cohort: Cohort, model: type[SegmentationModel], expected: str
) -> None:
    outcome = runner(tiny_cohort, model).run_case(Case(model.name, "CT", "liver"), BAR)
    assert not outcome.passed and outcome.n_errors == 2
    for record in outcome.records:
        assert record["status"] == "error"
        assert expected in record["error"]
        assert record["scan"] in record["error"] and "CT.nii.gz" in record["error"]
    assert expected in outcome.failure_message()


def test_unavailable_model_skips_with_the_fix(tiny_cohort: Cohort) -> None:
    outcome = runner(tiny_cohort, Missing).run_case(Case("missing", "CT", "liver"), BAR)
    assert outcome.skip_reason is not None and "put them there" in outcome.skip_reason


def test_corrupt_scan_is_one_error_and_the_rest_goes_on(tiny_cohort: Cohort) -> None:
    broken = tiny_cohort.scan("s1", "CT").image
    broken.write_bytes(broken.read_bytes()[:100])
    outcome = runner(tiny_cohort, Threshold50).run_case(Case("thr", "CT", "liver"), BAR)
    statuses = {r["subject"]: r["status"] for r in outcome.records}
    assert statuses == {"s0": "ok", "s1": "error"}
    error = next(r["error"] for r in outcome.records if r["status"] == "error")
    assert "s1/CT" in error and str(broken) in error


def test_empty_reference_is_counted_and_left_out(tiny_cohort: Cohort, tmp_path: Path) -> None:
    from umdbench.volume import load_volume, save_volume

    labels_path = tiny_cohort.scan("s0", "CT").labels
    labels = load_volume(labels_path)
    save_volume(
        labels.with_array(np.where(labels.array == 1, 0, labels.array).astype(np.uint8)),
        labels_path,
    )
    outcome = runner(tiny_cohort, Threshold50).run_case(Case("thr", "CT", "liver"), BAR)
    assert outcome.n_empty_reference == 1 and outcome.n_valid == 1
    assert "empty reference left out" in outcome.failure_message()


def test_prompted_models_get_a_recorded_box_from_the_reference(tiny_cohort: Cohort) -> None:
    BoxModel.calls = 0
    outcome = runner(tiny_cohort, BoxModel).run_case(Case("boxy", "PET_CT", "liver", "box"), BAR)
    assert BoxModel.calls == 2 and outcome.value == pytest.approx(1.0)
    prompt = outcome.records[0]["prompt"]
    assert prompt["protocol"] == "box" and "box_world" in prompt


def test_failure_message_names_the_worst_subjects(tiny_cohort: Cohort) -> None:
    outcome = runner(tiny_cohort, Threshold50).run_case(Case("thr", "CT", "spleen"), BAR)
    message = outcome.failure_message()
    assert "thr-CT-spleen" in message and "worst subjects (dice): s0 0.000" in message


class Settled(BoxModel):
    """Declares what it chose, and refuses one organ as a model's official code would."""

    name = "settled"
    organs = ("liver", "spleen")

    def unsupported(self, organ: str, protocol: str | None) -> str | None:
        return "the official code refuses a box for spleen" if organ == "spleen" else None

    def inference_settings(self) -> dict[str, object]:
        return {"overlap": 0.25, "amp": False}


def test_unsupported_combination_skips_with_the_models_reason(tiny_cohort: Cohort) -> None:
    run = runner(tiny_cohort, Settled)
    skipped = run.run_case(Case("settled", "CT", "spleen", "box"), BAR)
    assert skipped.skip_reason == "settled: the official code refuses a box for spleen"
    assert skipped.records == []
    ran = run.run_case(Case("settled", "CT", "liver", "box"), BAR)
    assert ran.skip_reason is None and ran.n_valid == 2
    assert all(r["inference"] == {"overlap": 0.25, "amp": False} for r in ran.records)


class ClassIdModel(BoxModel):
    """Prompted by its own class ids: liver only (as VISTA3D has none for a sarcoma)."""

    name = "classy"
    protocols = ("classid", "patchpoints", "box")
    label_ids: ClassVar = {"liver": 1}


@pytest.mark.parametrize("protocol", ["classid", "patchpoints"])
def test_a_class_id_protocol_skips_a_target_without_a_class(
    tiny_cohort: Cohort, protocol: str
) -> None:
    """A skip naming the target, not an error per subject; the box case of it still runs."""
    run = runner(tiny_cohort, ClassIdModel)
    skipped = run.run_case(Case("classy", "CT", "spleen", protocol), BAR)
    assert skipped.skip_reason is not None and skipped.error is None
    assert "label_ids have none for 'spleen'" in skipped.skip_reason and skipped.records == []
    ran = run.run_case(Case("classy", "CT", "spleen", "box"), BAR)
    assert ran.skip_reason is None and ran.n_valid == 2
