"""SAT-Pro (Zhao et al., npj Digit. Med. 2025) run by the user's checkout of its official code.

Nothing of SAT is installed here or copied into this repository: the adapter imports the user's
checkout of github.com/zhaoziheng/SAT and calls the functions its ``inference.py`` ``main``
calls, in that order, with the README's SAT-Pro command line parsed by SAT's own
``evaluate/params.py`` (``--vision_backbone UNET-L --text_encoder ours --max_queries 256``;
``--batchsize_3d`` 1, the README's lower-memory row; every other option at its default, e.g.
``partial_load`` True for both checkpoints, ``crop_size`` 288 x 288 x 96):

- once, in :meth:`SatPro.load`: ``build_maskformer(args, device, gpu_id)``, ``Text_Encoder(
  text_encoder='ours', checkpoint=..., partial_load=..., open_bert_layer=12,
  open_modality_embed=False, gpu_id, device)`` and ``load_checkpoint(checkpoint, resume=False,
  partial_load, model, device)``;
- per scan and arm, in :meth:`SatPro.predict`: ``Inference_Dataset(jsonl, max_queries,
  batchsize_3d)``, a ``DataLoader`` with SAT's ``collate_fn`` (batch 1, no workers) and
  ``evaluate.inference_engine.inference(model, text_encoder, device, testset, testloader,
  nib_dir)``, which writes one mask per label into ``nib_dir``.

What SAT's code does there, unchanged: ``load_image`` (``LoadImaged``, ``EnsureChannelFirstd``,
``Orientationd`` RAS, ``Spacingd`` 1 x 1 x 3 mm bilinear, ``CropForegroundd``, then its
``Normalization``: CT clipped to -500..1000 and z-scored, any other modality clipped to its
0.5-99.5 percentiles and z-scored), 288 x 288 x 96 patches at half-patch stride, the text
encoder (BioLORD-based, with a learned modality embedding), fp16 autocast, Gaussian-weighted
accumulation and sigmoid > 0.5.

The jsonl line is SAT's documented format: ``image`` (the scan written once as NIfTI),
``label`` (organ names), ``modality`` and ``dataset``. Modality: SAT knows ``ct``, ``mri`` and
``pet`` (its text encoder also has ``us``); :data:`SAT_MODALITY` maps CT -> ``ct``, MRI ->
``mri`` and both PET arms -> ``pet``. They must be given as these words: SAT's
``_merge_modality`` tests ``'ct'`` before ``'pet'``, so ``"PET_CT"`` would become ``ct``.

All organs in one pass: SAT's query decoder has no self-attention (``model/transformer_decoder.py``:
``self_attn`` is commented out and ``normalize_before=True`` runs ``forward_pre``, cross-attention
only), so each label's mask is independent of the others asked with it; the adapter asks every
organ of the suite in the first call on a scan and arm (as SAT's jsonl lists a dataset's
classes) and answers the other organs from that pass.

Back to the scan grid (SAT does not map back: it saves its masks with an identity affine, on the
preprocessed grid): the grid's affine is the one MONAI tracked through SAT's own ``load_image``
(read from the image SAT hands to its ``Normalization``, which is wrapped for the call and
restored), and the mask is resampled onto the scan grid with nearest neighbour
(:meth:`umdbench.models._families.ModelGrid.to_scan`, the same round trip as the other
adapters); outside SAT's foreground crop is background.

torchrun, emulated: SAT's builders wrap the networks in ``DistributedDataParallel`` and its
``is_master`` reads ``RANK``; the adapter opens a one-process NCCL group (file store, no port;
kept for the process's life, or an existing group is used) and sets ``RANK``/``LOCAL_RANK``/
``WORLD_SIZE`` around each call. SAT needs CUDA (its
``Text_Tower`` moves tokens to ``torch.cuda.current_device()``, DDP gets ``device_ids``):
:meth:`SatPro.check_available` skips on CPU.

Imports: SAT's top-level packages (``data``, ``model``, ``evaluate``, ``train``) and its
customised ``dynamic_network_architectures`` (``model/dynamic-network-architectures-main``)
are importable under those names only while the adapter calls into SAT; outside, ``sys.path``
and ``sys.modules`` are as they were (another package of the same name, e.g. nnInteractive's
``dynamic_network_architectures``, is put back). No bytecode is written into the checkout.
SAT's ``torch.load`` calls run with ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1``; the BioLORD encoder
SAT loads by its Hub name is taken from the local folder, with the Hub offline.

Layout (``huggingface-cli download zzh99/SAT Pro/SAT_Pro.pth Pro/text_encoder.pth`` keeps
these paths): see :data:`LAYOUT`. SAT-Nano (``Nano/nano.pth``, ``Nano/nano_text_encoder.pth``,
backbone ``UNET``) would be :class:`SatPro` with other class attributes; the UMD study ran
SAT-Pro, so only SAT-Pro is registered.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import sys
import tempfile
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from umdbench.models._families import ModelGrid, combined_hash, torch_device
from umdbench.models.base import (
    LiteratureClaim,
    ModelUnavailable,
    PromptKind,
    SegmentationModel,
    Tier,
    weights_root,
)
from umdbench.organs import CANONICAL_ORGANS, MODALITIES, check_modality
from umdbench.prompts import Prompt, organ_text
from umdbench.registry import register_model
from umdbench.volume import Volume, save_volume

__all__ = [
    "CHECKOUT_FILES",
    "ENV_VAR",
    "LAYOUT",
    "SAT_MODALITY",
    "SatCheckout",
    "SatPro",
    "find_checkout",
]

#: Environment variable naming the code checkout (instead of ``<weights dir>/sat/SAT``).
ENV_VAR = "UMD_SAT_CODE"
REPOSITORY = "https://github.com/zhaoziheng/SAT"
#: Files of the checkout the adapter imports or identifies it by.
CHECKOUT_FILES: tuple[str, ...] = (
    "inference.py",
    "data/inference_dataset.py",
    "evaluate/inference_engine.py",
    "evaluate/params.py",
    "model/build_model.py",
    "model/text_encoder.py",
    "model/knowledge_encoder.py",
    "train/dist.py",
    "model/dynamic-network-architectures-main/dynamic_network_architectures/__init__.py",
)
#: SAT's words for the suite's arms (its README: "modality (ct, mri or pet)").
SAT_MODALITY: dict[str, str] = {"CT": "ct", "PET_CT": "pet", "MRI": "mri", "PET_MRI": "pet"}
#: The checkout's top-level names, importable only while the adapter calls into SAT.
_PACKAGES = ("data", "model", "evaluate", "train", "dynamic_network_architectures")
_DNA_FOLDER = "model/dynamic-network-architectures-main"
_BIOLORD = "FremyCompany/BioLORD-2023-C"
_MODULES = (
    "data.inference_dataset",
    "evaluate.inference_engine",
    "evaluate.params",
    "model.build_model",
    "model.text_encoder",
)
REQUIREMENTS = (
    "SAT's requirements (README: torch, monai==1.1.0, transformers==4.21.3, nibabel, einops,"
    " positional_encodings==6.0.1, scipy, pandas, tqdm) and a CUDA device"
)
_UMD = (
    "UMD study digest (Zhang et al., arXiv 2602.07643, 2026), literature column"
    " (0.756 CT / 0.838 MRI / 0.634 PET); not checked against Zhao et al. (npj Digit. Med. 2025)"
)


@dataclass(frozen=True)
class SatCheckout:
    """Where the code, the two checkpoints and the local BioLORD copy are."""

    code: Path
    checkpoint: Path
    text_encoder: Path
    biolord: Path

    @property
    def paths(self) -> list[Path]:
        """The checkout's own folders to put on ``sys.path`` (their fork of DNA first)."""
        return [self.code / _DNA_FOLDER, self.code]


def _layout(checkpoint: str, text_encoder: str) -> str:
    return (
        f"<weights dir>/sat/ holding SAT/ (a checkout of {REPOSITORY}; or set ${ENV_VAR} to"
        f" one) with {', '.join(CHECKOUT_FILES)}; {checkpoint} and {text_encoder} (Hugging Face"
        f" zzh99/SAT, same paths); BioLORD-2023-C/ (a local copy of the Hub model {_BIOLORD}:"
        " config.json, tokenizer files and weights, as AutoModel/AutoTokenizer read them)"
    )


LAYOUT = _layout("Pro/SAT_Pro.pth", "Pro/text_encoder.pth")


def find_checkout(
    checkpoint: str = "Pro/SAT_Pro.pth", text_encoder: str = "Pro/text_encoder.pth"
) -> SatCheckout:
    """The code checkout and the weights, or a skip reason naming every expected file."""
    layout = _layout(checkpoint, text_encoder)
    root = weights_root()
    if root is None:
        raise ModelUnavailable(
            f"sat-pro runs the user's checkout of its official code: pass --umd-weights DIR or"
            f" set UMD_WEIGHTS, with {layout}; needs {REQUIREMENTS}"
        )
    base = root / "sat"
    configured = os.environ.get(ENV_VAR)
    code = Path(configured).expanduser() if configured else base / "SAT"
    missing = [f"{code}/{name}" for name in CHECKOUT_FILES if not (code / name).is_file()]
    for name in (checkpoint, text_encoder):
        if not (base / name).is_file():
            missing.append(str(base / name))
    biolord = base / "BioLORD-2023-C"
    if not (biolord / "config.json").is_file():
        missing.append(f"{biolord}/config.json")
    if missing:
        raise ModelUnavailable(
            f"sat-pro files not found: {', '.join(missing)} (expected {layout}; nothing is"
            f" downloaded)"
        )
    return SatCheckout(code, base / checkpoint, base / text_encoder, biolord)


@dataclass
class _Isolated:
    """SAT's modules, kept out of ``sys.modules`` between calls into SAT."""

    modules: dict[str, types.ModuleType] = field(default_factory=dict)

    @contextlib.contextmanager
    def active(self, paths: Sequence[Path]) -> Iterator[None]:
        """SAT's packages importable under their own names inside the block only."""

        def ours(name: str) -> bool:
            return name.split(".", 1)[0] in _PACKAGES

        displaced = {name: module for name, module in sys.modules.items() if ours(name)}
        for name in displaced:
            del sys.modules[name]
        sys.modules.update(self.modules)
        saved_path, saved_bytecode = list(sys.path), sys.dont_write_bytecode
        sys.path[:0] = [str(p) for p in paths]
        sys.dont_write_bytecode = True
        try:
            yield
        finally:
            self.modules = {name: mod for name, mod in sys.modules.items() if ours(name)}
            for name in self.modules:
                del sys.modules[name]
            sys.modules.update(displaced)
            sys.path[:] = saved_path
            sys.dont_write_bytecode = saved_bytecode


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Environment variables set for the block, then restored."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _replaced(module: types.ModuleType, name: str, value: Any) -> Iterator[None]:
    """``module.name`` replaced for the block (a global SAT's function looks up when called)."""
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


#: torchrun's variables for one process (``is_master`` reads RANK).
_TORCHRUN = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}


@dataclass
class _Pass:
    """One SAT run on one scan and arm: masks on SAT's grid, and that grid."""

    array: np.ndarray  # the suite's array (identity)
    modality: str
    grid: ModelGrid
    masks: dict[str, np.ndarray]


@register_model
class SatPro(SegmentationModel):
    """SAT-Pro: text prompts with the modality named (the user's checkout of SAT)."""

    name = "sat-pro"
    prompt_kind = PromptKind.TEXT
    organs = CANONICAL_ORGANS
    modalities_claimed = MODALITIES
    protocols: ClassVar[tuple[str, ...]] = ("text",)
    tier = Tier.USER_CODE
    literature: ClassVar[dict[str, LiteratureClaim]] = {
        "CT": LiteratureClaim(0.756, _UMD),
        "MRI": LiteratureClaim(0.838, _UMD),
        "PET_CT": LiteratureClaim(0.634, _UMD),
        "PET_MRI": LiteratureClaim(0.634, _UMD),
    }
    vision_backbone: ClassVar[str] = "UNET-L"
    checkpoint: ClassVar[str] = "Pro/SAT_Pro.pth"
    text_encoder_checkpoint: ClassVar[str] = "Pro/text_encoder.pth"
    #: README: "larger than the classes in the inference dataset".
    max_queries: ClassVar[int] = 256
    #: README's memory table: SAT-Pro batch 1 ~34 GB, batch 2 ~62 GB (the output is the same).
    batchsize_3d: ClassVar[int] = 1

    def __init__(self) -> None:
        self._isolated = _Isolated()
        self._checkout: SatCheckout | None = None
        self._model: Any = None
        self._text_encoder: Any = None
        self._args: Any = None
        self._device = torch.device("cpu")
        self._pass: _Pass | None = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._weights_id: str | None = None

    def _find(self) -> SatCheckout:
        return find_checkout(self.checkpoint, self.text_encoder_checkpoint)

    @contextlib.contextmanager
    def _inside(self, checkout: SatCheckout) -> Iterator[dict[str, types.ModuleType]]:
        """SAT's modules imported and active, torchrun's variables set."""
        with self._isolated.active(checkout.paths), _environment(_TORCHRUN):
            try:
                modules = {name: importlib.import_module(name) for name in _MODULES}
            except ImportError as error:
                missing = getattr(error, "name", None) or str(error)
                raise ModelUnavailable(
                    f"sat-pro: SAT's code in {checkout.code} cannot be imported: {error}"
                    f" (missing: {missing}); install {REQUIREMENTS}"
                ) from error
            yield modules

    def check_available(self, device: str) -> None:
        checkout = self._find()
        with self._inside(checkout):
            pass
        target = torch_device(device)
        if target.type != "cuda":
            raise ModelUnavailable(
                "sat-pro: SAT's code runs on CUDA only (model/text_tower.py moves the tokens to"
                " torch.cuda.current_device(); its builders wrap the networks in"
                f" DistributedDataParallel with device_ids), got device {device!r}"
            )

    def load(self, device: str) -> None:
        checkout = self._find()
        self._device = torch_device(device)
        gpu_id: int | None = None
        if self._device.type == "cuda":
            gpu_id = self._device.index or 0
            torch.cuda.set_device(self._device)  # as inference.py: Text_Tower uses the current one
        _one_process_group(self._device)
        with self._inside(checkout) as sat, _environment(_offline()):
            args = self._arguments(sat["evaluate.params"], checkout)
            model = sat["model.build_model"].build_maskformer(args, self._device, gpu_id)
            encoder_module = sat["model.text_encoder"]
            local = functools.partial(
                encoder_module.Knowledge_Encoder, biolord_checkpoint=str(checkout.biolord)
            )
            with _replaced(encoder_module, "Knowledge_Encoder", local):
                text_encoder = encoder_module.Text_Encoder(
                    text_encoder=args.text_encoder,
                    checkpoint=args.text_encoder_checkpoint,
                    partial_load=args.text_encoder_partial_load,
                    open_bert_layer=12,
                    open_modality_embed=False,
                    gpu_id=gpu_id,
                    device=self._device,
                )
            model, _, _ = sat["model.build_model"].load_checkpoint(
                checkpoint=args.checkpoint,
                resume=False,
                partial_load=args.partial_load,
                model=model,
                device=self._device,
            )
        self._checkout, self._args = checkout, args
        self._model, self._text_encoder = model, text_encoder
        self._pass, self._weights_id = None, None

    def _arguments(self, params: types.ModuleType, checkout: SatCheckout) -> Any:
        """SAT's ``parse_args`` on the README's SAT-Pro command line."""
        argv = [
            "inference.py",
            "--rcd_dir", "unused",
            "--datasets_jsonl", "unused",
            "--vision_backbone", self.vision_backbone,
            "--checkpoint", str(checkout.checkpoint),
            "--text_encoder", "ours",
            "--text_encoder_checkpoint", str(checkout.text_encoder),
            "--max_queries", str(self.max_queries),
            "--batchsize_3d", str(self.batchsize_3d),
        ]  # fmt: skip
        saved = sys.argv
        sys.argv = argv
        try:
            return params.parse_args()
        finally:
            sys.argv = saved

    def weights_id(self) -> str:
        checkout = self._checkout
        if checkout is None:
            return "none"
        if self._weights_id is None:  # SAT_Pro.pth is about 6 GB: hashed once
            code = [checkout.code / name for name in CHECKOUT_FILES[:7]]
            self._weights_id = combined_hash([checkout.checkpoint, checkout.text_encoder, *code])
        return self._weights_id

    def inference_settings(self) -> dict[str, object]:
        args = self._args
        return {
            "code": str(self._checkout.code) if self._checkout else None,
            "entry": "inference.py main's calls: build_maskformer, Text_Encoder,"
            " load_checkpoint, Inference_Dataset, evaluate.inference_engine.inference",
            "vision_backbone": self.vision_backbone,
            "text_encoder": "ours (BioLORD-2023-C from the local folder)",
            "max_queries": self.max_queries,
            "batchsize_3d": self.batchsize_3d,
            "crop_size": list(getattr(args, "crop_size", []) or []),
            "patch_size": list(getattr(args, "patch_size", []) or []),
            "partial_load": getattr(args, "partial_load", None),
            "text_encoder_partial_load": getattr(args, "text_encoder_partial_load", None),
            "modality_words": dict(SAT_MODALITY),
            "queries": "every organ of the suite in one pass per scan and arm (SAT's decoder"
            " has no self-attention between queries)",
            "preprocessing": "SAT load_image: Orientationd RAS, Spacingd 1x1x3 bilinear,"
            " CropForegroundd, Normalization per modality",
            "postprocessing": "SAT inference(): Gaussian accumulation, sigmoid > 0.5",
            "back_to_scan": "ours: nearest from SAT's grid (affine tracked by MONAI in SAT's"
            " load_image) to the scan grid; SAT itself saves with an identity affine",
            "distributed": "one-process group (file store), RANK=0 WORLD_SIZE=1",
            "amp": "SAT's own autocast (fp16 on CUDA)",
        }

    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        if self._model is None or self._checkout is None:
            raise RuntimeError(f"{self.name}: call load(device) before predict")
        if prompt is None or not prompt.text:
            raise ValueError(f"{self.name} is prompted by text: give a Prompt with text")
        arm = check_modality(modality)
        text = prompt.text.lower()
        current = self._pass
        if current is None or current.array is not image.array or current.modality != arm:
            labels = [organ_text(organ)[0].lower() for organ in self.organs]
            current = self._run(image, arm, list(dict.fromkeys([*labels, text])))
        elif text not in current.masks:
            extra = self._run(image, arm, [text])
            current.masks.update(extra.masks)
        self._pass = current
        return current.grid.to_scan(current.masks[text]).astype(np.uint8)

    def _run(self, image: Volume, arm: str, labels: list[str]) -> _Pass:
        """One SAT inference over ``labels``: masks on SAT's grid, and that grid."""
        assert self._checkout is not None
        folder = self._scan_folder(image)
        run = Path(tempfile.mkdtemp(prefix="run-", dir=folder))
        jsonl = run / "inference.jsonl"
        datum = {
            "image": str(Path(folder) / "scan.nii.gz"),
            "label": labels,
            "modality": SAT_MODALITY[arm],
            "dataset": "umdbench",
        }
        jsonl.write_text(json.dumps(datum) + "\n")
        seen: list[Any] = []
        with self._inside(self._checkout) as sat:
            dataset_module = sat["data.inference_dataset"]
            original = dataset_module.Normalization

            def recorded(torch_image: Any, image_type: str) -> Any:
                seen.append(torch_image)
                return original(torch_image, image_type)

            testset = dataset_module.Inference_Dataset(
                str(jsonl), self.max_queries, self.batchsize_3d
            )
            loader = torch.utils.data.DataLoader(
                testset, batch_size=1, num_workers=0, collate_fn=dataset_module.collate_fn
            )
            with _replaced(dataset_module, "Normalization", recorded):
                sat["evaluate.inference_engine"].inference(
                    model=self._model,
                    text_encoder=self._text_encoder,
                    device=self._device,
                    testset=testset,
                    testloader=loader,
                    nib_dir=str(run / "results"),
                )
        if len(seen) != 1 or getattr(seen[0], "affine", None) is None:
            raise RuntimeError(
                f"{self.name}: SAT's load_image did not hand a MONAI MetaTensor (with its"
                " affine) to Normalization once; cannot place its masks on the scan"
            )
        processed = tuple(int(s) for s in seen[0].shape[-3:])
        affine = np.asarray(seen[0].affine, dtype=np.float64)
        grid = ModelGrid(torch.zeros(1).expand(1, *processed), affine, image)
        return _Pass(image.array, arm, grid, _read_masks(run / "results", labels, processed))

    def _scan_folder(self, image: Volume) -> str:
        """A temporary folder holding the scan as NIfTI, written once per scan."""
        current = self._pass
        if self._folder is not None and current is not None and current.array is image.array:
            return self._folder.name
        self._folder = tempfile.TemporaryDirectory(prefix="umdbench-sat-")
        array = np.asarray(image.array, dtype=np.float32)
        save_volume(Volume(array, image.affine), Path(self._folder.name) / "scan.nii.gz")
        return self._folder.name


def _read_masks(results: Path, labels: list[str], shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """``<nib_dir>/<dataset>/seg_<sample>/<label>.nii.gz`` as SAT's inference() writes them."""
    import nibabel as nib

    masks = {}
    for label in labels:
        found = sorted(results.glob(f"*/seg_*/{label}.nii.gz"))
        if len(found) != 1:
            raise RuntimeError(
                f"sat-pro: expected one mask for {label!r} under {results}, found {len(found)}"
            )
        mask = np.asanyarray(nib.load(str(found[0])).dataobj) > 0.5  # type: ignore[attr-defined]
        if mask.shape != shape:
            raise RuntimeError(f"sat-pro: {found[0]} has shape {mask.shape}, SAT's grid is {shape}")
        masks[label] = mask
    return masks


def _offline() -> dict[str, str]:
    """Hub offline and ``torch.load`` forced to weights only, for SAT's loading code."""
    return {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1",
    }


def _one_process_group(device: torch.device) -> None:
    """A default NCCL group of one rank (what torchrun gives SAT), unless one exists.

    Only on CUDA: SAT's builders wrap CUDA modules in DDP; on CPU (the call-contract tests)
    there is nothing for a group to do.
    """
    import torch.distributed as dist

    if device.type != "cuda" or not dist.is_available() or dist.is_initialized():
        return
    store_file = tempfile.NamedTemporaryFile(prefix="umdbench-sat-store-", delete=False)
    store_file.close()
    store = dist.FileStore(store_file.name, 1)
    dist.init_process_group(backend="nccl", store=store, rank=0, world_size=1)
