"""A MONAI bundle run with its own configs: tiny random bundles written to a tmp dir.

The conformance tests run each bundle twice on the same scan: as its user would (its
``SupervisedEvaluator`` through ``monai.bundle.run``, ``SaveImaged`` writing to disk, read back
with nibabel) and through our adapter, and require identical voxels.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from _bundles import (
    brats_style,
    forget_scripts_package,
    lps_scan,
    renal_style,
    run_bundle_workflow,
    spleen_style,
    write_bundle,
)

from umdbench.models.base import ModelUnavailable
from umdbench.models.monai_bundle import BundleError, MonaiBundleModel, bundle_model_class
from umdbench.volume import Volume, save_volume

needs_ignite = pytest.mark.skipif(
    importlib.util.find_spec("ignite") is None,
    reason="the bundle's own workflow (SupervisedEvaluator) needs pytorch-ignite:"
    " pip install pytorch-ignite",
)

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
    settings = model.inference_settings()
    assert settings["inverse"] is False and "fallback" in str(settings["postprocessing"])


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


# --- the bundle's own postprocessing -------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Bundles put their folder on sys.path and import a ``scripts`` package: undo both."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    forget_scripts_package()


@pytest.fixture
def scan() -> Volume:
    return lps_scan()


def loaded(folder: Path, **attributes: Any) -> MonaiBundleModel:
    """An adapter for the bundle at ``folder``, loaded on the CPU."""
    cls = type(
        "Tiny", (MonaiBundleModel,), {"name": folder.name, "bundle": str(folder), **attributes}
    )
    model = cls()
    model.load("cpu")
    return model


def without(config: dict[str, Any], target: str) -> dict[str, Any]:
    """``config`` with every ``target`` transform removed from its postprocessing."""
    post = config["postprocessing"]
    post["transforms"] = [t for t in post["transforms"] if t["_target_"] != target]
    return config


# seed 3: the random weights reach every label value on the scan (checked in the test), so the
# comparison covers each branch of the remaps, not only a constant map
KINDS = {
    "spleen-softmax-invert-argmax": (spleen_style, {0, 1, 2}),
    "brats-sigmoid-threshold-remap": (brats_style, {0, 1, 2, 4}),
    "renal-merge-classes": (renal_style, {0, 1, 2, 3}),
}


@needs_ignite
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_output_equals_the_bundles_own_workflow(kind: str, tmp_path: Path, scan: Volume) -> None:
    style, labels = KINDS[kind]
    folder = write_bundle(tmp_path / kind, style(), seed=3)
    path = save_volume(scan, tmp_path / "scans" / "scan.nii.gz")
    reference, affine = run_bundle_workflow(folder, path, tmp_path / "written")
    ours = loaded(folder).predict(scan, "CT", None)
    assert set(np.unique(reference).tolist()) == labels
    assert np.allclose(affine, scan.affine, atol=1e-4) and reference.shape == scan.shape
    assert ours.shape == scan.shape and ours.dtype == np.int16
    # identical voxels, no Dice tolerance: the same MONAI transforms run in the same order on
    # the same file, and on the CPU the evaluator's amp (CUDA autocast) changes nothing
    np.testing.assert_array_equal(ours, reference)


def test_the_inverse_is_not_our_nearest_resample(tmp_path: Path, scan: Volume) -> None:
    """The bundle's bilinear inverse of the probabilities differs from argmax + nearest."""
    bundled = loaded(write_bundle(tmp_path / "with-post", spleen_style(), seed=3))
    bare = spleen_style()
    del bare["postprocessing"], bare["evaluator"]["postprocessing"]
    fallback = loaded(write_bundle(tmp_path / "no-post", bare, seed=3))
    ours, theirs = bundled.predict(scan, "CT", None), fallback.predict(scan, "CT", None)
    assert ours.shape == theirs.shape == scan.shape
    assert 0 < np.count_nonzero(ours != theirs) < 0.5 * ours.size
    assert bundled.inference_settings()["inverse"] is True
    assert fallback.inference_settings()["inverse"] is False


def test_writers_are_dropped_and_recorded(
    tmp_path: Path, scan: Volume, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_bundle(tmp_path / "spleen", spleen_style(), seed=3)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    before = sorted(tmp_path.rglob("*"))
    model = loaded(folder)
    model.predict(scan, "CT", None)
    assert sorted(tmp_path.rglob("*")) == before  # nothing in the bundle's eval/ nor in cwd
    # spleen_style declares the evaluator's amp (CUDA autocast): declared, not applied on CPU
    assert model.inference_settings() == {
        "amp_declared": True,
        "amp": False,
        "postprocessing": "bundle",
        "postprocessing_transforms": ["Activationsd", "Invertd", "AsDiscreted"],
        "inverse": True,
        "writers_dropped": ["SaveImaged"],
    }


def test_nested_writers_are_dropped() -> None:
    from monai.transforms import Activationsd, Compose, SaveImaged

    from umdbench.models.monai_bundle import _transform_names, _without_writers

    post = Compose([Activationsd("pred", softmax=True), Compose([SaveImaged("pred")])])
    stripped, dropped = _without_writers(post)
    assert dropped == ["SaveImaged"] and _transform_names(stripped) == ["Activationsd"]
    assert _transform_names(post) == ["Activationsd", "SaveImaged"]  # the bundle's one is kept


def test_output_off_the_scan_grid_is_an_error(tmp_path: Path, scan: Volume) -> None:
    folder = write_bundle(tmp_path / "no-invert", spleen_style(invert=False))
    with pytest.raises(BundleError, match=r"no-invert.*`postprocessing`.*Invertd"):
        loaded(folder).predict(scan, "CT", None)


def test_probabilities_are_not_a_label_map(tmp_path: Path, scan: Volume) -> None:
    folder = write_bundle(tmp_path / "no-argmax", without(spleen_style(), "AsDiscreted"))
    with pytest.raises(BundleError, match=r"no-argmax.*not a label map.*AsDiscreted"):
        loaded(folder).predict(scan, "CT", None)


def test_channels_need_channel_labels(tmp_path: Path, scan: Volume) -> None:
    folder = write_bundle(tmp_path / "channels", brats_style(remap=False))
    with pytest.raises(BundleError, match=r"channels.*3 channels.*channel_labels"):
        loaded(folder).predict(scan, "CT", None)
    with pytest.raises(BundleError, match="names channel 5"):
        loaded(folder, channel_labels={5: 1}).predict(scan, "CT", None)


def test_channel_labels_paint_like_the_bundles_remap(tmp_path: Path, scan: Volume) -> None:
    """Regions WT (1) -> 2, then TC (0) -> 1, then ET (2) -> 4 over them: the brats remap."""
    remapped = loaded(write_bundle(tmp_path / "remap", brats_style(), seed=3))
    folder = write_bundle(tmp_path / "channels", brats_style(remap=False), seed=3)
    spec = {"name": "regions", "label_ids": {"liver": 1}, "channel_labels": {"1": 2, "0": 1, "2": 4}}
    (folder / "umd_model.json").write_text(json.dumps(spec))
    painted = bundle_model_class(folder)()
    painted.load("cpu")
    expected = remapped.predict(scan, "CT", None)
    assert set(np.unique(expected).tolist()) == {0, 1, 2, 4}
    np.testing.assert_array_equal(painted.predict(scan, "CT", None), expected)
    assert painted.inference_settings()["channel_labels"] == {"1": 2, "0": 1, "2": 4}
    spec["channel_labels"] = {"TC": 1}
    (folder / "umd_model.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="channel_labels must hold integers"):
        bundle_model_class(folder)


@pytest.mark.parametrize(
    ("transform", "message"),
    [
        ({"_target_": "NoSuchTransformd", "keys": "pred"}, "cannot build `postprocessing`"),
        ({"_target_": "Lambdad", "keys": "pred", "func": "$lambda x: x.nope()"}, "`postprocessing` failed"),
    ],
)
def test_broken_postprocessing_names_bundle_and_key(
    tmp_path: Path, scan: Volume, transform: dict[str, Any], message: str
) -> None:
    config = spleen_style()
    config["postprocessing"]["transforms"].insert(1, transform)
    folder = write_bundle(tmp_path / "broken", config)
    with pytest.raises(BundleError, match=rf"{folder}.*inference.json.*{message}"):
        loaded(folder).predict(scan, "CT", None)


def test_the_bundles_scripts_package_wins_over_a_cached_one(
    tmp_path: Path, scan: Volume, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another bundle's ``scripts`` (or any) cached in this process must not shadow this one."""
    other = types.ModuleType("scripts")
    other.__path__ = [str(tmp_path / "other-bundle" / "scripts")]
    monkeypatch.setitem(sys.modules, "scripts", other)
    folder = write_bundle(tmp_path / "renal", renal_style(), seed=3)
    labels = loaded(folder).predict(scan, "CT", None)
    assert labels.shape == scan.shape
    assert Path(sys.modules["scripts.transforms"].__file__ or "").parent == folder / "scripts"
