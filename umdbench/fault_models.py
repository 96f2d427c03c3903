"""Models that misbehave on purpose: the reliability tests' fault injection, and a way for a
vendor to see what the suite does with a model that crashes, hangs or returns garbage.

Run one as any vendor model: ``pytest benchmarks --umd-model umdbench.fault_models:Segfaulting
--umd-models fault-segfault``. Each is an automatic liver model that labels the voxels brighter
than the scan's mean, except on the calls it faults on: ``UMD_FAULT_AT`` lists call numbers
(1-based, e.g. ``2`` or ``2,5``; unset: every call), counted per model across processes and
restarts in a file under ``UMD_FAULT_COUNTER`` (a folder; unset: a per-user temp folder).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from umdbench.models.base import SegmentationModel, Tier
from umdbench.prompts import Prompt
from umdbench.volume import Volume

__all__ = [
    "FAULT_MODELS",
    "Exiting",
    "FaultModel",
    "Hanging",
    "HugeOutput",
    "LoadFailing",
    "NaNOutput",
    "OOMKilled",
    "Probabilities",
    "Raising",
    "Segfaulting",
    "Slow",
    "WrappingLabels",
]


class FaultModel(SegmentationModel):
    """Labels voxels above the scan mean as liver; :meth:`fault` replaces chosen calls."""

    name: ClassVar[str] = "fault-none"
    organs = ("liver",)
    label_ids: ClassVar[dict[str, int]] = {"liver": 1}
    tier = Tier.CLASSICAL

    def load(self, device: str) -> None:
        pass

    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        labels = (image.array > image.array.mean()).astype(np.int16)
        if _faults_now(self.name):
            return self.fault(image, labels)
        return labels

    def fault(self, image: Volume, labels: np.ndarray) -> Any:
        return labels


class Raising(FaultModel):
    name = "fault-raise"

    def fault(self, image: Volume, labels: np.ndarray) -> Any:
        raise RuntimeError("injected fault: the vendor's predict raised")


class Hanging(FaultModel):
    name = "fault-hang"

    def fault(self, image: Volume, labels: np.ndarray) -> Any:
        time.sleep(24 * 3600)


class Exiting(FaultModel):
    name = "fault-exit"

    def fault(self, image: Volume, labels: np.ndarray) -> Any:
        os._exit(3)


class Segfaulting(FaultModel):
    name = "fault-segfault"

    def fault(self, image: Volume, labels: np.ndarray) -> Any:
        ctypes.string_at(0)  # reads address 0: SIGSEGV


class OOMKilled(FaultModel):
    """What the kernel's out-of-memory killer does: SIGKILL, no warning."""

    name = "fault-oom-kill"

    def fault(self, image: Volume, labels: np.ndarray) -> Any:
        os.kill(os.getpid(), signal.SIGKILL)


class NaNOutput(FaultModel):
    name = "fault-nan"

    def fault(self, image: Volume, labels: np.ndarray) -> Any:
        out = labels.astype(np.float32)
        out[0, 0, 0] = np.nan
        return out


class Probabilities(FaultModel):
    name = "fault-probabilities"

    def fault(self, image: Volume, labels: np.ndarray) -> Any:
        return labels.astype(np.float32) * 0.9


class WrappingLabels(FaultModel):
    """int64 labels 65536/65537: cast to int16 they wrap to 0/1 and used to score Dice 1.0."""

    name = "fault-wrap"

    def fault(self, image: Volume, labels: np.ndarray) -> Any:
        return labels.astype(np.int64) + 65536


class HugeOutput(FaultModel):
    """A 30000^3 array (a broadcast view: no memory) where the scan's grid was expected."""

    name = "fault-huge"

    def fault(self, image: Volume, labels: np.ndarray) -> Any:
        return np.broadcast_to(np.int16(1), (30000, 30000, 30000))


class LoadFailing(FaultModel):
    name = "fault-load"

    def load(self, device: str) -> None:
        raise OSError("injected fault: the vendor's checkpoint is unreadable")


class Slow(FaultModel):
    """No fault; half a second a call, so a test can interrupt a run halfway."""

    name = "fault-slow"

    def fault(self, image: Volume, labels: np.ndarray) -> Any:
        time.sleep(0.5)
        return labels


FAULT_MODELS: tuple[type[FaultModel], ...] = (
    Raising, Hanging, Exiting, Segfaulting, OOMKilled, NaNOutput, Probabilities,
    WrappingLabels, HugeOutput, LoadFailing, Slow,
)  # fmt: skip


def _faults_now(name: str) -> bool:
    """Count this call of model ``name``; True when its number is in ``UMD_FAULT_AT``."""
    folder = Path(os.environ.get("UMD_FAULT_COUNTER") or Path(tempfile.gettempdir()) / "umd-faults")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.count", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        count = int(handle.read() or 0) + 1
        handle.seek(0)
        handle.truncate()
        handle.write(str(count))
        handle.flush()
    wanted = os.environ.get("UMD_FAULT_AT")
    return wanted is None or str(count) in {part.strip() for part in wanted.split(",")}
