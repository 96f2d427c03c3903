"""VISTA3D (He et al., CVPR 2025) through MONAI's network and the MONAI bundle's checkpoint.

Preprocessing follows the bundle's ``configs/inference.json`` (Project-MONAI/model-zoo,
``models/vista3d``): 1.5 mm (bilinear), the CT window -963.8..1053.7 HU scaled to 0..1 with
clipping, RAS; 128^3 patches, overlap 0.3. Class prompts run MONAI's sliding window with
``class_vector``; point prompts run ``monai.apps.vista3d.inferer.point_based_window_inferer``
with the organ's class as ``prompt_class`` (labels 1/0 = positive/negative). Logits > 0 are the
organ; the mask returns to the scan grid by nearest-neighbour resampling. The bundle applies the
CT window to every image: so does this adapter (the study ran VISTA3D zero-shot on PET and MRI).

Weights: the bundle's ``models/model.pt`` (a state dict, or ``{"model": state_dict}``) copied to
``<weights dir>/vista3d/model.pt``; read with ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from umdbench.models._families import (
    ModelGrid,
    combined_hash,
    load_weights_into,
    require_packages,
    to_model_grid,
    torch_device,
    weights_file,
)
from umdbench.models.base import LiteratureClaim, PromptKind, SegmentationModel, Tier
from umdbench.organs import CANONICAL_ORGANS
from umdbench.prompts import Prompt
from umdbench.registry import register_model
from umdbench.volume import Volume

__all__ = ["VISTA3D_LABELS", "Vista3D"]

#: Canonical organ -> VISTA3D label id (bundle ``docs/labels.json``; kidney_left = "left
#: kidney" 14, kidney_right = "right kidney" 5, urinary_bladder = "bladder" 15).
VISTA3D_LABELS: dict[str, int] = {
    "liver": 1,
    "kidney_left": 14,
    "kidney_right": 5,
    "spleen": 3,
    "heart": 115,
    "aorta": 6,
    "lung": 20,
    "brain": 22,
    "colon": 62,
    "urinary_bladder": 15,
    "pancreas": 4,
    "esophagus": 11,
    "stomach": 12,
}

_UMD = "UMD study digest (Zhang et al., arXiv 2602.07643, 2026), literature column"


@register_model
class Vista3D(SegmentationModel):
    """VISTA3D with class-id and point prompts (binary mask of the prompted organ)."""

    name = "vista3d"
    prompt_kind = PromptKind.POINTS
    organs = CANONICAL_ORGANS
    protocols: ClassVar[tuple[str, ...]] = ("classid", "1click")
    modalities_claimed = ("CT",)
    tier = Tier.RANDOM_WEIGHTS
    literature: ClassVar[dict[str, LiteratureClaim]] = {"CT": LiteratureClaim(0.711, _UMD)}
    label_ids: ClassVar[dict[str, int]] = VISTA3D_LABELS
    weights_name: ClassVar[str] = "model.pt"
    weights_hint: ClassVar[str] = "models/model.pt of the MONAI vista3d bundle"
    #: ``vista3d132(encoder_embed_dim=...)``: 48 is the published network.
    encoder_embed_dim: ClassVar[int] = 48
    spacing: ClassVar[tuple[float, float, float]] = (1.5, 1.5, 1.5)
    patch_size: ClassVar[tuple[int, int, int]] = (128, 128, 128)
    overlap: ClassVar[float] = 0.3
    window: ClassVar[tuple[float, float]] = (-963.8247715525971, 1053.678477684517)

    def __init__(self) -> None:
        self._net: Any = None
        self._device = torch.device("cpu")
        self._path: Path | None = None

    def check_available(self, device: str) -> None:
        require_packages(self.name, "monai", "einops")
        torch_device(device)
        weights_file(self.name, self.weights_name, self.weights_hint)

    def load(self, device: str) -> None:
        from monai.networks.nets import vista3d132

        path = weights_file(self.name, self.weights_name, self.weights_hint)
        net = vista3d132(encoder_embed_dim=self.encoder_embed_dim)
        architecture = f"vista3d132(encoder_embed_dim={self.encoder_embed_dim})"
        load_weights_into(net, path, "model", architecture)
        self._device = torch_device(device)
        self._net, self._path = net.to(self._device).eval(), path

    def weights_id(self) -> str:
        return combined_hash([self._path]) if self._path is not None else "none"

    def model_grid(self, image: Volume) -> ModelGrid:
        """The scan as the network sees it: RAS, 1.5 mm, CT window scaled to 0..1."""
        grid = to_model_grid(image, self.spacing, "RAS")
        low, high = self.window
        scaled = ((grid.tensor - low) / (high - low)).clamp(0.0, 1.0)
        return ModelGrid(scaled, grid.affine, grid.scan)

    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        if self._net is None:
            raise RuntimeError(f"{self.name}: call load(device) before predict")
        if prompt is None:
            raise ValueError(f"{self.name} is promptable: prompt must be a Prompt, got None")
        grid = self.model_grid(image)
        inputs = grid.tensor[None].to(self._device)
        class_id = self._class_id(prompt)
        with torch.no_grad():
            if prompt.points is not None and len(prompt.points) > 0:
                logits = self._points(inputs, grid, prompt, class_id)
            else:
                logits = self._classes(inputs, class_id)
        mask = (logits[0, 0] > 0).cpu().numpy().astype(np.int16)
        return grid.to_scan(mask).astype(np.uint8)

    def _class_id(self, prompt: Prompt) -> int:
        if prompt.class_id is not None:
            return int(prompt.class_id)
        if prompt.organ not in self.label_ids:
            raise ValueError(f"{self.name} has no label id for organ {prompt.organ!r}")
        return int(self.label_ids[prompt.organ])

    def _classes(self, inputs: torch.Tensor, class_id: int) -> torch.Tensor:
        from monai.inferers import sliding_window_inference

        vector = torch.tensor([[class_id]], device=self._device)
        return torch.as_tensor(
            sliding_window_inference(
                inputs,
                self.patch_size,
                1,
                self._net,
                overlap=self.overlap,
                class_vector=vector,
                transpose=True,
            )
        )

    def _points(
        self, inputs: torch.Tensor, grid: ModelGrid, prompt: Prompt, class_id: int
    ) -> torch.Tensor:
        from monai.apps.vista3d.inferer import point_based_window_inferer

        assert prompt.points is not None  # checked by the caller
        coords = np.rint(grid.points_from_scan(prompt.points))
        coords = np.clip(coords, 0, np.asarray(grid.shape) - 1)
        return torch.as_tensor(
            point_based_window_inferer(
                inputs,
                self.patch_size,
                self._net,
                point_coords=torch.as_tensor(coords, dtype=torch.float32)[None].to(self._device),
                point_labels=torch.as_tensor(prompt.point_labels)[None].to(self._device),
                class_vector=None,
                prompt_class=torch.tensor([[class_id]], device=self._device),
                transpose=True,
            )
        )
