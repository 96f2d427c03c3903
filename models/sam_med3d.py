"""SAM-Med3D, SAM-Med3D-turbo and SegAnyPET: ``medim``'s network, the official preprocessing.

The evaluation follows uni-medical/SAM-Med3D ``utils/infer_utils.py`` (``data_preprocess``,
``sam_model_infer``, ``data_postprocess``; SegAnyPET ships the same file) and calls the same
torchio transforms it calls, in its order, per organ (per part of a multi-part organ):

1. ``tio.Resample(1.5)`` of image (linear) and label (nearest), then ``tio.ToCanonical()`` (RAS);
   the image in the voxel type its file holds (an integer CT is resampled as integers, as the
   official code reading the file resamples it);
2. ``tio.CropOrPad(mask_name="label", target_shape=(128,)*3)``: the 128^3 crop **centred on the
   ground-truth box** (an oracle: every prompt and result is flagged ``oracle``);
3. ``tio.ZNormalization(masking_method=lambda x: x > 0)`` of the cropped image.

The cropped label is this model's :class:`~umdbench.prompts.PromptView`: the suite draws the
first click uniformly from it and every later click from the error region of the model's own
crop mask, as ``random_sample_next_click(prev_mask, roi_gt)`` does, so every click lies in the
crop. Clicks are crop voxel indices; the image embedding is computed once; the previous low-res
logits (32^3) are fed back as the mask prompt; the logits are upsampled trilinearly to 128^3 and
thresholded at sigmoid 0.5. The crop mask goes back to the scan grid with
``tio.Resample(target=<scan grid>, image_interpolation="nearest")`` as ``data_postprocess``
does. An organ whose resampled, cropped label is empty gets an empty mask without a network
call, as ``sam_model_infer`` returns one.

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
    combined_hash,
    load_weights_into,
    require_packages,
    torch_device,
    weights_file,
)
from umdbench.models.base import LiteratureClaim, PromptKind, SegmentationModel, Tier
from umdbench.organs import CANONICAL_ORGANS, MODALITIES
from umdbench.prompts import Prompt, PromptView, voxel_to_world
from umdbench.registry import register_model
from umdbench.volume import Volume

__all__ = ["SamCrop", "SamMed3D", "SamMed3DFamily", "SamMed3DTurbo", "SegAnyPET"]

_UMD = "UMD study digest (Zhang et al., arXiv 2602.07643, 2026), literature column"


@dataclass(frozen=True)
class SamCrop:
    """What ``data_preprocess`` hands the network for one organ: the normalised crop, its grid.

    ``image`` is ``(128, 128, 128)`` float32 after ``ZNormalization``; ``affine`` maps crop
    voxels to world mm (RAS+); ``scan`` is the scan whose grid the mask returns to.
    """

    image: torch.Tensor
    affine: np.ndarray
    scan: Volume


class SamMed3DFamily(SegmentationModel):
    """SAM-style promptable 3D models; subclasses name their weights file (and architecture)."""

    prompt_kind = PromptKind.POINTS
    organs = CANONICAL_ORGANS
    protocols: ClassVar[tuple[str, ...]] = ("1click", "5clicks")
    tier = Tier.RANDOM_WEIGHTS
    #: The crop is centred on the ground truth, as in the official evaluation (an oracle).
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
        require_packages(self.name, "medim", "torchio")
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

    def inference_settings(self) -> dict[str, object]:
        return {
            "preprocessing": "torchio Resample(1.5) -> ToCanonical -> CropOrPad(mask_name=label,"
            f" {self.crop_size}^3) -> ZNormalization(x > 0), as SAM-Med3D data_preprocess",
            "clicks": "drawn inside the crop from the cropped label and the crop mask",
            "postprocessing": "sigmoid > 0.5 on the crop, torchio Resample(nearest) to the scan",
        }

    def prompt_view(self, image: Volume, reference: np.ndarray) -> PromptView:
        """The official ``data_preprocess`` on this scan and organ: crop, cropped label, grid."""
        import torchio as tio

        subject = tio.Subject(
            image=tio.ScalarImage(tensor=_as_stored(image.array), affine=image.affine),
            label=tio.LabelMap(tensor=_as_tensor(reference, torch.uint8), affine=image.affine),
        )
        subject = tio.ToCanonical()(tio.Resample(target=self.spacing)(subject))
        cropped = tio.CropOrPad(mask_name="label", target_shape=(self.crop_size,) * 3)(subject)
        normalised = tio.ZNormalization(masking_method=lambda x: x > 0)(cropped.image.data)
        affine = np.asarray(cropped.image.affine, dtype=float)
        crop = SamCrop(normalised[0].float(), affine, image)
        view_reference = cropped.label.data[0].numpy() > 0
        return PromptView(view_reference, affine, self._region(affine, subject), crop)

    def _region(self, affine: np.ndarray, canonical: Any) -> dict[str, Any]:
        """Where the crop sits: on the resampled RAS grid and in world mm (for the record)."""
        start = np.linalg.solve(canonical.image.affine, affine[:, 3])[:3]
        corners = voxel_to_world(np.array([[0, 0, 0], [self.crop_size - 1] * 3]), affine)
        return {
            "kind": "crop centred on the ground-truth box (oracle)",
            "grid": f"RAS {self.spacing[0]:g} mm (torchio Resample + ToCanonical)",
            "shape": [self.crop_size] * 3,
            "start_voxel": [int(np.rint(v)) for v in start],
            "resampled_shape": [int(v) for v in canonical.spatial_shape],
            "corners_world": corners.round(2).tolist(),
        }

    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        if self._net is None:
            raise RuntimeError(f"{self.name}: call load(device) before predict")
        if prompt is None or prompt.view is None or prompt.view_points is None:
            raise ValueError(
                f"{self.name} clicks inside its crop of the ground truth, as its official"
                " evaluation does: give a Prompt with view=model.prompt_view(image, reference)"
                " and view_points (the suite's protocols do)"
            )
        crop: SamCrop = prompt.view.context
        state = prompt.state  # one dict per interactive run: embedding and low-res logits
        if "embedding" not in state:
            state["embedding"] = self._encode(crop.image)
        logits = self._decode(state, prompt.view_points, prompt.point_labels)
        mask = (torch.sigmoid(logits.float()) > 0.5).cpu().numpy()
        state["view_mask"] = mask
        return _to_scan(mask, crop)

    @torch.no_grad()
    def _encode(self, crop: torch.Tensor) -> torch.Tensor:
        return self._net.image_encoder(crop[None, None].to(self._device))

    @torch.no_grad()
    def _decode(self, state: dict[str, Any], points: np.ndarray, labels: Any) -> torch.Tensor:
        low_size = self.crop_size // 4
        previous = state.get("low_res")
        if previous is None:
            previous = torch.zeros(1, 1, low_size, low_size, low_size, device=self._device)
        coords = torch.as_tensor(np.asarray(points), dtype=torch.float32, device=self._device)
        label_tensor = torch.as_tensor(np.asarray(labels), dtype=torch.int64, device=self._device)
        sparse, dense = self._net.prompt_encoder(
            points=[coords[None], label_tensor[None]], boxes=None, masks=previous
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


def _as_stored(array: np.ndarray) -> torch.Tensor:
    """The scan in the voxel type a file of it holds: integral values as int32, else float32.

    The official code reads the file and torchio resamples in the stored type, so an integer CT
    comes back from ``Resample`` rounded to integers; the suite's scans arrive as float32.
    """
    integral = np.array_equal(array, np.rint(array)) and np.abs(array).max(initial=0) < 2**31
    return _as_tensor(array, torch.int32 if integral else torch.float32)


def _as_tensor(array: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(array)).to(dtype)[None]


def _to_scan(mask: np.ndarray, crop: SamCrop) -> np.ndarray:
    """``data_postprocess``: the crop mask onto the scan grid, nearest, through torchio."""
    import torchio as tio

    label = tio.LabelMap(tensor=_as_tensor(mask), affine=crop.affine)
    target = tio.ScalarImage(tensor=torch.zeros((1, *crop.scan.shape)), affine=crop.scan.affine)
    resampled = tio.Resample(target=target, image_interpolation="nearest")(label)
    return resampled.data[0].numpy().astype(np.uint8)


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
