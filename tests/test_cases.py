from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from umdbench.cases import Case, build_cases, parse_case_id, schedule_group
from umdbench.models.base import PromptKind, SegmentationModel
from umdbench.organs import CANONICAL_ORGANS, MODALITIES

model_names = st.from_regex(r"[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,6}){0,3}", fullmatch=True)
protocols = st.one_of(
    st.none(), st.from_regex(r"[a-z0-9]{1,5}(-[a-z0-9]{1,4}){0,2}", fullmatch=True)
)


@given(model_names, st.sampled_from(MODALITIES), st.sampled_from(CANONICAL_ORGANS), protocols)
def test_case_ids_parse_back(model: str, modality: str, organ: str, protocol: str | None) -> None:
    case = Case(model, modality, organ, protocol)
    assert parse_case_id(case.id) == case


def test_case_id_examples() -> None:
    assert Case("unet-ct", "PET_CT", "liver").id == "unet-ct-PET_CT-liver"
    assert (
        Case("sam-med3d-turbo", "PET_CT", "liver", "1click").id
        == "sam-med3d-turbo-PET_CT-liver-1click"
    )
    with pytest.raises(ValueError, match="case id must read"):
        parse_case_id("unet-ct-XRAY-liver")


def test_scheduling_groups_by_model_and_arm() -> None:
    node = "benchmarks/test_segmentation.py::test_segmentation[unet-ct-PET_MRI-urinary_bladder]"
    assert schedule_group(node) == "unet-ct-PET_MRI"
    assert schedule_group("tests/test_x.py::test_y[unet-ct-CT-liver]") is None


def _model(name: str, kind: PromptKind, organs: tuple[str, ...], protocols: tuple[str, ...],
           any_target: bool = True) -> type[SegmentationModel]:
    attributes = {"name": name, "prompt_kind": kind, "organs": organs, "protocols": protocols,
                  "any_target": any_target, "load": lambda self, device: None,
                  "predict": lambda self, image, modality, prompt: None}
    return type(name, (SegmentationModel,), attributes)


def test_matrix_skips_organs_a_model_cannot_segment_and_expands_protocols() -> None:
    cases = build_cases(
        [_model("auto", PromptKind.NONE, ("liver", "spleen"), ()),
         _model("boxy", PromptKind.BOX, ("liver",), ("box", "1click"), any_target=False)],
        {"CT": ["liver", "spleen", "brain"], "PET_CT": ["liver", "spleen"], "MRI": ["brain"]},
    )
    ids = {c.id for c in cases}
    assert "auto-CT-brain" not in ids and "auto-PET_CT-spleen" in ids
    assert not any("-MRI-" in i for i in ids)  # the arm labels nothing these models segment
    assert {"boxy-CT-liver-box", "boxy-CT-liver-1click"} <= ids
    assert len(cases) == len(ids) == 2 * 2 + 2 * 2


def test_a_lesion_is_run_by_promptable_models_only() -> None:
    """The issue's rule: automatic organ models never get the tumour; every promptable model
    does (its prompt says what to segment), unless it restricts itself to its organs."""
    models = [
        _model("organs-auto", PromptKind.NONE, CANONICAL_ORGANS, ()),
        _model("tumour-auto", PromptKind.NONE, ("tumor",), ()),
        _model("clicks", PromptKind.POINTS, CANONICAL_ORGANS, ("1click",)),
        _model("text", PromptKind.TEXT, CANONICAL_ORGANS, ("text",)),
        _model("liver-only", PromptKind.BOX, ("liver",), ("box",), any_target=False),
    ]
    ids = {c.id for c in build_cases(models, {"CT": ["tumor", "liver"], "MRI": ["tumor"]})}
    tumour = {i for i in ids if "-tumor" in i}
    assert tumour == {
        "tumour-auto-CT-tumor", "tumour-auto-MRI-tumor", "clicks-CT-tumor-1click",
        "clicks-MRI-tumor-1click", "text-CT-tumor-text", "text-MRI-tumor-text",
    }  # fmt: skip
    assert "organs-auto-CT-liver" in ids and "liver-only-CT-liver-box" in ids
