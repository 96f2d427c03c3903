"""Any MONAI segmentation bundle as an automatic model: a vendor with a bundle writes no code.

A bundle folder (``configs/inference.json`` or ``.yaml``, ``models/model.pt``) is run the way
its own ``SupervisedEvaluator`` runs it: ``network_def`` with the weights, ``preprocessing``,
``inferer``, then the bundle's own ``postprocessing`` as declared: activation (softmax or
sigmoid), ``Invertd`` back onto the scan grid with the interpolation the bundle chose,
discretisation, and any remap (a ``Lambdad``, or a transform from the bundle's ``scripts``
package such as a ``MergeClassesd``). The scan reaches ``LoadImaged`` as a NIfTI file in a
temporary folder; the postprocessing sees the same dict as under the evaluator (the
preprocessed item, batched and un-batched with MONAI's own collate and ``Decollated``, plus
``pred``).

- Writers in ``postprocessing`` (``SaveImaged``, ``SaveClassificationd``, ``WriteFileMappingd``
  and any transform whose class name starts with ``Save`` or ``Write``) are dropped, not pointed
  at a temporary folder: a writer returns its input unchanged, so what it would write is the
  ``pred`` left in memory, and dropping it keeps files out of the bundle and the working folder
  without a round trip through disk. ``tests/test_models_monai_bundle.py`` checks that this
  equals the file the bundle's own workflow writes.
- The result must lie on the scan grid (the shape of ``image.array``, the same affine), else an
  error names the bundle folder and the config key: a postprocessing without ``Invertd`` after a
  resampling preprocessing is refused, not resampled.
- One output channel is the label map. Several channels (say one sigmoid channel per region and
  no remap in the bundle) need ``channel_labels``, channel index -> label value, painted in the
  order listed, so a later channel wins where two overlap; without it the error says so.
- A bundle without ``postprocessing`` gets umdbench's fallback: argmax over channels (one
  channel: sigmoid > 0.5) and nearest-neighbour resampling back from the affine MONAI tracked.

Where the bundle's ``evaluator`` declares ``amp: true``, the inferer runs under CUDA autocast
(fp16) as the evaluator does; on CPU it runs in float32. ``inference_settings()`` records which
of these ran (the postprocessing transforms, whether an inverse was declared, the writers
dropped, AMP declared and applied). Two ways to declare a bundle model:

- subclass with two attributes (the folder defaults to ``<weights dir>/<name>``)::

      class SpleenCT(MonaiBundleModel):
          name = "spleen-ct"
          label_ids = {"spleen": 1}

  then ``--umd-model mypkg.models:SpleenCT`` or an entry point in the ``umdbench.models`` group;
- or a ``umd_model.json`` beside the bundle's ``configs/`` (``{"name": ..., "label_ids": {...},
  "modalities_claimed": [...], "channel_labels": {"1": 2, "0": 1}}``, the last one optional)
  and ``SpleenCT = bundle_model_class(path)`` in a module.
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from umdbench.models._families import (
    ModelGrid,
    combined_hash,
    load_state_dict,
    require_packages,
    torch_device,
)
from umdbench.models.base import ModelUnavailable, PromptKind, SegmentationModel, Tier, weights_root
from umdbench.organs import check_organ
from umdbench.prompts import Prompt
from umdbench.volume import Volume, save_volume

__all__ = ["BundleError", "MonaiBundleModel", "bundle_model_class"]

_CONFIG_NAMES = ("configs/inference.json", "configs/inference.yaml", "configs/inference.yml")
#: Class-name prefixes of transforms that write files (MONAI's and bundles' own); dropped.
_WRITER_PREFIXES = ("Save", "Write")
#: The key MONAI's evaluators store the network output under; bundles' postprocessing reads it.
_PRED = "pred"
_FALLBACK = (
    "umdbench fallback (the bundle declares no postprocessing): argmax over channels"
    " (one channel: sigmoid > 0.5), nearest-neighbour back to the scan grid"
)


class BundleError(RuntimeError):
    """A bundle that cannot be run as it declares; the message names the folder and config key."""


class MonaiBundleModel(SegmentationModel):
    """Base of bundle adapters: set ``name`` and ``label_ids`` (organ -> output label)."""

    prompt_kind = PromptKind.NONE
    tier = Tier.USER_CODE
    #: The bundle folder: absolute, or relative to the weights folder; empty = ``name``.
    bundle: ClassVar[str] = ""
    weights_path: ClassVar[str] = "models/model.pt"
    #: Multi-channel postprocessing output -> label map: channel index -> label value, painted
    #: in this order (a later channel wins where two overlap). Empty: one channel expected.
    channel_labels: ClassVar[Mapping[int, int]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.label_ids and not cls.organs:
            cls.organs = tuple(check_organ(organ) for organ in cls.label_ids)

    def __init__(self) -> None:
        self._net: Any = None
        self._pre: Any = None
        self._inferer: Any = None
        self._post: Any = None  # the bundle's postprocessing without writers; None: fallback
        self._post_names: list[str] = []
        self._dropped: list[str] = []
        self._where = ""  # "<bundle folder> (<config file>)" for error messages
        self._key = "image"
        self._amp_declared = False
        self._device = torch.device("cpu")

    def bundle_dir(self) -> Path:
        """Where the bundle is; the error says where it was looked for and how to point at it."""
        folder = Path(self.bundle or self.name).expanduser()
        if not folder.is_absolute():
            root = weights_root()
            if root is None:
                raise ModelUnavailable(
                    f"{self.name} needs its MONAI bundle at <weights dir>/{folder}: pass"
                    " --umd-weights DIR or set UMD_WEIGHTS"
                )
            folder = root / folder
        if not folder.is_dir():
            raise ModelUnavailable(f"{self.name}: bundle folder not found: {folder}")
        return folder

    def _config(self, folder: Path) -> Path:
        for name in _CONFIG_NAMES:
            if (folder / name).is_file():
                return folder / name
        raise ModelUnavailable(f"{self.name}: {folder} has no {' or '.join(_CONFIG_NAMES)}")

    def check_available(self, device: str) -> None:
        require_packages(self.name, "monai")
        torch_device(device)
        folder = self.bundle_dir()
        self._config(folder)
        if not (folder / self.weights_path).is_file():
            raise ModelUnavailable(f"{self.name}: weights not found: {folder / self.weights_path}")

    def load(self, device: str) -> None:
        from monai.bundle import ConfigParser

        self.check_available(device)
        folder = self.bundle_dir()
        config = self._config(folder)
        self._where = f"bundle {folder} ({config.relative_to(folder)})"
        _use_bundle_scripts(folder)
        parser = ConfigParser()
        parser.read_config(str(config))
        parser["bundle_root"] = str(folder)
        parser["device"] = f"$torch.device('{device}')"
        self._device = torch_device(device)
        net = self._parsed(parser, "network_def")
        net.load_state_dict(load_state_dict(folder / self.weights_path, "model"), strict=True)
        self._net = net.to(self._device).eval()
        self._pre = self._parsed(parser, "preprocessing")
        self._inferer = self._parsed(parser, "inferer")
        self._key = str(parser.get("image_key", "image"))
        self._amp_declared = _declared_amp(parser)
        self._post, self._dropped = None, []
        if "postprocessing" in parser:  # parsed by the same parser: Invertd gets our _pre
            self._post, self._dropped = _without_writers(self._parsed(parser, "postprocessing"))
        self._post_names = _transform_names(self._post) if self._post is not None else []

    def _parsed(self, parser: Any, key: str) -> Any:
        """``parser[key]`` instantiated; a failure names the bundle and the key."""
        try:
            return parser.get_parsed_content(key)
        except Exception as error:  # MONAI raises many types for a bad config item
            raise BundleError(f"{self.name}: {self._where}: cannot build `{key}`: {error}") from error

    def _run(self, key: str, transform: Any, data: Mapping[str, Any]) -> dict[str, Any]:
        """Apply the bundle's ``key`` transform; a failure names the bundle and the key."""
        try:
            result = transform(dict(data))
        except Exception as error:  # any transform error: say which config item raised it
            raise BundleError(f"{self.name}: {self._where}: `{key}` failed: {error}") from error
        if not isinstance(result, Mapping):
            raise BundleError(
                f"{self.name}: {self._where}: `{key}` must return a dict, got {type(result).__name__}"
            )
        return dict(result)

    def weights_id(self) -> str:
        path = self.bundle_dir() / self.weights_path
        return combined_hash([path]) if path.is_file() else "none"

    def inference_settings(self) -> dict[str, object]:
        """Which postprocessing ran: the bundle's own (and its inverse) or our fallback."""
        if self._net is None:
            return {}
        amp = {"amp_declared": self._amp_declared, "amp": self._amp}
        if self._post is None:
            return {"postprocessing": _FALLBACK, "inverse": False, **amp}
        settings: dict[str, object] = {
            **amp,
            "postprocessing": "bundle",
            "postprocessing_transforms": list(self._post_names),
            "inverse": "Invertd" in self._post_names,
            "writers_dropped": list(self._dropped),
        }
        if self.channel_labels:
            settings["channel_labels"] = {str(k): int(v) for k, v in self.channel_labels.items()}
        return settings

    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        if self._net is None:
            raise RuntimeError(f"{self.name}: call load(device) before predict")
        with tempfile.TemporaryDirectory() as tmp:  # the bundle's LoadImaged reads a file
            path = save_volume(image, Path(tmp) / "image.nii.gz")
            data = self._run("preprocessing", self._pre, {self._key: str(path)})
        batch, output = self._forward(data)
        if self._post is None:
            return self._fallback(output[_PRED], data[self._key], image)
        result = self._run("postprocessing", self._post, {**batch, **output})
        return self._label_map(result[_PRED], image)

    def _forward(self, data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Batch, infer and un-batch as ``SupervisedEvaluator`` does (its ``_iteration``).

        The evaluator's postprocessing sees the collated-then-decollated item updated by the
        output dict (the input it fed the network, and ``pred``); doing the same steps with
        MONAI's own functions gives ``Invertd`` the same metadata here as there.
        """
        from monai.data import list_data_collate
        from monai.transforms import Decollated

        batch = list_data_collate([dict(data)])
        inputs = batch[self._key].to(self._device)
        with torch.no_grad(), torch.autocast("cuda", enabled=self._amp):
            pred = self._inferer(inputs, self._net)
        undo = Decollated(keys=None, detach=True)
        return dict(undo(batch)[0]), dict(undo({self._key: inputs, _PRED: pred})[0])

    @property
    def _amp(self) -> bool:
        """Mixed precision where the bundle's evaluator declares ``amp`` and it can apply (CUDA)."""
        return self._amp_declared and self._device.type == "cuda"

    def _fallback(self, pred: Any, tensor: Any, image: Volume) -> np.ndarray:
        """No postprocessing in the bundle: argmax (or sigmoid > 0.5), nearest back to the scan."""
        logits = torch.as_tensor(pred).float().cpu()
        labels = logits.argmax(0) if logits.shape[0] > 1 else (torch.sigmoid(logits[0]) > 0.5)
        grid = ModelGrid(tensor.as_tensor()[:1].float().cpu(), np.asarray(tensor.affine), image)
        return grid.to_scan(labels.numpy().astype(np.int16))

    def _label_map(self, pred: Any, image: Volume) -> np.ndarray:
        """The postprocessed ``pred`` as an int16 label map, checked to lie on the scan grid."""
        channels = self._on_scan_grid(pred, image)
        values = self._discrete(channels)
        if self.channel_labels:
            return self._paint(values)
        if values.shape[0] != 1:
            raise BundleError(
                f"{self.name}: {self._where}: `postprocessing` ends with {values.shape[0]}"
                " channels, not one label map: declare channel_labels (channel index -> label"
                " value, painted in order) on the class or in umd_model.json"
            )
        return values[0]

    def _on_scan_grid(self, pred: Any, image: Volume) -> np.ndarray:
        """``pred`` as (C, X, Y, Z) numbers, or an error when it is not on the scan grid."""
        affine = getattr(pred, "affine", None)
        array = np.asarray(torch.as_tensor(pred).detach().cpu().float().numpy())
        if array.ndim == 3:  # a remap may return the label map without its channel axis
            array = array[None]
        fix = "its output must end on the scan grid: an `Invertd` of the preprocessing"
        if array.ndim != 4 or array.shape[1:] != image.shape:
            raise BundleError(
                f"{self.name}: {self._where}: `postprocessing` output has shape {array.shape},"
                f" the scan {image.shape}; {fix}"
            )
        if affine is not None:
            affine = np.asarray(torch.as_tensor(affine).detach().cpu(), dtype=np.float64)
        if affine is not None and not np.allclose(affine, image.affine, atol=1e-3):
            raise BundleError(
                f"{self.name}: {self._where}: `postprocessing` output has affine"
                f" {affine.round(3).tolist()}, the scan"
                f" {image.affine.round(3).tolist()}; {fix}"
            )
        return array

    def _discrete(self, channels: np.ndarray) -> np.ndarray:
        """Integer values as int16; fractional ones (probabilities) are an error."""
        rounded = np.rint(channels)
        if not np.allclose(channels, rounded, atol=1e-4):
            raise BundleError(
                f"{self.name}: {self._where}: `postprocessing` output is not a label map"
                " (fractional values): it needs a discretisation such as AsDiscreted"
            )
        return rounded.astype(np.int16)

    def _paint(self, values: np.ndarray) -> np.ndarray:
        """Channels -> one label map by ``channel_labels``, in its order (later wins)."""
        labels = np.zeros(values.shape[1:], dtype=np.int16)
        for channel, label in self.channel_labels.items():
            if not 0 <= int(channel) < values.shape[0]:
                raise BundleError(
                    f"{self.name}: {self._where}: channel_labels names channel {channel}, but"
                    f" `postprocessing` gives {values.shape[0]} channels"
                )
            labels[values[int(channel)] != 0] = int(label)
        return labels


def _declared_amp(parser: Any) -> bool:
    """``evaluator#amp`` of the config (SupervisedEvaluator runs autocast on CUDA with it)."""
    if "evaluator#amp" not in parser:
        return False
    return bool(parser.get_parsed_content("evaluator#amp"))


def _use_bundle_scripts(folder: Path) -> None:
    """Let the bundle import its own ``scripts`` package, as ``ConfigWorkflow.run`` does.

    The folder goes first on ``sys.path``; a ``scripts`` package cached from another folder
    (another bundle loaded in this process) is forgotten so this bundle's one is imported.
    """
    path = str(folder)
    if path in sys.path:
        sys.path.remove(path)
    sys.path.insert(0, path)
    cached = sys.modules.get("scripts")
    if cached is None or not (folder / "scripts").is_dir():
        return
    where = [*getattr(cached, "__path__", []), getattr(cached, "__file__", None) or ""]
    if not any(p and Path(p).resolve().is_relative_to(folder.resolve()) for p in where):
        for name in [n for n in sys.modules if n == "scripts" or n.startswith("scripts.")]:
            del sys.modules[name]


def _is_writer(transform: Any) -> bool:
    return type(transform).__name__.startswith(_WRITER_PREFIXES)


def _without_writers(transform: Any) -> tuple[Any, list[str]]:
    """The postprocessing with every writer removed (nested ``Compose`` too), and their names."""
    from monai.transforms import Compose

    if _is_writer(transform):
        return Compose([]), [type(transform).__name__]
    if type(transform) is not Compose:  # OneOf, RandomOrder... or one plain transform: kept
        return transform, []
    kept, dropped = [], []
    for item in transform.transforms:
        if _is_writer(item):
            dropped.append(type(item).__name__)
            continue
        inner, inner_dropped = _without_writers(item)
        kept.append(inner)
        dropped += inner_dropped
    stripped = copy.copy(transform)  # keeps map_items, lazy, ... of the bundle's Compose
    stripped.transforms = tuple(kept)
    return stripped, dropped


def _transform_names(transform: Any) -> list[str]:
    """Class names of the transforms a (nested) ``Compose`` runs, in order."""
    from monai.transforms import Compose

    if isinstance(transform, Compose):
        return [name for item in transform.transforms for name in _transform_names(item)]
    return [type(transform).__name__]


def _int_mapping(value: Any, key: str, spec_path: Path) -> dict[int, int]:
    """A JSON object of integers (keys are strings in JSON) as an ordered int -> int dict."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{spec_path}: {key} must map channel index to label, got {value!r}")
    try:
        return {int(k): int(v) for k, v in value.items()}
    except (TypeError, ValueError):
        raise ValueError(f"{spec_path}: {key} must hold integers, got {value!r}") from None


def bundle_model_class(folder: str | Path) -> type[MonaiBundleModel]:
    """A model class for the bundle at ``folder``, described by its ``umd_model.json``."""
    folder = Path(folder).expanduser().resolve()
    spec_path = folder / "umd_model.json"
    try:
        spec: Mapping[str, Any] = json.loads(spec_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{spec_path} not found: write {{\"name\": ..., \"label_ids\": {{organ: label}}}}"
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{spec_path} is not valid JSON: {error}") from error
    name, label_ids = spec.get("name"), spec.get("label_ids")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{spec_path}: name must be a non-empty string, got {name!r}")
    if not isinstance(label_ids, Mapping) or not label_ids:
        raise ValueError(f"{spec_path}: label_ids must map organs to labels, got {label_ids!r}")
    attributes = {
        "name": name,
        "bundle": str(folder),
        "label_ids": {str(k): int(v) for k, v in label_ids.items()},
        "modalities_claimed": tuple(spec.get("modalities_claimed", ())),
        "channel_labels": _int_mapping(spec.get("channel_labels", {}), "channel_labels", spec_path),
        "__module__": __name__,
    }
    return type(f"Bundle_{name.replace('-', '_')}", (MonaiBundleModel,), attributes)
