"""deepbet: brain extraction from T1 MRI (Fisch et al. 2024), with its published weights.

The wheel on PyPI (MIT) ships two TorchScript networks, a coarse box finder and a 256^3 mask
network; this adapter runs deepbet's own ``BrainExtraction.run`` so its preprocessing (RAS via
``as_closest_canonical``, 0.5-99.5 percentile clipping, nearest-exact resizing) and
postprocessing (largest component, void filling) are exactly upstream's. Its output is
reoriented back onto the input grid by deepbet itself; the adapter checks that.

Trained on T1 only: the PET arms are the audit's point (``modalities_claimed`` is MRI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from umdbench.models._families import combined_hash, require_packages, torch_device
from umdbench.models.base import (
    LiteratureClaim,
    ModelUnavailable,
    PromptKind,
    SegmentationModel,
    Tier,
)
from umdbench.prompts import Prompt
from umdbench.registry import register_model
from umdbench.volume import Volume

__all__ = ["DeepBet"]

_CITATION = (
    "Fisch et al., deepbet: Fast brain extraction of T1-weighted MRI using convolutional"
    " neural networks, Comput. Biol. Med. 2024 (median Dice 0.990 on 7837 T1 images)"
)


@register_model
class DeepBet(SegmentationModel):
    """deepbet's T1 brain mask, label 1 = brain."""

    name = "deepbet"
    prompt_kind = PromptKind.NONE
    organs = ("brain",)
    modalities_claimed = ("MRI",)
    tier = Tier.REAL_WEIGHTS
    literature: ClassVar[dict[str, LiteratureClaim]] = {"MRI": LiteratureClaim(0.990, _CITATION)}
    label_ids: ClassVar[dict[str, int]] = {"brain": 1}
    threshold: ClassVar[float] = 0.5
    #: The synthetic heads (ellipsoids in a skull shell) are no test of brain extraction, and
    #: its 32 volumes cost about a fifth of the default audit's inference time on 2 cores: it
    #: runs on real datasets (``--umd-dataset samples``) and when named, as HD-BET.
    synthetic_audit: ClassVar[bool] = False

    def __init__(self) -> None:
        self._bet: Any = None
        self._files: list[Path] = []

    def _weight_files(self) -> list[Path]:
        from deepbet.utils import DATA_PATH

        folder = Path(DATA_PATH) / "models"
        return [folder / "model.pt", folder / "bbox_model.pt"]

    def check_available(self, device: str) -> None:
        require_packages(self.name, "deepbet", "fill_voids", "cc3d", "pandas")
        torch_device(device)
        missing = [str(p) for p in self._weight_files() if not p.is_file()]
        if missing:
            raise ModelUnavailable(
                f"deepbet's wheel lacks its weights ({', '.join(missing)}): pip install"
                " --force-reinstall deepbet"
            )

    def load(self, device: str) -> None:
        from deepbet import BrainExtraction

        self.check_available(device)
        bet = BrainExtraction(no_gpu=True)  # loads on CPU; moved below to the asked device
        target = torch_device(device)
        bet.model, bet.bbox_model = bet.model.to(target), bet.bbox_model.to(target)
        self._bet, self._files = bet, self._weight_files()

    def weights_id(self) -> str:
        files = self._files or self._weight_files()
        return combined_hash(files) if all(p.is_file() for p in files) else "none"

    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        import nibabel as nib

        if self._bet is None:
            raise RuntimeError("deepbet: call load(device) before predict")
        nifti = nib.Nifti1Image(np.asarray(image.array, dtype=np.float32), image.affine)
        _, mask, _ = self._bet.run(nifti, threshold=self.threshold)
        labels = np.asarray(mask.dataobj) > 0
        if labels.shape != image.shape or not np.allclose(mask.affine, image.affine, atol=1e-3):
            raise RuntimeError(
                f"deepbet returned a mask of shape {labels.shape} off the input grid {image.shape}"
            )
        return labels.astype(np.uint8)
