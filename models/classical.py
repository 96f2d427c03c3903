"""The floor any foundation model should beat: a ground-truth box, then Otsu inside it.

No learned weights. Given the organ's bounding box, it thresholds the box's intensities with
Otsu's method, keeps the intensity class that fills the middle of the box, and returns its
largest connected component with holes filled. It knows nothing of anatomy or modality, so
its Dice says how much of a result the box prompt alone explains.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from umdbench.models.base import PromptKind, SegmentationModel, Tier
from umdbench.organs import CANONICAL_ORGANS, MODALITIES
from umdbench.prompts import Prompt
from umdbench.registry import register_model
from umdbench.volume import Volume

__all__ = ["BoxOtsu", "segment_box"]


@register_model
class BoxOtsu(SegmentationModel):
    name = "classical-otsu"
    prompt_kind = PromptKind.BOX
    protocols = ("box",)
    organs = CANONICAL_ORGANS
    modalities_claimed = MODALITIES
    tier = Tier.CLASSICAL
    shard_cost = 0.01  # about 0.1 s a box against a network's seconds a scan (measured here)

    def load(self, device: str) -> None:
        """Nothing to load: no weights."""

    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        if prompt is None or prompt.box is None:
            raise ValueError(f"{self.name} needs a box prompt, got {prompt!r}")
        return segment_box(image.array, prompt.box).astype(np.uint8)


def segment_box(
    array: np.ndarray, box: tuple[tuple[int, int, int], tuple[int, int, int]]
) -> np.ndarray:
    """Otsu inside ``box`` (inclusive voxel corners), the class at the box centre, largest blob."""
    lo, hi = np.asarray(box[0]), np.asarray(box[1]) + 1
    region = array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.float32)
    mask = np.zeros(array.shape, dtype=bool)
    if region.size == 0 or float(region.max()) == float(region.min()):
        mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True  # flat: the box is all we know
        return mask
    above = region > threshold_otsu(region)
    chosen = above if _centre_fraction(above) >= 0.5 else ~above
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = _largest_component(chosen)
    return mask


def _centre_fraction(mask: np.ndarray) -> float:
    """Share of the box's central half that ``mask`` covers."""
    slices = tuple(slice(n // 4, max(n // 4 + 1, 3 * n // 4)) for n in mask.shape)
    return float(mask[slices].mean())


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labelled, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labelled.ravel())[1:]
    return np.asarray(ndimage.binary_fill_holes(labelled == (1 + int(np.argmax(sizes)))))
