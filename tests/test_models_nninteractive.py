"""nnInteractive: a tiny model folder in the release's own format, the package's session.

The folder is what ``initialize_from_trained_model_folder`` reads: ``plans.json`` (a two-stage
PlainConvUNet, 24^3 patch, so CPU runs fast), ``dataset.json``, the v1 metadata
``inference_session_class.json`` (or ``inference_info.json`` for a release with 3D boxes) and
``fold_0/checkpoint_final.pth`` holding ``network_weights``, ``trainer_name`` and ``init_args``
(seeded random weights). The reference is a direct use of ``nnInteractiveInferenceSession``,
written here from the package's README independently of the adapter: the NIfTI read with
SimpleITK, clicks given one by one, the mask written back with SimpleITK.

Why the scans are half a patch wide and the output bias is shifted: with random weights the
prediction changes at the patch border, so the session would AutoZoom and refine; its
refinement planner (``utils/bboxes.py``, margin 24) needs patches wider than 48 voxels, far too
slow for CPU tests. A scan within half the patch keeps the border in the padding, and the seeded
network's background-class bias is raised until an all-zero patch is background, so the session
stays on its one-forward-pass-per-click path. The adapter's code path is the same either way.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _nnunet_folders import TINY_PLAIN_UNET

from umdbench.models.base import ModelUnavailable
from umdbench.prompts import case_seed
from umdbench.protocols import check_protocols, run_prompted
from umdbench.volume import Volume, load_volume, save_volume


def _has_session() -> bool:
    """The full package (not only nninteractive-client), found without importing it (slow)."""
    try:
        return importlib.util.find_spec("nnInteractive.inference.inference_session") is not None
    except ModuleNotFoundError:
        return False


if not _has_session():
    pytest.skip(
        "nnInteractive is not installed: pip install nninteractive", allow_module_level=True
    )
sitk = pytest.importorskip("SimpleITK")

from umdbench.models.nninteractive import NnInteractive  # noqa: E402

CONFIGURATION = "3d_fullres_tiny"
ARCHITECTURE = TINY_PLAIN_UNET
PATCH = 24


def _plans() -> dict[str, Any]:
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": "Dataset999_TinyInteractive",
        "plans_name": "nnUNetResEncUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": [32, 32, 32],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ResEncUNetPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {},
        "configurations": {
            CONFIGURATION: {
                "data_identifier": "tiny",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": [PATCH] * 3,
                "median_image_size_in_voxels": [32, 32, 32],
                "spacing": [1.0, 1.0, 1.0],
                "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": resampling,
                "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
                "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
                "architecture": ARCHITECTURE,
                "batch_dice": True,
            }
        },
    }


def write_model_folder(folder: Path, bbox3d: bool = False, seed: int = 0) -> Path:
    """A release folder in the official layout with seeded random weights."""
    from nnInteractive.trainer.nnInteractiveTrainer import nnInteractiveTrainer_stub
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    (folder / "fold_0").mkdir(parents=True)
    plans = _plans()
    (folder / "plans.json").write_text(json.dumps(plans))
    dataset = {
        "channel_names": {"0": "image"},
        "labels": {"background": 0, "object": 1},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset))
    if bbox3d:  # a release declaring 3D boxes (the v2 capability format)
        info = {
            "inference_class": "nnInteractiveInferenceSession",
            "interaction_channels": 6,
            "supported_interactions": {"bbox2d": True, "bbox3d": True, "points": True},
        }
        (folder / "inference_info.json").write_text(json.dumps(info))
    else:  # v1: the legacy session metadata (2D boxes only)
        legacy = {
            "inference_class": "nnInteractiveInferenceSessionV3",
            "point_radius": 4,
            "preferred_scribble_thickness": [2, 2, 2],
            "interaction_decay": 0.9,
        }
        (folder / "inference_session_class.json").write_text(json.dumps(legacy))
    manager = PlansManager(plans)
    torch.manual_seed(seed)
    network = nnInteractiveTrainer_stub.build_network_architecture(
        manager, manager.get_configuration(CONFIGURATION), 1 + 7, 2, enable_deep_supervision=False
    )
    with torch.no_grad():  # an all-zero patch (the padding around a small scan) -> background
        logits = network(torch.zeros(1, 8, PATCH, PATCH, PATCH))[0]
        network.decoder.seg_layers[-1].bias[1] -= (logits[1] - logits[0]).max() + 0.1
    checkpoint = {
        "network_weights": network.state_dict(),
        "trainer_name": "nnInteractiveTrainer_stub",
        "init_args": {"configuration": CONFIGURATION, "fold": 0},
    }
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    return folder


@pytest.fixture
def weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = write_model_folder(tmp_path / "weights" / "nninteractive" / "nnInteractive_v1.0")
    monkeypatch.setenv("UMD_WEIGHTS", str(tmp_path / "weights"))
    return folder


def _scan(lps: bool = False) -> tuple[Volume, np.ndarray]:
    """A bright box organ in noise; ``lps``: LPS axes and 1 x 1.2 x 2.5 mm voxels."""
    shape = (PATCH // 2, PATCH // 2 - 1, PATCH // 2 - 2)
    if lps:
        affine = np.array([[-1.0, 0, 0, 40], [0, -1.2, 0, 30], [0, 0, 2.5, -50], [0, 0, 0, 1]])
    else:
        affine = np.diag([1.5, 1.5, 2.0, 1.0])
    mask = np.zeros(shape, dtype=bool)
    mask[3:9, 3:9, 2:8] = True
    rng = np.random.default_rng(0)
    image = rng.normal(40, 10, shape).astype(np.float32) + 150 * mask
    return Volume(np.round(image).astype(np.float32), affine), mask


def _loaded() -> NnInteractive:
    model = NnInteractive()
    model.check_available("cpu")
    model.load("cpu")
    return model


def _official_run(
    folder: Path, image_path: Path, clicks: list[tuple[list[float], int]], seed: int
) -> list[np.ndarray]:
    """The package's README workflow, one click at a time: the mask after each click, in the
    scan's (nibabel) axes via a SimpleITK write and nibabel read."""
    from nnInteractive.inference.inference_session import nnInteractiveInferenceSession

    session = nnInteractiveInferenceSession(
        device=torch.device("cpu"),
        use_torch_compile=False,
        verbose=False,
        torch_n_threads=torch.get_num_threads(),
        do_autozoom=True,
        enable_undo=False,
    )
    session.initialize_from_trained_model_folder(str(folder))
    itk_image = sitk.ReadImage(str(image_path))
    img = sitk.GetArrayFromImage(itk_image)[None]  # (1, z, y, x)
    session.set_image(img)
    target = torch.zeros(img.shape[1:], dtype=torch.uint8)
    session.set_target_buffer(target)
    session.reset_interactions()
    masks = []
    for index, (voxel, label) in enumerate(clicks):
        # the adapter seeds numpy's RNG per interaction (documented; the package's refinement
        # planner may draw from it); the same seed keeps the reference comparable
        np.random.seed(case_seed(seed, index) % 2**32)
        x, y, z = (int(np.floor(v + 0.5)) for v in voxel)  # ITK index order (i, j, k)
        session.add_point_interaction((z, y, x), include_interaction=label == 1)
        out = sitk.GetImageFromArray(target.numpy().copy())
        out.CopyInformation(itk_image)
        path = image_path.with_name(f"official_{index}.nii.gz")
        sitk.WriteImage(out, str(path))
        masks.append(load_volume(path).array.astype(np.uint8))
    return masks


def test_reference_equality_5clicks(weights: Path, tmp_path: Path) -> None:
    """The suite's 5clicks run equals the package's own session given the same clicks."""
    image, mask = _scan()
    model = _loaded()
    seed = 1234
    with contextlib.redirect_stdout(io.StringIO()):
        result = run_prompted(model, image, "CT", mask, "liver", "5clicks", seed)
        clicks = list(
            zip(result.prompt["points_voxel"], result.prompt["point_labels"], strict=True)
        )
        image_path = save_volume(image, tmp_path / "scan.nii.gz")
        official = _official_run(weights, image_path, clicks, seed)
    assert len(clicks) == 5 and len(result.steps) == 5
    assert result.mask.shape == image.shape
    assert np.array_equal(result.mask, official[-1].astype(bool))  # identical voxels
    assert 0 < official[-1].sum() < official[-1].size  # neither empty nor everything
    # every step: the session refines its own previous result, as the direct run does
    from umdbench.metrics import dice

    for step, reference in zip(result.steps, official, strict=True):
        assert step["dice"] == pytest.approx(dice(reference.astype(bool), mask))


def test_lps_anisotropic_scan_round_trips(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session gets the scan in SimpleITK order; the mask comes back on the scan grid."""
    image, mask = _scan(lps=True)
    model = _loaded()
    seen: dict[str, Any] = {"points": []}
    session = model._session
    set_image, add_point = session.set_image, session.add_point_interaction

    def spy_image(array: np.ndarray, *rest: Any) -> Any:
        seen["image"] = array
        return set_image(array, *rest)

    monkeypatch.setattr(session, "set_image", spy_image)

    def spy_point(coordinates: Any, include_interaction: bool, **kwargs: Any) -> Any:
        seen["points"].append((tuple(coordinates), include_interaction))
        return add_point(coordinates, include_interaction=include_interaction, **kwargs)

    monkeypatch.setattr(session, "add_point_interaction", spy_point)
    with contextlib.redirect_stdout(io.StringIO()):
        result = run_prompted(model, image, "PET_CT", mask, "spleen", "1click", 7)
    assert result.mask.shape == image.shape and result.mask.dtype == bool
    assert np.array_equal(seen["image"][0], np.transpose(image.array, (2, 1, 0)))
    ((point, positive),) = seen["points"]
    assert point == tuple(int(v) for v in result.prompt["points_voxel"][0][::-1]) and positive
    raw = model.predict(image, "PET_CT", _replay(result.prompt))
    assert raw.dtype == np.uint8 and raw.shape == image.shape
    assert np.array_equal(raw.astype(bool), result.mask)  # a new run starts from a reset
    settings = model.inference_settings()
    assert settings["release"] == "nnInteractive_v1.0" and "(z, y, x)" in settings["axis_order"]


def _replay(record: dict[str, Any]) -> Any:
    from umdbench.prompts import Prompt

    points = np.asarray(record["points_voxel"], dtype=float)
    return Prompt(
        "1click",
        "spleen",
        record["seed"],
        points=points,
        point_labels=np.asarray(record["point_labels"]),
    )


def test_boxes_by_release(weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """v1 skips 3D-box protocols with the reason; a bbox3d release gets the CVPR 3D box."""
    assert set(check_protocols(NnInteractive)) >= {"1click", "5clicks", "box", "box-cvpr"}
    v1 = _loaded()
    reason = v1.unsupported("liver", "box-cvpr")
    assert reason and "2D boxes only" in reason and "nnInteractive_v1.0" in reason
    assert v1.unsupported("liver", "5clicks") is None
    write_model_folder(tmp_path / "v2" / "nninteractive" / "nnInteractive_v2.0", bbox3d=True)
    monkeypatch.setenv("UMD_WEIGHTS", str(tmp_path / "v2"))
    v2 = _loaded()
    assert v2.unsupported("liver", "box") is None and v2.supports_3d_boxes
    boxes: list[Any] = []
    add_bbox = v2._session.add_bbox_interaction

    def spy_bbox(bbox: Any, include_interaction: bool, **kwargs: Any) -> Any:
        boxes.append(bbox)
        return add_bbox(bbox, include_interaction=include_interaction, **kwargs)

    monkeypatch.setattr(v2._session, "add_bbox_interaction", spy_bbox)
    image, mask = _scan(lps=True)
    with contextlib.redirect_stdout(io.StringIO()):
        result = run_prompted(v2, image, "CT", mask, "liver", "box-cvpr", 3)
        (lo, hi) = result.prompt["box_voxel"]
        # the CVPR baseline's conversion: inclusive -> half-open, in the session's (z, y, x)
        assert boxes == [[[lo[2], hi[2] + 1], [lo[1], hi[1] + 1], [lo[0], hi[0] + 1]]]
        assert result.mask.shape == image.shape
        boxes.clear()
        clicked = run_prompted(v2, image, "CT", mask, "liver", "box-cvpr-2clicks", 3)
    assert len(boxes) == 1 and len(clicked.steps) == 3  # the box once, then only new clicks


def test_missing_weights_skip_naming_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UMD_WEIGHTS", raising=False)
    with pytest.raises(ModelUnavailable, match=r"nninteractive/nnInteractive_v1\.0/"):
        NnInteractive().check_available("cpu")
    monkeypatch.setenv("UMD_WEIGHTS", str(tmp_path))
    with pytest.raises(ModelUnavailable, match=rf"{tmp_path}/nninteractive/nnInteractive_v1\.0"):
        NnInteractive().check_available("cpu")
    (tmp_path / "nninteractive" / "nnInteractive_v1.0").mkdir(parents=True)
    with pytest.raises(ModelUnavailable, match=r"checkpoint_final\.pth"):
        NnInteractive().check_available("cpu")


def test_unsafe_checkpoint_is_refused(weights: Path) -> None:
    path = weights / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(path, weights_only=True)
    torch.save({**checkpoint, "args": Path("x")}, path)  # a pickled object
    with pytest.raises(ValueError, match="weights_only=True") as info:
        NnInteractive().load("cpu")
    assert str(path) in str(info.value) and "weights_only=False" not in str(info.value)


def test_nothing_touches_the_hub(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest and download functions raise if called; load and predict still work."""
    import huggingface_hub
    from nnInteractive import model_management

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("nnInteractive must not reach the hub")

    for name in (
        "ensure_model_available",
        "load_model_manifest",
        "get_default_model_id",
        "_load_remote_manifest",
    ):
        monkeypatch.setattr(model_management, name, refuse)
    for name in ("snapshot_download", "hf_hub_download"):
        monkeypatch.setattr(huggingface_hub, name, refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    image, mask = _scan()
    model = _loaded()
    with contextlib.redirect_stdout(io.StringIO()):
        result = run_prompted(model, image, "MRI", mask, "liver", "1click", 5)
    assert result.mask.shape == image.shape
    assert model.weights_id() != "none"
