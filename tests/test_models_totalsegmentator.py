"""TotalSegmentator: a random-weight weights folder in the package's own layout, the package's API.

The folder is ``<weights>/totalsegmentator/`` (the package's ``TOTALSEG_HOME_DIR``) holding the
two ``--fast`` models under the exact names the package looks for (``nnunet/results/
Dataset297_TotalSegmentator_total_3mm_1559subj/nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans
__3d_fullres`` and ``Dataset852_TotalSegMRI_total_3mm_1088subj/
nnUNetTrainer_2000epochs_NoMirroring__nnUNetPlans__3d_fullres``): a two-stage PlainConvUNet at
3 mm with a 24^3 patch, seeded random weights, and ``dataset.json`` labels equal to the
package's ``class_map`` of each task, so the package's class maps line up. The output biases
favour a handful of classes (several of our organs, several lung lobes, one class we do not
map) so the label maps are not trivial.

The reference is the package's public call written independently of the adapter, in a fresh
interpreter as a user runs it: ``nib.load`` of the scan saved as NIfTI, then
``totalsegmentator.python_api.totalsegmentator(img, None, task=..., fast=True, device="cpu",
ml=True, quiet=True, nr_thr_resamp=1, nr_thr_saving=1)`` with ``TOTALSEG_HOME_DIR`` pointing at
the folder, sockets disabled. The adapter's label map must equal that output mapped to
canonical organs by the class names written here (not the adapter's table), voxel for voxel.

Where nnU-Net's ``primus_trainers`` module cannot be imported here (a CUDA torchvision wheel
beside the CPU torch: this project's CPU install), an empty module stands in for it, in this
process and in the reference's (:func:`stub_primus`); the adapter itself makes that fault a
skip (:func:`test_trainer_lookup_fault_is_a_skip`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _nnunet_folders import TINY_PLAIN_UNET

pytest.importorskip(
    "totalsegmentator", reason="TotalSegmentator is not installed: pip install TotalSegmentator"
)
torch = pytest.importorskip("torch")

from umdbench.models.base import ModelUnavailable  # noqa: E402
from umdbench.models.totalsegmentator import (  # noqa: E402
    TotalSegmentatorCT,
    TotalSegmentatorModel,
    TotalSegmentatorMR,
    expected_model_folders,
    offline_config,
)
from umdbench.organs import CANONICAL_ORGANS  # noqa: E402
from umdbench.volume import Volume, save_volume  # noqa: E402

#: The fast models as the package lays them out (its map_tasks_config, written out here).
FAST_MODELS = {
    "total": (
        297,
        "Dataset297_TotalSegmentator_total_3mm_1559subj",
        "nnUNetTrainer_4000epochs_NoMirroring",
    ),
    "total_mr": (
        852,
        "Dataset852_TotalSegMRI_total_3mm_1088subj",
        "nnUNetTrainer_2000epochs_NoMirroring",
    ),
}
RUN = "__nnUNetPlans__3d_fullres"
#: Canonical organ -> TotalSegmentator class names, per task (the reference's own table).
LUNG = {
    "total": (
        "lung_upper_lobe_left",
        "lung_lower_lobe_left",
        "lung_upper_lobe_right",
        "lung_middle_lobe_right",
        "lung_lower_lobe_right",
    ),
    "total_mr": ("lung_left", "lung_right"),
}
#: Classes the tiny networks favour: some organs, lung parts, and one class we do not map.
FAVOURED = {
    "total": ("liver", "spleen", "kidney_left", "heart", "gallbladder", *LUNG["total"][:3]),
    "total_mr": ("liver", "stomach", "kidney_right", "aorta", "gallbladder", *LUNG["total_mr"]),
}
PATCH = 24
ARCHITECTURE = TINY_PLAIN_UNET
SENTINELS = {
    "nnUNet_raw": "/sentinel/raw",
    "nnUNet_preprocessed": "/sentinel/preprocessed",
    "nnUNet_results": "/sentinel/results",
}


def _plans(task: str, dataset: str) -> dict[str, Any]:
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    scheme = "CTNormalization" if task == "total" else "ZScoreNormalization"
    return {
        "dataset_name": dataset,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [3.0, 3.0, 3.0],
        "original_median_shape_after_transp": [32, 32, 32],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 2000.0,
                "mean": 50.0,
                "median": 40.0,
                "min": -1024.0,
                "percentile_00_5": -1000.0,
                "percentile_99_5": 1500.0,
                "std": 300.0,
            }
        },
        "configurations": {
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": [PATCH] * 3,
                "median_image_size_in_voxels": [32, 32, 32],
                "spacing": [3.0, 3.0, 3.0],
                "normalization_schemes": [scheme],
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


def write_fast_model(results: Path, task: str, seed: int) -> Path:
    """One --fast model folder with seeded random weights; returns the run folder."""
    from nnunetv2.training.nnUNetTrainer.variants.training_length import (
        nnUNetTrainer_Xepochs_NoMirroring as trainers,
    )
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from totalsegmentator.map_to_binary import class_map

    _, dataset, trainer = FAST_MODELS[task]
    folder = results / dataset / f"{trainer}{RUN}"
    (folder / "fold_0").mkdir(parents=True)
    plans = _plans(task, dataset)
    (folder / "plans.json").write_text(json.dumps(plans))
    labels = {"background": 0, **{name: value for value, name in class_map[task].items()}}
    dataset_json = {
        "channel_names": {"0": "CT" if task == "total" else "MRI"},
        "labels": labels,
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    manager = PlansManager(plans)
    torch.manual_seed(seed)
    network = getattr(trainers, trainer).build_network_architecture(
        manager, manager.get_configuration("3d_fullres"), 1, len(labels), False
    )
    with torch.no_grad():
        seg = network.decoder.seg_layers[-1]
        seg.weight.mul_(8.0)
        seg.bias.fill_(-50.0)
        for name in ("background", *FAVOURED[task]):
            seg.bias[labels[name]] = 0.0
    checkpoint = {
        "network_weights": network.state_dict(),
        "trainer_name": trainer,
        "init_args": {"configuration": "3d_fullres", "fold": 0},
        "inference_allowed_mirroring_axes": None,
    }
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def _scan(task: str) -> Volume:
    """Blobs in a body on an oblique-free, permuted and flipped grid (2 x 2.5 x 3 mm)."""
    rng = np.random.default_rng(7 if task == "total" else 8)
    shape = (36, 30, 20)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    body = (grid**2).sum(axis=0) < 0.9
    if task == "total":
        image = np.where(body, 40.0, -1000.0)
        scale = 600.0
    else:
        image = np.where(body, 300.0, 0.0)
        scale = 400.0
    for _ in range(6):
        centre = rng.uniform(-0.6, 0.6, size=3)[:, None, None, None]
        radius = rng.uniform(0.15, 0.35)
        image += scale * rng.uniform(-1, 1) * (((grid - centre) ** 2).sum(axis=0) < radius**2)
    image += rng.normal(0, 20, shape)
    affine = np.array(
        [[0.0, 2.5, 0.0, -30.0], [-2.0, 0.0, 0.0, 40.0], [0.0, 0.0, 3.0, -20.0], [0, 0, 0, 1.0]]
    )
    return Volume(image.astype(np.float32), affine)


#: nnU-Net's trainer lookup imports every trainer module in turn; this one imports ``timm`` and
#: so ``torchvision``, which fails to import where a CUDA torchvision wheel sits beside a CPU
#: torch (this project's CPU install, see the adapter's ``_check_trainer``).
PRIMUS = "nnunetv2.training.nnUNetTrainer.primus.primus_trainers"


def _primus_unimportable() -> bool:
    """True where :data:`PRIMUS` cannot be imported (probed in a child process)."""
    if PRIMUS in sys.modules:
        return False
    probe = subprocess.run(
        [sys.executable, "-c", f"import {PRIMUS}"], capture_output=True, text=True, check=False
    )
    return probe.returncode != 0


#: Prepended to the reference script where :func:`_primus_unimportable`: the same stub.
STUB_PRIMUS = f"import sys, types; sys.modules[{PRIMUS!r}] = types.ModuleType({PRIMUS!r})\n"


class _NoNetwork:
    """Internet sockets that refuse to connect, counting the attempts (pytest monkeypatch).

    Unix-domain sockets still connect: nnU-Net's worker processes talk over them.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.attempts: list[Any] = []
        connect = socket.socket.connect

        def guarded(sock: socket.socket, address: Any) -> None:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                self.attempts.append(address)
                raise OSError(f"network access in a test: {address}")
            connect(sock, address)

        def refuse(address: Any, *args: Any, **kwargs: Any) -> None:
            self.attempts.append(address)
            raise OSError(f"network access in a test: {address}")

        monkeypatch.setattr(socket.socket, "connect", guarded)
        monkeypatch.setattr(socket, "create_connection", refuse)


def _nnunet_own() -> dict[str, Any]:
    """What the package's import replaces in nnunetv2, and nnunetv2.paths' objects (by id)."""
    import nnunetv2.inference.export_prediction as export
    import nnunetv2.inference.predict_from_raw_data as predict
    import nnunetv2.paths as paths
    import nnunetv2.utilities.find_objects as find_objects

    predictor = predict.nnUNetPredictor
    return {
        "predict_single_npy_array": vars(predictor)["predict_single_npy_array"],
        "predict_from_files": vars(predictor)["predict_from_files"],
        "export_prediction_from_logits": export.export_prediction_from_logits,
        # nnunetv2 2.8 has no such name here (the package adds it): None
        "predict.recursive_find_python_class": getattr(
            predict, "recursive_find_python_class", None
        ),
        "predict.recursive_find_trainer_class_by_name": predict.recursive_find_trainer_class_by_name,
        "find_objects.recursive_find_trainer_class_by_name": (
            find_objects.recursive_find_trainer_class_by_name
        ),
        "paths": {name: id(getattr(paths, name)) for name in SENTINELS},
    }


@pytest.fixture(scope="module")
def stub_primus() -> Iterator[bool]:
    """Where the Primus trainers cannot be imported here, an empty module in their place.

    Only an environment fault is papered over: the lookup then skips that module (it holds no
    TotalSegmentator trainer) and goes on exactly as nnU-Net's own code; the adapter itself
    turns the fault into a skip with the fix (:func:`test_trainer_lookup_fault_is_a_skip`).
    """
    stub = _primus_unimportable()
    with pytest.MonkeyPatch.context() as patch:
        if stub:
            patch.setitem(sys.modules, PRIMUS, types.ModuleType(PRIMUS))
        yield stub


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory, stub_primus: bool) -> Iterator[Path]:
    """``<weights>/totalsegmentator`` with both fast models; UMD_WEIGHTS set for the module."""
    root = tmp_path_factory.mktemp("weights")
    results = root / "totalsegmentator" / "nnunet" / "results"
    write_fast_model(results, "total", seed=0)
    write_fast_model(results, "total_mr", seed=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UMD_WEIGHTS", str(root))
        patch.delenv("UMD_TOTALSEG_FAST", raising=False)
        for name in ("TOTALSEG_HOME_DIR", "TOTALSEG_WEIGHTS_PATH"):
            patch.delenv(name, raising=False)
        yield root / "totalsegmentator"


@pytest.fixture(scope="module", params=list(FAST_MODELS))
def run(request: pytest.FixtureRequest, weights: Path) -> dict[str, Any]:
    """One adapter's prediction, with sentinel nnUNet_* values and sockets disabled.

    One fixture per task, so an xdist worker builds only the runs of the tests it gets. The MRI
    run also has an nnunetv2 module holding ``nnUNet_results`` as a plain string (what
    nnunetv2 < 2.8 copied from the environment at import): the package must still find its
    weights, and the string must be back afterwards.
    """
    import nnunetv2.utilities.file_path_utilities as file_paths

    task = request.param
    names = (*SENTINELS, "TOTALSEG_HOME_DIR", "TOTALSEG_WEIGHTS_PATH")
    with pytest.MonkeyPatch.context() as patch:
        network = _NoNetwork(patch)
        for name, value in SENTINELS.items():
            patch.setenv(name, value)
        model = TotalSegmentatorCT() if task == "total" else TotalSegmentatorMR()
        model.load("cpu")
        config = json.loads((weights / "config.json").read_text())
        if task == "total_mr":
            patch.setattr(file_paths, "nnUNet_results", "/legacy/string")
        before = ({name: os.environ.get(name) for name in names}, _nnunet_own())
        image = _scan(task)
        predicted = model.predict(image, "CT" if task == "total" else "MRI", None)
        after = ({name: os.environ.get(name) for name in names}, _nnunet_own())
        config_after = json.loads((weights / "config.json").read_text())
        return {
            "task": task,
            "image": image,
            "predicted": predicted,
            "config_after_load": config,
            "config_after_predict": config_after,
            "before": before,
            "after": after,
            "legacy": file_paths.nnUNet_results,
            "settings": model.inference_settings(),
            "weights_id": model.weights_id(),
            "connections": list(network.attempts),
        }


REFERENCE = textwrap.dedent(
    """
    import json, socket, sys
    attempts = []
    connect = socket.socket.connect
    def guarded(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(repr(address))
            raise OSError("network disabled")
        connect(sock, address)
    def refuse(address, *args, **kwargs):
        attempts.append(repr(address))
        raise OSError("network disabled")
    socket.socket.connect = guarded
    socket.create_connection = refuse
    import nibabel as nib
    from totalsegmentator.python_api import totalsegmentator
    for task, source, target in json.loads(sys.argv[1]):
        seg = totalsegmentator(nib.load(source), None, task=task, fast=True, device="cpu",
                               ml=True, quiet=True, nr_thr_resamp=1, nr_thr_saving=1)
        nib.save(seg, target)
    print("CONNECTIONS", len(attempts))
    """
)


@pytest.fixture(scope="module")
def reference(
    run: dict[str, Any],
    weights: Path,
    stub_primus: bool,
    tmp_path_factory: pytest.TempPathFactory,
) -> np.ndarray:
    """The package's own call on the same scan, in a fresh interpreter (see module docstring)."""
    import nibabel as nib

    folder = tmp_path_factory.mktemp("reference")
    task = run["task"]
    source = save_volume(run["image"], folder / f"{task}.nii.gz")
    jobs = [(task, str(source), str(folder / f"{task}_seg.nii.gz"))]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("nnUNet_", "TOTALSEG_"))}
    env["TOTALSEG_HOME_DIR"] = str(weights)
    done = subprocess.run(
        [sys.executable, "-c", STUB_PRIMUS * stub_primus + REFERENCE, json.dumps(jobs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "CONNECTIONS 0" in done.stdout, done.stdout[-2000:]
    segmentation: Any = nib.load(jobs[0][2])
    return np.asarray(segmentation.dataobj)


def _to_canonical(labels: np.ndarray, task: str) -> np.ndarray:
    """The package's labels -> canonical organ values, by class name (the reference's table)."""
    from totalsegmentator.map_to_binary import class_map

    ids = {name: value for value, name in class_map[task].items()}
    out = np.zeros(labels.shape, dtype=np.uint8)
    for index, organ in enumerate(CANONICAL_ORGANS, start=1):
        for name in LUNG[task] if organ == "lung" else (organ,):
            out[labels == ids[name]] = index
    return out


@pytest.mark.slow
def test_fast_model_equals_the_package_call_and_leaves_no_trace(
    run: dict[str, Any], reference: np.ndarray
) -> None:
    """Per task, on one scan (one test, so an xdist worker never builds a task's runs twice).

    (a) the adapter's label map is the package's output mapped to canonical organs, exactly;
    (b) no internet socket opened; (c) config.json has usage statistics off, and the adapter's
    call did not rewrite it; (d) nnUNet_* variables, nnunetv2.paths and nnunetv2's own
    functions are as before the call.
    """
    from totalsegmentator.map_to_binary import class_map

    # (a) reference equality, on a label map that is not trivial: several of our organs, two
    # lung parts, and a class we do not map
    task, image, predicted = run["task"], run["image"], run["predicted"]
    assert reference.shape == image.shape and predicted.shape == image.shape
    names = {value: name for value, name in class_map[task].items()}
    found = {names[int(v)] for v in np.unique(reference) if v}
    assert len(found & set(CANONICAL_ORGANS)) >= 2, found
    assert len(found & set(LUNG[task])) >= 2, found
    assert "gallbladder" in found, found
    assert predicted.dtype == np.uint8
    assert set(np.unique(predicted).tolist()) <= set(range(len(CANONICAL_ORGANS) + 1))
    np.testing.assert_array_equal(predicted, _to_canonical(reference, task))
    gallbladder = {name: value for value, name in names.items()}["gallbladder"]
    assert not predicted[reference == gallbladder].any()

    # (b) + (c) offline
    assert run["connections"] == []
    config = run["config_after_load"]
    assert config["send_usage_stats"] is False
    assert config["statistics_disclaimer_shown"] is True
    assert "totalseg_id" in config
    assert run["config_after_predict"] == config  # no usage counter written by the adapter

    # (d) the process as it was
    env_before, own_before = run["before"]
    env_after, own_after = run["after"]
    assert env_before == env_after
    assert {k: env_after[k] for k in SENTINELS} == SENTINELS
    assert env_after["TOTALSEG_HOME_DIR"] is None and env_after["TOTALSEG_WEIGHTS_PATH"] is None
    assert own_after.keys() == own_before.keys()
    assert own_after["paths"] == own_before["paths"]  # the same objects (ids)
    assert all(own_after[key] is own_before[key] for key in own_before if key != "paths")
    for key, value in own_after.items():  # nnunetv2's own, not the package's copies
        if key != "paths" and value is not None:
            assert value.__module__.startswith("nnunetv2."), (key, value.__module__)
    if task == "total_mr":
        assert run["legacy"] == "/legacy/string"
    settings = run["settings"]
    assert settings["fast"] is True and settings["device"] == "cpu"
    assert settings["nnunetv2_patches"] == "the package's, during the call only"
    assert len(run["weights_id"]) == 16


def test_missing_folder_is_a_skip_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No weights: ModelUnavailable naming the folder; no socket, no download function called."""
    import totalsegmentator.libs as libs

    network = _NoNetwork(monkeypatch)

    def no_download(*args: Any, **kwargs: Any) -> None:
        pytest.fail(f"a download function was called with {args}")

    for name in ("download_pretrained_weights", "download_url_and_unpack"):
        monkeypatch.setattr(libs, name, no_download)
    monkeypatch.delenv("UMD_TOTALSEG_FAST", raising=False)
    monkeypatch.delenv("UMD_WEIGHTS", raising=False)
    with pytest.raises(ModelUnavailable, match="--umd-weights"):
        TotalSegmentatorCT().check_available("cpu")
    monkeypatch.setenv("UMD_WEIGHTS", str(tmp_path))
    expected = (
        tmp_path / "totalsegmentator" / "nnunet" / "results"
        / "Dataset297_TotalSegmentator_total_3mm_1559subj"
        / "nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans__3d_fullres"
    )  # fmt: skip
    for call in (TotalSegmentatorCT().check_available, TotalSegmentatorCT().load):
        with pytest.raises(ModelUnavailable) as error:
            call("cpu")
        assert str(expected / "fold_0" / "checkpoint_final.pth") in str(error.value)
        assert "nothing is downloaded" in str(error.value)
        assert "totalseg_download_weights -t total_fast" in str(error.value)
    # the 1.5 mm models (CUDA default, or UMD_TOTALSEG_FAST=0) name all their folders
    monkeypatch.setenv("UMD_TOTALSEG_FAST", "0")
    with pytest.raises(ModelUnavailable) as error:
        TotalSegmentatorMR().check_available("cpu")
    for dataset in ("Dataset850_TotalSegMRI_part1_organs_1088subj",
                    "Dataset851_TotalSegMRI_part2_muscles_1088subj"):  # fmt: skip
        assert f"{dataset}/nnUNetTrainer_2000epochs_NoMirroring__nnUNetPlans__3d_fullres" in str(
            error.value
        )
    assert not (tmp_path / "totalsegmentator").exists()  # nothing created either
    assert network.attempts == []


def test_download_guard_inside_the_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Within the adapter's scope the package's download functions raise, never download."""
    from umdbench.models import totalsegmentator as adapter

    network = _NoNetwork(monkeypatch)
    home = tmp_path / "totalsegmentator"
    with adapter._package_scope(home, home / "nnunet" / "results") as python_api:
        import totalsegmentator.libs as libs

        with pytest.raises(ModelUnavailable, match="Dataset297_TotalSegmentator_total_3mm"):
            python_api.download_pretrained_weights(297)
        with pytest.raises(ModelUnavailable, match="never downloads"):
            libs.download_url_and_unpack("https://example.invalid/x.zip", tmp_path)
        assert os.environ["nnUNet_results"] == str(home / "nnunet" / "results")
    from totalsegmentator.libs import download_url_and_unpack

    assert download_url_and_unpack.__module__ == "totalsegmentator.libs"  # restored
    assert not (home / "nnunet").exists()
    assert network.attempts == []


def test_config_written_with_statistics_off(tmp_path: Path) -> None:
    """A missing config is created offline; an existing one keeps its id, statistics go off."""
    config = offline_config(tmp_path / "a")
    assert config["send_usage_stats"] is False
    assert json.loads((tmp_path / "a" / "config.json").read_text()) == config
    (tmp_path / "b").mkdir()
    online = {"totalseg_id": "totalseg_ABC", "send_usage_stats": True, "prediction_counter": 7}
    (tmp_path / "b" / "config.json").write_text(json.dumps(online))
    written = json.loads(json.dumps(offline_config(tmp_path / "b")))
    assert written == json.loads((tmp_path / "b" / "config.json").read_text())
    assert written["totalseg_id"] == "totalseg_ABC" and written["prediction_counter"] == 7
    assert written["send_usage_stats"] is False and written["statistics_disclaimer_shown"] is True


def test_label_mapping_and_metadata() -> None:
    """Every canonical organ maps to a class of each task; lung is the union of its parts."""
    from totalsegmentator.map_to_binary import class_map
    from totalsegmentator.python_api import get_task_config

    from umdbench.models.totalsegmentator import CANONICAL_LABEL_IDS, ORGAN_CLASSES

    assert sorted(CANONICAL_LABEL_IDS) == sorted(CANONICAL_ORGANS)
    assert len(set(CANONICAL_LABEL_IDS.values())) == len(CANONICAL_ORGANS)
    assert 0 not in CANONICAL_LABEL_IDS.values()
    for task in FAST_MODELS:
        names = set(class_map[task].values())
        assert set(ORGAN_CLASSES[task]) == set(CANONICAL_ORGANS)
        for organ, classes in ORGAN_CLASSES[task].items():
            assert set(classes) <= names, (task, organ)
        assert ORGAN_CLASSES[task]["lung"] == LUNG[task]
    for model_class, task in ((TotalSegmentatorCT, "total"), (TotalSegmentatorMR, "total_mr")):
        assert model_class.task == task and model_class.label_ids == CANONICAL_LABEL_IDS
        assert set(model_class.organs) == set(CANONICAL_ORGANS)
    assert TotalSegmentatorCT.metadata()["modalities_claimed"] == ["CT"]
    assert TotalSegmentatorMR.metadata()["modalities_claimed"] == ["MRI"]
    assert TotalSegmentatorCT.literature["CT"].dice == 0.943
    assert TotalSegmentatorMR.literature["MRI"].dice == 0.839
    # the folders the adapter expects are the package's own (its task table)
    for task, (task_id, dataset, trainer) in FAST_MODELS.items():
        config = get_task_config(task, fast=True, quiet=True)
        assert (config["task_id"], config["trainer"]) == (task_id, trainer)
        [folder] = expected_model_folders(task, True, Path("/w"))
        assert folder == Path("/w/nnunet/results") / dataset / f"{trainer}{RUN}"
    full = get_task_config("total", fast=False, quiet=True)
    assert len(expected_model_folders("total", False, Path("/w"))) == len(full["task_id"]) == 5


def test_settings_follow_device_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """--fast on CPU, 1.5 mm on CUDA; UMD_TOTALSEG_FAST overrides; bad values are refused."""
    monkeypatch.delenv("UMD_TOTALSEG_FAST", raising=False)
    model: TotalSegmentatorModel = TotalSegmentatorCT()
    assert model.fast_for("cpu") is True and model.fast_for("cuda:0") is False
    monkeypatch.setenv("UMD_TOTALSEG_FAST", "1")
    assert TotalSegmentatorCT().fast_for("cuda") is True
    monkeypatch.setenv("UMD_TOTALSEG_FAST", "yes")
    with pytest.raises(ValueError, match="UMD_TOTALSEG_FAST"):
        TotalSegmentatorCT()
    with pytest.raises(RuntimeError, match="load"):
        TotalSegmentatorMR(fast=True).predict(Volume(np.zeros((2, 2, 2)), np.eye(4)), "MRI", None)


def test_trainer_lookup_fault_is_a_skip(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trainer nnU-Net cannot look up (broken torchvision) is a skip naming the fix."""
    from umdbench.models import totalsegmentator as adapter

    adapter._import_package()
    ts_nnunet = sys.modules["totalsegmentator.nnunet"]

    def broken(name: str) -> None:
        raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setattr(ts_nnunet, "recursive_find_trainer_class_by_name", broken)
    with pytest.raises(ModelUnavailable, match="nnUNetTrainer_4000epochs_NoMirroring") as error:
        TotalSegmentatorCT().load("cpu")
    assert "download.pytorch.org/whl/cpu" in str(error.value)


def test_unsafe_checkpoint_is_refused_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub_primus: bool
) -> None:
    """A checkpoint that pickles anything but tensors and numbers is refused, not executed."""
    results = tmp_path / "totalsegmentator" / "nnunet" / "results"
    folder = write_fast_model(results, "total", seed=0)
    checkpoint = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=True)
    checkpoint["init_args"]["hook"] = os.getcwd  # a callable: weights_only must refuse it
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    monkeypatch.setenv("UMD_WEIGHTS", str(tmp_path))
    monkeypatch.delenv("UMD_TOTALSEG_FAST", raising=False)
    with pytest.raises(ValueError, match="weights_only=True") as info:
        TotalSegmentatorCT().load("cpu")
    assert "checkpoint_final.pth" in str(info.value) and "weights_only=False" not in str(info.value)
