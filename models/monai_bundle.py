"""Any MONAI segmentation bundle as an automatic model: a vendor with a bundle writes no code.

A bundle folder (``configs/inference.json`` or ``.yaml``, ``models/model.pt``) is run with its
own ``network_def``, ``preprocessing`` and ``inferer``; the output is argmax over channels (one
channel: sigmoid > 0.5) and goes back onto the scan grid by nearest-neighbour resampling from
the affine MONAI tracked through the preprocessing. Two ways to declare one:

- subclass with two attributes (the folder defaults to ``<weights dir>/<name>``)::

      class SpleenCT(MonaiBundleModel):
          name = "spleen-ct"
          label_ids = {"spleen": 1}

  then ``--umd-model mypkg.models:SpleenCT`` or an entry point in the ``umdbench.models`` group;
- or a ``umd_model.json`` beside the bundle's ``configs/`` (``{"name": ..., "label_ids": {...},
  "modalities_claimed": [...]}``) and ``SpleenCT = bundle_model_class(path)`` in a module.
"""

from __future__ import annotations

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

__all__ = ["MonaiBundleModel", "bundle_model_class"]

_CONFIG_NAMES = ("configs/inference.json", "configs/inference.yaml", "configs/inference.yml")


class MonaiBundleModel(SegmentationModel):
    """Base of bundle adapters: set ``name`` and ``label_ids`` (organ -> output label)."""

    prompt_kind = PromptKind.NONE
    tier = Tier.USER_CODE
    #: The bundle folder: absolute, or relative to the weights folder; empty = ``name``.
    bundle: ClassVar[str] = ""
    weights_path: ClassVar[str] = "models/model.pt"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.label_ids and not cls.organs:
            cls.organs = tuple(check_organ(organ) for organ in cls.label_ids)

    def __init__(self) -> None:
        self._net: Any = None
        self._pre: Any = None
        self._inferer: Any = None
        self._key = "image"
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
        if str(folder) not in sys.path:  # bundles import their own ``scripts`` package
            sys.path.insert(0, str(folder))
        parser = ConfigParser()
        parser.read_config(str(self._config(folder)))
        parser["bundle_root"] = str(folder)
        parser["device"] = f"$torch.device('{device}')"
        self._device = torch_device(device)
        net = parser.get_parsed_content("network_def")
        net.load_state_dict(load_state_dict(folder / self.weights_path, "model"), strict=True)
        self._net = net.to(self._device).eval()
        self._pre = parser.get_parsed_content("preprocessing")
        self._inferer = parser.get_parsed_content("inferer")
        self._key = str(parser.get("image_key", "image"))

    def weights_id(self) -> str:
        path = self.bundle_dir() / self.weights_path
        return combined_hash([path]) if path.is_file() else "none"

    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        if self._net is None:
            raise RuntimeError(f"{self.name}: call load(device) before predict")
        with tempfile.TemporaryDirectory() as tmp:  # the bundle's LoadImaged reads a file
            data = self._pre({self._key: str(save_volume(image, Path(tmp) / "image.nii.gz"))})
        tensor = data[self._key]
        with torch.no_grad():
            logits = self._inferer(tensor[None].to(self._device), self._net)
        logits = torch.as_tensor(logits)[0].float().cpu()
        labels = logits.argmax(0) if logits.shape[0] > 1 else (torch.sigmoid(logits[0]) > 0.5)
        grid = ModelGrid(tensor.as_tensor()[:1].float(), np.asarray(tensor.affine), image)
        return grid.to_scan(labels.numpy().astype(np.int16))


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
        "__module__": __name__,
    }
    return type(f"Bundle_{name.replace('-', '_')}", (MonaiBundleModel,), attributes)
