"""Prompt protocols: hand-worked cases, seeds, click rules, and prompts after resampling."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from umdbench.models._families import to_model_grid
from umdbench.models.base import PromptKind, SegmentationModel
from umdbench.prompts import (
    Prompt,
    PromptView,
    box_prompt,
    case_seed,
    check_protocol_name,
    cvpr_box_prompt,
    dsc_auc,
    edt_click,
    interior_point,
    organ_parts,
    random_error_click,
    slice_axis,
)
from umdbench.protocols import PROTOCOL_EXAMPLES, check_protocols, parse_protocol, run_prompted
from umdbench.volume import Volume


class BallModel(SegmentationModel):
    """Predicts a ball of radius 2 around each positive click, minus one around negatives."""

    name = "fake-ball"
    prompt_kind = PromptKind.POINTS
    organs = ("liver",)
    protocols: ClassVar[tuple[str, ...]] = ("1click",)
    label_ids: ClassVar[dict[str, int]] = {"liver": 7}
    oracle_crop: ClassVar[bool] = False

    def __init__(self) -> None:
        self.prompts: list[Prompt] = []

    def load(self, device: str) -> None:
        pass

    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        assert prompt is not None
        self.prompts.append(prompt)
        out = np.zeros(image.shape, dtype=np.uint8)
        grid = np.indices(image.shape).transpose(1, 2, 3, 0)
        if prompt.box is not None and prompt.points is None:
            (a, b, c), (d, e, f) = prompt.box
            out[a : d + 1, b : e + 1, c : f + 1] = 1
        for point, label in zip(
            prompt.points if prompt.points is not None else [],
            prompt.point_labels if prompt.point_labels is not None else [],
            strict=True,
        ):
            ball = np.linalg.norm(grid - point, axis=-1) <= 2
            out[ball] = int(label)
        if prompt.previous is not None and prompt.points is not None:
            out = np.where(out > 0, 1, prompt.previous.astype(np.uint8) & (out == 0))
        return out


def _blob(shape: tuple[int, int, int] = (20, 22, 18)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[4:14, 6:16, 3:12] = True
    mask[14:16, 8:10, 5:7] = True
    return mask


def _volume(mask: np.ndarray, affine: np.ndarray | None = None) -> Volume:
    return Volume(mask.astype(np.float32) * 100.0, np.eye(4) if affine is None else affine)


def test_case_seed_is_stable() -> None:
    assert case_seed("m", "s1/CT", "liver") == case_seed("m", "s1/CT", "liver")
    assert case_seed("m", "s1/CT", "liver") != case_seed("m", "s1/CT", "spleen")
    # sha256("a") starts ca 97 81 12; read little endian: 0x128197ca
    assert case_seed("a") == 0x128197CA


@pytest.mark.parametrize("name", PROTOCOL_EXAMPLES)
def test_every_example_protocol_parses(name: str) -> None:
    assert parse_protocol(name).name == name


@pytest.mark.parametrize("bad", ["box-CT-x", "MRI", "x-PET_MRI", "a b", "box_cvpr", "-x", "a--b"])
def test_bad_protocol_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="protocol must"):
        check_protocol_name(bad)


def test_unknown_protocol_lists_the_forms() -> None:
    with pytest.raises(ValueError, match="box-cvpr-<N>clicks"):
        parse_protocol("7taps")


def test_check_protocols_validates_a_model_class() -> None:
    assert check_protocols(BallModel) == ("1click",)

    class Bad(BallModel):
        protocols = ("box-CT-x",)

    with pytest.raises(TypeError, match=r"Bad\.protocols"):
        check_protocols(Bad)


def test_dsc_auc_hand_worked() -> None:
    # trapezoids: (0.2+0.5)/2 + (0.5+0.5)/2 + (0.5+0.9)/2 = 0.35 + 0.5 + 0.7
    assert dsc_auc([0.2, 0.5, 0.5, 0.9]) == pytest.approx(1.55)
    assert np.isnan(dsc_auc([0.7]))


def test_box_prompt_hand_worked() -> None:
    prompt = box_prompt(_blob(), "liver", 1, (1.0, 1.0, 1.0))
    assert prompt.box == ((4, 6, 3), (15, 15, 11))


def test_jittered_box_contains_tight_box_and_is_seeded() -> None:
    tight = box_prompt(_blob(), "liver", 1, (1.0, 1.0, 1.0)).box
    a = box_prompt(_blob(), "liver", 5, (1.0, 2.0, 3.0), jitter_mm=5.0).box
    assert a == box_prompt(_blob(), "liver", 5, (1.0, 2.0, 3.0), jitter_mm=5.0).box
    assert a is not None and tight is not None
    assert all(a[0][i] <= tight[0][i] and a[1][i] >= tight[1][i] for i in range(3))
    assert all(tight[0][i] - a[0][i] <= [5, 3, 2][i] for i in range(3))


def test_cvpr_box_hand_worked() -> None:
    mask = np.zeros((10, 10, 9), dtype=bool)
    mask[2:5, 3:6, 1:4] = True  # slices 1..3 along axis 2 (S in an identity affine)
    mask[7, 7, 6] = True  # one voxel on slice 6
    prompt = cvpr_box_prompt(mask, "liver", 0, np.eye(4), max_shift=0)
    # z-range 1..6; sorted slice indices of the 28 voxels: 9 each of 1,2,3, then 6 -> median 2
    assert prompt.extra["middle_slice"] == 2
    assert prompt.box == ((2, 3, 1), (4, 5, 6))


def test_cvpr_box_slice_axis_follows_the_affine() -> None:
    # array axis 0 runs along S here: the slice axis is 0, not 2
    affine = np.array([[0, 1, 0, 0], [0, 0, -1, 0], [2, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    assert slice_axis(affine) == 0
    mask = np.zeros((8, 8, 8), dtype=bool)
    mask[1:6, 2:4, 3:5] = True
    prompt = cvpr_box_prompt(mask, "liver", 0, affine, max_shift=0)
    assert prompt.box == ((1, 2, 3), (5, 3, 4))


def test_interior_point_is_the_cube_centre() -> None:
    mask = np.zeros((11, 11, 11), dtype=bool)
    mask[2:9, 2:9, 2:9] = True
    point = interior_point(mask, "liver", np.random.default_rng(0))
    assert tuple(point) == (5, 5, 5)


def test_edt_click_picks_largest_error_component() -> None:
    reference = np.zeros((20, 20, 20), dtype=bool)
    reference[2:9, 2:9, 2:9] = True  # 7^3 missed: a false negative, the largest error
    reference[15:17, 15:17, 15:17] = True
    previous = np.zeros_like(reference)
    previous[15:17, 15:17, 15:17] = True
    previous[12:14, 2:4, 2:4] = True  # a small false positive
    click = edt_click(previous, reference, np.random.default_rng(0))
    assert click is not None and tuple(click[0]) == (5, 5, 5) and click[1] == 1
    # now the big error is a false positive: the click must be negative
    slab = np.indices((20,) * 3)[0] < 1  # a whole false-positive slice
    click = edt_click(reference | slab, reference, np.random.default_rng(0))
    assert click is not None and click[1] == 0 and click[0][0] == 0
    assert edt_click(reference, reference, np.random.default_rng(0)) is None


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), flips=st.integers(1, 60))
def test_random_clicks_land_in_the_error_with_the_right_sign(seed: int, flips: int) -> None:
    rng = np.random.default_rng(seed)
    reference = _blob()
    previous = reference.copy()
    flat = rng.choice(previous.size, size=flips, replace=False)
    previous.flat[flat] = ~previous.flat[flat]
    point, label = random_error_click(previous, reference, np.random.default_rng(seed))
    assert previous[tuple(point)] != reference[tuple(point)]
    assert label == int(reference[tuple(point)] and not previous[tuple(point)])


def test_a_perfect_mask_still_gets_a_positive_organ_click() -> None:
    """SAM-Med3D's random_sample_next_click: no error left -> a random ground-truth voxel."""
    reference = _blob()
    for seed in range(5):
        point, label = random_error_click(reference, reference, np.random.default_rng(seed))
        assert reference[tuple(point)] and label == 1


def _two_lungs(gap: int = 4) -> np.ndarray:
    mask = np.zeros((40, 20, 20), dtype=bool)
    mask[2:16, 4:16, 4:16] = True  # low x: in an identity (RAS+) affine, the subject's left
    mask[16 + gap : 38, 4:16, 4:16] = True  # high x: the right lung, larger
    mask[1, 2, 2] = True  # a stray voxel, nearest to the left lung
    return mask


def test_lung_parts_are_the_two_components_named_by_side() -> None:
    mask = _two_lungs()
    parts = organ_parts(mask, "lung", np.eye(4))
    assert [name for name, _ in parts] == ["right", "left"]
    right, left = parts[0][1], parts[1][1]
    assert right[30, 10, 10] and left[5, 10, 10] and left[1, 2, 2]  # the stray joins the left
    assert np.array_equal(right | left, mask) and not (right & left).any()
    flipped = organ_parts(mask, "lung", np.diag([-1.0, 1, 1, 1]))  # LPS-like x: sides swap
    assert flipped[0][1][5, 10, 10] and flipped[0][0] == "right"


def test_touching_lungs_and_single_organs_are_one_part() -> None:
    touching = _two_lungs(gap=0)
    touching[1, 2, 2] = False
    assert [name for name, _ in organ_parts(touching, "lung", np.eye(4))] == [None]
    assert [name for name, _ in organ_parts(_blob(), "liver", np.eye(4))] == [None]


def test_each_lung_is_prompted_on_its_own_and_the_masks_merge() -> None:
    mask = _two_lungs()
    model = BallModel()
    result = run_prompted(model, _volume(mask), "CT", mask, "lung", "3clicks", seed=2)
    assert len(model.prompts) == 6 and [p.part for p in model.prompts[::3]] == ["right", "left"]
    parts = result.prompt["parts"]
    assert [p["part"] for p in parts] == ["right", "left"]
    for part, prompt in zip(parts, model.prompts[2::3], strict=True):
        assert len(part["steps"]) == 3 and len(part["points_voxel"]) == 3
        side = mask.copy()
        side[: 18] = part["part"] == "left"
        side[18:] = part["part"] == "right"
        first = tuple(int(v) for v in part["points_voxel"][0])
        assert side[first] and mask[first]  # the first click lies in its own lung
        assert prompt.points is not None and len(prompt.points) == 3
    assert len(result.steps) == 3 and np.isfinite(result.dsc_auc)
    last = [p.previous for p in model.prompts[2::3]]
    assert result.steps[-1]["dice"] >= 0.0 and result.mask.shape == mask.shape
    assert all(x is not None for x in last)
    single = run_prompted(BallModel(), _volume(mask), "CT", mask, "lung", "text", seed=2)
    assert "parts" not in single.prompt  # a name points at the organ, not at a place


class CropViewModel(BallModel):
    """A model whose official code clicks inside a crop: the x < 10 half of the scan."""

    def prompt_view(self, image: Volume, reference: np.ndarray) -> PromptView:
        affine = image.affine.copy()
        return PromptView(reference[:10].copy(), affine, {"shape": [10, *reference.shape[1:]]})

    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        out = super().predict(image, modality, prompt)
        assert prompt is not None
        prompt.state["view_mask"] = out[:10] > 0
        return out


def test_clicks_come_from_the_models_view_and_are_recorded_in_three_spaces() -> None:
    mask = _blob()
    shifted = np.array([[1.0, 0, 0, 5], [0, 2, 0, -3], [0, 0, 1.5, 7], [0, 0, 0, 1]])
    model = CropViewModel()
    result = run_prompted(model, _volume(mask, shifted), "CT", mask, "liver", "5clicks", seed=4)
    for prompt in model.prompts:
        assert prompt.view is not None and prompt.view_points is not None
        assert np.all(prompt.view_points[:, 0] < 10)  # every click inside the view
        assert np.allclose(prompt.points, prompt.view_points)  # this view shares the scan grid
    assert model.prompts[0].view_points is not None
    assert mask[:10][tuple(model.prompts[0].view_points[0])]
    record = result.prompt
    assert record["region_of_interest"] == {"shape": [10, 22, 18]}
    assert len(record["points_view_voxel"]) == 5 and len(record["points_world"]) == 5


def test_a_view_model_that_forgets_its_mask_is_told_what_to_store() -> None:
    class Forgetful(CropViewModel):
        def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
            return BallModel.predict(self, image, modality, prompt)

    mask = _blob()
    with pytest.raises(ValueError, match=r"state\['view_mask'\]"):
        run_prompted(Forgetful(), _volume(mask), "CT", mask, "liver", "3clicks", seed=1)


def test_an_organ_outside_the_view_gets_an_empty_mask_without_a_call() -> None:
    mask = np.zeros((20, 22, 18), dtype=bool)
    mask[12:18, 5:10, 5:10] = True  # entirely at x >= 10, outside CropViewModel's view
    model = CropViewModel()
    result = run_prompted(model, _volume(mask), "CT", mask, "liver", "1click", seed=1)
    assert model.prompts == [] and not result.mask.any()


def test_classid_clicks_and_patchpoints_protocols() -> None:
    mask = _blob()
    model = BallModel()
    result = run_prompted(model, _volume(mask), "CT", mask, "liver", "classid-2clicks", seed=5)
    assert [p.class_id for p in model.prompts] == [7, 7, 7]
    assert model.prompts[0].points is None and len(model.prompts[-1].points) == 2
    assert len(result.steps) == 3 and "click_voxel" not in result.steps[0]
    model.prompts.clear()
    run_prompted(model, _volume(mask), "CT", mask, "liver", "patchpoints", seed=5)
    (prompt,) = model.prompts
    assert prompt.class_id == 7 and prompt.points is None
    assert prompt.reference is not None and np.array_equal(prompt.reference, mask)


def test_run_prompted_is_reproducible_and_seed_dependent() -> None:
    mask = _blob()
    image = _volume(mask)
    first = run_prompted(BallModel(), image, "CT", mask, "liver", "5clicks", seed=3)
    again = run_prompted(BallModel(), image, "CT", mask, "liver", "5clicks", seed=3)
    other = run_prompted(BallModel(), image, "CT", mask, "liver", "5clicks", seed=4)
    assert first.prompt == again.prompt and first.steps == again.steps
    assert first.prompt["points_voxel"] != other.prompt["points_voxel"]


def test_iterative_protocol_records_steps_and_auc() -> None:
    mask = _blob()
    model = BallModel()
    result = run_prompted(model, _volume(mask), "CT", mask, "liver", "box-cvpr-3clicks", seed=9)
    assert [s["step"] for s in result.steps] == [0, 1, 2, 3]
    assert "click_voxel" not in result.steps[0]  # the box step
    clicks = [s["dice"] for s in result.steps[1:]]
    assert result.dsc_auc == pytest.approx(dsc_auc(clicks))
    assert model.prompts[0].box is not None and model.prompts[-1].points is not None
    assert len(model.prompts[-1].points) == 3
    assert model.prompts[1].previous is not None
    assert all(p.state is model.prompts[0].state for p in model.prompts)  # one state per run
    for step, prompt in zip(result.steps[1:], model.prompts[1:], strict=True):
        previous = prompt.previous
        assert previous is not None
        voxel = tuple(step["click_voxel"])
        assert previous[voxel] != mask[voxel]  # every click sits in the error of the step before
        assert step["click_label"] == int(mask[voxel])
    assert result.to_record()["prompt"]["protocol"] == "box-cvpr-3clicks"


def test_text_and_classid_protocols() -> None:
    mask = _blob()
    model = BallModel()
    result = run_prompted(model, _volume(mask), "MRI", mask, "liver", "text", seed=1)
    assert result.prompt["text"] == "liver" and "hepar" in result.prompt["synonyms"]
    run_prompted(model, _volume(mask), "MRI", mask, "liver", "classid", seed=1)
    assert model.prompts[-1].class_id == 7
    with pytest.raises(ValueError, match="no class id for organ 'spleen'"):
        run_prompted(model, _volume(mask), "MRI", mask, "spleen", "classid", seed=1)


def test_oracle_crop_models_get_a_flagged_centre() -> None:
    class Oracle(BallModel):
        oracle_crop = True

    mask = _blob()
    result = run_prompted(Oracle(), _volume(mask), "CT", mask, "liver", "1click", seed=1)
    assert result.oracle and result.prompt["oracle"] is True
    assert result.prompt["roi_center_voxel"] == [9.5, 10.5, 7.0]
    plain = run_prompted(BallModel(), _volume(mask), "CT", mask, "liver", "1click", seed=1)
    assert not plain.oracle and "roi_center_voxel" not in plain.prompt


def test_bad_inputs_give_clear_errors() -> None:
    mask = _blob()
    with pytest.raises(ValueError, match="reference mask is empty"):
        run_prompted(BallModel(), _volume(mask), "CT", np.zeros_like(mask), "liver", "box", 1)
    with pytest.raises(ValueError, match="must be on the image grid"):
        run_prompted(BallModel(), _volume(mask), "CT", mask[:-1], "liver", "box", 1)

    class Wrong(BallModel):
        def predict(self, image: Volume, modality: str, prompt: Any) -> np.ndarray:
            return np.zeros((2, 2, 2))

    with pytest.raises(ValueError, match=r"predict must map its output back to the scan.s grid"):
        run_prompted(Wrong(), _volume(mask), "CT", mask, "liver", "box", 1)


LPS_ANISO = np.array(
    [[-0.8, 0, 0, 60.0], [0, -1.3, 0, 40.0], [0, 0, 3.0, -20.0], [0, 0, 0, 1]], dtype=float
)
OBLIQUE_PERMUTED = np.array(
    [[0, 0, 2.5, -10.0], [-0.9, 0, 0, 30.0], [0, 1.1, 0, 5.0], [0, 0, 0, 1]], dtype=float
)


@pytest.mark.parametrize("affine", [np.eye(4), LPS_ANISO, OBLIQUE_PERMUTED])
@pytest.mark.parametrize("protocol", ["1click", "1click-center", "5clicks-edt"])
def test_points_land_inside_the_organ_after_resampling(affine: np.ndarray, protocol: str) -> None:
    """Every positive click, mapped to a 1.5 mm RAS grid, hits the organ resampled there."""
    mask = _blob((24, 26, 14))
    model = BallModel()
    run_prompted(model, _volume(mask, affine), "CT", mask, "liver", protocol, seed=2)
    scan = Volume(mask.astype(np.float32), affine)
    grid = to_model_grid(scan, (1.5, 1.5, 1.5), "RAS", mode="nearest")
    organ = grid.tensor[0].numpy() > 0.5
    prompt = model.prompts[-1]
    assert prompt.points is not None and prompt.point_labels is not None
    positive = prompt.points[prompt.point_labels == 1]
    mapped = np.rint(grid.points_from_scan(positive)).astype(int)
    assert all(organ[tuple(p)] for p in mapped)
    # and the round trip brings the resampled organ back (0.8 mm axes lose detail at 1.5 mm)
    back = grid.to_scan(organ.astype(np.int16)) > 0
    assert 2 * (back & mask).sum() / (back.sum() + mask.sum()) > 0.9


@pytest.mark.parametrize("affine", [LPS_ANISO, OBLIQUE_PERMUTED])
def test_reorientation_alone_round_trips_exactly(affine: np.ndarray) -> None:
    mask = _blob((24, 26, 14))
    grid = to_model_grid(Volume(mask.astype(np.float32), affine), None, "RAS", mode="nearest")
    assert grid.shape != mask.shape or not np.allclose(grid.affine, affine)
    assert np.array_equal(grid.to_scan(grid.tensor[0].numpy().astype(np.int16)) > 0, mask)
