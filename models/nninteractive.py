"""nnInteractive (Isensee et al. 2025): the package's own ``nnInteractiveInferenceSession``.

Everything the model does is the installed package's code (``nnInteractive`` on PyPI,
``inference/inference_session.py``), called as its README and its CVPR 2025 baseline
(``inference/cvpr2025_challenge_baseline/predict.py``) call it:

1. ``nnInteractiveInferenceSession(device, use_torch_compile=False, do_autozoom=True,
   enable_undo=False)`` and ``initialize_from_trained_model_folder(<model folder>)``: the folder
   is read from ``--umd-weights``, never from the package's Hugging Face manifest
   (``nnInteractive.model_management`` is not imported). The package reads its checkpoint with
   ``torch.load(weights_only=False)``; this adapter forces ``weights_only=True`` around that
   call (``TORCH_FORCE_WEIGHTS_ONLY_LOAD``, numpy scalars allow-listed), so a checkpoint that
   holds other pickled objects is refused, never executed.
2. ``set_image(array[None])`` with the raw intensities (no windowing, no normalisation, no
   resampling: the session z-scores over the image's nonzero bounding box itself and works in
   voxel space; ``image_properties``/spacing are unused by the package). Axis order: the
   SimpleITK/nnU-Net array order the README loads with ``sitk.GetArrayFromImage`` (``z, y, x``),
   i.e. the scan's nibabel array transposed ``(2, 1, 0)`` (MIC-DKFZ/nnUNet#1951: nnU-Net's
   ``NibabelIO`` transposes nibabel arrays and spacings the same way). No reorientation.
3. ``set_target_buffer(torch.zeros(shape, uint8))``; the session writes the whole current
   mask into it after every interaction (argmax of its two output channels).
4. One interactive run (one organ or one part of it) = ``reset_interactions()``, then one
   ``add_*_interaction`` per new prompt with ``run_prediction=True``, as a user clicks: a box
   (``add_bbox_interaction``, half-open ``[lo, hi + 1)`` per axis in session order, as the
   CVPR baseline converts inclusive boxes), then each click
   (``add_point_interaction(voxel, include_interaction=label == 1)``). Step ``k`` of the suite's
   loop hands every click so far; only the new one is added, so the session refines its own
   previous result (its ``prev_seg`` channel) exactly as in interactive use. Fractional click
   coordinates are rounded to the voxel they fall in (``floor(x + 0.5)``, clipped to the grid).
5. The target buffer, transposed back, is the mask on the scan grid (``uint8``, no
   postprocessing).

Boxes by release. The public ``nnInteractive_v1.0`` weights declare no 3D-box capability
(legacy ``inference_session_class.json``: ``bbox2d`` only), and the package raises on a 3D box
for them. So ``box`` (tight 3D box) and ``box-cvpr`` / ``box-cvpr-<N>clicks`` (slice range plus
the middle slice's 2D box, given as one 3D box exactly as the package's CVPR 2025 baseline
passes it) run only with a release whose ``inference_info.json`` declares ``bbox3d``; with v1
they are skipped with that reason (:meth:`NnInteractive.unsupported`). A one-slice 2D box
protocol would run on v1 unchanged (a box one voxel thick along an axis is a 2D box for the
package).

Determinism. When AutoZoom refines, the package's ``utils/bboxes.py`` may place refinement
patches with numpy's global RNG; each interaction runs under a numpy seed derived from the
prompt's seed and step (the global state is restored afterwards), so a run reproduces.

Weights: ``<weights dir>/nninteractive/<release folder>/`` as the release ships it, e.g.
``nnInteractive_v1.0/{plans.json, dataset.json, inference_session_class.json,
fold_0/checkpoint_final.pth}`` (newer releases: ``inference_info.json``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from umdbench.models._families import (
    combined_hash,
    forced_weights_only_load,
    torch_device,
    unsafe_checkpoint_message,
    weights_only_refusal,
)
from umdbench.models.base import (
    LiteratureClaim,
    ModelUnavailable,
    PromptKind,
    SegmentationModel,
    Tier,
    weights_root,
)
from umdbench.organs import CANONICAL_ORGANS, MODALITIES
from umdbench.prompts import Prompt, case_seed
from umdbench.registry import register_model
from umdbench.volume import Volume

__all__ = [
    "MODEL_FOLDER_LAYOUT",
    "OFFICIAL_RELEASE",
    "NnInteractive",
    "find_model_folder",
    "to_session_order",
]

_UMD = (
    "UMD study digest (Zhang et al., arXiv 2602.07643, 2026), literature column"
    " (~0.55, one figure for the model, no arm named)"
)

#: The folder name of the public release (Hugging Face ``MIC-DKFZ/nnInteractive``).
OFFICIAL_RELEASE = "nnInteractive_v1.0"
#: What a release folder holds, as ``initialize_from_trained_model_folder`` reads it.
MODEL_FOLDER_LAYOUT = (
    "plans.json, dataset.json, inference_session_class.json (v1) or inference_info.json,"
    " fold_0/checkpoint_final.pth"
)
_HOW = (
    "copy the release folder as published (Hugging Face MIC-DKFZ/nnInteractive,"
    f" {OFFICIAL_RELEASE}/); nothing is downloaded"
)
#: Axis order of the session's arrays: the scan's (nibabel) axes reversed.
_TO_SESSION = (2, 1, 0)
_BOX_PROTOCOLS = ("box", "box-cvpr", "box-cvpr-5clicks")


def to_session_order(array: np.ndarray) -> np.ndarray:
    """A scan array (nibabel ``i, j, k``) in SimpleITK/nnU-Net order (``k, j, i``), contiguous."""
    return np.ascontiguousarray(np.transpose(array, _TO_SESSION))


def _release_key(folder: Path) -> tuple[tuple[int, ...], str]:
    return tuple(int(v) for v in re.findall(r"\d+", folder.name)), folder.name


def find_model_folder() -> Path:
    """``<weights dir>/nninteractive/nnInteractive_*`` (the newest release), or a skip reason."""
    root = weights_root()
    expected = f"<weights dir>/nninteractive/{OFFICIAL_RELEASE}/ ({MODEL_FOLDER_LAYOUT})"
    if root is None:
        raise ModelUnavailable(
            f"nninteractive needs its model folder at {expected}: pass --umd-weights DIR or set"
            f" UMD_WEIGHTS ({_HOW})"
        )
    base = root / "nninteractive"
    found = sorted(p for p in base.glob("nnInteractive_*") if p.is_dir()) if base.is_dir() else []
    if not found:
        raise ModelUnavailable(
            f"nninteractive weights not found: expected {base / OFFICIAL_RELEASE}/ holding"
            f" {MODEL_FOLDER_LAYOUT} ({_HOW})"
        )
    folder = max(found, key=_release_key)
    missing = [n for n in ("plans.json", "dataset.json") if not (folder / n).is_file()]
    if not any(
        (folder / n).is_file() for n in ("inference_info.json", "inference_session_class.json")
    ):
        missing.append("inference_session_class.json or inference_info.json")
    checkpoints = sorted(folder.glob("fold_*/checkpoint_final.pth"))
    if len(checkpoints) != 1:
        missing.append("exactly one fold_*/checkpoint_final.pth")
    if missing:
        raise ModelUnavailable(
            f"nninteractive model folder {folder} is incomplete: missing {', '.join(missing)}"
            f" (expected {MODEL_FOLDER_LAYOUT}; {_HOW})"
        )
    return folder


@contextlib.contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG (the package's refinement planner draws from it), then restore."""
    saved = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(saved)


Interaction = tuple[Any, ...]


@register_model
class NnInteractive(SegmentationModel):
    """nnInteractive: promptable, modality-agnostic (CT, MRI, PET, microscopy in its paper)."""

    name = "nninteractive"
    prompt_kind = PromptKind.POINTS
    organs = CANONICAL_ORGANS
    modalities_claimed = MODALITIES
    protocols: ClassVar[tuple[str, ...]] = ("1click", "5clicks", *_BOX_PROTOCOLS)
    tier = Tier.RANDOM_WEIGHTS
    literature: ClassVar[dict[str, LiteratureClaim]] = {
        arm: LiteratureClaim(0.55, _UMD) for arm in MODALITIES
    }

    def __init__(self) -> None:
        self._session: Any = None
        self._folder: Path | None = None
        self._device = torch.device("cpu")
        self._image: np.ndarray | None = None  # the scan array the session holds (identity)
        self._buffer: torch.Tensor | None = None
        self._active: str | None = None  # the run whose interactions the session holds
        self._given: list[Interaction] = []

    def check_available(self, device: str) -> None:
        try:
            spec = importlib.util.find_spec("nnInteractive.inference.inference_session")
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            raise ModelUnavailable(
                "nninteractive needs the Python package 'nninteractive' (the full package, not"
                " only nninteractive-client): pip install nninteractive"
            )
        torch_device(device)
        find_model_folder()

    def load(self, device: str) -> None:
        from nnInteractive.inference.inference_session import nnInteractiveInferenceSession

        folder = find_model_folder()
        self._device = torch_device(device)
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints as it works
            session = nnInteractiveInferenceSession(
                device=self._device,
                use_torch_compile=False,
                verbose=False,
                torch_n_threads=torch.get_num_threads(),  # keep the suite's thread setting
                do_autozoom=True,
                enable_undo=False,
            )
            try:
                with forced_weights_only_load():
                    session.initialize_from_trained_model_folder(str(folder))
            except Exception as error:
                if not weights_only_refusal(error):
                    raise
                checkpoints = sorted(folder.glob("fold_*/checkpoint_final.pth"))
                keep = "only network_weights (the state_dict), trainer_name and init_args"
                raise ValueError(
                    unsafe_checkpoint_message(checkpoints[0] if checkpoints else folder, error, keep)
                ) from error
        self._session, self._folder = session, folder
        self._image, self._buffer, self._active, self._given = None, None, None, []

    def weights_id(self) -> str:
        if self._folder is None:
            return "none"
        files = [
            *sorted(self._folder.glob("fold_*/checkpoint_final.pth")),
            self._folder / "plans.json",
        ]
        return combined_hash(files)

    @property
    def supports_3d_boxes(self) -> bool:
        return bool(
            self._session is not None and self._session.supported_interactions.get("bbox3d")
        )

    def unsupported(self, organ: str, protocol: str | None) -> str | None:
        if self._session is None or protocol is None or not protocol.startswith("box"):
            return None
        if self.supports_3d_boxes:
            return None
        release = self._folder.name if self._folder is not None else "this release"
        return (
            f"{release} takes 2D boxes only (no bbox3d in its capability metadata; the package"
            f" raises on a 3D box); {protocol} is a 3D box: it needs a release whose"
            " inference_info.json declares bbox3d"
        )

    def inference_settings(self) -> dict[str, object]:
        from importlib.metadata import version

        session = self._session
        supported = dict(session.supported_interactions) if session is not None else {}
        return {
            "package": f"nnInteractive {version('nnInteractive')}",
            "release": self._folder.name if self._folder is not None else None,
            "axis_order": "SimpleITK/nnU-Net (z, y, x): the scan's nibabel array transposed"
            " (2, 1, 0); no reorientation, no resampling (the session works in voxel space)",
            "normalisation": "the session's own (set_image: z-score over the nonzero bounding"
            " box); raw intensities given",
            "boxes": "2D and 3D" if supported.get("bbox3d") else "2D only (bbox2d)",
            "supported_interactions": supported,
            "interactions": "reset_interactions per run; one add_*_interaction per new prompt"
            " (run_prediction=True); clicks rounded to their voxel",
            "do_autozoom": True,
            "use_torch_compile": False,
            "amp": self._device.type == "cuda",  # the session autocasts on CUDA only
            "postprocessing": "none: the target buffer (argmax) transposed back to the scan",
        }

    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        if self._session is None:
            raise RuntimeError(f"{self.name}: call load(device) before predict")
        wanted = self._interactions(prompt, image.shape)
        assert prompt is not None
        token = prompt.state.setdefault("nninteractive_run", uuid.uuid4().hex)
        with contextlib.redirect_stdout(io.StringIO()):
            self._hold_image(image)
            if (
                prompt.step == 0
                or token != self._active
                or wanted[: len(self._given)] != self._given
            ):
                self._session.reset_interactions()
                self._active, self._given = token, []
            for index in range(len(self._given), len(wanted)):
                with _numpy_seed(case_seed(prompt.seed, index)):
                    self._add(wanted[index])
                self._given.append(wanted[index])
        assert self._buffer is not None
        return np.transpose(self._buffer.numpy(), _TO_SESSION).astype(np.uint8)

    def _interactions(self, prompt: Prompt | None, shape: tuple[int, ...]) -> list[Interaction]:
        """Every prompt of the run so far, in the session's axis order, box first."""
        if prompt is None or (prompt.box is None and prompt.points is None):
            raise ValueError(f"{self.name} needs a Prompt with a box or points, got {prompt!r}")
        order = list(_TO_SESSION)
        wanted: list[Interaction] = []
        if prompt.box is not None:
            lo, hi = prompt.box
            wanted.append(("box", tuple((int(lo[a]), int(hi[a]) + 1) for a in order)))
        if prompt.points is not None:
            points = np.atleast_2d(np.asarray(prompt.points, dtype=float))
            voxels = np.clip(np.floor(points + 0.5).astype(int), 0, np.asarray(shape) - 1)
            labels = np.asarray(prompt.point_labels).reshape(-1)
            for voxel, label in zip(voxels, labels, strict=True):
                wanted.append(("point", tuple(int(voxel[a]) for a in order), bool(label == 1)))
        return wanted

    def _hold_image(self, image: Volume) -> None:
        """``set_image`` and a fresh target buffer when the scan changes (same scan: kept)."""
        if self._image is image.array and self._buffer is not None:
            return
        array = to_session_order(image.array)
        self._session.set_image(array[None])
        self._buffer = torch.zeros(array.shape, dtype=torch.uint8)
        self._session.set_target_buffer(self._buffer)
        self._image, self._active, self._given = image.array, None, []

    def _add(self, interaction: Interaction) -> None:
        if interaction[0] == "box":
            self._session.add_bbox_interaction(
                [list(axis) for axis in interaction[1]], include_interaction=True
            )
        else:
            self._session.add_point_interaction(interaction[1], include_interaction=interaction[2])
