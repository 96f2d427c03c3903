"""The model contract. Every adapter in ``models/`` (and every vendor model) is a subclass.

Contract, as the registry and the suite read it:

- ``name``: unique, lower-case, hyphenated (``unet-ct``); it starts every case id.
- ``prompt_kind``: what the model is given per scan: ``none`` (automatic: one pass segments
  every organ), ``box``, ``points`` or ``text`` (one call per organ).
- ``organs``: the targets (:mod:`umdbench.targets`) it segments by itself. An automatic model
  gets cases for these only; a promptable model gets a case for every target the cohort labels
  (its prompt says what to segment: an organ, a tumour, a user's own target) unless it sets
  ``any_target = False``. See :meth:`SegmentationModel.runs`.
- ``modalities_claimed``: arms the model says it supports. The suite runs every arm anyway (that
  is the audit); the report marks claimed and unclaimed results.
- ``tier``: how real the weights exercised here are (see :class:`Tier`).
- ``literature``: published Dice per arm with its citation, for the report's gap table.
- ``check_available(device)``: raise :class:`ModelUnavailable` with the reason *and the fix*
  when a package, weights or CUDA are missing; the case is then skipped, never passed.
- ``load(device)``: build the network and read weights (``torch.load(weights_only=True)`` or
  safetensors); called once per worker.
- ``predict(image, modality, prompt)``: an integer label map **on the image's grid** (same
  shape, same affine). Automatic models return ``label_ids[organ]`` values; promptable models
  return a binary mask (1 = the prompted organ).
- ``prompt_view(image, reference)`` (promptable models, optional): where the model's official
  evaluation samples its clicks, when that is not the scan (SAM-Med3D: inside its 128^3 crop of
  the resampled scan). The suite then draws every click from the ground truth in that view.
- ``unsupported(organ, protocol)`` (optional): a reason why this model does not run that organ
  under that protocol (the case is skipped with it), or ``None``.
- ``inference_settings()`` (optional): the choices the run made (overlap, AMP, postprocessing),
  recorded with every result.

Images arrive as :class:`~umdbench.volume.Volume` (float32 voxels + affine in RAS+ mm), in
whatever orientation and spacing the scan has: resampling and reorientation are the model's
preprocessing, and so is mapping the output back.
"""

from __future__ import annotations

import functools
import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import ClassVar

import numpy as np

from umdbench.prompts import Prompt, PromptView
from umdbench.volume import Volume

__all__ = [
    "LiteratureClaim",
    "ModelUnavailable",
    "PromptKind",
    "SegmentationModel",
    "Tier",
    "file_sha256",
    "weights_root",
]


class PromptKind(str, Enum):
    NONE = "none"
    BOX = "box"
    POINTS = "points"
    TEXT = "text"


class Tier(str, Enum):
    """How real the model run here is."""

    REAL_WEIGHTS = "real-weights"  # the published weights, exercised here
    TRAINED_HERE = "trained-here"  # weights made by this repository's scripts
    RANDOM_WEIGHTS = "random-weights"  # real architecture; real weights only on a user's machine
    USER_CODE = "user-code"  # code and weights the user provides
    CLASSICAL = "classical"  # no learned weights


@dataclass(frozen=True)
class LiteratureClaim:
    """A published Dice figure, with where it was published."""

    dice: float
    citation: str


class ModelUnavailable(Exception):
    """The model cannot run here; the message says why and how to fix it."""


class SegmentationModel(ABC):
    """Base class of every adapter; see the module docstring for the contract."""

    name: ClassVar[str]
    prompt_kind: ClassVar[PromptKind] = PromptKind.NONE
    organs: ClassVar[tuple[str, ...]] = ()
    modalities_claimed: ClassVar[tuple[str, ...]] = ()
    tier: ClassVar[Tier] = Tier.USER_CODE
    literature: ClassVar[Mapping[str, LiteratureClaim]] = {}
    #: Canonical organ -> value in the label map ``predict`` returns (automatic models).
    label_ids: ClassVar[Mapping[str, int]] = {}
    #: Prompt protocols the suite runs for this model (promptable models; part of the case id).
    protocols: ClassVar[tuple[str, ...]] = ()
    #: False: left out of audits of the built-in synthetic cohort unless named in
    #: ``--umd-models`` (a model that is slow on CPU and meaningless on synthetic anatomy, e.g.
    #: a brain-extraction net); it runs on every real dataset.
    synthetic_audit: ClassVar[bool] = True
    #: A promptable model runs every target of the cohort (True), or only ``organs`` (False).
    any_target: ClassVar[bool] = True
    #: Expected time of one prediction relative to a network's sliding-window pass (1.0); it
    #: only balances ``--umd-shard`` when no earlier run's timings are given
    #: (``--umd-shard-costs``), e.g. a classical method a hundredth of that.
    shard_cost: ClassVar[float] = 1.0

    @classmethod
    def runs(cls, target: str) -> bool:
        """Whether the suite makes cases of ``target`` for this model (see ``organs``)."""
        if target in cls.organs:
            return True
        return cls.prompt_kind is not PromptKind.NONE and cls.any_target

    def check_available(self, device: str) -> None:  # noqa: B027 - optional hook
        """Raise :class:`ModelUnavailable` when this model cannot run on ``device`` here.

        The suite also asks it at collection, in the pytest process, to leave a model that
        cannot run out of the default matrix: keep it cheap (packages, files, CUDA present),
        never read weights here, and say in the message which file is expected where.
        """

    @abstractmethod
    def load(self, device: str) -> None:
        """Build the model on ``device`` and read its weights."""

    @abstractmethod
    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        """A label map on ``image``'s grid (see the module docstring)."""

    def prompt_view(self, image: Volume, reference: np.ndarray) -> PromptView | None:
        """The ground truth as the official evaluation samples clicks from it; None: the scan.

        ``reference`` is the boolean mask of the organ (or of one part of it) on ``image``'s grid.
        """
        return None

    def unsupported(self, organ: str, protocol: str | None) -> str | None:
        """Why this model does not run ``organ`` under ``protocol`` here (a skip), or None.

        The suite puts the model's name before the reason; the reason need not repeat it.
        """
        return None

    def inference_settings(self) -> dict[str, object]:
        """What this run chose where the official code offers a choice (recorded per result)."""
        return {}

    def weights_id(self) -> str:
        """A short content hash of the weights (provenance and cache key); ``none`` if none."""
        return "none"

    def output_value(self, organ: str) -> int:
        """The value that marks ``organ`` in this model's predictions."""
        if self.prompt_kind is PromptKind.NONE:
            return int(self.label_ids[organ])
        return 1

    @classmethod
    def metadata(cls) -> dict[str, object]:
        """What the results file and the README's model table say about this model."""
        return {
            "name": cls.name,
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "prompt_kind": cls.prompt_kind.value,
            "protocols": list(cls.protocols),
            "organs": list(cls.organs),
            "any_target": cls.prompt_kind is not PromptKind.NONE and cls.any_target,
            "modalities_claimed": list(cls.modalities_claimed),
            "tier": cls.tier.value,
            "literature": {
                arm: {"dice": claim.dice, "citation": claim.citation}
                for arm, claim in cls.literature.items()
            },
        }


def file_sha256(path: str, length: int = 16) -> str:
    """Hex digest prefix of a file, streamed (weights can be GBs).

    Remembered per process while the file's inode, size and mtime stay the same: the runner
    asks for ``weights_id()`` once per case, and a multi-GB checkpoint must not be re-read
    each time.
    """
    info = os.stat(path)
    return _sha256_of(os.path.realpath(path), info.st_ino, info.st_size, info.st_mtime_ns)[:length]


@functools.lru_cache(maxsize=256)
def _sha256_of(path: str, inode: int, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_root() -> Path | None:
    """The folder the user keeps model weights in (``--umd-weights`` or ``UMD_WEIGHTS``).

    Adapters look for their files below ``weights_root() / <model name>``; nothing is ever
    downloaded.
    """
    value = os.environ.get("UMD_WEIGHTS")
    return Path(value).expanduser() if value else None
