"""Two small MONAI 3D UNets trained here on the synthetic cohort: the study's finding in miniature.

``unet-ct`` saw only CT during training, with a CT intensity window; ``unet-multimodal`` saw all
four arms, z-normalised. Both were trained by ``scripts/train_unet.py`` on a training cohort whose
seed differs from every evaluation cohort's (see ``models/weights/<name>.json`` for the command,
seeds and losses). On CT the first reaches supervised-model quality; on PET it collapses, as the
UMD study found for foundation models; the second narrows the gap.

Preprocessing (shared with training, so it cannot drift): reorient to RAS, resample to 3 mm
isotropic (MONAI ``Orientation`` and ``Spacing``), normalise, sliding-window inference over
64^3 patches, softmax, resample the probabilities back onto the scan's grid (``SpatialResample``)
and take the argmax there.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet
from monai.transforms import Orientation, Spacing, SpatialResample

from umdbench.models.base import ModelUnavailable, SegmentationModel, Tier, file_sha256
from umdbench.organs import CANONICAL_ORGANS, MODALITIES
from umdbench.prompts import Prompt
from umdbench.registry import register_model
from umdbench.volume import Volume

__all__ = ["CTUNet", "CohortUNet", "MultimodalUNet", "build_network", "normalise", "to_model_grid"]

WEIGHTS_DIR = Path(__file__).parent / "weights"
MODEL_SPACING_MM = 3.0
PATCH = (64, 64, 64)
LABEL_IDS = {organ: index + 1 for index, organ in enumerate(CANONICAL_ORGANS)}


def build_network() -> UNet:
    """The architecture both models share (about 0.6 M parameters, 2.4 MB as float32)."""
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=len(CANONICAL_ORGANS) + 1,
        channels=(16, 32, 64, 128),
        strides=(2, 2, 2),
        num_res_units=1,
    )


def to_model_grid(image: Volume, mode: str = "bilinear") -> MetaTensor:
    """The scan as a (1, X, Y, Z) MetaTensor in RAS at the model spacing, keeping its affine."""
    tensor: torch.Tensor = MetaTensor(
        torch.from_numpy(np.ascontiguousarray(image.array, dtype=np.float32))[None],
        affine=torch.from_numpy(image.affine),
    )
    tensor = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(tensor)
    return Spacing(pixdim=(MODEL_SPACING_MM,) * 3, mode=mode)(tensor)  # type: ignore[return-value]


def normalise(tensor: torch.Tensor, scheme: str) -> torch.Tensor:
    """``ct-window``: HU -1000..1000 to 0..1, clipped; ``zscore``: per-volume mean 0, std 1."""
    if scheme == "ct-window":
        return ((tensor.clamp(-1000.0, 1000.0) + 1000.0) / 2000.0).float()
    if scheme == "zscore":
        std = tensor.std()
        return ((tensor - tensor.mean()) / (std if std > 0 else 1.0)).float()
    raise ValueError(f"normalisation scheme must be ct-window or zscore, got {scheme!r}")


class CohortUNet(SegmentationModel):
    """Family base: a :func:`build_network` UNet whose weights ship in ``models/weights``."""

    organs = CANONICAL_ORGANS
    label_ids = LABEL_IDS
    tier = Tier.TRAINED_HERE
    normalisation: ClassVar[str]

    def __init__(self) -> None:
        self.network: UNet | None = None
        self.device = "cpu"

    @property
    def weights_path(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.safetensors"

    def check_available(self, device: str) -> None:
        if not self.weights_path.is_file():
            raise ModelUnavailable(
                f"weights {self.weights_path} are missing; make them with"
                f" `python scripts/train_unet.py {self.name}`"
            )
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ModelUnavailable(f"device {device} asked for, but torch sees no CUDA GPU")

    def load(self, device: str) -> None:
        from safetensors.torch import load_file

        network = build_network()
        network.load_state_dict(load_file(str(self.weights_path)))
        self.network = network.to(device).eval()
        self.device = device

    def weights_id(self) -> str:
        return file_sha256(str(self.weights_path))

    @torch.no_grad()
    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        if self.network is None:
            raise RuntimeError(f"{self.name}: call load() before predict()")
        grid = to_model_grid(image)
        inputs = normalise(grid.as_tensor(), self.normalisation)[None].to(self.device)
        logits = sliding_window_inference(
            inputs,
            roi_size=PATCH,
            sw_batch_size=2,
            predictor=self.network,
            overlap=0.25,
            mode="gaussian",
        )
        probabilities = MetaTensor(
            torch.softmax(logits[0].float(), dim=0).cpu(), affine=grid.affine
        )
        on_scan = SpatialResample(mode="bilinear", padding_mode="border")(
            probabilities, dst_affine=torch.from_numpy(image.affine), spatial_size=image.shape
        )
        return np.asarray(torch.argmax(on_scan, dim=0).numpy(), dtype=np.int16)


@register_model
class CTUNet(CohortUNet):
    name = "unet-ct"
    modalities_claimed = ("CT",)
    normalisation = "ct-window"


@register_model
class MultimodalUNet(CohortUNet):
    name = "unet-multimodal"
    modalities_claimed = MODALITIES
    normalisation = "zscore"
