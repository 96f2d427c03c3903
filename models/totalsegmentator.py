"""TotalSegmentator (Wasserthal et al. 2023; MRI: D'Antonoli et al. 2025): the package's own call.

Everything between the scan and the label map is the installed ``TotalSegmentator`` package's
code: one call of ``totalsegmentator.python_api.totalsegmentator(nifti, None, ...)`` per scan,
with the scan as an in-memory ``nibabel.Nifti1Image`` (the voxels and the affine of the
:class:`~umdbench.volume.Volume`) and ``output=None``, so the package returns its multilabel
``Nifti1Image`` instead of writing files. Upstream does all of it: reorientation to the closest
canonical orientation, resampling to the task's spacing (``change_spacing``, order 1), nnU-Net
v2 prediction (``nnUNetPredictor``, ``tile_step_size=0.8`` for the total tasks, no TTA, fold 0),
for the 1.5 mm tasks the merge of the part models into one label map, nearest-neighbour
resampling back, undoing the reorientation. The returned labels (TotalSegmentator's
``class_map[task]``) are mapped onto this suite's canonical organs (:data:`CANONICAL_LABEL_IDS`
values; ``lung`` is the union of the five lobes in ``total`` and of ``lung_left``/``lung_right``
in ``total_mr``); every other class is background.

Models: ``totalsegmentator`` (task ``total``, CT claimed) and ``totalsegmentator-mr`` (task
``total_mr``, MRI claimed). Settings passed, the CLI's defaults otherwise: ``ml=True``,
``quiet=True``, ``nr_thr_resamp=1``, ``nr_thr_saving=1`` (one export worker instead of six:
the output is one image, the voxels do not change), ``device`` from ``load`` (``cuda[:N]`` ->
``gpu[:N]``). Resolution: on CPU the ``--fast`` models (3 mm: ``total`` = Dataset297,
``total_mr`` = Dataset852), which the package itself recommends on CPU; on CUDA the default
1.5 mm models (``total`` = Dataset291-295, five part models; ``total_mr`` = Dataset850-851).
``UMD_TOTALSEG_FAST=1`` / ``0`` (or ``fast=``) overrides; ``inference_settings()`` records what
ran, ``weights_id()`` hashes the checkpoints that ran. Both stay in the default matrix (without
weights they skip naming the folder; with them they run, about a minute per scan on 2 CPU
cores with ``--fast``).

Weights: ``<weights dir>/totalsegmentator/`` is the package's ``TOTALSEG_HOME_DIR``, laid out
exactly as the package lays out its downloads: ``nnunet/results/<DatasetNNN_...>/
<trainer>__nnUNetPlans__3d_fullres/{plans.json, dataset.json, fold_0/checkpoint_final.pth}``
(folder and trainer names from the installed package's ``map_tasks_config``; see
:func:`expected_model_folders`). Nothing is ever downloaded:

- :meth:`check_available` raises :class:`ModelUnavailable` naming every missing folder before
  the package is called;
- during the call the package's ``download_pretrained_weights`` (which downloads a missing
  folder, and deletes folders of older releases that it finds) is replaced by a check that
  raises, and its two download functions in ``totalsegmentator.libs`` raise too;
- usage statistics: the package posts one record per run to stats.totalsegmentator.com unless
  ``config.json`` in ``TOTALSEG_HOME_DIR`` says ``"send_usage_stats": false``. ``load`` writes
  that file so (keeping an existing ``totalseg_id``; ``statistics_disclaimer_shown`` set, so the
  package does not rewrite the file); during the call ``send_usage_stats`` is a no-op and the
  prediction counter, which only feeds those statistics, is not written (concurrent workers
  would race on the file, as the package's own comment notes).

What the package changes in the process, and how it is contained (an nnU-Net adapter may run in
the same worker):

- environment: ``setup_nnunet`` sets ``nnUNet_raw``, ``nnUNet_preprocessed`` and
  ``nnUNet_results`` to its weights folder for good. Around every call this adapter saves and
  restores those three and ``TOTALSEG_HOME_DIR``, ``TOTALSEG_WEIGHTS_PATH`` and
  ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` (removed again when they were unset). nnunetv2 2.8 reads
  the variables when it uses them (``nnunetv2.paths`` holds ``_EnvPath`` objects, left alone);
  older releases copied them into module-level strings at import: such strings, in any loaded
  ``nnunetv2.*`` module, are set for the call and restored after it;
- importing ``totalsegmentator.nnunet`` patches nnunetv2 for good (trainer lookup, and
  ``nnUNetPredictor``'s prediction/export methods replaced by the package's copies with a
  cropped-logits option). The first import here records nnunetv2's attributes before and
  after; the package's versions are installed for each call only, nnunetv2's own are restored
  after it (also the warning filters the import adds). If something imported
  ``totalsegmentator.nnunet`` earlier, that cannot be undone (``inference_settings`` says so);
- torch: the package sets the thread count (``cpu_count()`` on CPU, 1 on CUDA) and restores it
  only when the call succeeds; this adapter restores it in any case.

Checkpoints are read by nnU-Net's ``torch.load(weights_only=False)``; ``weights_only=True`` is
forced around the call (``TORCH_FORCE_WEIGHTS_ONLY_LOAD``, numpy scalars allow-listed), so a
checkpoint holding other pickled objects is refused, never executed; ``load`` tries each
checkpoint so first (memory-mapped), so such a file fails once, at load.

``load`` also looks up the task's trainer class with nnU-Net's own lookup, as the call will:
that lookup imports every trainer module, and where one cannot be imported (seen with this
project's CPU install: PyPI's CUDA torchvision wheel beside the CPU torch breaks
``primus_trainers`` -> ``timm`` -> ``torchvision``) every prediction would fail, so the model
is a skip naming the fix instead.

Literature (the study audited no TotalSegmentator): CT, Wasserthal et al. 2023, mean Dice 0.943
on the test set (TotalSegmentator v1, 104 structures, 1.5 mm model); MRI, Akinci D'Antonoli et
al. 2025, mean Dice 0.839 over 80 structures on the internal MRI test set (55 scans). Neither
figure is per organ nor for the 3 mm ``--fast`` models.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import os
import sys
import types
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from umdbench.models._families import (
    combined_hash,
    torch_device,
    unsafe_checkpoint_message,
    weights_only_refusal,
)
from umdbench.models.base import (
    LiteratureClaim,
    ModelUnavailable,
    PromptKind,
    SegmentationModel,
    Tier,
    weights_root,
)
from umdbench.organs import CANONICAL_ORGANS
from umdbench.prompts import Prompt
from umdbench.registry import register_model
from umdbench.volume import Volume

__all__ = [
    "CANONICAL_LABEL_IDS",
    "ORGAN_CLASSES",
    "TotalSegmentatorCT",
    "TotalSegmentatorMR",
    "TotalSegmentatorModel",
    "expected_model_folders",
    "offline_config",
    "totalseg_home",
]

INSTALL = "pip install TotalSegmentator (or pip install 'umdbench[totalsegmentator]')"
#: The folder below ``--umd-weights`` that is the package's ``TOTALSEG_HOME_DIR``.
WEIGHTS_FOLDER = "totalsegmentator"
#: Canonical organ -> value in the label map ``predict`` returns (both tasks).
CANONICAL_LABEL_IDS: dict[str, int] = {organ: i + 1 for i, organ in enumerate(CANONICAL_ORGANS)}
_LOBES = (
    "lung_upper_lobe_left",
    "lung_lower_lobe_left",
    "lung_upper_lobe_right",
    "lung_middle_lobe_right",
    "lung_lower_lobe_right",
)
#: Task -> canonical organ -> TotalSegmentator class names (``map_to_binary.class_map[task]``).
ORGAN_CLASSES: dict[str, dict[str, tuple[str, ...]]] = {
    task: {organ: (lung if organ == "lung" else (organ,)) for organ in CANONICAL_ORGANS}
    for task, lung in (("total", _LOBES), ("total_mr", ("lung_left", "lung_right")))
}
_ENV = (
    "nnUNet_raw",
    "nnUNet_preprocessed",
    "nnUNet_results",
    "TOTALSEG_HOME_DIR",
    "TOTALSEG_WEIGHTS_PATH",
    "TORCH_FORCE_WEIGHTS_ONLY_LOAD",
)
_NNUNET_PATH_NAMES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
#: nnunetv2 modules that ``totalsegmentator.nnunet`` patches, imported first so that their own
#: attributes are seen before the package changes them.
_NNUNET_MODULES = (
    "nnunetv2.paths",
    "nnunetv2.utilities.find_class_by_name",
    "nnunetv2.utilities.find_objects",
    "nnunetv2.utilities.file_path_utilities",
    "nnunetv2.utilities.dataset_name_id_conversion",
    "nnunetv2.inference.export_prediction",
    "nnunetv2.inference.predict_from_raw_data",
)
#: (task, fast) -> the ``-t`` of the package's ``totalseg_download_weights`` (named in skips).
_DOWNLOAD_TASK = {
    ("total", False): "total",
    ("total", True): "total_fast",
    ("total_mr", False): "total_mr",
    ("total_mr", True): "total_fast_mr",
}
_MISSING = object()
_HASHES: dict[tuple[str, int, int], str] = {}


# -- where the weights are ------------------------------------------------------------------
def totalseg_home() -> Path:
    """``<weights dir>/totalsegmentator`` (the package's ``TOTALSEG_HOME_DIR``), or a skip."""
    root = weights_root()
    if root is None:
        raise ModelUnavailable(
            f"TotalSegmentator needs its weights folder at <weights dir>/{WEIGHTS_FOLDER}/"
            " (the package's TOTALSEG_HOME_DIR: nnunet/results/Dataset...): pass --umd-weights"
            " DIR or set UMD_WEIGHTS; nothing is downloaded"
        )
    return root / WEIGHTS_FOLDER


def _task_config(task: str, fast: bool) -> dict[str, Any]:
    """The package's own task table (``map_tasks_config``), resolved as ``get_task_config``."""
    from totalsegmentator.map_tasks_config import DEFAULT_CONFIG, TASK_CONFIGS

    config = dict(DEFAULT_CONFIG)
    config["plans"] = "nnUNetPlans"  # python_api.totalsegmentator's default ``plans``
    config.update(TASK_CONFIGS[task]["sub_modes"]["fast" if fast else "default"])
    return config


def expected_model_folders(task: str, fast: bool, home: Path) -> list[Path]:
    """The nnU-Net model folders the package reads for ``task``, below ``home``.

    ``home/nnunet/results/<foldername>/<trainer>__<plans>__<model>``, one per dataset id
    (``nnunet.nnUNetv2_predict`` -> ``get_output_folder``), each holding ``plans.json``,
    ``dataset.json`` and ``fold_<f>/checkpoint_final.pth``.
    """
    from totalsegmentator.map_tasks_config import TASK_ID_WEIGHTS_CONFIGS

    config = _task_config(task, fast)
    ids = config["task_id"] if isinstance(config["task_id"], list) else [config["task_id"]]
    folders = []
    for task_id in ids:
        info = TASK_ID_WEIGHTS_CONFIGS[task_id]
        name = Path(info.get("rel_path") or "") / info["foldername"]
        run = f"{config['trainer']}__{config['plans']}__{config['model']}"
        folders.append(home / "nnunet" / "results" / name / run)
    return folders


def _model_files(folder: Path, folds: list[int]) -> list[Path]:
    return [
        *(folder / f"fold_{fold}" / "checkpoint_final.pth" for fold in folds),
        folder / "plans.json",
        folder / "dataset.json",
    ]


# -- usage statistics off -------------------------------------------------------------------
def offline_config(home: Path) -> dict[str, Any]:
    """Write ``home/config.json`` with usage statistics off (an existing file is kept otherwise).

    The package reads this file before every run (``config.setup_totalseg``) and sends usage
    statistics when ``send_usage_stats`` is true, which is what it writes when the file is
    missing. Written atomically (a temporary file, then ``os.replace``).
    """
    path = home / "config.json"
    config: dict[str, Any] = {}
    if path.is_file():
        with contextlib.suppress(ValueError, OSError):
            loaded = json.loads(path.read_text())
            config = loaded if isinstance(loaded, dict) else {}
    wanted = {"send_usage_stats": False, "statistics_disclaimer_shown": True}
    if all(config.get(key) == value for key, value in wanted.items()) and "totalseg_id" in config:
        return config
    config = {"totalseg_id": "totalseg_umdbench", "prediction_counter": 0, **config, **wanted}
    try:
        home.mkdir(parents=True, exist_ok=True)
        temporary = home / f".config.json.{os.getpid()}.tmp"
        temporary.write_text(json.dumps(config, indent=4))
        os.replace(temporary, path)
    except OSError as error:
        raise ModelUnavailable(
            f"TotalSegmentator: cannot write {path} with usage statistics off ({error}): make"
            ' the folder writable, or write {"totalseg_id": "totalseg_umdbench",'
            ' "send_usage_stats": false, "statistics_disclaimer_shown": true,'
            ' "prediction_counter": 0} there yourself'
        ) from error
    return config


# -- what the package changes in the process ------------------------------------------------
class _Patches:
    """nnunetv2 attributes ``totalsegmentator.nnunet`` replaces on import: (owner, name, own, its)."""

    swaps: ClassVar[list[tuple[Any, str, Any, Any]] | None] = None
    filters: ClassVar[list[Any]] = []
    restorable: ClassVar[bool] = True


def _nnunet_attributes() -> dict[tuple[int, str], tuple[Any, str, Any]]:
    """Every non-dunder, non-module attribute of loaded nnunetv2 modules and their classes."""
    found: dict[tuple[int, str], tuple[Any, str, Any]] = {}
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] != "nnunetv2":
            continue
        owners: list[Any] = [module]
        owners += [
            value
            for value in list(vars(module).values())
            if isinstance(value, type) and getattr(value, "__module__", None) == name
        ]
        for owner in owners:
            for attribute, value in list(vars(owner).items()):
                if attribute.startswith("__") or isinstance(value, types.ModuleType):
                    continue
                found[(id(owner), attribute)] = (owner, attribute, value)
    return found


def _set(owner: Any, attribute: str, value: Any) -> None:
    if value is _MISSING:
        if attribute in vars(owner):
            delattr(owner, attribute)
    else:
        setattr(owner, attribute, value)


def _warning_filters() -> list[Any]:
    """``warnings.filters``, the list itself (typeshed declares a read-only sequence)."""
    filters: list[Any] = warnings.filters  # type: ignore[assignment]
    return filters


def _import_package() -> tuple[Any, Any, Any]:
    """``python_api``, ``libs`` and ``nnunet`` of the package; nnunetv2 left as it was."""
    if _Patches.swaps is None:
        _Patches.restorable = "totalsegmentator.nnunet" not in sys.modules
        for module in _NNUNET_MODULES:
            with contextlib.suppress(ImportError):
                importlib.import_module(module)
        before = _nnunet_attributes()
        owners = {id(owner) for owner, _, _ in before.values()} | {
            id(module) for name, module in sys.modules.items() if name.split(".")[0] == "nnunetv2"
        }
        filters = list(warnings.filters)
        with contextlib.redirect_stdout(io.StringIO()):
            importlib.import_module("totalsegmentator.python_api")
            importlib.import_module("totalsegmentator.nnunet")
        swaps = []
        for key, (owner, attribute, value) in _nnunet_attributes().items():
            old = before.get(key)
            if old is None and id(owner) not in owners:
                continue  # a module or class first loaded by the package: nothing to restore
            own = _MISSING if old is None else old[2]
            if own is not value:
                swaps.append((owner, attribute, own, value))
        _Patches.filters = [f for f in warnings.filters if f not in filters]
        _warning_filters()[:] = filters
        for owner, attribute, own, _ in swaps:
            _set(owner, attribute, own)
        _Patches.swaps = swaps
    return (
        sys.modules["totalsegmentator.python_api"],
        sys.modules["totalsegmentator.libs"],
        sys.modules["totalsegmentator.nnunet"],
    )


def _safe_load_globals() -> list[Any]:
    """numpy scalars that nnU-Net training checkpoints hold (logged metrics), nothing else."""
    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 / numpy 1
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25 pickles dtypes by their class
    classes = ("Float64DType", "Float32DType", "Int64DType")
    found = [getattr(dtypes, name) for name in classes if hasattr(dtypes, name)]
    return [core.multiarray.scalar, np.dtype, *found]


class _NoDownload(ModelUnavailable):
    """Raised where the package would download weights."""


def _refuse(*args: Any, **kwargs: Any) -> None:
    raise _NoDownload(
        "TotalSegmentator tried to download weights; umdbench never downloads: put the model"
        " folders below <weights dir>/totalsegmentator/nnunet/results/ yourself"
    )


def _no_usage_stats(*args: Any, **kwargs: Any) -> None:
    """Usage statistics are off (config.json); nothing is sent."""


@contextlib.contextmanager
def _package_scope(home: Path, results: Path) -> Iterator[Any]:
    """Run the package with its environment and patches, and leave the process as it was."""
    import torch

    python_api, libs, _ = _import_package()
    from totalsegmentator.map_tasks_config import TASK_ID_WEIGHTS_CONFIGS

    def check_weights(task_id: Any) -> None:
        info = TASK_ID_WEIGHTS_CONFIGS.get(task_id, {})
        folder = results / (info.get("rel_path") or "") / str(info.get("foldername", task_id))
        if not folder.is_dir():
            raise _NoDownload(
                f"TotalSegmentator weights not found: expected {folder} (the package would"
                " download it; umdbench never downloads: copy the folder there)"
            )

    saved_env = {name: os.environ.get(name) for name in _ENV}
    new_paths = {name: str(results) for name in _NNUNET_PATH_NAMES}
    legacy = [
        (module, name, vars(module)[name])
        for key, module in list(sys.modules.items())
        if module is not None and key.split(".")[0] == "nnunetv2"
        for name in _NNUNET_PATH_NAMES
        if name in vars(module)
        and (vars(module)[name] is None or isinstance(vars(module)[name], str))
    ]
    guards = [
        (python_api, "download_pretrained_weights", check_weights),
        (python_api, "send_usage_stats", _no_usage_stats),
        (python_api, "increase_prediction_counter", _read_config),
        (libs, "download_pretrained_weights", check_weights),
        (libs, "download_url_and_unpack", _refuse),
        (libs, "download_model_with_license_and_unpack", _refuse),
    ]
    originals = [(owner, name, vars(owner).get(name, _MISSING)) for owner, name, _ in guards]
    threads = torch.get_num_threads()
    try:
        os.environ.update(new_paths)
        os.environ["TOTALSEG_HOME_DIR"] = str(home)
        os.environ["TOTALSEG_WEIGHTS_PATH"] = str(results)
        os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
        for module, name, _ in legacy:
            setattr(module, name, new_paths[name])
        for owner, name, guard in guards:
            setattr(owner, name, guard)
        for owner, attribute, _, its in _Patches.swaps or []:
            _set(owner, attribute, its)
        with warnings.catch_warnings():
            _warning_filters()[:0] = _Patches.filters
            with torch.serialization.safe_globals(_safe_load_globals()):
                yield python_api
    finally:
        for owner, attribute, own, _ in _Patches.swaps or []:
            _set(owner, attribute, own)
        for owner, name, original in originals:
            _set(owner, name, original)
        for module, name, path in legacy:
            setattr(module, name, path)
        for name, saved in saved_env.items():
            if saved is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = saved
        torch.set_num_threads(threads)


def _read_config() -> dict[str, Any] | None:
    """The package's ``get_config`` without the counter increment (nothing is sent)."""
    from totalsegmentator.config import get_config

    config: dict[str, Any] | None = get_config()
    return config


def _hash(paths: list[Path]) -> str:
    """``combined_hash`` of the checkpoint files, computed once per file version (GBs)."""
    stats = [p.stat() for p in paths]
    key = ("|".join(str(p) for p in paths), sum(s.st_size for s in stats),
           max(s.st_mtime_ns for s in stats))  # fmt: skip
    if key not in _HASHES:
        _HASHES[key] = combined_hash(paths)
    return _HASHES[key]


# -- the models -----------------------------------------------------------------------------
class TotalSegmentatorModel(SegmentationModel):
    """One TotalSegmentator task through ``python_api.totalsegmentator`` (module docstring)."""

    task: ClassVar[str] = "total"
    prompt_kind = PromptKind.NONE
    organs = CANONICAL_ORGANS
    tier = Tier.RANDOM_WEIGHTS
    label_ids: ClassVar[dict[str, int]] = CANONICAL_LABEL_IDS
    #: In the default matrix: an organ model like VISTA3D (unlike HD-BET's brain extraction),
    #: whose skip without weights tells the user where they go.
    synthetic_audit: ClassVar[bool] = True

    def __init__(self, fast: bool | None = None) -> None:
        env = os.environ.get("UMD_TOTALSEG_FAST") or None
        if fast is None and env is not None:
            if env not in ("0", "1"):
                raise ValueError(f"{self.name}: UMD_TOTALSEG_FAST must be 0 or 1, got {env!r}")
            fast = env == "1"
        self._fast = fast
        self._device: str | None = None
        self._device_arg: str | None = None
        self._home: Path | None = None
        self._lut: np.ndarray | None = None

    # -- settings ---------------------------------------------------------------------------
    def fast_for(self, device: str | None) -> bool:
        """``--fast`` (3 mm) on CPU, the 1.5 mm models on CUDA, unless set (module docstring)."""
        if self._fast is not None:
            return self._fast
        return not str(device or "cpu").startswith("cuda")

    @property
    def fast(self) -> bool:
        return self.fast_for(self._device)

    def _call_arguments(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "fast": self.fast,
            "ml": True,
            "quiet": True,
            "nr_thr_resamp": 1,
            "nr_thr_saving": 1,
            "device": self._device_arg or "cpu",
        }

    def inference_settings(self) -> dict[str, object]:
        from importlib.metadata import PackageNotFoundError, version

        settings: dict[str, object] = {
            "entry_point": "totalsegmentator.python_api.totalsegmentator(nifti, None, ...)",
            **self._call_arguments(),
        }
        try:
            settings["package"] = f"TotalSegmentator {version('TotalSegmentator')}"
        except PackageNotFoundError:
            return {**settings, "package": None}
        config = _task_config(self.task, self.fast)
        settings.update(
            {
                "task_ids": config["task_id"],
                "trainer": config["trainer"],
                "resample_mm": config["resample"],
                "folds": config["folds"],
                "tile_step_size": 0.8,  # the package's choice for the total tasks
                "tta": False,
                "usage_statistics": "off (config.json send_usage_stats=false); not sent, not"
                " counted",
                "nnunetv2_patches": "the package's, during the call only"
                if _Patches.restorable
                else "left in place: totalsegmentator.nnunet was imported before this adapter",
                "postprocessing": "none beyond the package's; classes mapped to canonical organs",
            }
        )
        return settings

    # -- contract ---------------------------------------------------------------------------
    def check_available(self, device: str) -> None:
        for module, distribution in (("totalsegmentator", "TotalSegmentator"),
                                     ("nnunetv2", "nnunetv2"), ("nibabel", "nibabel")):  # fmt: skip
            if importlib.util.find_spec(module) is None:
                raise ModelUnavailable(
                    f"{self.name} needs the Python package {module!r} ({distribution}): {INSTALL}"
                )
        torch_device(device)
        home = totalseg_home()
        fast = self.fast_for(device)
        config = _task_config(self.task, fast)
        missing = [
            str(path)
            for folder in expected_model_folders(self.task, fast, home)
            for path in _model_files(folder, config["folds"])
            if not path.is_file()
        ]
        if missing:
            mode = "--fast, 3 mm" if fast else "1.5 mm"
            other = "0" if fast else "1"
            raise ModelUnavailable(
                f"{self.name} (task {self.task}, {mode}) weights not found: expected"
                f" {', '.join(missing)}. Copy the model folders as TotalSegmentator lays out its"
                f" downloads (TOTALSEG_HOME_DIR = {home}; e.g. run `totalseg_download_weights"
                f" -t {_DOWNLOAD_TASK[self.task, fast]}` elsewhere and copy"
                " ~/.totalsegmentator/nnunet), or set"
                f" UMD_TOTALSEG_FAST={other} for the other resolution; nothing is downloaded"
            )

    def load(self, device: str) -> None:
        self.check_available(device)
        target = torch_device(device)
        self._device = str(target)
        if target.type == "cuda":
            import torch

            index = target.index if target.index is not None else torch.cuda.current_device()
            self._device_arg = f"gpu:{index}"
        else:
            self._device_arg = target.type  # cpu or mps, as the package names them
        home = totalseg_home()
        self._check_checkpoints(home)
        offline_config(home)
        self._check_trainer(home)
        from totalsegmentator.map_to_binary import class_map

        names = {name: value for value, name in class_map[self.task].items()}
        lut = np.zeros(max(class_map[self.task]) + 1, dtype=np.uint8)
        for organ, classes in ORGAN_CLASSES[self.task].items():
            for name in classes:
                if name not in names:
                    raise RuntimeError(
                        f"{self.name}: TotalSegmentator's class_map[{self.task!r}] has no {name!r}"
                    )
                lut[names[name]] = self.label_ids[organ]
        self._home, self._lut = home, lut

    def _check_checkpoints(self, home: Path) -> None:
        """Each checkpoint as the call will read it (``weights_only=True``), memory-mapped."""
        import torch

        folds = _task_config(self.task, self.fast)["folds"]
        for folder in expected_model_folders(self.task, self.fast, home):
            for fold in folds:
                path = folder / f"fold_{fold}" / "checkpoint_final.pth"
                try:
                    with torch.serialization.safe_globals(_safe_load_globals()):
                        torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
                except Exception as error:
                    if not weights_only_refusal(error):
                        raise ValueError(f"cannot read {path} as a checkpoint: {error}") from error
                    keep = ("only network_weights (the state_dict), trainer_name, init_args and"
                            " inference_allowed_mirroring_axes")
                    raise ValueError(unsafe_checkpoint_message(path, error, keep)) from error

    def _check_trainer(self, home: Path) -> None:
        """Find the trainer class as the package's call will (nnU-Net's lookup), or a skip.

        nnU-Net imports every trainer module until it finds the name; an environment where one
        of them cannot be imported (seen: a CUDA torchvision wheel beside a CPU torch, which
        ``timm`` -> ``dynamic_network_architectures`` imports) fails every prediction.
        """
        trainer = _task_config(self.task, self.fast)["trainer"]
        with (
            _package_scope(home, home / "nnunet" / "results"),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            import nnunetv2.inference.predict_from_raw_data as predict

            try:
                found = predict.recursive_find_trainer_class_by_name(trainer)
            except Exception as error:
                hint = ""
                if "torchvision" in str(error):
                    hint = (
                        " (torchvision does not match torch: with a CPU torch install"
                        " torchvision from the same index, e.g. pip install torchvision"
                        " --index-url https://download.pytorch.org/whl/cpu)"
                    )
                raise ModelUnavailable(
                    f"{self.name}: nnU-Net cannot look up the trainer {trainer} the package"
                    f" needs: {type(error).__name__}: {error}{hint}"
                ) from error
        if found is None:
            raise ModelUnavailable(
                f"{self.name}: nnU-Net has no trainer class {trainer} (nnunetv2 too old?):"
                " pip install -U nnunetv2"
            )

    def weights_id(self) -> str:
        if self._home is None:
            return "none"
        folds = _task_config(self.task, self.fast)["folds"]
        paths = [
            path
            for folder in expected_model_folders(self.task, self.fast, self._home)
            for path in _model_files(folder, folds)
        ]
        if not all(path.is_file() for path in paths):
            return "none"
        return _hash(paths)

    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        if self._home is None or self._lut is None:
            raise RuntimeError(f"{self.name}: call load(device) before predict")
        import nibabel as nib

        offline_config(self._home)
        nifti = nib.Nifti1Image(np.asarray(image.array), np.asarray(image.affine, dtype=np.float64))
        results = self._home / "nnunet" / "results"
        log = io.StringIO()
        with _package_scope(self._home, results) as python_api, contextlib.redirect_stdout(log):
            output = python_api.totalsegmentator(nifti, None, **self._call_arguments())
        labels = np.asarray(output.dataobj)  # uint8 from the package; indexes the table as is
        if not np.issubdtype(labels.dtype, np.integer):
            labels = np.rint(labels).astype(np.int64)
        if labels.shape != image.shape:
            raise RuntimeError(
                f"{self.name}: the package returned labels of shape {labels.shape} off the input"
                f" grid {image.shape}"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= len(self._lut)):
            raise RuntimeError(
                f"{self.name}: label {labels.max()} outside class_map[{self.task!r}]"
            )
        return self._lut[labels]


_CT_CITATION = (
    "Wasserthal et al., TotalSegmentator: robust segmentation of 104 anatomic structures in CT"
    " images, Radiol Artif Intell 2023;5(5):e230024 (doi:10.1148/ryai.230024): mean Dice 0.943"
    " on the test set (v1, 104 structures, 1.5 mm; not per organ)"
)
_MR_CITATION = (
    "Akinci D'Antonoli et al., TotalSegmentator MRI: robust sequence-independent segmentation"
    " of multiple anatomic structures in MRI, Radiology 2025;314(2):e241613"
    " (doi:10.1148/radiol.241613): mean Dice 0.839 over 80 structures on the internal MRI test"
    " set (n=55; not per organ)"
)


@register_model
class TotalSegmentatorCT(TotalSegmentatorModel):
    """TotalSegmentator task ``total`` (CT, 117 classes)."""

    name = "totalsegmentator"
    task: ClassVar[str] = "total"
    modalities_claimed = ("CT",)
    literature: ClassVar[Mapping[str, LiteratureClaim]] = {
        "CT": LiteratureClaim(0.943, _CT_CITATION)
    }


@register_model
class TotalSegmentatorMR(TotalSegmentatorModel):
    """TotalSegmentator task ``total_mr`` (MRI, sequence-independent, 50 classes)."""

    name = "totalsegmentator-mr"
    task: ClassVar[str] = "total_mr"
    modalities_claimed = ("MRI",)
    literature: ClassVar[Mapping[str, LiteratureClaim]] = {
        "MRI": LiteratureClaim(0.839, _MR_CITATION)
    }
