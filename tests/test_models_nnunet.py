"""nnU-Net v2 baselines: the real trainer, the committed models, and nnU-Net's own predict."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed: pip install nnunetv2")

import torch

from umdbench.models import nnunet
from umdbench.models.nnunet import (
    NNUNetCT,
    NNUNetMRI,
    NNUNetPETCT,
    NNUNetPETMRI,
    load_checkpoint_safely,
    nnunet_model_class,
    resolve_trainer_class,
)
from umdbench.umd_fixtures.synthetic import build_synthetic_cohort
from umdbench.volume import load_volume

BUILTINS = (NNUNetCT, NNUNetPETCT, NNUNetMRI, NNUNetPETMRI)
ARMS = {"nnunet-ct": "CT", "nnunet-pet_ct": "PET_CT", "nnunet-mri": "MRI",
        "nnunet-pet_mri": "PET_MRI"}


@pytest.fixture(scope="module")
def audit_cohort():
    """The suite's default audit cohort (seed 0), shared with the other tests' cache."""
    return build_synthetic_cohort(n_subjects=8, seed=0)


def _parse(argv: list[str]) -> argparse.Namespace:
    from umdbench.baseline_training import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("model_class", BUILTINS, ids=lambda c: c.name)
def test_committed_folder_and_record(model_class) -> None:
    folder = nnunet.WEIGHTS_DIR / model_class.name
    checkpoint = folder / "fold_0" / "checkpoint_final.pth"
    if not checkpoint.is_file():
        pytest.skip(f"{checkpoint} is missing: umdbench train-baseline {ARMS[model_class.name]}"
                    f" --out {folder}")
    assert checkpoint.stat().st_size <= 5 * 1024 * 1024
    loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)  # safe by itself
    assert loaded["trainer_name"] == nnunet.CPU_TRAINER_NAME
    record = json.loads((folder / "training_record.json").read_text())
    assert record["arm"] == ARMS[model_class.name]
    assert record["cohort"]["seed"] == 1000 and len(record["cohort"]["subjects"]) == 10
    assert all(s.startswith("s1000-") for s in record["cohort"]["subjects"])  # not audited
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["channel_names"]["0"] == ("CT" if record["arm"] == "CT" else
                                             record["arm"].split("_")[0])
    assert model_class.label_ids == {k: v for k, v in dataset["labels"].items() if k != "background"}
    # the CPU trainer changes the schedule only: the predictor rebuilds nnUNetTrainer's network
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    assert resolve_trainer_class(nnunet.CPU_TRAINER_NAME, folder) is nnUNetTrainer


@pytest.mark.parametrize("model_class", BUILTINS, ids=lambda c: c.name)
def test_committed_models_load_and_predict(model_class, audit_cohort) -> None:
    model = model_class()
    try:
        model.check_available("cpu")
    except nnunet.ModelUnavailable as error:
        pytest.skip(str(error))
    model.load("cpu")
    scan = audit_cohort.scan(audit_cohort.subjects[0], ARMS[model_class.name])
    image = scan.load_image()
    labels = model.predict(image, scan.modality, None)
    assert labels.shape == image.shape and labels.dtype == np.int16
    assert set(np.unique(labels)) <= {0, *model.label_ids.values()}
    settings = model.inference_settings()
    assert settings["use_mirroring"] is False and settings["tile_step_size"] == 0.5
    assert len(model.weights_id()) == 16


def _official_prediction(folder: Path, image_file: Path, out: Path, use_mirroring: bool,
                         monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    """nnU-Net's own API end to end: initialize_from_trained_model_folder + predict_from_files."""
    from nnunetv2.inference import predict_from_raw_data
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    # nnU-Net finds a trainer by importing every trainer module it ships; one of them (primus)
    # imports timm -> torchvision, which does not import in this environment. The stand-in
    # resolves the trainer name as nnU-Net would (our CPU trainer, via nnUNet_extTrainer, only
    # changes the schedule; its network builder is nnUNetTrainer's).
    monkeypatch.setattr(predict_from_raw_data, "recursive_find_trainer_class_by_name",
                        lambda name: resolve_trainer_class(name, folder))
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=use_mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"),
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=None)
    predictor.predict_from_files([[str(image_file)]], [str(out / "case")],
                                 num_processes_preprocessing=1,
                                 num_processes_segmentation_export=1)
    return load_volume(out / "case.nii.gz").array


@pytest.mark.slow
@pytest.mark.parametrize(("model_class", "arm", "mirroring"),
                         [(NNUNetCT, "CT", True), (NNUNetMRI, "MRI", False)],
                         ids=["ct-RAS-mirroring", "mri-LPS-built-in-settings"])
def test_reference_equality_with_predict_from_files(model_class, arm, mirroring, audit_cohort,
                                                    tmp_path, monkeypatch) -> None:
    """Identical voxels: same preprocessing, network, tiling and export code on the same file."""
    folder = nnunet.WEIGHTS_DIR / model_class.name
    if not (folder / "fold_0" / "checkpoint_final.pth").is_file():
        pytest.skip(f"{folder} has no checkpoint")
    scan = audit_cohort.scan(audit_cohort.subjects[1], arm)
    ours_class = nnunet_model_class(f"{model_class.name}-check", folder=folder, arms=(arm,),
                                    use_mirroring=mirroring)
    ours = ours_class()
    ours.load("cpu")
    prediction = ours.predict(scan.load_image(), arm, None)
    reference = _official_prediction(folder, scan.image, tmp_path, mirroring, monkeypatch)
    assert prediction.shape == reference.shape
    assert np.array_equal(prediction, reference)
    assert ours.inference_settings()["mirror_axes"] == ([0, 1, 2] if mirroring else None)


@pytest.mark.slow
def test_few_iteration_training_runs_the_real_trainer(audit_cohort, tmp_path) -> None:
    """nnU-Net's planning, preprocessing, trainer and validation on 5 subjects, 2 iterations."""
    from umdbench.baseline_training import train_baseline

    out = tmp_path / "nnunet-tiny"
    argv = ["PET_CT", "--out", str(out), "--subjects", "5", "--seed", "0", "--device", "cpu",
            "--epochs", "1", "--iterations", "2", "--val-iterations", "1",
            "--work", str(tmp_path / "work"), "--threads", "1", "--da-workers", "0"]
    args = _parse(argv)
    args.cache = None  # the shared test cache (UMD_CACHE_DIR)
    record = train_baseline(args, ["train-baseline", *argv])
    assert record["trainer"] == nnunet.CPU_TRAINER_NAME and record["epochs_run"] == 1
    assert len(record["trained_on"]) == 4 and len(record["validated_on"]) == 1  # nnU-Net's split
    assert record["plans_summary"]["normalization_schemes"] == ["ZScoreNormalization"]
    from umdbench.baseline_training import CPU_REDUCTION

    assert record["plans_summary"]["features_per_stage"][0] == CPU_REDUCTION["base_num_features"]
    assert (out / "training_record.json").is_file() and (out / "trainer").is_dir()
    # nnU-Net's own full checkpoint: loads safely with numpy scalars allow-listed, nothing else
    full = next((tmp_path / "work" / "nnUNet_results").glob("*/*/fold_0/checkpoint_final.pth"))
    assert "optimizer_state" in load_checkpoint_safely(full)
    model = nnunet_model_class("nnunet-tiny", folder=out, arms=("PET_CT",))()
    model.load("cpu")
    scan = audit_cohort.scan(audit_cohort.subjects[0], "PET_CT")
    image = scan.load_image()
    assert model.predict(image, "PET_CT", None).shape == image.shape
