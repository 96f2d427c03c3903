"""Run a promptable model on one organ under a named prompt protocol.

The suite calls :func:`run_prompted` for every model whose ``prompt_kind`` is not ``none``.
Single-shot protocols build one prompt from the ground truth; iterative ones (clicks) call the
model again with the previous result. Everything given to the model is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from umdbench.prompts import box_prompt

if TYPE_CHECKING:
    from umdbench.models.base import SegmentationModel
    from umdbench.volume import Volume

__all__ = ["PromptedResult", "run_prompted"]


@dataclass
class PromptedResult:
    """The final mask, the prompt(s) as recorded, and per-step figures for iterative protocols."""

    mask: np.ndarray
    prompt: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)
    oracle: bool = False


def run_prompted(
    model: SegmentationModel,
    image: Volume,
    modality: str,
    reference: np.ndarray,
    organ: str,
    protocol: str,
    seed: int,
) -> PromptedResult:
    """Prompt ``model`` for ``organ`` on ``image`` under ``protocol``; ``reference`` is the
    ground-truth mask on the image grid (the prompts' only source)."""
    if protocol in ("box", "box-jitter5mm"):
        jitter = 5.0 if protocol.endswith("5mm") else 0.0
        prompt = box_prompt(reference, organ, seed, image.spacing, jitter_mm=jitter)
        labels = model.predict(image, modality, prompt)
        return PromptedResult(mask=labels > 0, prompt=prompt.to_record(image.affine))
    raise ValueError(f"unknown prompt protocol {protocol!r} for model {model.name!r}")
