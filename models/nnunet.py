"""nnU-Net v2 (Isensee et al. 2021, ``nnunetv2`` on PyPI): the study's supervised baseline.

An adapter over an nnU-Net **results folder** (``dataset.json``, ``plans.json``,
``fold_*/checkpoint_final.pth``): inference is nnU-Net's own ``nnUNetPredictor`` —
preprocessing (crop to non-zero, resampling to the plans' spacing, the plans' normalisation per
channel name: ``CT`` -> ``CTNormalization``, others z-score), sliding-window tiles with the
plans' patch size and the predictor's ``tile_step_size``, gaussian weighting, test-time
mirroring along the checkpoint's ``inference_allowed_mirroring_axes``, fold ensembling,
resampling of the logits back to the input grid and un-cropping
(``predict_single_npy_array``, the same steps ``predict_from_files`` runs in worker processes).

Axis order: nnU-Net works in SimpleITK's (z, y, x) order (``SimpleITKIO``; ``NibabelIO`` reads
nibabel and transposes to the same order, MIC-DKFZ/nnUNet#1951). A :class:`Volume` holds
nibabel's (x, y, z) array, so the adapter transposes array and spacing before and the label map
after; nnU-Net does not reorient (neither do we), so a model sees the voxel order its training
files had. Folders whose plans name another reader (``NibabelIOWithReorient``, ...) go through
that reader's own ``read_images`` / ``write_seg`` on a temporary NIfTI file.

Checkpoints are read with ``torch.load(weights_only=True)`` (nnU-Net's own loader uses
``weights_only=False``); official training checkpoints, whose training log holds numpy scalars,
load with numpy's scalar and dtype types allow-listed and nothing else. The state dicts are
handed to the predictor through its own ``manual_initialization``, with the network built by
the trainer class's own ``build_network_architecture``.

Built-ins ``nnunet-ct``, ``nnunet-pet_ct``, ``nnunet-mri``, ``nnunet-pet_mri``: one model per
arm, trained here by ``umdbench train-baseline`` on 10 subjects of the synthetic training cohort
(seed 1000) in nnU-Net's reduced CPU configuration (``models/weights/nnunet-<arm>/``, record in
``training_record.json``). A user's own results folder: :func:`nnunet_model_class`.
"""

from __future__ import annotations

import json
import pickle
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from umdbench.models._families import (
    combined_hash,
    numpy_safe_globals,
    require_packages,
    torch_device,
    unsafe_checkpoint_message,
)
from umdbench.models.base import ModelUnavailable, PromptKind, SegmentationModel, Tier
from umdbench.organs import CANONICAL_ORGANS, MODALITIES
from umdbench.prompts import Prompt
from umdbench.registry import register_model
from umdbench.volume import Volume, load_volume, save_volume

__all__ = [
    "NNUNetCT",
    "NNUNetMRI",
    "NNUNetModel",
    "NNUNetPETCT",
    "NNUNetPETMRI",
    "label_ids_from_dataset_json",
    "load_checkpoint_safely",
    "nnunet_model_class",
    "resolve_trainer_class",
]

WEIGHTS_DIR = Path(__file__).parent / "weights"

#: The schedule-only trainer ``umdbench train-baseline`` writes on CPU (see
#: ``umdbench.baseline_training``); it inherits ``build_network_architecture`` unchanged.
CPU_TRAINER_NAME = "nnUNetTrainer_umdbenchCPU"

_CITATION = (
    "Isensee et al., nnU-Net: a self-configuring method for deep learning-based biomedical"
    " image segmentation, Nature Methods 18, 203-211 (2021)"
)


def label_ids_from_dataset_json(dataset_json: Mapping[str, Any]) -> dict[str, int]:
    """Target -> nnU-Net label value, from ``dataset.json``'s ``labels``: a label named as a
    target (``liver``, ``tumor``, a ``--umd-targets`` name), or by a lesion target's label names
    (``GTV``, ``lesion``: a tumour model made with nnU-Net runs the ``tumor`` cases)."""
    from umdbench.data.organ_maps import normalise_name, target_label_names
    from umdbench.targets import get_target, known_targets

    known = known_targets()
    lesion_names = {
        label: target
        for target in known
        if get_target(target).kind == "lesion"
        for label in target_label_names(target)
    }
    ids: dict[str, int] = {}
    for name, value in dataset_json.get("labels", {}).items():
        target = name if name in known else lesion_names.get(normalise_name(name))
        if target is None:
            continue
        if not isinstance(value, int):
            raise ValueError(f"label {name!r} is a region {value!r}: region-based models are "
                             "not supported by this adapter")
        if target in ids:
            raise ValueError(f"labels {name!r} and another both name the target {target!r}; the"
                             " adapter needs one label value per target")
        ids[target] = int(value)
    return dict(sorted(ids.items(), key=lambda item: known.index(item[0])))


def load_checkpoint_safely(path: Path) -> dict[str, Any]:
    """An nnU-Net checkpoint read without running arbitrary pickled code."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        keep = ("only {'network_weights': state_dict, 'trainer_name': ..., 'init_args':"
                " {'configuration': ...}, 'inference_allowed_mirroring_axes': ...}")
        raise ModelUnavailable(unsafe_checkpoint_message(path, error, keep)) from error


_SCHEDULE = re.compile(
    r"self.num_epochs = (\d+)\n\s+self.num_iterations_per_epoch = (\d+)\n"
    r"\s+self.num_val_iterations_per_epoch = (\d+)\n"
)


def _is_umdbench_cpu_trainer(source: str, name: str) -> bool:
    """Whether ``source`` is, character for character, what ``train-baseline`` writes."""
    from umdbench.baseline_training import BASE_TRAINERS, trainer_source

    schedule = _SCHEDULE.search(source)
    if schedule is None:
        return False
    epochs, iterations, validation = (int(v) for v in schedule.groups())
    return any(source == trainer_source(epochs, iterations, validation, name, base)
               for base in BASE_TRAINERS)


def resolve_trainer_class(name: str, folder: Path) -> Any:
    """The trainer class whose ``build_network_architecture`` rebuilds the network.

    umdbench's CPU trainer (shipped as ``trainer/<name>.py``, checked to be the schedule-only
    source ``umdbench train-baseline`` writes over ``nnUNetTrainer`` or one of nnU-Net's own
    optimiser variants, never imported) builds the network with ``nnUNetTrainer``'s own method
    (none of those bases overrides it); any other name is looked up by nnU-Net
    (``recursive_find_trainer_class_by_name``, which honours ``nnUNet_extTrainer``).
    """
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    if name == "nnUNetTrainer":
        return nnUNetTrainer
    shipped = folder / "trainer" / f"{name}.py"
    if name == CPU_TRAINER_NAME and shipped.is_file():
        if not _is_umdbench_cpu_trainer(shipped.read_text(), name):
            raise ModelUnavailable(f"{shipped} is not the schedule-only trainer umdbench writes")
        return nnUNetTrainer
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    return recursive_find_trainer_class_by_name(name)


class NNUNetModel(SegmentationModel):
    """An nnU-Net v2 results folder; subclasses say where (:meth:`folder`) and which organs."""

    prompt_kind = PromptKind.NONE
    tier = Tier.USER_CODE
    #: ``None``: every ``fold_*`` with a checkpoint (nnU-Net's auto-detection, without fold_all).
    folds: ClassVar[tuple[int | str, ...] | None] = None
    checkpoint_name: ClassVar[str] = "checkpoint_final.pth"
    #: nnUNetPredictor's defaults.
    tile_step_size: ClassVar[float] = 0.5
    use_gaussian: ClassVar[bool] = True
    use_mirroring: ClassVar[bool] = True
    #: Why a setting departs from nnU-Net's default (recorded with every result).
    settings_reason: ClassVar[str] = ""

    def __init__(self) -> None:
        self.predictor: Any = None
        self.device = "cpu"
        self._files: list[Path] = []
        self._settings: dict[str, object] = {}

    def folder(self) -> Path:
        raise NotImplementedError

    def _checkpoints(self, folder: Path) -> list[tuple[str, Path]]:
        if self.folds is not None:
            return [(str(f), folder / f"fold_{f}" / self.checkpoint_name) for f in self.folds]
        found = sorted(p for p in folder.glob(f"fold_*/{self.checkpoint_name}")
                       if p.parent.name != "fold_all")
        return [(p.parent.name.removeprefix("fold_"), p) for p in found]

    def check_available(self, device: str) -> None:
        require_packages(self.name, "nnunetv2", "dynamic_network_architectures")
        torch_device(device)
        folder = self.folder()
        missing = [str(folder / n) for n in ("dataset.json", "plans.json")
                   if not (folder / n).is_file()]
        checkpoints = self._checkpoints(folder)
        missing += [str(p) for _, p in checkpoints if not p.is_file()]
        if missing or not checkpoints:
            raise ModelUnavailable(
                f"{self.name} needs an nnU-Net results folder at {folder} (dataset.json,"
                f" plans.json, fold_*/{self.checkpoint_name}); missing: "
                f"{', '.join(missing) or 'fold_*/' + self.checkpoint_name}"
            )

    def load(self, device: str) -> None:
        import inspect

        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        from nnunetv2.utilities.label_handling.label_handling import (
            determine_num_input_channels,
        )
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        self.check_available(device)
        folder = self.folder()
        dataset_json = json.loads((folder / "dataset.json").read_text())
        plans = json.loads((folder / "plans.json").read_text())
        checkpoints = self._checkpoints(folder)
        parameters, first = [], None
        for _, path in checkpoints:
            checkpoint = load_checkpoint_safely(path)
            first = first or checkpoint
            parameters.append(checkpoint["network_weights"])
        assert first is not None
        trainer_name = str(first["trainer_name"])
        configuration = str(first["init_args"]["configuration"])
        mirror_axes = first.get("inference_allowed_mirroring_axes")
        plans_manager = PlansManager(plans)
        configuration_manager = plans_manager.get_configuration(configuration)
        trainer_class = resolve_trainer_class(trainer_name, folder)
        n_in = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
        n_out = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
        if n_in != 1:
            raise ModelUnavailable(f"{folder} takes {n_in} input channels; the audit gives one scan")
        build = trainer_class.build_network_architecture
        if "plans_manager" in inspect.signature(build).parameters:
            network = build(plans_manager, configuration_manager, n_in, n_out,
                            enable_deep_supervision=False)
        else:  # the older signature, as nnU-Net's loader still accepts
            network = build(configuration_manager.network_arch_class_name,
                            configuration_manager.network_arch_init_kwargs,
                            configuration_manager.network_arch_init_kwargs_req_import,
                            n_in, n_out, enable_deep_supervision=False)
        network.load_state_dict(parameters[0])
        target = torch_device(device)
        on_device = target.type == "cuda"
        predictor = nnUNetPredictor(
            tile_step_size=self.tile_step_size, use_gaussian=self.use_gaussian,
            use_mirroring=self.use_mirroring, perform_everything_on_device=on_device,
            device=target, verbose=False, verbose_preprocessing=False, allow_tqdm=False,
        )
        predictor.manual_initialization(network, plans_manager, configuration_manager, parameters,
                                        dataset_json, trainer_name,
                                        tuple(mirror_axes) if mirror_axes is not None else None)
        self.predictor, self.device = predictor, device
        self._files = [folder / "dataset.json", folder / "plans.json", *(p for _, p in checkpoints)]
        self._reader = str(plans.get("image_reader_writer", "SimpleITKIO"))
        self._settings = {
            "folder": str(folder),
            "configuration": configuration,
            "trainer": trainer_name,
            "folds": [f for f, _ in checkpoints],
            "patch_size": list(configuration_manager.patch_size),
            "spacing": list(configuration_manager.spacing),
            "normalization": list(configuration_manager.normalization_schemes),
            "channel_names": dict(dataset_json.get("channel_names", {})),
            "image_reader_writer": self._reader,
            "tile_step_size": self.tile_step_size,
            "use_gaussian": self.use_gaussian,
            "use_mirroring": self.use_mirroring,
            "mirror_axes": list(mirror_axes) if (mirror_axes is not None and self.use_mirroring)
            else None,
            "perform_everything_on_device": on_device,
            "postprocessing": "none (nnU-Net's predict applies none; its postprocessing.pkl comes"
                              " from find_best_configuration over 5 folds)",
        }
        if self.settings_reason:
            self._settings["reason"] = self.settings_reason

    def weights_id(self) -> str:
        return combined_hash(self._files) if self._files else "none"

    def inference_settings(self) -> dict[str, object]:
        return dict(self._settings)

    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        if self.predictor is None:
            raise RuntimeError(f"{self.name}: call load() before predict()")
        if self._reader in ("SimpleITKIO", "NibabelIO"):
            # nibabel (x, y, z) -> nnU-Net's SimpleITK order (z, y, x), array and spacing
            data = np.ascontiguousarray(image.array.astype(np.float32).transpose(2, 1, 0)[None])
            properties = {"spacing": [float(s) for s in image.spacing[::-1]]}
            segmentation = self.predictor.predict_single_npy_array(data, properties, None, None,
                                                                   False)
            labels = np.asarray(segmentation).transpose(2, 1, 0)
        else:
            labels = self._predict_through_reader(image)
        if labels.shape != image.shape:
            raise RuntimeError(f"{self.name}: nnU-Net returned shape {labels.shape} for an image "
                               f"of shape {image.shape}")
        return np.ascontiguousarray(labels, dtype=np.int16)

    def _predict_through_reader(self, image: Volume) -> np.ndarray:
        from nnunetv2.imageio.reader_writer_registry import recursive_find_reader_writer_by_name

        io = recursive_find_reader_writer_by_name(self._reader)()
        with tempfile.TemporaryDirectory(prefix="umd-nnunet-") as tmp:
            source = save_volume(image, Path(tmp) / "case_0000.nii.gz")
            data, properties = io.read_images([str(source)])
            segmentation = self.predictor.predict_single_npy_array(data, properties, None, None,
                                                                   False)
            io.write_seg(segmentation, str(Path(tmp) / "seg.nii.gz"), properties)
            return load_volume(Path(tmp) / "seg.nii.gz").array


def _read_dataset_json(folder: Path) -> dict[str, Any]:
    path = folder / "dataset.json"
    return json.loads(path.read_text()) if path.is_file() else {}


class BuiltinNNUNet(NNUNetModel):
    """One of the four arm baselines trained here (``models/weights/<name>/``)."""

    tier = Tier.TRAINED_HERE
    #: Mirroring is nnU-Net's default; off for the built-ins: 8 passes per tile (3 axes) made the
    #: default CPU audit too slow; its effect on these models is measured in the test module.
    use_mirroring = False
    settings_reason = ("built-in CPU baseline: test-time mirroring off (8x the network passes"
                       " on 2 CPU cores); tile_step_size and gaussian as nnU-Net's defaults")

    def folder(self) -> Path:
        return WEIGHTS_DIR / self.name


def _builtin(class_name: str, name: str, arm: str) -> type[BuiltinNNUNet]:
    dataset_json = _read_dataset_json(WEIGHTS_DIR / name)
    ids = label_ids_from_dataset_json(dataset_json) if dataset_json else {}
    attributes = {
        "__module__": __name__,
        "__qualname__": class_name,
        "__doc__": f"nnU-Net v2 trained here on the {arm} arm (``models/weights/{name}/``).",
        "name": name,
        "modalities_claimed": (arm,),
        "organs": tuple(o for o in CANONICAL_ORGANS if o in ids) or CANONICAL_ORGANS,
        "label_ids": ids or {o: i + 1 for i, o in enumerate(CANONICAL_ORGANS)},
    }
    return register_model(type(class_name, (BuiltinNNUNet,), attributes))


NNUNetCT = _builtin("NNUNetCT", "nnunet-ct", "CT")
NNUNetPETCT = _builtin("NNUNetPETCT", "nnunet-pet_ct", "PET_CT")
NNUNetMRI = _builtin("NNUNetMRI", "nnunet-mri", "MRI")
NNUNetPETMRI = _builtin("NNUNetPETMRI", "nnunet-pet_mri", "PET_MRI")


def nnunet_model_class(
    name: str, folder: str | Path | None = None, arms: tuple[str, ...] = MODALITIES, **settings: Any
) -> type[NNUNetModel]:
    """A model class over an official nnU-Net results folder (default ``<weights>/<name>/``).

    Organs and label values come from its ``dataset.json``; ``settings`` override class
    attributes (``folds``, ``tile_step_size``, ``use_mirroring``, ...). Use it from a module
    given to ``--umd-model``: ``MyNNUNet = nnunet_model_class("nnunet-totalseg")``.
    """
    from umdbench.models.base import weights_root

    def where() -> Path:
        if folder is not None:
            return Path(folder).expanduser()
        root = weights_root()
        if root is None:
            raise ModelUnavailable(f"{name} needs its nnU-Net results folder at <weights dir>/"
                                   f"{name}/: pass --umd-weights DIR or set UMD_WEIGHTS")
        return root / name

    try:
        ids = label_ids_from_dataset_json(_read_dataset_json(where()))
    except ModelUnavailable:
        ids = {}
    attributes = {
        "name": name,
        "modalities_claimed": tuple(arms),
        "organs": tuple(ids),
        "label_ids": ids,
        "literature": {},
        "folder": lambda self: where(),
        **settings,
    }
    class_name = "NNUNet_" + re.sub(r"\W", "_", name)
    return type(class_name, (NNUNetModel,), attributes)
