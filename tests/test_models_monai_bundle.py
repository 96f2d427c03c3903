"""A MONAI bundle run with its own configs: a tiny random UNet bundle written to a tmp dir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from umdbench.models.base import ModelUnavailable
from umdbench.models.monai_bundle import MonaiBundleModel, bundle_model_class
from umdbench.volume import Volume

CONFIG: dict[str, Any] = {
    "bundle_root": ".",
    "image_key": "image",
    "network_def": {
        "_target_": "UNet",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 3,
        "channels": [4, 8],
        "strides": [2],
        "num_res_units": 0,
    },
    "preprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "image_only": True},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS",
             "labels": [["L", "R"], ["P", "A"], ["I", "S"]]},
            {"_target_": "Spacingd", "keys": "image", "pixdim": [2.0, 2.0, 2.0]},
            {"_target_": "ScaleIntensityd", "keys": "image"},
        ],
    },
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16], "sw_batch_size": 1},
}


class TinyBundle(MonaiBundleModel):
    name = "tiny-bundle"
    label_ids: ClassVar[dict[str, int]] = {"liver": 1, "spleen": 2}


@pytest.fixture
def bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from monai.networks.nets import UNet

    folder = tmp_path / "tiny-bundle"
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "inference.json").write_text(json.dumps(CONFIG))
    torch.manual_seed(0)
    args = {k: v for k, v in CONFIG["network_def"].items() if k != "_target_"}
    torch.save(UNet(**args).state_dict(), folder / "models" / "model.pt")
    monkeypatch.setenv("UMD_WEIGHTS", str(tmp_path))
    return folder


def test_two_attributes_make_a_model() -> None:
    assert TinyBundle.organs == ("liver", "spleen")
    assert TinyBundle.metadata()["prompt_kind"] == "none"


def test_missing_bundle_is_a_skip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UMD_WEIGHTS", str(tmp_path))
    with pytest.raises(ModelUnavailable, match="bundle folder not found"):
        TinyBundle().check_available("cpu")


def test_bundle_runs_on_the_scan_grid(bundle: Path) -> None:
    affine = np.array([[-1.5, 0, 0, 10], [0, -1.0, 0, 20], [0, 0, 3.0, 0], [0, 0, 0, 1]])
    image = Volume(np.random.default_rng(0).normal(size=(30, 40, 12)).astype(np.float32), affine)
    model = TinyBundle()
    model.check_available("cpu")
    model.load("cpu")
    labels = model.predict(image, "CT", None)
    assert labels.shape == image.shape and set(np.unique(labels)) <= {0, 1, 2}
    assert len(model.weights_id()) == 16


def test_bundle_model_class_from_json(bundle: Path) -> None:
    (bundle / "umd_model.json").write_text(
        json.dumps({"name": "json-bundle", "label_ids": {"liver": 1}, "modalities_claimed": ["CT"]})
    )
    cls = bundle_model_class(bundle)
    assert cls.name == "json-bundle" and cls.organs == ("liver",) and cls.bundle == str(bundle)
    cls().check_available("cpu")
    (bundle / "umd_model.json").write_text(json.dumps({"name": "x", "label_ids": {}}))
    with pytest.raises(ValueError, match="label_ids must map organs"):
        bundle_model_class(bundle)
