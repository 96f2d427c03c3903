"""SAM-Med3D family: random weights in the official checkpoint layout, real load and predict."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from umdbench.models.base import ModelUnavailable
from umdbench.models.sam_med3d import SamMed3DFamily, SamMed3DTurbo
from umdbench.prompts import Prompt, voxel_to_world
from umdbench.protocols import check_protocols, run_prompted
from umdbench.volume import Volume

medim = pytest.importorskip("medim", reason="medim is not installed: pip install medim")


class TinySam(SamMed3DFamily):
    """The same adapter with a two-block ViT so CPU tests stay fast."""

    name = "tiny-sam"
    weights_name = "tiny.pth"
    architecture: ClassVar[dict[str, Any]] = {
        "encoder_embed_dim": 96,
        "encoder_depth": 2,
        "encoder_num_heads": 2,
        "encoder_global_attn_indexes": [1],
    }


@pytest.fixture
def weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        net = medim.create_model("SAM-Med3D", **TinySam.architecture)
    path = tmp_path / "tiny-sam" / "tiny.pth"
    path.parent.mkdir()
    torch.save({"model_state_dict": net.state_dict(), "epoch": 3}, path)  # official layout
    monkeypatch.setenv("UMD_WEIGHTS", str(tmp_path))
    return path


def _scan() -> tuple[Volume, np.ndarray]:
    """An LPS, anisotropic scan (1 x 1.2 x 2.5 mm) with a bright box organ."""
    affine = np.array([[-1.0, 0, 0, 40], [0, -1.2, 0, 30], [0, 0, 2.5, -50], [0, 0, 0, 1]])
    mask = np.zeros((90, 80, 40), dtype=bool)
    mask[30:60, 25:55, 10:30] = True
    rng = np.random.default_rng(0)
    image = rng.normal(50, 10, mask.shape).astype(np.float32) + 200 * mask
    return Volume(image, affine), mask


def test_missing_weights_skip_with_the_expected_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UMD_WEIGHTS", raising=False)
    with pytest.raises(ModelUnavailable, match=r"sam-med3d-turbo/sam_med3d_turbo\.pth"):
        SamMed3DTurbo().check_available("cpu")
    monkeypatch.setenv("UMD_WEIGHTS", "/nonexistent")
    with pytest.raises(ModelUnavailable, match="/nonexistent/sam-med3d-turbo"):
        SamMed3DTurbo().check_available("cpu")


def test_metadata_and_protocols() -> None:
    assert check_protocols(SamMed3DTurbo) == ("1click", "5clicks")
    meta = SamMed3DTurbo.metadata()
    assert meta["tier"] == "random-weights" and meta["literature"]["CT"]["dice"] == 0.790


def test_unsafe_checkpoint_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tiny-sam" / "tiny.pth"
    path.parent.mkdir()
    torch.save({"model_state_dict": {}, "args": Path("x")}, path)  # a pickled object
    monkeypatch.setenv("UMD_WEIGHTS", str(tmp_path))
    with pytest.raises(ValueError, match="weights_only=True") as info:
        TinySam().load("cpu")
    assert str(path) in str(info.value) and "weights_only=False" not in str(info.value)


def _official_crop(image_path: Path, label_path: Path, label_id: int) -> tuple[Any, Any, Any]:
    """SAM-Med3D's ``data_preprocess`` from files, step by step, as its utils/infer_utils.py
    runs it (written out here independently of the adapter): the reference for equality."""
    tio = pytest.importorskip("torchio")
    subject = tio.Subject(image=tio.ScalarImage(image_path), label=tio.LabelMap(label_path))
    labels = subject.label.data.clone()
    subject.label.set_data((labels == label_id).to(labels.dtype))
    subject = tio.Resample(target=(1.5, 1.5, 1.5))(subject)
    subject = tio.ToCanonical()(subject)
    cropped = tio.CropOrPad(mask_name="label", target_shape=(128, 128, 128))(subject)
    image = tio.ZNormalization(masking_method=lambda x: x > 0)(cropped.image.data.clone())
    return image[0], cropped.label.data[0] > 0, cropped.image.affine


def _save(volume: Volume, path: Path) -> Path:
    from umdbench.volume import save_volume

    return save_volume(volume, path)


def test_prompt_view_equals_the_official_preprocessing(tmp_path: Path) -> None:
    image, mask = _scan()
    image_path = _save(image, tmp_path / "image.nii.gz")
    label_path = _save(Volume(mask.astype(np.float32) * 3, image.affine), tmp_path / "label.nii.gz")
    view = TinySam().prompt_view(image, mask)
    official_image, official_label, official_affine = _official_crop(image_path, label_path, 3)
    assert view.shape == (128, 128, 128)
    assert np.array_equal(view.reference, official_label.numpy())
    # NIfTI keeps the affine in float32 (1.2 mm is 1.2000000477 on disk), so the file-based
    # official path resamples on a grid a few nanometres off ours: equal to 1e-5.
    assert torch.allclose(view.context.image, official_image.float(), atol=1e-5)
    assert np.allclose(view.affine, official_affine)
    organ = np.argwhere(view.reference)
    assert np.all(np.abs((organ.min(0) + organ.max(0)) / 2.0 - 64) <= 1.0)  # oracle centre
    assert np.allclose(view.affine[:3, :3], np.diag([1.5, 1.5, 1.5]))  # RAS, 1.5 mm
    assert view.region["shape"] == [128, 128, 128] and len(view.region["corners_world"]) == 2


class RecordingSam(TinySam):
    """The adapter, keeping what each step saw: the crop mask before the click and the click."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]] = []

    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        assert prompt is not None and prompt.view is not None and prompt.view_points is not None
        before = prompt.state.get("view_mask")
        self.seen.append(
            (None if before is None else before.copy(), prompt.view.reference,
             prompt.view_points.copy(), np.asarray(prompt.point_labels).copy())
        )
        return super().predict(image, modality, prompt)


def _check_clicks_follow_the_official_rule(model: RecordingSam) -> None:
    """Every click is in the crop; positive exactly when it lies in the false negatives."""
    for before, reference, points, labels in model.seen:
        assert np.all((points >= 0) & (points < 128))
        click, label = tuple(points[-1]), int(labels[-1])
        if before is None:  # the first click: a ground-truth voxel of the crop, positive
            assert reference[click] and label == 1
        else:
            false_negative = reference & ~before
            error = false_negative | (before & ~reference)
            assert error[click] or not error.any()
            assert label == int(false_negative[click] or not error.any())


def test_predict_round_trips_to_the_scan_grid_and_honours_the_point(weights: Path) -> None:
    image, mask = _scan()
    model = TinySam()
    model.check_available("cpu")
    model.load("cpu")
    assert model.weights_id() != "none" and len(model.weights_id()) == 16
    view = model.prompt_view(image, mask)

    def run(point: list[int]) -> np.ndarray:
        prompt = Prompt("1click", "liver", 0, view=view, view_points=np.array([point]),
                        point_labels=np.array([1]), oracle=True)
        return model.predict(image, "CT", prompt)

    a, b = run([50, 50, 50]), run([70, 70, 70])
    assert a.shape == image.shape and a.dtype == np.uint8 and set(np.unique(a)) <= {0, 1}
    assert not np.array_equal(a, b)  # the prediction depends on where the click is


def test_predict_without_a_view_says_how_to_call_it(weights: Path) -> None:
    image, _ = _scan()
    model = TinySam()
    model.load("cpu")
    prompt = Prompt("1click", "liver", 0, points=np.array([[45, 40, 20]]), point_labels=np.array([1]))
    with pytest.raises(ValueError, match="prompt_view"):
        model.predict(image, "CT", prompt)


def test_iterative_clicks_come_from_the_crop_and_feed_back_logits(weights: Path) -> None:
    image, mask = _scan()
    model = RecordingSam()
    model.load("cpu")
    result = run_prompted(model, image, "PET_CT", mask, "liver", "5clicks", seed=1)
    assert result.oracle and result.prompt["oracle"] is True
    assert len(result.steps) == 5 and all(0.0 <= s["dice"] <= 1.0 for s in result.steps)
    assert np.isfinite(result.dsc_auc) and result.mask.shape == mask.shape
    assert len(model.seen) == 5
    _check_clicks_follow_the_official_rule(model)
    record = result.prompt
    assert len(record["points_view_voxel"]) == 5 and len(record["points_world"]) == 5
    assert record["region_of_interest"]["shape"] == [128, 128, 128]
    # the scan coordinates recorded are the same world points as the crop clicks
    world = voxel_to_world(np.asarray(record["points_voxel"]), image.affine)
    assert np.allclose(world, record["points_world"], atol=0.01)


def test_an_organ_longer_than_the_crop_is_still_clicked_inside_it(weights: Path) -> None:
    """A 300 mm organ (longer than the 192 mm crop): the official code never drops a click."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    organ = np.zeros((60, 60, 160), dtype=bool)
    organ[25:35, 25:35, 5:155] = True
    image = Volume(np.where(organ, 100.0, 10.0).astype(np.float32), affine)
    model = RecordingSam()
    model.load("cpu")
    for seed in range(3):
        model.seen.clear()
        result = run_prompted(model, image, "CT", organ, "colon", "5clicks", seed=seed)
        assert len(model.seen) == 5  # the network ran at every step: no click was dropped
        _check_clicks_follow_the_official_rule(model)
        assert result.mask.shape == organ.shape


SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples"


@pytest.mark.samples
@pytest.mark.skipif(not (SAMPLES / "totalsegmentator").is_dir(), reason=f"no samples at {SAMPLES}")
@pytest.mark.parametrize("organ", ["lung", "colon", "liver"])
def test_real_ct_organs_are_clicked_inside_the_crop(weights: Path, organ: str) -> None:
    """On the TotalSegmentator CT: every click of every part lies in its crop, on the label."""
    from umdbench.data.organ_maps import TOTALSEG_TOTAL, canonical_label_map
    from umdbench.volume import load_volume

    folder = SAMPLES / "totalsegmentator"
    image = load_volume(folder / "example_ct.nii.gz", np.float32)
    labels = load_volume(folder / "example_seg_fast_force_split.nii.gz").array
    mask = np.isin(labels, canonical_label_map(TOTALSEG_TOTAL)[organ])
    model = RecordingSam()
    model.load("cpu")
    result = run_prompted(model, image, "CT", mask, organ, "1click", seed=0)
    parts = result.prompt.get("parts", [result.prompt])
    assert len(parts) == (2 if organ == "lung" else 1)
    assert len(model.seen) == len(parts)  # one network call per part, none skipped
    _check_clicks_follow_the_official_rule(model)
    for part in parts:
        (x, y, z), = part["points_view_voxel"]
        assert part["region_of_interest"]["shape"] == [128, 128, 128]
        assert 0 <= min(x, y, z) and max(x, y, z) < 128


@pytest.mark.samples
@pytest.mark.skipif(not (SAMPLES / "totalsegmentator").is_dir(), reason=f"no samples at {SAMPLES}")
def test_real_ct_crop_equals_the_official_preprocessing(tmp_path: Path) -> None:
    """Liver (label 5) of the TotalSegmentator CT: our crop is the official crop, voxel for voxel."""
    from umdbench.volume import load_volume

    folder = SAMPLES / "totalsegmentator"
    image_path, label_path = folder / "example_ct.nii.gz", folder / "example_seg_fast_force_split.nii.gz"
    image = load_volume(image_path, np.float32)
    mask = load_volume(label_path).array == 5
    view = TinySam().prompt_view(image, mask)
    official_image, official_label, official_affine = _official_crop(image_path, label_path, 5)
    assert np.array_equal(view.reference, official_label.numpy())
    assert torch.equal(view.context.image, official_image.float())  # identical voxels
    assert np.array_equal(view.affine, official_affine)
