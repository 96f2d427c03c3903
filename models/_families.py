"""Shared machinery of the adapters: weights lookup, safe loading, MONAI resampling and back.

An adapter declares *what* (target spacing, orientation, patch size, intensity rule per
modality); this module does *how*, once:

- :func:`weights_file` finds ``weights_root()/<model>/<file>`` or raises
  :class:`ModelUnavailable` naming the expected path and how to provide it;
- :func:`load_state_dict` reads safetensors or ``torch.load(weights_only=True)`` only;
  :func:`unsafe_checkpoint_message` is every adapter's wording for a checkpoint refused there
  (never torch's advice to retry with ``weights_only=False``);
- :func:`to_model_grid` reorients and resamples a scan with MONAI transforms
  (``Orientation``, ``Spacing``) and returns a :class:`ModelGrid` that maps prompts onto the model
  grid and predictions back onto the scan grid (MONAI ``SpatialResample``, nearest neighbour),
  so every adapter shares one tested round trip.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pickle
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from umdbench.models.base import ModelUnavailable, file_sha256, weights_root
from umdbench.prompts import voxel_to_world, world_to_voxel
from umdbench.volume import Volume

__all__ = [
    "ModelGrid",
    "combined_hash",
    "forced_weights_only_load",
    "load_state_dict",
    "load_weights_into",
    "numpy_safe_globals",
    "require_packages",
    "to_model_grid",
    "torch_device",
    "unsafe_checkpoint_message",
    "weights_file",
    "weights_only_refusal",
    "zscore_nonzero",
]


def require_packages(model: str, *packages: str) -> None:
    """Raise :class:`ModelUnavailable` naming the first missing package and the install line."""
    for package in packages:
        if importlib.util.find_spec(package) is None:
            raise ModelUnavailable(
                f"{model} needs the Python package {package!r}: pip install {package}"
            )


def numpy_safe_globals() -> list[Any]:
    """numpy scalars and dtypes that nnU-Net-style training checkpoints hold (logged metrics)."""
    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 / numpy 1
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25 pickles dtypes by their class
    classes = ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType",
               "BoolDType")
    found = [getattr(dtypes, name) for name in classes if hasattr(dtypes, name)]
    return [core.multiarray.scalar, np.dtype, *found]


@contextlib.contextmanager
def forced_weights_only_load() -> Iterator[None]:
    """Force ``torch.load(weights_only=True)`` on a package's own checkpoint read.

    Packages of the nnU-Net family read checkpoints with ``weights_only=False``; under this
    context a checkpoint holding any pickled object beyond tensors and numpy scalars is refused
    (``TORCH_FORCE_WEIGHTS_ONLY_LOAD``), never executed.
    """
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


#: Sentences of torch's refusal that advise the user (retry with ``weights_only=False``, trust
#: the source, file an issue, read the docs); the rest names what was refused.
_TORCH_ADVICE = re.compile(
    r"weights.only|if you trust|trusted source|file an issue|documentation of torch|PyTorch \d"
    r"|can still be loaded|arbitrary code",
    re.IGNORECASE,
)
_STATE_DICT = ("only the tensors: model.state_dict(), with torch.save or"
               " safetensors.torch.save_file")


def weights_only_refusal(error: BaseException) -> bool:
    """Whether ``error`` is ``torch.load(weights_only=True)`` refusing a pickled object."""
    text = str(error)
    return isinstance(error, pickle.UnpicklingError) or any(
        mark in text for mark in ("Weights only load failed", "Unsupported global", "weights_only")
    )


def _refusal_detail(error: BaseException) -> str:
    """torch's refusal without its advice: the sentence naming the unsupported global."""
    text = re.sub(r"\x1b\[[0-9;]*m|\(\d\)", " ", str(error))
    chunks = re.split(r"\n|WeightsUnpickler error:", text)
    sentences = [s for c in chunks for s in re.split(r"(?<=[.!?])\s+", " ".join(c.split()))]
    kept = [s for s in sentences if s and not _TORCH_ADVICE.search(s)]
    return " ".join(kept).rstrip(".") or type(error).__name__


def unsafe_checkpoint_message(
    path: Path | str, error: BaseException, keep: str = _STATE_DICT
) -> str:
    """Why a checkpoint was refused and how to fix it, never by loading it unsafely.

    ``keep`` says what the checkpoint should hold instead (an nnU-Net-family adapter names its
    keys).
    """
    detail = _refusal_detail(error)
    message = (
        f"{path} holds objects other than tensors, so torch.load(weights_only=True) refused it"
        f" and it is not loaded ({detail}). Fix: from your own training code, save {keep}"
    )
    found = re.search(r"GLOBAL (\S+) was not an allowed global", detail)  # not a blocked module
    if found is None:
        return message
    name = found.group(1)
    return (f"{message}; or, if you trust {name}, allow it with"
            f" torch.serialization.add_safe_globals([{name}]) in your own adapter")


def weights_file(model: str, filename: str, how: str) -> Path:
    """``weights_root()/<model>/<filename>``, or a skip reason saying where to put which file."""
    root = weights_root()
    expected = f"<weights dir>/{model}/{filename}"
    if root is None:
        raise ModelUnavailable(
            f"{model} needs its weights at {expected}: pass --umd-weights DIR or set UMD_WEIGHTS"
            f" ({how})"
        )
    path = root / model / filename
    if not path.is_file():
        raise ModelUnavailable(f"{model} weights not found: expected {path} ({how})")
    return path


def load_state_dict(path: Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict safely (safetensors, or a torch pickle of tensors only).

    ``key`` picks the sub-dict of a training checkpoint (``model_state_dict``, ``model``); a
    checkpoint without it is taken as the state dict itself.
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # pickle raises many types for unsafe or broken files
        if weights_only_refusal(error):
            raise ValueError(unsafe_checkpoint_message(path, error)) from error
        raise ValueError(f"cannot read {path} as a torch checkpoint: {error}") from error
    if isinstance(checkpoint, Mapping) and key is not None and key in checkpoint:
        checkpoint = checkpoint[key]
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path} must hold a state dict, got {type(checkpoint).__name__}")
    return {str(k).removeprefix("module."): v for k, v in checkpoint.items()}


def load_weights_into(
    net: torch.nn.Module, path: Path, key: str | None, architecture: str
) -> torch.nn.Module:
    """Load a checkpoint strictly; a mismatch names the file and the architecture it missed."""
    try:
        net.load_state_dict(load_state_dict(path, key), strict=True)
    except RuntimeError as error:
        raise ValueError(f"{path} does not fit {architecture}: {error}") from error
    return net


def combined_hash(paths: Sequence[Path]) -> str:
    """One short id for one or more weight files (order matters)."""
    import hashlib

    digests = "".join(file_sha256(str(p), length=64) for p in paths)
    return digests[:16] if len(paths) == 1 else hashlib.sha256(digests.encode()).hexdigest()[:16]


def torch_device(device: str) -> torch.device:
    """``cpu`` / ``cuda`` / ``cuda:N`` as a torch device, refusing CUDA where there is none."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailable(f"device {device!r} asked for, but torch sees no CUDA device")
    return torch.device(device)


def zscore_nonzero(array: torch.Tensor) -> torch.Tensor:
    """Z-normalise with the mean and std of voxels > 0 (torchio ``ZNormalization(x > 0)``)."""
    values = array[array > 0]
    if values.numel() < 2:
        return array - array.mean()
    std = values.std()
    return (array - values.mean()) / (std if std > 0 else 1.0)


#: World axis labels of our affines (RAS+), given explicitly to MONAI's Orientation.
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


@dataclass(frozen=True)
class ModelGrid:
    """A scan resampled onto a model's grid, and the maps between the two grids.

    ``tensor`` is ``(1, X, Y, Z)`` float32 on the model grid whose voxel-to-world affine is
    ``affine`` (RAS+ mm, as the scan's).
    """

    tensor: torch.Tensor
    affine: np.ndarray
    scan: Volume

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.tensor.shape[1:])  # type: ignore[return-value]

    def points_from_scan(self, voxels: np.ndarray) -> np.ndarray:
        """Scan voxel indices -> fractional voxel indices of the model grid (via world mm)."""
        return world_to_voxel(voxel_to_world(voxels, self.scan.affine), self.affine)

    def to_scan(self, labels: np.ndarray | torch.Tensor) -> np.ndarray:
        """A label map on the model grid -> the same labels on the scan grid (nearest)."""
        from monai.data import MetaTensor
        from monai.transforms import SpatialResample

        data = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
        if tuple(data.shape) != self.shape:
            raise ValueError(
                f"labels must have the model grid's shape {self.shape}, got {tuple(data.shape)}"
            )
        source = MetaTensor(data[None], affine=torch.as_tensor(self.affine, dtype=torch.float64))
        resampled = SpatialResample(mode="nearest", padding_mode="zeros", dtype=np.float64)(
            source,
            dst_affine=torch.as_tensor(self.scan.affine, dtype=torch.float64),
            spatial_size=self.scan.shape,
        )
        return np.rint(np.asarray(resampled[0])).astype(np.int16)


def to_model_grid(
    image: Volume,
    spacing: Sequence[float] | None,
    axcodes: str | None = "RAS",
    mode: str = "bilinear",
) -> ModelGrid:
    """Reorient to ``axcodes`` and resample to ``spacing`` mm (either may be None: kept)."""
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    data: Any = MetaTensor(
        torch.as_tensor(np.asarray(image.array, dtype=np.float32))[None],
        affine=torch.as_tensor(image.affine, dtype=torch.float64),
    )
    if axcodes is not None:
        data = Orientation(axcodes=axcodes, labels=_RAS_LABELS)(data)
    if spacing is not None:
        data = Spacing(pixdim=tuple(float(s) for s in spacing), mode=mode)(data)
    affine = np.asarray(data.affine, dtype=np.float64)
    return ModelGrid(torch.as_tensor(data.as_tensor(), dtype=torch.float32), affine, image)
