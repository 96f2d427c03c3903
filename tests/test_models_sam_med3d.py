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
from umdbench.prompts import Prompt
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
    with pytest.raises(ValueError, match="weights_only=True"):
        TinySam().load("cpu")


def test_roi_is_centred_on_the_organ_and_points_land_inside(weights: Path) -> None:
    image, mask = _scan()
    model = TinySam()
    center = tuple((np.argwhere(mask).min(0) + np.argwhere(mask).max(0)) / 2.0)
    points = np.array([[45, 40, 20], [31, 26, 11]])
    prompt = Prompt("2clicks", "liver", 0, points=points, point_labels=np.array([1, 1]),
                    roi_center=center, oracle=True)
    roi = model.roi(Volume(mask.astype(np.float32), image.affine), prompt)
    assert roi.crop.shape == (128, 128, 128) and len(roi.points) == 2
    assert all(roi.crop[tuple(p)] > 0.5 for p in roi.points)  # inside the resampled organ
    organ = np.argwhere(roi.crop.numpy() > 0.5)
    centre_in_crop = (organ.min(0) + organ.max(0)) / 2.0
    assert np.all(np.abs(centre_in_crop - 64) <= 1.5)  # the oracle crop centres the organ
    assert np.allclose(roi.grid.affine[:3, :3], np.diag([1.5, 1.5, 1.5]))  # RAS, 1.5 mm


def test_predict_round_trips_to_the_scan_grid_and_honours_the_point(weights: Path) -> None:
    image, _ = _scan()
    model = TinySam()
    model.check_available("cpu")
    model.load("cpu")
    assert model.weights_id() != "none" and len(model.weights_id()) == 16

    def run(point: list[int]) -> np.ndarray:
        prompt = Prompt("1click", "liver", 0, points=np.array([point]),
                        point_labels=np.array([1]), roi_center=(45.0, 40.0, 20.0), oracle=True)
        return model.predict(image, "CT", prompt)

    a, b = run([35, 30, 15]), run([55, 50, 25])
    assert a.shape == image.shape and a.dtype == np.uint8 and set(np.unique(a)) <= {0, 1}
    assert not np.array_equal(a, b)  # the prediction depends on where the click is


def test_run_prompted_feeds_back_low_res_logits(weights: Path) -> None:
    image, mask = _scan()
    model = TinySam()
    model.load("cpu")
    result = run_prompted(model, image, "PET_CT", mask, "liver", "3clicks", seed=1)
    assert result.oracle and result.prompt["oracle"] is True
    assert len(result.steps) == 3 and all(0.0 <= s["dice"] <= 1.0 for s in result.steps)
    assert np.isfinite(result.dsc_auc)
    assert result.mask.shape == mask.shape
