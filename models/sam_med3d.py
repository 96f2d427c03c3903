"""SAM-Med3D, SAM-Med3D-turbo and SegAnyPET through ``medim``'s architecture and local weights.

Evaluation protocol of SAM-Med3D (uni-medical/SAM-Med3D ``medim_infer.py``), followed here:
RAS, 1.5 mm isotropic (bilinear), a 128^3 crop (zero padded) **centred on the ground-truth box**
(an oracle: every prompt and result is flagged ``oracle``), z-normalisation over voxels > 0,
points in crop voxel indices, the previous low-res logits (32^3) fed back as the mask prompt,
logits upsampled trilinearly and thresholded at sigmoid 0.5. The prediction is pasted back into
the resampled volume and mapped onto the scan grid with nearest-neighbour resampling.

Weights: ``<weights dir>/<model name>/<file>``, a checkpoint holding ``model_state_dict`` (the
official layout) or a bare state dict, or ``.safetensors``; read with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from umdbench.models._families import (
    ModelGrid,
    combined_hash,
    load_weights_into,
    require_packages,
    to_model_grid,
    torch_device,
    weights_file,
    zscore_nonzero,
)
from umdbench.models.base import LiteratureClaim, PromptKind, SegmentationModel, Tier
from umdbench.organs import CANONICAL_ORGANS, MODALITIES
from umdbench.prompts import Prompt
from umdbench.registry import register_model
from umdbench.volume import Volume

__all__ = ["Roi", "SamMed3D", "SamMed3DFamily", "SamMed3DTurbo", "SegAnyPET"]

_UMD = "UMD study digest (Zhang et al., arXiv 2602.07643, 2026), literature column"


@dataclass(frozen=True)
class Roi:
    """The model's view of one scan: the crop, where it sits, and the prompt points in it."""

    grid: ModelGrid
    start: np.ndarray  # crop origin on the model grid (may be negative: zero padding)
    crop: torch.Tensor  # (128, 128, 128) raw intensities, before normalisation
    points: np.ndarray  # (N, 3) crop voxel indices of the prompt points inside the crop
    labels: np.ndarray  # (N,) 1 / 0


class SamMed3DFamily(SegmentationModel):
    """SAM-style promptable 3D models; subclasses name their weights file (and architecture)."""

    prompt_kind = PromptKind.POINTS
    organs = CANONICAL_ORGANS
    protocols: ClassVar[tuple[str, ...]] = ("1click", "5clicks")
    tier = Tier.RANDOM_WEIGHTS
    #: The crop is centred on the ground truth: the protocol gives ``roi_center`` (oracle).
    oracle_crop: ClassVar[bool] = True
    weights_name: ClassVar[str] = "sam_med3d.pth"
    weights_hint: ClassVar[str] = "the official checkpoint, e.g. sam_med3d_turbo.pth"
    checkpoint_key: ClassVar[str] = "model_state_dict"
    #: Keyword arguments of ``medim.create_model("SAM-Med3D", ...)``; empty = the published ViT-B.
    architecture: ClassVar[dict[str, Any]] = {}
    spacing: ClassVar[tuple[float, float, float]] = (1.5, 1.5, 1.5)
    crop_size: ClassVar[int] = 128

    def __init__(self) -> None:
        self._net: Any = None
        self._device = torch.device("cpu")
        self._path: Path | None = None

    def check_available(self, device: str) -> None:
        require_packages(self.name, "medim")
        torch_device(device)
        weights_file(self.name, self.weights_name, self.weights_hint)

    def load(self, device: str) -> None:
        import medim

        path = weights_file(self.name, self.weights_name, self.weights_hint)
        with contextlib.redirect_stdout(io.StringIO()):  # medim prints on creation
            net = medim.create_model("SAM-Med3D", pretrained=False, **self.architecture)
        architecture = f"{self.name}'s architecture {self.architecture or 'ViT-B'}"
        load_weights_into(net, path, self.checkpoint_key, architecture)
        self._device = torch_device(device)
        self._net, self._path = net.to(self._device).eval(), path

    def weights_id(self) -> str:
        return combined_hash([self._path]) if self._path is not None else "none"

    def roi(self, image: Volume, prompt: Prompt) -> Roi:
        """Resample, crop around the oracle centre (or the first click) and map the points."""
        if prompt.points is None or len(prompt.points) == 0:
            raise ValueError(f"{self.name} needs point prompts, got protocol {prompt.protocol!r}")
        grid = to_model_grid(image, self.spacing, "RAS")
        center_scan = prompt.roi_center if prompt.roi_center is not None else prompt.points[0]
        center = grid.points_from_scan(np.asarray([center_scan], dtype=float))[0]
        start = np.floor(center + 0.5).astype(int) - self.crop_size // 2
        crop = _crop(grid.tensor[0], start, self.crop_size)
        points = np.rint(grid.points_from_scan(prompt.points)).astype(int) - start
        inside = np.all((points >= 0) & (points < self.crop_size), axis=1)
        labels = np.asarray(prompt.point_labels, dtype=int)
        return Roi(grid, start, crop, points[inside], labels[inside])

    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        if self._net is None:
            raise RuntimeError(f"{self.name}: call load(device) before predict")
        if prompt is None:
            raise ValueError(f"{self.name} is promptable: prompt must be a Prompt, got None")
        state = prompt.state  # one dict per interactive run: embedding and low-res logits
        roi = self.roi(image, prompt)
        if len(roi.points) == 0:  # every click fell outside the crop: nothing to segment
            return np.zeros(image.shape, dtype=np.uint8)
        if "embedding" not in state:
            state["embedding"] = self._encode(roi.crop)
        logits = self._decode(state, roi)
        return _paste(roi, logits).astype(np.uint8)

    @torch.no_grad()
    def _encode(self, crop: torch.Tensor) -> torch.Tensor:
        return self._net.image_encoder(zscore_nonzero(crop)[None, None].to(self._device))

    @torch.no_grad()
    def _decode(self, state: dict[str, Any], roi: Roi) -> torch.Tensor:
        low_size = self.crop_size // 4
        previous = state.get("low_res")
        if previous is None:
            previous = torch.zeros(1, 1, low_size, low_size, low_size, device=self._device)
        coords = torch.as_tensor(roi.points, dtype=torch.float32, device=self._device)[None]
        labels = torch.as_tensor(roi.labels, dtype=torch.int64, device=self._device)[None]
        sparse, dense = self._net.prompt_encoder(
            points=[coords, labels], boxes=None, masks=previous
        )
        low_res, _ = self._net.mask_decoder(
            image_embeddings=state["embedding"],
            image_pe=self._net.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        state["low_res"] = low_res
        size = (self.crop_size,) * 3
        return F.interpolate(low_res, size=size, mode="trilinear", align_corners=False)[0, 0]


def _overlap(start: np.ndarray, size: int, shape: tuple[int, ...]) -> tuple[Any, Any]:
    """Slices of the crop and of the volume that overlap."""
    lo = np.maximum(start, 0)
    hi = np.minimum(start + size, np.asarray(shape))
    inner = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(lo, hi, start, strict=True))
    outer = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    return inner, outer


def _crop(volume: torch.Tensor, start: np.ndarray, size: int) -> torch.Tensor:
    """A ``size``^3 window of ``volume`` from ``start``, zero outside (torchio CropOrPad)."""
    out = torch.zeros((size, size, size), dtype=volume.dtype)
    inner, outer = _overlap(start, size, tuple(volume.shape))
    out[inner] = volume[outer]
    return out


def _paste(roi: Roi, logits: torch.Tensor) -> np.ndarray:
    full = np.zeros(roi.grid.shape, dtype=np.int16)
    inner, outer = _overlap(roi.start, logits.shape[0], roi.grid.shape)
    full[outer] = (torch.sigmoid(logits.float()) > 0.5).cpu().numpy()[inner]
    return roi.grid.to_scan(full)


@register_model
class SamMed3D(SamMed3DFamily):
    """SAM-Med3D (Wang et al. 2023), the original checkpoint."""

    name = "sam-med3d"
    modalities_claimed = ("CT", "MRI")
    weights_name = "sam_med3d.pth"
    weights_hint = "SAM-Med3D's sam_med3d.pth from its release page"


@register_model
class SamMed3DTurbo(SamMed3DFamily):
    """SAM-Med3D-turbo, fine-tuned on 44 datasets; the model the UMD study ran."""

    name = "sam-med3d-turbo"
    modalities_claimed = ("CT", "MRI")
    weights_name = "sam_med3d_turbo.pth"
    weights_hint = "SAM-Med3D's sam_med3d_turbo.pth from its release page"
    literature: ClassVar[dict[str, LiteratureClaim]] = {
        "CT": LiteratureClaim(0.790, _UMD),
        "MRI": LiteratureClaim(0.754, _UMD),
    }


@register_model
class SegAnyPET(SamMed3DFamily):
    """SegAnyPET (Zhang et al., ICCV 2025): SAM-Med3D's architecture trained on 5k PET scans."""

    name = "seganypet"
    modalities_claimed = tuple(m for m in MODALITIES if m.startswith("PET"))
    weights_name = "seganypet.pth"
    weights_hint = "the SegAnyPET checkpoint from its authors' release (SAM-Med3D layout)"
