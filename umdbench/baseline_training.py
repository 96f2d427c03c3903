"""Train an nnU-Net v2 baseline on one arm of a cohort, with nnU-Net's own pipeline.

    umdbench train-baseline CT --out models/weights/nnunet-ct            # 10 synthetic subjects, seed 1000
    umdbench train-baseline MRI --dataset path/to/dataset --subjects 10 --out runs/nnunet-mri

What it does, in a work folder (``--work``, default a temporary one) that holds ``nnUNet_raw``,
``nnUNet_preprocessed`` and ``nnUNet_results``:

1. writes the first N subjects' scans of the arm as an nnU-Net raw dataset (``imagesTr``,
   ``labelsTr``, ``dataset.json``): images as stored (nnU-Net's ``SimpleITKIO`` reads them),
   labels remapped from the cohort's ``label_map`` to 1..K in canonical organ order; the
   channel is named ``CT`` on the CT arm (nnU-Net's CT normalisation) and ``PET`` / ``MRI``
   otherwise (z-score);
2. in a **subprocess** with its own ``nnUNet_*`` environment (so this process' environment and
   nnU-Net's multiprocessing stay apart), runs nnU-Net's fingerprint extraction, experiment
   planning, preprocessing and ``run_training`` (fold 0 of nnU-Net's own 5-fold split by
   default, then nnU-Net's own validation of that fold);
3. exports an nnU-Net results folder to ``--out`` (``dataset.json``, ``plans.json``,
   ``dataset_fingerprint.json``, ``fold_<f>/checkpoint_final.pth``, the trainer's source under
   ``trainer/`` when it is not one of nnU-Net's own) and a record, ``training_record.json``
   (command, subjects, split, seed, epochs, iterations, time, versions, hashes).

**On a GPU** it uses nnU-Net's default plans (``ExperimentPlanner``, 8 GB target) and the stock
``nnUNetTrainer`` (1000 epochs x 250 iterations), unless ``--epochs`` / ``--iterations`` ask
for less. **On CPU** (``--device cpu``, or ``auto`` without CUDA) it uses the reduced
configuration :data:`CPU_REDUCTION`, so that it finishes in minutes on 2 cores:

- planning: nnU-Net's ``ExperimentPlanner`` with 8 features in the first stage (nnU-Net: 32)
  capped at 64 (nnU-Net: 320) and a VRAM target of :data:`CPU_REDUCTION` ``gpu_memory_gb``
  (nnU-Net's own ``gpu_memory_target`` knob; it makes the planner shrink the patch), and, when
  asked, a coarser target spacing (nnU-Net's ``overwrite_target_spacing``);
- training: a subclass of ``nnUNetTrainer`` (written to ``trainer/``) that changes only the
  schedule: epochs, iterations per epoch, validation iterations, checkpoint interval; network,
  loss, augmentation, optimiser, poly learning rate and deep supervision are nnU-Net's.

The exported checkpoint keeps what nnU-Net's predictor reads (``network_weights``,
``trainer_name``, ``init_args.configuration``, ``inference_allowed_mirroring_axes``) and drops
the optimiser state and training log, so it is small and loads with
``torch.load(weights_only=True)``; nnU-Net's ``initialize_from_trained_model_folder`` reads it
too (with ``nnUNet_extTrainer`` pointing at ``trainer/`` when the trainer is the CPU one).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from umdbench.organs import CANONICAL_ORGANS, MODALITIES, check_modality

__all__ = [
    "CHANNEL_NAMES",
    "CPU_REDUCTION",
    "CPU_TRAINER_NAME",
    "add_arguments",
    "main",
    "train_baseline",
    "trainer_source",
    "write_raw_dataset",
]

#: nnU-Net channel name per arm: "CT" selects nnU-Net's CTNormalization, anything else z-score.
CHANNEL_NAMES: dict[str, str] = {"CT": "CT", "PET_CT": "PET", "MRI": "MRI", "PET_MRI": "PET"}

#: The class name of the CPU trainer (a schedule-only subclass of ``nnUNetTrainer``).
CPU_TRAINER_NAME = "nnUNetTrainer_umdbenchCPU"

#: What the CPU configuration reduces, against nnU-Net's defaults (in brackets).
CPU_REDUCTION: dict[str, Any] = {
    "planner": "ExperimentPlanner (nnU-Net's default planner) with reduced width",
    "plans_name": "nnUNetPlans_umdbenchCPU",
    "base_num_features": 4,  # [32]
    "max_num_features_3d": 32,  # [320]
    "gpu_memory_gb": 8.0,  # [8]: nnU-Net's planner shrinks the patch to fit this
    "target_spacing": [8.0, 8.0, 8.0],  # [median spacing], nnU-Net's (z, y, x) order
    "epochs": 10,  # [1000]
    "iterations_per_epoch": 100,  # [250]
    "val_iterations_per_epoch": 5,  # [50]
    "base_trainer": "nnUNetTrainerAdam1en3",  # [nnUNetTrainer: SGD, LR 1e-2]
}

#: nnU-Net's defaults, used on a GPU.
GPU_DEFAULTS: dict[str, Any] = {
    "planner": "ExperimentPlanner",
    "plans_name": "nnUNetPlans",
    "epochs": 1000,
    "iterations_per_epoch": 250,
    "val_iterations_per_epoch": 50,
    "base_trainer": "nnUNetTrainer",
}

CONFIGURATION = "3d_fullres"
DEFAULT_DATASET_ID = 901


#: The nnU-Net trainers a CPU trainer may extend: each one of nnU-Net's own (class -> module).
#: ``nnUNetTrainerAdam1en3`` is nnU-Net's AdamW variant (initial LR 1e-3, same poly schedule):
#: with nnU-Net's SGD (LR 1e-2) the CT baseline still predicted only background after 500 of
#: 1,000 iterations; with AdamW it learns within that budget.
BASE_TRAINERS: dict[str, str] = {
    "nnUNetTrainer": "nnunetv2.training.nnUNetTrainer.nnUNetTrainer",
    "nnUNetTrainerAdam1en3": "nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdam",
}


def trainer_source(epochs: int, iterations: int, val_iterations: int, name: str,
                   base: str = "nnUNetTrainer") -> str:
    """Source of the schedule-only subclass of ``base`` (nnU-Net's ``nnUNetTrainer_Xepochs`` style)."""
    module = BASE_TRAINERS[base]
    return f'''"""Written by umdbench train-baseline: nnU-Net's {base} with a shorter schedule only.

Everything else (network, loss, augmentation, optimiser, poly LR, deep supervision, and the
network builder nnU-Net's predictor calls) is inherited unchanged from {base}.
"""

import torch

from {module} import {base}


class {name}({base}):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = {int(epochs)}
        self.num_iterations_per_epoch = {int(iterations)}
        self.num_val_iterations_per_epoch = {int(val_iterations)}
        self.save_every = max(1, self.num_epochs)
'''


# --------------------------------------------------------------------------------------------
# The raw dataset


def _select_scans(cohort: Any, arm: str, n_subjects: int) -> list[Any]:
    scans = list(cohort.scans_of(arm))
    subjects = list(dict.fromkeys(scan.subject for scan in scans))
    if len(subjects) < n_subjects:
        raise ValueError(
            f"cohort {cohort.name!r} has {len(subjects)} subject(s) with a {arm} scan, "
            f"{n_subjects} asked for"
        )
    chosen = set(subjects[:n_subjects])
    return [scan for scan in scans if scan.subject in chosen]


def write_raw_dataset(
    cohort: Any, arm: str, n_subjects: int, raw_root: Path, dataset_id: int
) -> dict[str, Any]:
    """Write the arm's first ``n_subjects`` scans as ``DatasetXXX_UMD<arm>`` under ``raw_root``.

    Returns what was written: dataset name, case -> subject, organ -> nnU-Net label value.
    """
    from umdbench.data import CachedScanLoader
    from umdbench.volume import Volume, save_volume

    check_modality(arm)
    scans = _select_scans(cohort, arm, n_subjects)
    present = {organ for scan in scans for organ in scan.label_map}
    organs = [o for o in CANONICAL_ORGANS if o in present] + sorted(present - set(CANONICAL_ORGANS))
    values = {organ: index + 1 for index, organ in enumerate(organs)}
    name = f"Dataset{dataset_id:03d}_UMD{arm.replace('_', '')}"
    folder = raw_root / name
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    loader = CachedScanLoader(None)
    cases: dict[str, str] = {}
    for index, scan in enumerate(scans):
        case = f"umd_{index:03d}"
        image = loader.image(scan)
        labels = loader.labels(scan)  # on the image grid (resampled by affine when allowed)
        remapped = np.zeros(image.shape, dtype=np.uint8)
        for organ, label_values in scan.label_map.items():
            remapped[np.isin(labels.array, np.asarray(label_values))] = values[organ]
        save_volume(Volume(image.array.astype(np.float32), image.affine),
                    folder / "imagesTr" / f"{case}_0000.nii.gz")
        save_volume(Volume(remapped, image.affine), folder / "labelsTr" / f"{case}.nii.gz")
        cases[case] = scan.subject
    dataset_json = {
        "channel_names": {"0": CHANNEL_NAMES[arm]},
        "labels": {"background": 0, **values},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
        "name": name,
        "description": f"umdbench: {arm} arm of cohort {cohort.name}, {len(cases)} subjects",
        "umdbench_cases": cases,
    }
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=1) + "\n")
    return {"dataset_name": name, "cases": cases, "labels": values}


def _load_trainer_class(path: Path, name: str) -> type:
    """The trainer class of a file written by :func:`trainer_source` (nnUNet_extTrainer style)."""
    import importlib.util

    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    spec = importlib.util.spec_from_file_location(f"umdbench_nnunet_trainer_{name}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    cls = getattr(module, name)
    if not issubclass(cls, nnUNetTrainer):
        raise TypeError(f"{path}: {name} must subclass nnUNetTrainer")
    return cls


# --------------------------------------------------------------------------------------------
# The subprocess: nnU-Net's own planning, preprocessing and training


def _worker(config_path: Path) -> int:
    """Runs inside the subprocess, whose environment names the nnUNet_* folders."""
    config = json.loads(config_path.read_text())
    import torch

    torch.set_num_threads(int(config["threads"]))
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
        ExperimentPlanner,
    )
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiment_dataset,
        preprocess_dataset,
    )
    from nnunetv2.run.run_training import run_training

    dataset_id = int(config["dataset_id"])
    reduced = config["reduced"]
    timings: dict[str, float] = {}
    started = time.perf_counter()
    extract_fingerprints([dataset_id], num_processes=1, check_dataset_integrity=True,
                         show_progress_bar=False)
    timings["fingerprint_s"] = time.perf_counter() - started

    started = time.perf_counter()
    # nnU-Net's planner sets torch's threads to nnUNet_n_proc_DA while it estimates memory, and
    # torch refuses 0 (no augmentation workers, as the tests train): at least 1 while planning
    da_workers = os.environ.get("nnUNet_n_proc_DA")
    if da_workers is not None and int(da_workers) < 1:
        os.environ["nnUNet_n_proc_DA"] = "1"
    if reduced is None:
        planner_class: type = ExperimentPlanner
        _, plans_identifier = plan_experiment_dataset(dataset_id, planner_class)
    else:
        class ReducedPlanner(ExperimentPlanner):  # width only; the algorithm is nnU-Net's
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.UNet_base_num_features = int(reduced["base_num_features"])
                self.UNet_max_features_3d = int(reduced["max_num_features_3d"])

        spacing = reduced.get("target_spacing")
        _, plans_identifier = plan_experiment_dataset(
            dataset_id,
            ReducedPlanner,
            gpu_memory_target_in_gb=float(reduced["gpu_memory_gb"]),
            overwrite_target_spacing=tuple(spacing) if spacing else None,
            overwrite_plans_name=reduced["plans_name"],
        )
    if da_workers is not None:
        os.environ["nnUNet_n_proc_DA"] = da_workers
    timings["planning_s"] = time.perf_counter() - started

    started = time.perf_counter()
    preprocess_dataset(dataset_id, plans_identifier, configurations=(CONFIGURATION,),
                       num_processes=(1,), show_progress_bar=False)
    timings["preprocessing_s"] = time.perf_counter() - started

    started = time.perf_counter()
    fold = config["fold"] if config["fold"] == "all" else int(config["fold"])
    if config["trainer_file"] is None:  # nnU-Net's stock trainer: its own entry point
        run_training(str(dataset_id), CONFIGURATION, fold, config["trainer"],
                     plans_identifier, device=torch.device(config["device"]))
    else:
        # What run_training does for one device, with the trainer class taken from its file:
        # nnU-Net's lookup by name (recursive_find_trainer_class_by_name) imports every trainer
        # module it ships, and one of them (primus) needs timm/torchvision, which may not import.
        trainer_class = _load_trainer_class(Path(config["trainer_file"]), config["trainer"])
        from batchgenerators.utilities.file_and_folder_operations import load_json
        from nnunetv2.paths import nnUNet_preprocessed
        from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

        base = Path(str(nnUNet_preprocessed)) / maybe_convert_to_dataset_name(dataset_id)
        plans = load_json(str(base / f"{plans_identifier}.json"))
        plans["continue_training"] = False
        trainer = trainer_class(plans=plans, configuration=CONFIGURATION, fold=fold,
                                dataset_json=load_json(str(base / "dataset.json")),
                                device=torch.device(config["device"]))
        trainer.run_training()
        trainer.perform_actual_validation(False)
    timings["training_and_validation_s"] = time.perf_counter() - started
    Path(config["report"]).write_text(
        json.dumps({"plans_identifier": plans_identifier, "timings": timings}) + "\n"
    )
    return 0


# --------------------------------------------------------------------------------------------
# Export and record


def _sha256(path: Path, length: int = 16) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def _plain(value: Any) -> Any:
    """JSON-able copy (numpy scalars -> Python numbers)."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def export_results_folder(trained: Path, out: Path, fold: int | str, trainer_file: Path | None) -> dict:
    """Copy an nnU-Net results folder, with a slim ``checkpoint_final.pth`` (see module doc)."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    for name in ("dataset.json", "plans.json", "dataset_fingerprint.json"):
        shutil.copy2(trained / name, out / name)
    fold_in, fold_out = trained / f"fold_{fold}", out / f"fold_{fold}"
    fold_out.mkdir(exist_ok=True)
    # nnU-Net's full training checkpoint, read as every checkpoint is: weights_only, numpy
    # scalars of its training log allow-listed (the adapter's own reader)
    from umdbench.models.nnunet import load_checkpoint_safely

    full = load_checkpoint_safely(fold_in / "checkpoint_final.pth")
    slim = {
        # as saved: keys that alias one tensor (dynamic_network_architectures' all_modules) keep
        # sharing its storage, so the file holds every weight once
        "network_weights": full["network_weights"],
        "trainer_name": str(full["trainer_name"]),
        "init_args": {"configuration": str(full["init_args"]["configuration"]),
                      "fold": full["init_args"]["fold"]},
        "inference_allowed_mirroring_axes": (
            tuple(int(a) for a in full["inference_allowed_mirroring_axes"])
            if full.get("inference_allowed_mirroring_axes") is not None else None
        ),
        "current_epoch": int(full["current_epoch"]),
    }
    torch.save(slim, fold_out / "checkpoint_final.pth")
    torch.load(fold_out / "checkpoint_final.pth", weights_only=True)  # must load safely
    summary = fold_in / "validation" / "summary.json"
    validation = None
    if summary.is_file():
        (fold_out / "validation").mkdir(exist_ok=True)
        shutil.copy2(summary, fold_out / "validation" / "summary.json")
        validation = json.loads(summary.read_text()).get("foreground_mean")
    if trainer_file is not None:
        (out / "trainer").mkdir(exist_ok=True)
        shutil.copy2(trainer_file, out / "trainer" / trainer_file.name)
    logging = full.get("logging", {})
    return {
        "epochs_run": int(full["current_epoch"]),
        "train_losses": [round(float(v), 4) for v in logging.get("train_losses", [])],
        "val_losses": [round(float(v), 4) for v in logging.get("val_losses", [])],
        "ema_fg_dice": [round(float(v), 4) for v in logging.get("ema_fg_dice", [])],
        "validation_foreground_mean": _plain(validation),
        "checkpoint_sha256_16": _sha256(fold_out / "checkpoint_final.pth"),
        "checkpoint_bytes": (fold_out / "checkpoint_final.pth").stat().st_size,
    }


def _open_cohort(args: argparse.Namespace) -> Any:
    if args.dataset is not None:
        from umdbench.data import open_dataset

        cache = args.cache or Path(tempfile.gettempdir()) / "umdbench-train-cache"
        return open_dataset(args.dataset, cache)
    from umdbench.umd_fixtures.synthetic import build_synthetic_cohort

    return build_synthetic_cohort(n_subjects=args.subjects, seed=args.seed, cache_dir=args.cache)


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device} asked for, but torch sees no CUDA GPU")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {device!r}")
    return device


def train_baseline(args: argparse.Namespace, argv: Sequence[str] = ()) -> dict[str, Any]:
    """Train one nnU-Net v2 baseline as ``args`` say; returns the record (also written)."""
    import torch

    arm = check_modality(args.arm)
    device = _resolve_device(args.device)
    reduced = dict(CPU_REDUCTION) if (device == "cpu" and not args.default_plans) else None
    schedule = dict(GPU_DEFAULTS if reduced is None else CPU_REDUCTION)
    for key, value in (("epochs", args.epochs), ("iterations_per_epoch", args.iterations),
                       ("val_iterations_per_epoch", args.val_iterations)):
        if value is not None:
            schedule[key] = int(value)
    if reduced is not None and args.target_spacing is not None:
        reduced["target_spacing"] = [float(s) for s in args.target_spacing]
    stock = reduced is None and (schedule["epochs"], schedule["iterations_per_epoch"],
                                 schedule["val_iterations_per_epoch"]) == (1000, 250, 50)
    trainer = "nnUNetTrainer" if stock else CPU_TRAINER_NAME
    fold: int | str = args.fold if args.fold == "all" else int(args.fold)

    started = time.time()
    own_work = args.work is None
    work = Path(tempfile.mkdtemp(prefix="umd-nnunet-")) if own_work else Path(args.work)
    work = work.resolve()
    paths = {key: work / key for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for folder in paths.values():
        folder.mkdir(parents=True, exist_ok=True)
    try:
        cohort = _open_cohort(args)
        written = write_raw_dataset(cohort, arm, args.subjects, paths["nnUNet_raw"], args.dataset_id)
        trainer_file = None
        if trainer != "nnUNetTrainer":
            trainer_dir = work / "trainer"
            trainer_dir.mkdir(exist_ok=True)
            trainer_file = trainer_dir / f"{trainer}.py"
            trainer_file.write_text(trainer_source(schedule["epochs"], schedule["iterations_per_epoch"],
                                                   schedule["val_iterations_per_epoch"], trainer,
                                                   schedule["base_trainer"]))
        config = {
            "dataset_id": args.dataset_id, "reduced": reduced, "fold": str(fold), "trainer": trainer,
            "device": device, "threads": args.threads, "report": str(work / "worker_report.json"),
            "trainer_file": None if trainer_file is None else str(trainer_file),
        }
        config_path = work / "worker_config.json"
        config_path.write_text(json.dumps(config, indent=1) + "\n")
        env = dict(os.environ)
        env.update({key: str(path) for key, path in paths.items()})
        env.update({
            "nnUNet_n_proc_DA": str(args.da_workers),
            "nnUNet_def_n_proc": str(max(1, args.threads)),
            "OMP_NUM_THREADS": str(args.threads),
            "PYTHONHASHSEED": str(args.seed),
        })
        if trainer_file is not None:
            env["nnUNet_extTrainer"] = str(trainer_file.parent)
        log_path = work / "worker.log"
        with open(log_path, "w") as log:
            process = subprocess.run(
                [sys.executable, "-m", "umdbench.baseline_training", "--worker", str(config_path)],
                env=env, stdout=log, stderr=subprocess.STDOUT, check=False,
            )
        if process.returncode != 0:
            tail = log_path.read_text()[-3000:]
            raise RuntimeError(f"nnU-Net exited {process.returncode}; log {log_path}:\n{tail}")
        report = json.loads((work / "worker_report.json").read_text())
        plans_identifier = report["plans_identifier"]
        trained = (paths["nnUNet_results"] / written["dataset_name"]
                   / f"{trainer}__{plans_identifier}__{CONFIGURATION}")
        out = Path(args.out)
        exported = export_results_folder(trained, out, fold, trainer_file)
        splits = json.loads((paths["nnUNet_preprocessed"] / written["dataset_name"]
                             / "splits_final.json").read_text())
        cases = written["cases"]
        if fold == "all":
            train_cases, val_cases = sorted(cases), sorted(cases)
        else:
            train_cases, val_cases = splits[int(fold)]["train"], splits[int(fold)]["val"]
        plans = json.loads((out / "plans.json").read_text())
        conf = plans["configurations"][CONFIGURATION]
        from importlib.metadata import version

        import nnunetv2  # noqa: F401  (version below)

        record = {
            "model": out.name,
            "command": "umdbench " + " ".join(argv),
            "arm": arm,
            "channel_name": CHANNEL_NAMES[arm],
            "cohort": {"name": cohort.name, "seed": args.seed if args.dataset is None else None,
                       "dataset": args.dataset, "subjects": list(dict.fromkeys(cases.values()))},
            "cases": cases,
            "fold": fold,
            "trained_on": [cases[c] for c in train_cases],
            "validated_on": [cases[c] for c in val_cases],
            "labels": written["labels"],
            "device": device,
            "configuration": CONFIGURATION,
            "plans_identifier": plans_identifier,
            "trainer": trainer,
            "reduced_configuration": reduced,
            "schedule": schedule,
            "plans_summary": {
                "patch_size": conf["patch_size"], "spacing": conf["spacing"],
                "batch_size": conf["batch_size"],
                "features_per_stage": conf["architecture"]["arch_kwargs"]["features_per_stage"],
                "normalization_schemes": conf["normalization_schemes"],
                "use_mask_for_norm": conf["use_mask_for_norm"],
                "image_reader_writer": plans.get("image_reader_writer"),
                "transpose_forward": plans.get("transpose_forward"),
            },
            **exported,
            "threads": args.threads,
            "da_workers": args.da_workers,
            "timings_s": {k: round(v, 1) for k, v in report["timings"].items()},
            "seconds": round(time.time() - started, 1),
            "versions": {"nnunetv2": version("nnunetv2"), "torch": torch.__version__,
                         "python": platform.python_version()},
            "work": None if own_work else str(work),
        }
        (out / "training_record.json").write_text(json.dumps(_plain(record), indent=1) + "\n")
        return record
    finally:
        if own_work and not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Command line


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``umdbench train-baseline`` (shared with ``python -m``)."""
    parser.add_argument("arm", choices=MODALITIES, help="the arm to train on")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="the nnU-Net results folder to write (e.g. models/weights/nnunet-ct)")
    parser.add_argument("--subjects", type=_positive, default=10, metavar="N",
                        help="training subjects (default 10, the study's number)")
    parser.add_argument("--seed", type=int, default=1000, metavar="S",
                        help="synthetic training cohort seed (default 1000; audits use 0)")
    parser.add_argument("--dataset", default=None, metavar="SPEC",
                        help="train on this dataset instead (as --umd-dataset: folder, manifest, ...)")
    parser.add_argument("--cache", type=Path, default=None, metavar="DIR", help="cohort cache")
    parser.add_argument("--work", type=Path, default=None, metavar="DIR",
                        help="work folder for nnUNet_raw/_preprocessed/_results (default: temporary)")
    parser.add_argument("--keep-work", action="store_true", help="keep the temporary work folder")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument("--default-plans", action="store_true",
                        help="nnU-Net's default plans even on CPU (slow)")
    parser.add_argument("--epochs", type=_positive, default=None,
                        help=f"epochs (GPU default 1000, CPU {CPU_REDUCTION['epochs']})")
    parser.add_argument("--iterations", type=_positive, default=None,
                        help=f"iterations per epoch (GPU 250, CPU {CPU_REDUCTION['iterations_per_epoch']})")
    parser.add_argument("--val-iterations", type=_positive, default=None,
                        help=f"validation iterations per epoch (GPU 50, CPU "
                             f"{CPU_REDUCTION['val_iterations_per_epoch']})")
    parser.add_argument("--target-spacing", type=float, nargs=3, default=None, metavar="MM",
                        help="CPU only: coarser target spacing in nnU-Net's (z, y, x) order")
    parser.add_argument("--fold", default="0", help="nnU-Net fold: 0-4 or all (default 0)")
    parser.add_argument("--dataset-id", type=int, default=DEFAULT_DATASET_ID,
                        help=f"nnU-Net dataset id in the work folder (default {DEFAULT_DATASET_ID})")
    parser.add_argument("--threads", type=_positive, default=2, help="torch threads (default 2)")
    parser.add_argument("--da-workers", type=int, default=1,
                        help="nnU-Net data-augmentation processes, nnUNet_n_proc_DA (default 1)")


def run_command(args: argparse.Namespace, argv: Sequence[str]) -> int:
    record = train_baseline(args, argv)
    print(f"wrote {args.out} ({record['checkpoint_bytes'] / 1e6:.1f} MB checkpoint) in "
          f"{record['seconds']:.0f} s; record {Path(args.out) / 'training_record.json'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 2 and argv[0] == "--worker":
        return _worker(Path(argv[1]))
    parser = argparse.ArgumentParser(prog="python -m umdbench.baseline_training",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_command(parser.parse_args(argv), ["train-baseline", *argv])


if __name__ == "__main__":
    raise SystemExit(main())
