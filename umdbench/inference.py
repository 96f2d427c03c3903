"""One subject's inference: what runs inside the model's host (a child process, or in-process).

Everything between "here is the scan" and "here is a checked label map" happens here, so that
a model that crashes, hangs or returns garbage is caught where it runs: the call is timed and
its memory measured (:mod:`umdbench.timing`, under ``--umd-amp``'s autocast), the output is checked before any cast (:mod:`umdbench.outputs`), and an exception becomes one line
naming the model, the scan, the file and the vendor's own source line.
"""

from __future__ import annotations

import inspect
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from umdbench.models.base import PromptKind, SegmentationModel
from umdbench.outputs import OutputError, check_label_map
from umdbench.timing import measure
from umdbench.volume import Volume

__all__ = [
    "InferenceRequest",
    "InferenceResult",
    "describe_error",
    "is_out_of_memory",
    "run_inference",
]


@dataclass
class InferenceRequest:
    """One subject's scan for one model (and, for a promptable model, the organ to prompt)."""

    image: Volume
    modality: str
    scan: str
    image_path: str
    reference: np.ndarray | None = None
    organ: str | None = None
    protocol: str | None = None
    seed: int = 0

    def where(self, model: str) -> str:
        return f"model {model} on {self.scan} ({self.image_path})"


@dataclass
class InferenceResult:
    """A checked label map, the seconds it took and what the model chose while making it.

    ``seconds`` is the wall time (device synchronised); ``timing`` holds every figure of the
    call (:func:`umdbench.timing.measure`: CUDA-event time, peak memory, the card, warm-up, AMP).
    """

    labels: np.ndarray
    seconds: float
    device: str
    extra: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)


def run_inference(
    model: SegmentationModel,
    request: InferenceRequest,
    device: str,
    *,
    amp: str = "none",
    warmup: bool = False,
) -> InferenceResult:
    """Predict (automatic) or run the prompt protocol (promptable) under ``amp``'s autocast;
    raises on a bad output. ``warmup``: this is the host's first call of the model."""
    if model.prompt_kind is PromptKind.NONE:
        labels, timing = measure(
            lambda: model.predict(request.image, request.modality, None),
            device,
            warmup=warmup,
            amp=amp,
        )
        allowed = [int(v) for v in model.label_ids.values()]
        checked = check_label_map(labels, request.image.shape, allowed)
        return InferenceResult(
            checked.astype(np.int16, copy=False),
            timing["wall_s"],
            device,
            {},
            model.inference_settings(),
            timing,
        )
    from umdbench.protocols import run_prompted

    assert request.reference is not None and request.organ is not None
    reference, organ, protocol = request.reference, request.organ, request.protocol or ""
    result, timing = measure(
        lambda: run_prompted(
            model, request.image, request.modality, reference, organ, protocol, request.seed
        ),
        device,
        warmup=warmup,
        amp=amp,
    )
    mask = check_label_map(result.mask, request.image.shape, [1])
    return InferenceResult(
        mask.astype(np.uint8),
        timing["wall_s"],
        device,
        result.to_record(),
        model.inference_settings(),
        timing,
    )


def describe_error(where: str, error: BaseException, source: str | None = None) -> str:
    """One line: where, the error, the line that raised it (the vendor's own file when the
    traceback passes through ``source``, the model's module) and, for memory, what to try."""
    if isinstance(error, OutputError):
        return f"{where}: {error}"
    if is_out_of_memory(error):
        return (
            f"{where}: out of memory ({type(error).__name__}: {error}); try fewer workers (-n),"
            " a smaller --umd-subjects, or --umd-device cpu"
        )
    frame = origin_frame(error, source)
    at = f" at {frame.filename}:{frame.lineno}" if frame else ""
    return f"{where} raised {type(error).__name__}: {error}{at}"


def origin_frame(error: BaseException, source: str | None) -> traceback.FrameSummary | None:
    """The deepest frame in ``source`` when the traceback has one, else the deepest frame."""
    frames = traceback.extract_tb(error.__traceback__) if error.__traceback__ else []
    if source:
        own = [frame for frame in frames if frame.filename == source]
        if own:
            return own[-1]
    return frames[-1] if frames else None


def source_file(cls: type) -> str | None:
    try:
        return inspect.getsourcefile(cls)
    except (TypeError, OSError):
        return None


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    try:
        import torch

        return isinstance(error, torch.cuda.OutOfMemoryError)
    except (ImportError, AttributeError):  # pragma: no cover
        return False
