"""SegVol (Du et al., NeurIPS 2024) run by the user's copy of its Hugging Face release.

Nothing of SegVol is installed here or copied into this repository: the adapter imports the
release's own ``model_segvol_single.py`` from the user's folder and calls the inference path
its model card publishes (huggingface.co/BAAI/SegVol, "Quickstart"; the GitHub repository
BAAI-DCAI/SegVol links it as its quickstart):

1. ``SegVolModel(SegVolConfig(test_mode=True))`` from the release file, the weights read here
   with ``torch.load(weights_only=True)`` (or ``model.safetensors``), and the CLIP tokenizer of
   the release folder set as the card does: ``model.model.text_encoder.tokenizer =
   AutoTokenizer.from_pretrained(<folder>)`` (``local_files_only``: nothing is downloaded).
2. ``processor.preprocess_ct_gt(ct_path, gt_path, category)``: the scan written once as NIfTI
   and read back by the release's own loader (MONAI ``LoadImage``; no reorientation, no
   resampling: SegVol works in the file's voxel order) and its foreground normalisation (clip
   to the 0.05-99.95 percentiles of the voxels above the mean, z-score with their statistics).
   The label file given with it is empty; this runs once per scan.
3. ``processor.zoom_transform(ct_npy, gt_npy)`` per prompt: ``DimTranspose`` (array axes
   ``(i, j, k)`` become ``(k, j, i)``), min-max, ``CropForegroundd`` on the image (its start and
   end coordinates kept), and the zoom-out view ``Resized`` to ``spatial_size`` (32, 256, 256).
   The "ground truth" handed to it is the prompt's box (a filled cube on the scan grid) or
   nothing, so the box travels through the release's own transforms exactly as its ground truth
   would.
4. Prompts, as the card builds them: text ``text_prompt=[organ name]`` (the release's text
   encoder writes "A computerized tomography of a {}."); box ``processor.bbox_prompt_b(zoom-out
   label)``, i.e. the release's ``generate_box`` of the cube after its transforms; points
   ``((coords, labels), build_binary_points(...))`` as ``point_prompt_b`` returns them, with the
   suite's clicks in place of the card's random draw from the ground truth (``select_points``: 1
   + 4 extra positive voxels). A click (scan voxel ``(i, j, k)``, rounded) is transposed to
   ``(k, j, i)``, shifted by the foreground crop's start and mapped to the zoom-out voxel whose
   footprint holds the voxel's centre: ``floor((c + 0.5) * zoom / cropped)`` per axis.
5. ``model.forward_test(image, zoomed_image, text_prompt, bbox_prompt_group,
   point_prompt_group, use_zoom=True)``: zoom-out on the resized view, then zoom-in (the
   release's ``sliding_window_inference`` over the region the zoom-out found, overlap 0.5).
   The zoom-in draws points at random (``select_points``); each call runs under torch's RNG
   seeded from the prompt's seed (the global state is restored), so a case reproduces.
6. ``processor.save_preds(ct_path, out_path, logits[0][0], start_coord, end_coord)``: the
   release's own map back to the scan grid (sigmoid > 0.5 into the foreground crop of an empty
   volume of the scan's shape, axes transposed back), read back from the file it writes. It
   swaps the coordinate arrays in place; it is given copies.

Deviations, written down: the suite gives one click where the card samples five positive voxels
from the ground truth; boxes and text are given alone (the GitHub demo runs text + box
together); the weights are loaded strictly except for ``position_ids`` buffers, which
``transformers`` releases newer than the card's 4.18 no longer keep (they are listed in
:meth:`SegVol.inference_settings`).

Requirements the user's environment must meet (SegVol's README: ``monai==0.9.0``,
``transformers==4.18.0``, ``einops``): the release builds MONAI's ``ViT`` with
``pos_embed='perceptron'``, an argument current MONAI no longer has, so
:meth:`SegVol.check_available` skips with that reason when the installed MONAI lacks it. The
release runs on CPU or CUDA (the GitHub repository's ``inference_demo.py`` instead hard-codes
``.cuda()`` and derives its prompts from the ground truth inside ``zoom_in_zoom_out``; it has no
map back to the scan grid, which is why the Hugging Face release is the one wrapped here).

Layout: the release folder (``git clone https://huggingface.co/BAAI/SegVol``, LFS files
included) as ``<weights dir>/segvol/`` or wherever ``UMD_SEGVOL_CODE`` points, holding
:data:`RELEASE_FILES` and one of :data:`WEIGHT_FILES`. It is imported as a private package named
after its path, so its module names never meet another checkout's, and no bytecode is written
into it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import os
import sys
import tempfile
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from umdbench.models._families import combined_hash, load_state_dict, torch_device
from umdbench.models.base import (
    LiteratureClaim,
    ModelUnavailable,
    PromptKind,
    SegmentationModel,
    Tier,
    weights_root,
)
from umdbench.organs import CANONICAL_ORGANS
from umdbench.prompts import Prompt, case_seed
from umdbench.registry import register_model
from umdbench.volume import Volume, save_volume

__all__ = [
    "ENV_VAR",
    "RELEASE_FILES",
    "WEIGHT_FILES",
    "SegVol",
    "find_release",
    "import_release",
    "monai_vit_takes_pos_embed",
    "to_zoom_out",
]

#: Environment variable naming the release folder (instead of ``<weights dir>/segvol/``).
ENV_VAR = "UMD_SEGVOL_CODE"
RELEASE_URL = "https://huggingface.co/BAAI/SegVol"
CODE_FILE = "model_segvol_single.py"
#: What the adapter reads from the release folder besides the weights.
RELEASE_FILES: tuple[str, ...] = (
    CODE_FILE,
    "config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
)
#: The weights, either file (the safetensors variant is the Hub's conversion of the .bin).
WEIGHT_FILES: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
REQUIREMENTS = (
    "the release's own requirements (SegVol's README: monai==0.9.0, transformers==4.18.0,"
    " einops): it builds MONAI's ViT with pos_embed='perceptron', which current MONAI no"
    " longer accepts"
)
LAYOUT = (
    f"<weights dir>/segvol/ (or ${ENV_VAR}) = the Hugging Face release folder ({RELEASE_URL}:"
    f" git clone with its LFS files) holding {', '.join(RELEASE_FILES)} and"
    f" {' or '.join(WEIGHT_FILES)}"
)
_UMD = (
    "UMD study digest (Zhang et al., arXiv 2602.07643, 2026), literature column (0.793 CT);"
    " not checked against Du et al. (NeurIPS 2024)"
)


def find_release() -> Path:
    """The release folder (``$UMD_SEGVOL_CODE`` or ``<weights dir>/segvol``), or a skip reason."""
    configured = os.environ.get(ENV_VAR)
    root = weights_root()
    if configured:
        folder = Path(configured).expanduser()
        where = f"${ENV_VAR}={configured}"
    elif root is not None:
        folder = root / "segvol"
        where = str(folder)
    else:
        raise ModelUnavailable(
            f"segvol runs the user's copy of its official code: pass --umd-weights DIR (or set"
            f" UMD_WEIGHTS, or {ENV_VAR}) with {LAYOUT}; needs {REQUIREMENTS}"
        )
    if not folder.is_dir():
        raise ModelUnavailable(
            f"segvol release folder not found at {where}: expected {LAYOUT}; needs {REQUIREMENTS}"
        )
    missing = [name for name in RELEASE_FILES if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if missing:
        raise ModelUnavailable(
            f"segvol release folder {folder} is incomplete: missing {', '.join(missing)}"
            f" (expected {LAYOUT})"
        )
    return folder


def import_release(folder: Path) -> types.ModuleType:
    """``model_segvol_single`` of ``folder``, imported as a private package named after its path.

    Relative imports inside the release resolve within it; nothing is put on ``sys.path`` and no
    bytecode is written into the user's folder. ImportError (a missing dependency) propagates.
    """
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
    package = f"_umdbench_segvol_{digest}"
    name = f"{package}.{CODE_FILE.removesuffix('.py')}"
    if name in sys.modules:
        return sys.modules[name]
    holder = types.ModuleType(package)
    holder.__path__ = [str(folder)]
    holder.__package__ = package
    sys.modules[package] = holder
    saved = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        return importlib.import_module(name)
    except BaseException:
        sys.modules.pop(name, None)
        sys.modules.pop(package, None)
        raise
    finally:
        sys.dont_write_bytecode = saved


def monai_vit_takes_pos_embed() -> bool:
    """Whether the installed MONAI's ``ViT`` still accepts ``pos_embed`` (the release needs it)."""
    try:
        from monai.networks.nets import ViT
    except ImportError:
        return False
    return "pos_embed" in inspect.signature(ViT.__init__).parameters


def to_zoom_out(
    points: np.ndarray,
    start: np.ndarray,
    cropped_shape: tuple[int, ...],
    zoom_shape: tuple[int, ...],
) -> np.ndarray:
    """Scan voxel indices ``(N, 3)`` -> voxel indices of the release's zoom-out view.

    Rounded to the voxel, transposed like ``DimTranspose``, shifted by the foreground crop's
    ``start`` (transposed order, as ``CropForegroundd`` records it) and clipped into the crop;
    then the zoom-out voxel whose footprint holds the voxel's centre.
    """
    voxels = np.floor(np.atleast_2d(np.asarray(points, dtype=np.float64)) + 0.5).astype(int)
    cropped = np.asarray(cropped_shape, dtype=int)
    zoom = np.asarray(zoom_shape, dtype=int)
    in_crop = np.clip(voxels[:, ::-1] - np.asarray(start, dtype=int), 0, cropped - 1)
    zoomed = np.floor((in_crop + 0.5) * zoom / cropped).astype(int)
    return np.clip(zoomed, 0, zoom - 1)


@contextlib.contextmanager
def _seeded_torch(seed: int, device: torch.device) -> Iterator[None]:
    """torch's global RNG seeded (CPU and the CUDA device used), then restored."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed % 2**63)
        yield


@dataclass
class _Scan:
    """One scan as the release read it: its NIfTI copy and ``preprocess_ct_gt``'s image."""

    array: np.ndarray  # the suite's array (identity: same scan, same case)
    folder: tempfile.TemporaryDirectory[str]
    ct_path: Path
    ct_npy: Any


@register_model
class SegVol(SegmentationModel):
    """SegVol: text, box and point prompts, zoom-out-zoom-in (the user's release code)."""

    name = "segvol"
    prompt_kind = PromptKind.TEXT
    organs = CANONICAL_ORGANS
    modalities_claimed = ("CT",)
    protocols: ClassVar[tuple[str, ...]] = ("text", "box", "1click")
    tier = Tier.USER_CODE
    literature: ClassVar[dict[str, LiteratureClaim]] = {"CT": LiteratureClaim(0.793, _UMD)}
    #: ``forward_test(use_zoom=...)``: the zoom-out-zoom-in inference of the paper and the card.
    use_zoom: ClassVar[bool] = True

    def __init__(self) -> None:
        self._module: types.ModuleType | None = None
        self._model: Any = None
        self._folder: Path | None = None
        self._weights: Path | None = None
        self._device = torch.device("cpu")
        self._scan: _Scan | None = None
        self._ignored_keys: list[str] = []
        self._weights_id: str | None = None

    def _release_module(self, folder: Path) -> types.ModuleType:
        if self._module is None or self._folder != folder:
            try:
                self._module = import_release(folder)
            except ImportError as error:
                missing = getattr(error, "name", None) or str(error)
                raise ModelUnavailable(
                    f"segvol release code {folder / CODE_FILE} cannot be imported: {error}"
                    f" (missing: {missing}); install {REQUIREMENTS}"
                ) from error
            self._folder = folder
        return self._module

    def check_available(self, device: str) -> None:
        folder = find_release()
        self._release_module(folder)
        if not monai_vit_takes_pos_embed():
            import monai

            raise ModelUnavailable(
                f"segvol's release builds monai.networks.nets.ViT(pos_embed='perceptron'); the"
                f" installed MONAI {monai.__version__} has no pos_embed argument: run it in an"
                f" environment with {REQUIREMENTS}"
            )
        torch_device(device)

    def load(self, device: str) -> None:
        from transformers import AutoTokenizer

        folder = find_release()
        module = self._release_module(folder)
        weights = next(folder / n for n in WEIGHT_FILES if (folder / n).is_file())
        model = module.SegVolModel(module.SegVolConfig(test_mode=True))
        state = load_state_dict(weights)
        result = model.load_state_dict(state, strict=False)
        ignored = [*result.missing_keys, *result.unexpected_keys]
        wrong = [key for key in ignored if not key.endswith("position_ids")]
        if wrong:
            raise ValueError(
                f"{weights} does not fit SegVolModel of {folder / CODE_FILE}: missing"
                f" {list(result.missing_keys)[:5]}, unexpected {list(result.unexpected_keys)[:5]}"
            )
        model.model.text_encoder.tokenizer = AutoTokenizer.from_pretrained(
            str(folder), local_files_only=True
        )
        self._device = torch_device(device)
        self._model = model.to(self._device).eval()
        self._weights, self._ignored_keys = weights, ignored
        self._scan, self._weights_id = None, None

    def weights_id(self) -> str:
        if self._weights is None or self._folder is None:
            return "none"
        if self._weights_id is None:  # the .bin is 724 MB: hashed once
            self._weights_id = combined_hash([self._weights, self._folder / CODE_FILE])
        return self._weights_id

    def inference_settings(self) -> dict[str, object]:
        config = getattr(self._model, "config", None)
        return {
            "code": f"{self._folder / CODE_FILE}" if self._folder else None,
            "weights": self._weights.name if self._weights else None,
            "entry": "SegVolModel.forward_test + SegVolProcessor (Hugging Face release)",
            "spatial_size": list(getattr(config, "spatial_size", []) or []),
            "use_zoom": self.use_zoom,
            "preprocessing": "preprocess_ct_gt (LoadImage, ForegroundNorm) once per scan;"
            " zoom_transform (DimTranspose, MinMax, CropForegroundd, Resized) per prompt",
            "axis_order": "the file's voxel order transposed (k, j, i); no reorientation,"
            " no resampling",
            "text": "text_prompt=[organ name] (the release's CT sentence template)",
            "box": "the prompt box as a cube through zoom_transform, then bbox_prompt_b",
            "points": "the suite's clicks mapped to the zoom-out voxel holding them (the card"
            " samples 1 + 4 positive voxels of the ground truth instead)",
            "rng": "torch seeded per prompt (the zoom-in samples points at random)",
            "postprocessing": "save_preds: sigmoid > 0.5 into the foreground crop, transposed"
            " back to the scan grid",
            "ignored_state_keys": list(self._ignored_keys),
        }

    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        if self._model is None or self._module is None:
            raise RuntimeError(f"{self.name}: call load(device) before predict")
        if prompt is None or (prompt.text is None and prompt.box is None and prompt.points is None):
            raise ValueError(
                f"{self.name} needs a Prompt with text, a box or points, got {prompt!r}"
            )
        processor = self._model.processor
        scan = self._read(image)
        label = np.zeros((1, *image.shape), dtype=np.int32)
        if prompt.box is not None:
            lo, hi = prompt.box
            label[0, lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1] = 1
        device = self._device
        with _seeded_torch(case_seed(prompt.seed, prompt.step), device), torch.no_grad():
            item = processor.zoom_transform(scan.ct_npy, label)
            arguments: dict[str, Any] = {
                "image": item["image"].float().unsqueeze(0).to(device),
                "zoomed_image": item["zoom_out_image"].float().unsqueeze(0).to(device),
                "use_zoom": self.use_zoom,
            }
            if prompt.text is not None:
                arguments["text_prompt"] = [prompt.text]
            if prompt.box is not None:
                box, cube = processor.bbox_prompt_b(item["zoom_out_label"][0], device=device)
                arguments["bbox_prompt_group"] = [box, cube]
            if prompt.points is not None:
                arguments["point_prompt_group"] = self._points(prompt, item)
            logits = self._model.forward_test(**arguments)
        output = Path(scan.folder.name) / "prediction.nii"
        processor.save_preds(
            str(scan.ct_path),
            str(output),
            logits[0][0],
            start_coord=np.array(item["foreground_start_coord"], dtype=int),
            end_coord=np.array(item["foreground_end_coord"], dtype=int),
        )
        import nibabel as nib

        mask = np.asanyarray(nib.load(str(output)).dataobj) > 0.5  # type: ignore[attr-defined]
        if mask.shape != image.shape:
            raise RuntimeError(
                f"{self.name}: save_preds wrote shape {mask.shape}, the scan is {image.shape}"
            )
        return mask.astype(np.uint8)

    def _points(self, prompt: Prompt, item: Any) -> list[Any]:
        """``point_prompt_b``'s return value, built from the suite's clicks."""
        assert self._module is not None and prompt.points is not None
        zoom_shape = tuple(int(s) for s in item["zoom_out_image"].shape[1:])
        cropped = tuple(int(s) for s in item["image"].shape[1:])
        start = np.asarray(item["foreground_start_coord"], dtype=int)
        coords = to_zoom_out(prompt.points, start, cropped, zoom_shape)
        labels = np.asarray(prompt.point_labels, dtype=np.float32).reshape(-1)
        if len(labels) != len(coords):
            raise ValueError(f"{self.name}: {len(coords)} points but {len(labels)} point labels")
        point = torch.as_tensor(coords, dtype=torch.float32)
        point_label = torch.as_tensor(labels)
        binary = self._module.build_binary_points(point, point_label, zoom_shape)
        group = (point[None].to(self._device), point_label[None].to(self._device))
        return [group, binary[None, None]]

    def _read(self, image: Volume) -> _Scan:
        """The scan through ``preprocess_ct_gt`` (NIfTI copy, empty label), once per scan."""
        if self._scan is not None and self._scan.array is image.array:
            return self._scan
        assert self._model is not None
        self._scan = None  # the previous scan's folder is removed with it
        folder = tempfile.TemporaryDirectory(prefix="umdbench-segvol-")
        ct_path = Path(folder.name) / "scan.nii.gz"
        gt_path = Path(folder.name) / "empty_label.nii.gz"
        save_volume(Volume(np.asarray(image.array, dtype=np.float32), image.affine), ct_path)
        save_volume(Volume(np.zeros(image.shape, dtype=np.uint8), image.affine), gt_path)
        ct_npy, _ = self._model.processor.preprocess_ct_gt(
            str(ct_path), str(gt_path), category=["target"]
        )
        self._scan = _Scan(image.array, folder, ct_path, ct_npy)
        return self._scan
