"""VISTA3D (He et al., CVPR 2025) through MONAI's network and the MONAI bundle's checkpoint.

Everything here follows the MONAI bundle (Project-MONAI/model-zoo ``models/vista3d``, version
0.5.7): its ``configs/inference.json``, ``scripts/inferer.py`` (``Vista3dInferer``) and
``scripts/evaluator.py`` (``Vista3dEvaluator``), run with MONAI's own transforms and inferers
(``monai.apps.vista3d``, ``monai.networks.nets.vista3d132``).

Preprocessing, in the bundle's order: ``Spacingd`` 1.5 mm (bilinear), ``CropForegroundd``
(voxels > 0 of the raw image, i.e. above 0 HU on CT, margin 10, ``allow_smaller``),
``VistaPreTransformd`` (label prompts expanded to their subclasses), ``ScaleIntensityRanged``
-963.8..1053.7 -> 0..1 clipped, ``Orientationd`` RAS. The bundle applies the CT window to every
image: so does this adapter (the study ran VISTA3D zero-shot on PET and MRI).

Prompts, as the bundle's evaluator turns them into network inputs:

- **class id** (``classid``): the id goes through ``VistaPreTransformd`` with the bundle's
  ``subclass`` map, so lung (20) is prompted as its five lobes 28..32 (and kidney 2 as 14 and 5);
  the mask is every voxel given any of them. Inference: ``SlidingWindowInfererAdapt`` with its
  defaults (overlap 0.25, constant blending: the bundle's ``overlap`` 0.3 does not reach this
  inferer) and ``padding_mode="replicate"`` (since bundle 0.5.7; zeros before),
  ``with_coord=True``.
- **points** (``1click``): scan voxel indices (fractional kept) mapped with
  ``inv(preprocessed affine) @ original affine``; no class (``class_vector`` and ``prompt_class``
  None, as a user prompt gives). ``point_based_window_inferer``: one window of the patch size
  centred on each click, nothing computed elsewhere (NaN there, 255 in the bundle's output file,
  background here). ``VistaPostTransformd`` then keeps only the components that hold a positive
  click (``keep_components_with_positive_points``).
- **class id and points** (``classid-<N>clicks`` after its class-only step 0): both go to the
  network, which merges the class head's mask with the point head's around the clicks
  (``connected_components_combine``); same point window, so voxels outside the windows around
  the clicks are background (NaN in the bundle, which passes no previous mask). The bundle
  refuses points with a label prompt that expands to several subclasses, so
  :meth:`Vista3D.unsupported` skips lung under these protocols.
- **patchpoints**: VISTA3D's own point-only validation (``train.json`` ``val_head: point``): the
  reference on the model grid (the same preprocessing, nearest) valued with the class id,
  ``label_set`` ``[0, class id]`` (the bundle's configs put 0 first), placeholder points with
  label -1 and no class, through ``SlidingWindowInfererAdapt`` as above; the network's
  ``sample_points_patch_val`` (``use_center=True``) puts one positive point per patch at the
  eroded largest component's voxel nearest its centroid; a patch without the organ gives
  -9999, which the constant blending averages into the overlaps. The organ's channel is
  thresholded at 0 as the bundle's validation does (``AsDiscreted(threshold=0.0)``). Lung is one label, 20:
  the bundle's evaluation pipeline has no subclass step for ground truth (``Relabeld`` maps a
  label to one id), so each patch gets one point in its largest lung component, not one per
  lung or lobe. Validation in the bundle preprocesses in another order (crop, orientation,
  spacing, pad); here every protocol sees the inference grid so that protocols differ only by
  their prompts.

Postprocessing: ``VistaPostTransformd`` (class and point paths), then ``Invertd`` with
``nearest_interp=True`` back to the scan grid, as ``inference.json`` does. AMP: fp16 autocast on
CUDA, as the bundle's evaluator (``amp: true``); none on CPU. Everything chosen is in
:meth:`Vista3D.inference_settings`, recorded with every result.

Weights: the bundle folder copied to ``<weights dir>/vista3d/`` (``models/model.pt`` and
``configs/inference.json``: the subclass map is then read from that config), or only the
bundle's ``models/model.pt`` copied to ``<weights dir>/vista3d/model.pt`` (the subclass map is
then the built-in copy of the bundle's). The checkpoint is a state dict or
``{"model": state_dict}``, read with ``weights_only=True``.

One deviation: a click that falls outside the preprocessed (cropped) grid is left out of the
component filter, where the bundle would index outside the array; the network ignores it as in
the bundle.
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from umdbench.models._families import (
    combined_hash,
    load_weights_into,
    require_packages,
    torch_device,
)
from umdbench.models.base import (
    LiteratureClaim,
    ModelUnavailable,
    PromptKind,
    SegmentationModel,
    Tier,
    weights_root,
)
from umdbench.organs import CANONICAL_ORGANS
from umdbench.prompts import Prompt
from umdbench.registry import register_model
from umdbench.volume import Volume

__all__ = ["DEFAULT_SUBCLASS", "VISTA3D_LABELS", "BundleFiles", "Vista3D", "read_subclass_map"]

#: Canonical organ -> VISTA3D label id (bundle ``docs/labels.json``; kidney_left = "left
#: kidney" 14, kidney_right = "right kidney" 5, urinary_bladder = "bladder" 15; lung = 20, which
#: the bundle prompts as its subclasses).
VISTA3D_LABELS: dict[str, int] = {
    "liver": 1,
    "kidney_left": 14,
    "kidney_right": 5,
    "spleen": 3,
    "heart": 115,
    "aorta": 6,
    "lung": 20,
    "brain": 22,
    "colon": 62,
    "urinary_bladder": 15,
    "pancreas": 4,
    "esophagus": 11,
    "stomach": 12,
}

#: The bundle's ``inference.json`` ``subclass`` map (kidney, lung, bone), used when only
#: ``model.pt`` is given.
DEFAULT_SUBCLASS: dict[int, tuple[int, ...]] = {
    2: (14, 5),
    20: (28, 29, 30, 31, 32),
    21: (*range(33, 57), *range(63, 98), 114, 120, 122),
}

#: ``Vista3dEvaluator.check_prompts_format``: class prompts without points must be one of these.
_CLASS_PROMPTS = frozenset(range(1, 133)) - {16, 18, 129, 130, 131}
_POINT_LABELS = frozenset({-1, 0, 1, 2, 3})
_CLASSID_CLICKS = re.compile(r"^classid-[1-9][0-9]*clicks?$")
_SEVERAL_OBJECTS = "Label prompt can only be a single object if provided with point prompts."
_UMD = "UMD study digest (Zhang et al., arXiv 2602.07643, 2026), literature column"


@dataclass(frozen=True)
class BundleFiles:
    """Where the checkpoint is, and the bundle config beside it (None: only model.pt given)."""

    weights: Path
    config: Path | None

    @property
    def layout(self) -> str:
        return "bundle folder" if self.weights.parent.name == "models" else "model.pt only"


@dataclass(frozen=True)
class _Request:
    """One prompt as the bundle's evaluator sees it (``input_dict`` keys) and which path runs."""

    path: str  # class | points | class+points | patchpoints
    class_id: int | None
    label_prompt: list[int] | None
    points: np.ndarray | None  # (N, 3) scan voxel indices
    point_labels: list[int] | None
    reference: np.ndarray | None


def find_bundle(model: str) -> BundleFiles:
    """The checkpoint in one of the two layouts, or a skip reason naming both."""
    root = weights_root()
    layouts = (
        f"the MONAI vista3d bundle folder as <weights dir>/{model}/ (models/model.pt,"
        f" configs/inference.json), or only its models/model.pt as <weights dir>/{model}/model.pt"
    )
    if root is None:
        raise ModelUnavailable(
            f"{model} needs its weights: pass --umd-weights DIR or set UMD_WEIGHTS, with {layouts}"
        )
    folder = root / model
    config = folder / "configs" / "inference.json"
    for weights in (folder / "models" / "model.pt", folder / "model.pt"):
        if weights.is_file():
            return BundleFiles(weights, config if config.is_file() else None)
    raise ModelUnavailable(
        f"{model} weights not found: expected {folder / 'models' / 'model.pt'} or"
        f" {folder / 'model.pt'} ({layouts})"
    )


def read_subclass_map(config: Path) -> dict[int, tuple[int, ...]]:
    """The ``subclass`` entry of a bundle ``inference.json``; none there: no expansion.

    Values are lists of ids or the bundle's ``$`` expressions, of which only ``list(range(a,
    b))``, list literals and ``+`` are read (evaluated without ``eval``).
    """
    try:
        content = json.loads(config.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read the VISTA3D bundle config {config}: {error}") from error
    subclass = content.get("subclass", {}) if isinstance(content, dict) else None
    if not isinstance(subclass, dict):
        raise ValueError(f"{config}: 'subclass' must be a mapping of id -> ids, got {subclass!r}")
    return {
        int(key): _id_list(value, f"{config} subclass {key}") for key, value in subclass.items()
    }


def _id_list(value: object, where: str) -> tuple[int, ...]:
    try:
        if isinstance(value, list):
            return tuple(_integer(ast.Constant(v)) for v in value)
        if isinstance(value, str) and value.startswith("$"):
            return tuple(_evaluate(ast.parse(value[1:].strip(), mode="eval").body))
    except (SyntaxError, ValueError) as error:
        raise ValueError(f"{where}: cannot read {value!r}: {error}") from error
    raise ValueError(f"{where}: expected a list of ids or a '$' expression, got {value!r}")


def _evaluate(node: ast.expr) -> list[int]:
    """``list(range(a, b)) + [c, d]`` and the like, and nothing else."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _evaluate(node.left) + _evaluate(node.right)
    if isinstance(node, ast.List | ast.Tuple):
        return [_integer(element) for element in node.elts]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        if node.func.id in ("list", "tuple") and len(node.args) == 1:
            return _evaluate(node.args[0])
        if node.func.id == "range" and 1 <= len(node.args) <= 3:
            return list(range(*(_integer(arg) for arg in node.args)))
    raise ValueError(f"unsupported expression {ast.unparse(node)!r}")


def _integer(node: ast.expr) -> int:
    value = node.value if isinstance(node, ast.Constant) else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"expected an integer id, got {ast.unparse(node)!r}")
    return value


@register_model
class Vista3D(SegmentationModel):
    """VISTA3D with class-id and point prompts (binary mask of the prompted organ)."""

    name = "vista3d"
    prompt_kind = PromptKind.POINTS
    organs = CANONICAL_ORGANS
    protocols: ClassVar[tuple[str, ...]] = ("classid", "1click", "classid-1click", "patchpoints")
    modalities_claimed = ("CT",)
    tier = Tier.RANDOM_WEIGHTS
    literature: ClassVar[dict[str, LiteratureClaim]] = {"CT": LiteratureClaim(0.711, _UMD)}
    label_ids: ClassVar[dict[str, int]] = VISTA3D_LABELS
    #: ``vista3d132(encoder_embed_dim=...)``: 48 is the published network.
    encoder_embed_dim: ClassVar[int] = 48
    spacing: ClassVar[tuple[float, float, float]] = (1.5, 1.5, 1.5)
    patch_size: ClassVar[tuple[int, int, int]] = (128, 128, 128)
    window: ClassVar[tuple[float, float]] = (-963.8247715525971, 1053.678477684517)
    crop_margin: ClassVar[int] = 10
    #: ``SlidingWindowInfererAdapt``'s default; ``Vista3dInferer`` passes it no overlap.
    sw_overlap: ClassVar[float] = 0.25
    sw_padding_mode: ClassVar[str] = "replicate"
    #: ``inference.json``'s overlap: handed to ``point_based_window_inferer``, which ignores it.
    point_overlap: ClassVar[float] = 0.3

    def __init__(self) -> None:
        self._net: Any = None
        self._device = torch.device("cpu")
        self._files: BundleFiles | None = None
        self._subclass: dict[int, tuple[int, ...]] | None = None
        self._last_path: str | None = None

    def check_available(self, device: str) -> None:
        require_packages(self.name, "monai", "einops")
        torch_device(device)
        find_bundle(self.name)

    def load(self, device: str) -> None:
        from monai.networks.nets import vista3d132

        files = find_bundle(self.name)
        net = vista3d132(encoder_embed_dim=self.encoder_embed_dim)
        architecture = f"vista3d132(encoder_embed_dim={self.encoder_embed_dim})"
        load_weights_into(net, files.weights, "model", architecture)
        self._subclass = read_subclass_map(files.config) if files.config else None
        self._device = torch_device(device)
        self._net, self._files = net.to(self._device).eval(), files

    def weights_id(self) -> str:
        """Checkpoint, and the bundle config when read (its subclass map changes the output)."""
        if self._files is None:
            return "none"
        return combined_hash([p for p in (self._files.weights, self._files.config) if p])

    def subclass_map(self) -> dict[int, tuple[int, ...]]:
        """The bundle config's map once loaded with one, else the built-in copy."""
        if self._subclass is not None:
            return self._subclass
        if self._files is None:  # not loaded: the config the weights folder would give
            with contextlib.suppress(ModelUnavailable):
                config = find_bundle(self.name).config
                if config is not None:
                    return read_subclass_map(config)
        return DEFAULT_SUBCLASS

    def label_prompt(self, class_id: int) -> list[int]:
        """The ids the network is prompted with for ``class_id`` (``VistaPreTransformd``)."""
        return list(self.subclass_map().get(int(class_id), (int(class_id),)))

    def unsupported(self, organ: str, protocol: str | None) -> str | None:
        """Class id with points for an organ whose id expands to several subclasses."""
        if protocol is None or not _CLASSID_CLICKS.match(protocol) or organ not in self.label_ids:
            return None
        ids = self.label_prompt(self.label_ids[organ])
        if len(ids) == 1:
            return None
        return (
            f"the bundle prompts {organ} (class {self.label_ids[organ]}) as"
            f" subclasses {ids}, and refuses point prompts with a label prompt of several"
            f" objects (Vista3dEvaluator.check_prompts_format: {_SEVERAL_OBJECTS!r})"
        )

    def inference_settings(self) -> dict[str, object]:
        files = self._files
        source = str(files.config) if files and files.config else "built-in (bundle inference.json)"
        return {
            "weights_layout": files.layout if files else None,
            "subclass_map_source": source,
            "subclass_map": {  # the entries for ids this adapter prompts
                str(k): list(v)
                for k, v in self.subclass_map().items()
                if k in set(self.label_ids.values())
            },
            "preprocessing": [
                f"Spacingd {list(self.spacing)} bilinear",
                f"CropForegroundd x>0 margin {self.crop_margin} allow_smaller",
                "VistaPreTransformd subclass",
                f"ScaleIntensityRanged {list(self.window)} -> 0..1 clip",
                "Orientationd RAS",
            ],
            "sliding_window": {
                "inferer": "SlidingWindowInfererAdapt",
                "roi_size": list(self.patch_size),
                "overlap": self.sw_overlap,
                "blend_mode": "constant",
                "padding_mode": self.sw_padding_mode,
            },
            "point_window": {
                "inferer": "point_based_window_inferer",
                "window": "roi_size centred on each click",
                "overlap_passed": self.point_overlap,
                "outside_windows": "background (NaN, 255 in the bundle's output)",
            },
            "patchpoints": "sample_points_patch_val(use_center=True), label_set [0, class id],"
            " threshold >= 0",
            "postprocessing": "VistaPostTransformd, Invertd(nearest_interp=True)",
            "amp": self._device.type == "cuda",
            "amp_dtype": "float16" if self._device.type == "cuda" else None,
            "path": self._last_path,
        }

    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        if self._net is None:
            raise RuntimeError(f"{self.name}: call load(device) before predict")
        if prompt is None:
            raise ValueError(f"{self.name} is promptable: prompt must be a Prompt, got None")
        request = self._request(prompt)
        transform = self.preprocessing(with_label=request.reference is not None)
        data = transform(self._input_dict(image, request))
        checked = self._check(request, data)
        logits = self._infer(data, checked)
        mask = self._postprocess(transform, data, logits, checked)
        if mask.shape != image.shape:  # pragma: no cover - Invertd restores the input grid
            raise RuntimeError(f"{self.name}: output {mask.shape} is not on the scan grid")
        self._last_path = request.path
        return mask

    def _request(self, prompt: Prompt) -> _Request:
        """Which of the bundle's paths the prompt takes (see the module docstring)."""
        has_points = prompt.points is not None and len(prompt.points) > 0
        class_id = None if prompt.class_id is None else int(prompt.class_id)
        if prompt.reference is not None:
            if class_id is None or has_points:
                raise ValueError(
                    f"{self.name}: patchpoints samples its own points; give class_id and the"
                    f" reference only (got class_id={class_id}, points={has_points})"
                )
            reference = np.asarray(prompt.reference, dtype=bool)
            return _Request("patchpoints", class_id, None, None, None, reference)
        label_prompt = None if class_id is None else [class_id]
        if not has_points:
            if label_prompt is None:
                raise ValueError(f"{self.name}: a prompt needs a class_id, points or a reference")
            return _Request("class", class_id, label_prompt, None, None, None)
        points = np.asarray(prompt.points, dtype=np.float64).reshape(-1, 3)
        labels = [int(v) for v in np.asarray(prompt.point_labels).reshape(-1)]
        if len(labels) != len(points) or not set(labels) <= _POINT_LABELS:
            raise ValueError(
                f"{self.name}: point_labels must give -1, 0, 1, 2 or 3 for each of the"
                f" {len(points)} points, got {labels}"
            )
        path = "points" if label_prompt is None else "class+points"
        return _Request(path, class_id, label_prompt, points, labels, None)

    def preprocessing(self, with_label: bool = False) -> Any:
        """``inference.json``'s transforms (the label, for patchpoints, follows with nearest)."""
        from monai.apps.vista3d.transforms import VistaPreTransformd
        from monai.transforms import (
            CastToTyped,
            Compose,
            CropForegroundd,
            EnsureTyped,
            Orientationd,
            ScaleIntensityRanged,
            Spacingd,
        )

        keys = ["image", "label"] if with_label else ["image"]
        modes = ["bilinear", "nearest"] if with_label else ["bilinear"]
        dtypes = [torch.float32, torch.uint8] if with_label else [torch.float32]
        subclass = {str(k): list(v) for k, v in self.subclass_map().items()}
        low, high = self.window
        return Compose(
            [
                EnsureTyped(keys=keys, device=self._device, track_meta=True),
                Spacingd(keys=keys, pixdim=self.spacing, mode=modes),
                CropForegroundd(
                    keys=keys, source_key="image", margin=self.crop_margin, allow_smaller=True
                ),
                VistaPreTransformd(keys="image", subclass=subclass or None),
                ScaleIntensityRanged(
                    keys="image", a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True
                ),
                Orientationd(keys=keys, axcodes="RAS"),
                CastToTyped(keys=keys, dtype=dtypes),
            ]
        )

    def _input_dict(self, image: Volume, request: _Request) -> dict[str, Any]:
        """What ``LoadImaged`` + ``EnsureChannelFirstd`` give, with the prompt keys beside."""
        from monai.data import MetaTensor

        affine = torch.as_tensor(image.affine, dtype=torch.float64)
        meta = {"original_affine": affine.clone(), "space": "RAS"}
        data: dict[str, Any] = {
            "image": MetaTensor(
                torch.as_tensor(np.asarray(image.array, dtype=np.float32))[None],
                affine=affine,
                meta=meta,
            )
        }
        if request.reference is not None:
            if request.reference.shape != image.shape:
                raise ValueError(
                    f"{self.name}: the reference must be on the scan grid {image.shape},"
                    f" got {request.reference.shape}"
                )
            label = np.where(request.reference, float(request.class_id or 0), 0.0)
            data["label"] = MetaTensor(
                torch.as_tensor(label, dtype=torch.float32)[None], affine=affine, meta=meta
            )
        if request.label_prompt is not None:
            data["label_prompt"] = list(request.label_prompt)
        if request.points is not None:
            data["points"], data["point_labels"] = request.points, list(request.point_labels or [])
        return data

    def _check(self, request: _Request, data: dict[str, Any]) -> _Request:
        """The evaluator's prompt checks, on the prompt as ``VistaPreTransformd`` left it."""
        if request.path == "patchpoints":
            return request
        label_prompt = data.get("label_prompt")
        if label_prompt is not None:
            if any(v >= 255 for v in label_prompt):
                raise ValueError("Current bundle only supports label prompt smaller than 255.")
            if request.points is None and not set(label_prompt) <= _CLASS_PROMPTS:
                raise ValueError(
                    f"Undefined label prompt detected ({label_prompt}). Provide point prompts"
                    " for zero-shot."
                )
            if request.points is not None and len(label_prompt) != 1:
                raise ValueError(
                    f"{self.name}: class {request.label_prompt} -> {label_prompt}:"
                    f" {_SEVERAL_OBJECTS}"
                )
        point_labels = data.get("point_labels", request.point_labels)
        return _Request(
            request.path, request.class_id, label_prompt, request.points, point_labels, None
        )

    def _infer(self, data: dict[str, Any], request: _Request) -> torch.Tensor:
        """``Vista3dInferer``'s two branches, under the evaluator's AMP."""
        inputs = data["image"][None]
        device = inputs.device
        network_args = self._network_args(data, request, device)
        with self._autocast(), torch.no_grad():
            if request.path in ("points", "class+points"):
                from monai.apps.vista3d.inferer import point_based_window_inferer

                return point_based_window_inferer(
                    inputs=inputs,
                    roi_size=self.patch_size,
                    predictor=self._net,
                    sw_batch_size=1,
                    transpose=True,
                    with_coord=True,
                    mode="gaussian",
                    sw_device=device,
                    device=device,
                    overlap=self.point_overlap,
                    **network_args,
                )
            from monai.inferers import SlidingWindowInfererAdapt

            inferer = SlidingWindowInfererAdapt(
                roi_size=self.patch_size,
                sw_batch_size=1,
                overlap=self.sw_overlap,
                padding_mode=self.sw_padding_mode,
                with_coord=True,
            )
            return inferer(inputs, self._net, transpose=True, **network_args)  # type: ignore[return-value]

    def _network_args(
        self, data: dict[str, Any], request: _Request, device: torch.device
    ) -> dict[str, Any]:
        """Prompt tensors as the evaluator builds them (batch of one object for points)."""
        args: dict[str, Any] = dict.fromkeys(
            (
                "point_coords",
                "point_labels",
                "class_vector",
                "prompt_class",
                "prev_mask",
                "labels",
                "label_set",
            )
        )
        if request.path == "patchpoints":
            label_set = [0, int(request.class_id or 0)]
            args["point_coords"] = torch.zeros(len(label_set), 1, 3, device=device)
            args["point_labels"] = torch.zeros(len(label_set), 1, device=device) - 1
            args["labels"], args["label_set"] = data["label"][None], label_set
            return args
        if request.label_prompt is not None:
            vector = torch.as_tensor(request.label_prompt, device=device).unsqueeze(-1)
            args["prompt_class"] = vector.clone()
            # Vista3dInferer: ids beyond the trained classes go to the point head as zero-shot
            supported = bool((vector <= self._net.point_head.last_supported).all())
            args["class_vector"] = vector if supported else None
        if request.points is not None:
            points = self.model_points(data["image"], request.points)[None]
            args["point_coords"] = torch.from_numpy(points).to(device)
            args["point_labels"] = torch.as_tensor([request.point_labels], device=device)
        return args

    @staticmethod
    def model_points(image: Any, points: np.ndarray) -> np.ndarray:
        """Scan voxel indices -> ``(N, 3)`` fractional indices of the preprocessed ``image``
        (a MetaTensor), as the evaluator maps them: ``inv(affine) @ original_affine``."""
        matrix = np.linalg.inv(np.asarray(image.affine)) @ np.asarray(image.meta["original_affine"])
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1)
        return (homogeneous @ matrix.T)[:, :3]

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self._device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _postprocess(
        self, transform: Any, data: dict[str, Any], logits: torch.Tensor, request: _Request
    ) -> np.ndarray:
        """``VistaPostTransformd`` (or the validation threshold), ``Invertd``, binary mask."""
        from monai.transforms import AsDiscrete, Invertd

        if request.path == "patchpoints":
            pred = AsDiscrete(threshold=0.0)(logits[0, 1:2])  # the organ's channel
        else:
            pred = self._vista_post(data, logits, request)
        invert = Invertd(
            keys="pred",
            transform=transform,
            orig_keys="image",
            nearest_interp=True,
            to_tensor=True,
        )
        values = invert({"pred": pred, "image": data["image"]})["pred"][0]
        values = torch.as_tensor(values).detach().cpu()
        return ((values > 0) & ~torch.isnan(values)).numpy().astype(np.uint8)

    def _vista_post(
        self, data: dict[str, Any], logits: torch.Tensor, request: _Request
    ) -> torch.Tensor:
        from monai.apps.vista3d.transforms import VistaPostTransformd

        device = logits.device
        post: dict[str, Any] = {"pred": logits[0]}
        if request.label_prompt is not None:
            post["label_prompt"] = torch.as_tensor(request.label_prompt, device=device)[:, None]
        if request.points is not None:
            points = self.model_points(data["image"], request.points)
            inside = _inside(points, data["image"].shape[1:])
            labels = torch.as_tensor(request.point_labels)[torch.as_tensor(inside)]
            post["points"] = torch.from_numpy(points[inside][None]).to(device)
            post["point_labels"] = labels[None].to(device)
        return VistaPostTransformd(keys="pred")(post)["pred"]


def _inside(points: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Points whose rounded index (as the component filter rounds) lies in the grid."""
    rounded = np.round(points)
    return np.all((rounded >= 0) & (rounded < np.asarray(shape)), axis=1)
