"""VISTA3D: a random small vista3d132 saved as the bundle's model.pt, through the real adapter."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from umdbench.models.base import ModelUnavailable
from umdbench.models.vista3d import VISTA3D_LABELS, Vista3D
from umdbench.organs import CANONICAL_ORGANS
from umdbench.prompts import Prompt
from umdbench.protocols import check_protocols, run_prompted
from umdbench.volume import Volume

pytest.importorskip("einops", reason="VISTA3D needs einops: pip install einops")


class TinyVista(Vista3D):
    name = "tiny-vista"
    encoder_embed_dim = 16
    patch_size: ClassVar[tuple[int, int, int]] = (32, 32, 32)
    spacing: ClassVar[tuple[float, float, float]] = (3.0, 3.0, 3.0)


@pytest.fixture
def weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from monai.networks.nets import vista3d132

    torch.manual_seed(0)
    path = tmp_path / "tiny-vista" / "model.pt"
    path.parent.mkdir()
    torch.save(vista3d132(encoder_embed_dim=16).state_dict(), path)  # the bundle's layout
    monkeypatch.setenv("UMD_WEIGHTS", str(tmp_path))
    return path


def _scan() -> tuple[Volume, np.ndarray]:
    affine = np.array([[-2.0, 0, 0, 40], [0, -2.5, 0, 30], [0, 0, 4.0, -50], [0, 0, 0, 1]])
    mask = np.zeros((40, 36, 20), dtype=bool)
    mask[12:28, 10:26, 5:15] = True
    image = np.where(mask, 60.0, -100.0).astype(np.float32)
    return Volume(image, affine), mask


def test_label_map_covers_the_canonical_organs() -> None:
    assert set(VISTA3D_LABELS) == set(CANONICAL_ORGANS)
    assert VISTA3D_LABELS["kidney_left"] == 14 and VISTA3D_LABELS["kidney_right"] == 5
    assert check_protocols(Vista3D) == ("classid", "1click")


def test_missing_weights_name_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UMD_WEIGHTS", raising=False)
    with pytest.raises(ModelUnavailable, match=r"vista3d/model\.pt.*--umd-weights"):
        Vista3D().check_available("cpu")


def test_wrong_architecture_is_a_clear_error(weights: Path) -> None:
    class Mismatch(TinyVista):
        encoder_embed_dim = 24

    with pytest.raises(ValueError, match="does not fit vista3d132"):
        Mismatch().load("cpu")


def test_point_prompt_lands_in_the_organ_on_the_model_grid() -> None:
    image, mask = _scan()
    grid = TinyVista().model_grid(Volume(mask.astype(np.float32) * 2000 - 1000, image.affine))
    assert np.allclose(np.diag(grid.affine)[:3], 3.0)  # RAS, 3 mm here
    point = np.array([[20, 18, 10], [13, 11, 6]])
    mapped = np.rint(grid.points_from_scan(point)).astype(int)
    assert all(grid.tensor[0][tuple(p)] > 0.5 for p in mapped)


@pytest.mark.slow
def test_class_and_point_prompts_run_on_the_scan_grid(weights: Path) -> None:
    image, mask = _scan()
    model = TinyVista()
    model.check_available("cpu")
    model.load("cpu")
    by_class = run_prompted(model, image, "CT", mask, "liver", "classid", seed=0)
    assert by_class.mask.shape == mask.shape and by_class.prompt["class_id"] == 1

    def click(point: list[int]) -> np.ndarray:
        prompt = Prompt("1click", "liver", 0, points=np.array([point]),
                        point_labels=np.array([1]), class_id=1)
        return model.predict(image, "CT", prompt)

    a, b = click([14, 12, 6]), click([26, 24, 14])
    assert a.shape == image.shape and set(np.unique(a)) <= {0, 1}
    assert not np.array_equal(a, b)  # the output follows the click
