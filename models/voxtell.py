"""VoxTell (Rokuss et al. 2025): the package's own ``VoxTellPredictor``, prompts from a local bank.

Everything the model does is the installed package's code (``voxtell`` 0.1.2 on PyPI,
``voxtell/inference/predictor.py``), called as its README's Python API calls it:

1. ``VoxTellPredictor(model_dir=<release folder>, device, embedding_bank=<bank .npz>,
   use_precomputed_embeddings=False)``: the release folder and the bank are read from
   ``--umd-weights``; with an explicit ``model_dir`` and ``embedding_bank`` and
   ``use_precomputed_embeddings=False`` the package downloads nothing (no model snapshot, no
   published bank). The package reads its checkpoint with ``torch.load(weights_only=False)``;
   this adapter forces ``weights_only=True`` around that call (``TORCH_FORCE_WEIGHTS_ONLY_LOAD``,
   numpy scalars allow-listed), so a checkpoint holding other pickled objects is refused.
2. Text: VoxTell embeds a prompt with the frozen Qwen3-Embedding-4B (a ~8 GB hub model, loaded
   lazily by ``_compute_text_embeddings`` only for prompts missing from its bank). Here it never
   runs: the prompt string (lower case, as VoxTell lower-cases it; the organ's preferred name,
   else the first of its synonyms from ``umdbench.targets`` that the bank holds)
   is looked up by the package's own ``embed_text_prompts`` in the package's own bank format
   (``voxtell.utils.embedding_bank``: an ``.npz`` with ``labels``, unicode ``(N,)``, and
   ``embeddings``, float16 ``(N, 2560)``), and the result goes into
   ``predict_single_image(data, text_embeddings=...)``, the README's "embed prompts yourself"
   path. Everything after the text encoder is VoxTell's: the network's own text projection
   (``VoxTellModel.project_text_embed``), the prompt decoder, the image decoder, the sliding
   window. An organ none of whose names is in the bank is skipped (:meth:`VoxTell.unsupported`)
   with the strings to add; a prompt is never embedded on the fly.
3. Image: the README requires RAS, read with nnU-Net's ``NibabelIOWithReorient``:
   ``nibabel`` ``as_reoriented(io_orientation(affine))`` (axis permutations and flips only, no
   interpolation) and the array transposed ``(2, 1, 0)``, float32. :func:`to_voxtell_array` does
   exactly that in memory from the scan's affine (the reader's nibabel calls on an in-memory
   image, down to the memory layout its ``np.vstack`` gives), raw intensities. VoxTell then crops to the nonzero box and
   z-scores over it (``preprocess``); it does not resample (its README: no standard spacing).
4. Output: ``predict_single_image`` returns ``(prompts, z, y, x)`` uint8 (logits > 0, the crop
   reverted); :func:`from_voxtell_array` undoes the transpose and the reorientation as the
   reader's ``write_seg`` does (``ornt_transform(RAS, scan orientation)``), giving the mask on the
   scan grid, no postprocessing.

One call per organ (the suite's contract for text models); VoxTell's prompt decoder has no
self-attention between prompts, so a prompt's mask does not depend on the other prompts of a
call.

Weights: ``<weights dir>/voxtell/`` laid out as the Hugging Face repository ``mrokuss/VoxTell``
publishes it (what ``snapshot_download(..., local_dir=<weights dir>/voxtell)`` writes)::

    voxtell_v1.1/plans.json
    voxtell_v1.1/fold_0/checkpoint_final.pth
    embeddings/voxtell_v1.1/text_embeddings.npz

A bank for other prompt strings is made once, on a machine that has the text encoder, with
:func:`build_embedding_bank` (VoxTell's own embedding code; see its docstring).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
from collections.abc import Iterable, Sequence
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
from umdbench.prompts import Prompt, organ_text
from umdbench.registry import register_model
from umdbench.targets import known_targets
from umdbench.volume import Volume

__all__ = [
    "BANK_FILE",
    "EMBEDDING_DIM",
    "MODEL_FOLDER_LAYOUT",
    "OFFICIAL_RELEASE",
    "VoxTell",
    "bank_prompts",
    "build_embedding_bank",
    "find_embedding_bank",
    "find_model_folder",
    "from_voxtell_array",
    "prompt_candidates",
    "to_voxtell_array",
]

#: The release the package downloads by default (``voxtell.inference.predictor._DEFAULT_MODEL``).
OFFICIAL_RELEASE = "voxtell_v1.1"
#: What ``VoxTellPredictor.__init__`` reads from a release folder.
MODEL_FOLDER_LAYOUT = "plans.json, fold_0/checkpoint_final.pth"
#: The bank's file name and its place beside the release (``embedding_bank.hf_embedding_path``).
BANK_FILE = "text_embeddings.npz"
#: Width of a text embedding (Qwen3-Embedding-4B; ``VoxTellPredictor`` builds the network with it).
EMBEDDING_DIM = 2560
_HUB = "Hugging Face mrokuss/VoxTell"
_LAYOUT = (
    f"<weights dir>/voxtell/{OFFICIAL_RELEASE}/{{plans.json, fold_0/checkpoint_final.pth}} and"
    f" <weights dir>/voxtell/embeddings/{OFFICIAL_RELEASE}/{BANK_FILE}"
)
_HOW = (
    f"copy {OFFICIAL_RELEASE}/ and embeddings/{OFFICIAL_RELEASE}/{BANK_FILE} as published"
    f" ({_HUB}) into <weights dir>/voxtell/; nothing is downloaded"
)
_BANK_HOW = (
    "copy the published bank (embeddings/<release>/text_embeddings.npz of"
    f" {_HUB}) or make one where the text encoder Qwen3-Embedding-4B is available:"
    " umdbench.models.voxtell.build_embedding_bank"
)
_BANK_FORMAT = (
    "an .npz (allow_pickle=False) with 'labels' (unicode strings, shape (N,)) and 'embeddings'"
    f" (float16, shape (N, {EMBEDDING_DIM})), VoxTell's voxtell.utils.embedding_bank format"
)
#: VoxTell's arrays: the RAS array's axes reversed (nnU-Net's SimpleITK-like order).
_TO_VOXTELL = (2, 1, 0)


# -- weights layout --------------------------------------------------------------------------
def _release_key(folder: Path) -> tuple[tuple[int, ...], str]:
    return tuple(int(v) for v in re.findall(r"\d+", folder.name)), folder.name


def find_model_folder() -> Path:
    """``<weights dir>/voxtell/voxtell_*`` (the newest release), or a skip reason."""
    root = weights_root()
    if root is None:
        raise ModelUnavailable(
            f"voxtell needs {_LAYOUT}: pass --umd-weights DIR or set UMD_WEIGHTS ({_HOW})"
        )
    base = root / "voxtell"
    found = sorted(p for p in base.glob("voxtell_*") if p.is_dir()) if base.is_dir() else []
    if not found:
        raise ModelUnavailable(
            f"voxtell weights not found: expected {base / OFFICIAL_RELEASE}/ holding"
            f" {MODEL_FOLDER_LAYOUT} ({_HOW})"
        )
    folder = max(found, key=_release_key)
    missing = [
        n for n in ("plans.json", "fold_0/checkpoint_final.pth") if not (folder / n).is_file()
    ]
    if missing:
        raise ModelUnavailable(
            f"voxtell model folder {folder} is incomplete: missing {', '.join(missing)}"
            f" (expected {MODEL_FOLDER_LAYOUT}; {_HOW})"
        )
    return folder


def find_embedding_bank(folder: Path) -> Path:
    """``<weights dir>/voxtell/embeddings/<release>/text_embeddings.npz``, or a skip reason."""
    path = folder.parent / "embeddings" / folder.name / BANK_FILE
    if not path.is_file():
        raise ModelUnavailable(
            f"voxtell needs a local text-embedding bank for {folder.name}: expected {path}"
            f" ({_BANK_FORMAT}); the text encoder is never run here: {_BANK_HOW}"
        )
    return path


# -- prompts ---------------------------------------------------------------------------------
def prompt_candidates(
    organ: str, text: str | None = None, synonyms: Iterable[str] = ()
) -> list[str]:
    """The strings tried for ``organ``, in order, lower case, without repeats: the prompt's text
    and synonyms, then the target's names (``umdbench.targets``)."""
    preferred, others = organ_text(organ)
    names = [*([text] if text else []), *synonyms, preferred, *others]
    seen: dict[str, None] = {}
    for name in names:
        seen.setdefault(str(name).strip().lower(), None)
    return [name for name in seen if name]


def bank_prompts() -> list[str]:
    """Every name of every known target (the 13 organs, the tumour's synonyms, a user's
    ``--umd-targets``), lower case: what a bank for this suite should hold."""
    names: dict[str, None] = {}
    for organ in known_targets():
        preferred, others = organ_text(organ)
        for name in (preferred, *others):
            names.setdefault(name.lower(), None)
    return list(names)


def build_embedding_bank(
    out: str | Path,
    text_encoder: str | Path,
    prompts: Sequence[str] | None = None,
    model_folder: str | Path | None = None,
    device: str = "cpu",
) -> Path:
    """Write a bank of ``prompts`` (default :func:`bank_prompts`) to ``out`` with VoxTell's code.

    Run once where Qwen3-Embedding-4B is available as a local folder (``text_encoder``; about
    8 GB; a GPU makes it minutes instead of an hour). The embeddings are computed by the
    package's own ``VoxTellPredictor.embed_text_prompts`` (instruction wrapping, tokenizer,
    last-token pooling; bfloat16 on CUDA, float32 on CPU, as the package does), which caches each
    as float16 in ``predictor.embedding_bank``; that dict is written in the package's bank format
    (``labels``, ``embeddings``), the one ``voxtell.utils.embedding_bank.load_embedding_bank``
    reads. ``model_folder`` (default: the release under ``--umd-weights``) is needed only because
    the predictor loads its network on construction. Put the file at
    ``<weights dir>/voxtell/embeddings/<release>/text_embeddings.npz``.
    """
    from voxtell.inference.predictor import VoxTellPredictor

    folder = Path(model_folder) if model_folder is not None else find_model_folder()
    names = list(
        dict.fromkeys(p.lower() for p in (prompts if prompts is not None else bank_prompts()))
    )
    with forced_weights_only_load():
        predictor = VoxTellPredictor(
            model_dir=str(folder),
            device=torch.device(device),
            text_encoding_model=str(text_encoder),
            embedding_bank=None,
            use_precomputed_embeddings=False,
        )
    predictor.embed_text_prompts(names)
    bank = predictor.embedding_bank or {}
    labels = names
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        labels=np.array(labels, dtype=str),
        embeddings=np.stack([np.asarray(bank[label], dtype=np.float16) for label in labels]),
    )
    return out


# -- orientation -----------------------------------------------------------------------------
def to_voxtell_array(image: Volume) -> tuple[np.ndarray, np.ndarray]:
    """The scan as ``NibabelIOWithReorient.read_images`` gives it from its NIfTI file:
    ``(1, z, y, x)`` float32 of the RAS-reoriented array; and the orientation that reoriented it.

    The reader's own steps on an in-memory image: the voxels in the Fortran order nibabel reads a
    NIfTI in, ``as_reoriented(io_orientation(affine))``, ``get_fdata()``, the transpose, and its
    ``np.vstack(..., dtype=float32)``, so even the memory layout (hence the order in which
    VoxTell's z-score sums the voxels) is the reader's.
    """
    import nibabel as nib
    from nibabel.orientations import io_orientation

    affine = np.asarray(image.affine, dtype=np.float64)
    ornt = io_orientation(affine)
    nifti = nib.Nifti1Image(np.asfortranarray(image.array), affine)
    data = nifti.as_reoriented(ornt).get_fdata().transpose(_TO_VOXTELL)[None]
    return np.vstack([data], dtype=np.float32, casting="unsafe"), ornt


def from_voxtell_array(mask: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """A ``(z, y, x)`` mask on VoxTell's grid back on the scan grid, as ``write_seg`` does it."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, ornt_transform

    ras = np.transpose(mask, _TO_VOXTELL)
    back = apply_orientation(ras, ornt_transform(axcodes2ornt("RAS"), ornt))
    return np.ascontiguousarray(back)


def _check_bank(bank: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    if not bank:
        raise ValueError(f"voxtell embedding bank {path} is empty; it must be {_BANK_FORMAT}")
    shapes = {tuple(np.shape(v)) for v in bank.values()}
    if shapes != {(EMBEDDING_DIM,)}:
        raise ValueError(
            f"voxtell embedding bank {path} holds vectors of shape {sorted(shapes)}; VoxTell's"
            f" network takes ({EMBEDDING_DIM},): it must be {_BANK_FORMAT} ({_BANK_HOW})"
        )
    return bank


@register_model
class VoxTell(SegmentationModel):
    """VoxTell: free-text promptable 3D segmentation (CT, MRI, PET in its paper)."""

    name = "voxtell"
    prompt_kind = PromptKind.TEXT
    organs = CANONICAL_ORGANS
    modalities_claimed = MODALITIES
    protocols: ClassVar[tuple[str, ...]] = ("text",)
    tier = Tier.RANDOM_WEIGHTS
    #: None backed here: the paper reports zero-shot Dice of v1.0 on its own test sets, and the
    #: published v1.1 was trained on those test sets (model card); no figure per arm of this study.
    literature: ClassVar[dict[str, LiteratureClaim]] = {}

    def __init__(self) -> None:
        self._predictor: Any = None
        self._folder: Path | None = None
        self._bank_path: Path | None = None
        self._weights_id = "none"
        self._device = torch.device("cpu")

    def check_available(self, device: str) -> None:
        try:
            spec = importlib.util.find_spec("voxtell.inference.predictor")
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            raise ModelUnavailable(
                "voxtell needs the Python package 'voxtell': pip install voxtell"
            )
        torch_device(device)
        find_embedding_bank(find_model_folder())

    def load(self, device: str) -> None:
        from voxtell.inference.predictor import VoxTellPredictor
        from voxtell.utils.embedding_bank import load_embedding_bank

        folder = find_model_folder()
        bank_path = find_embedding_bank(folder)
        self._device = torch_device(device)
        try:
            bank = load_embedding_bank(str(bank_path))  # the package's reader (no pickles)
        except Exception as error:  # numpy raises many types for a wrong or broken file
            raise ValueError(
                f"cannot read voxtell embedding bank {bank_path}: {error!r}; it must be"
                f" {_BANK_FORMAT}"
            ) from error
        _check_bank(bank, bank_path)
        try:
            with forced_weights_only_load():
                predictor = VoxTellPredictor(
                    model_dir=str(folder),
                    device=self._device,
                    embedding_bank=bank,
                    use_precomputed_embeddings=False,
                )
        except Exception as error:
            if not weights_only_refusal(error):
                raise
            checkpoint = folder / "fold_0" / "checkpoint_final.pth"
            keep = "only network_weights (the state_dict)"
            raise ValueError(unsafe_checkpoint_message(checkpoint, error, keep)) from error
        self._predictor, self._folder, self._bank_path = predictor, folder, bank_path
        self._weights_id = combined_hash(
            [folder / "fold_0" / "checkpoint_final.pth", folder / "plans.json", bank_path]
        )

    def weights_id(self) -> str:
        return self._weights_id

    def prompt_text(self, organ: str, prompt: Prompt | None = None) -> str | None:
        """The string VoxTell is given for ``organ``: the first candidate the bank holds."""
        bank = self._predictor.embedding_bank if self._predictor is not None else None
        if not bank:
            return None
        text = prompt.text if prompt is not None else None
        synonyms = prompt.extra.get("synonyms", ()) if prompt is not None else ()
        return next((n for n in prompt_candidates(organ, text, synonyms) if n in bank), None)

    def unsupported(self, organ: str, protocol: str | None) -> str | None:
        if self._predictor is None or self.prompt_text(organ) is not None:
            return None
        names = ", ".join(repr(n) for n in prompt_candidates(organ))
        return (
            f"its embedding bank {self._bank_path} holds none of {names}; the text encoder is"
            f" never run here: add one of them to the bank ({_BANK_HOW})"
        )

    def inference_settings(self) -> dict[str, object]:
        from importlib.metadata import version

        predictor = self._predictor
        return {
            "package": f"voxtell {version('voxtell')}",
            "release": self._folder.name if self._folder is not None else None,
            "text_encoder": "not run: embeddings looked up in the local bank by the package's"
            " embed_text_prompts, passed to predict_single_image(text_embeddings=...)",
            "embedding_bank": str(self._bank_path) if self._bank_path is not None else None,
            "prompt_text": {o: self.prompt_text(o) for o in self.organs} if predictor else {},
            "orientation": "RAS as NibabelIOWithReorient reads it (nibabel"
            " as_reoriented(io_orientation(affine)): permutations and flips, no interpolation),"
            " array transposed (2, 1, 0); undone as its write_seg does",
            "spacing": "unchanged (VoxTell does not resample)",
            "normalisation": "the package's preprocess: crop to the nonzero box, z-score over it",
            "patch_size": list(predictor.patch_size) if predictor is not None else None,
            "tile_step_size": predictor.tile_step_size if predictor is not None else None,
            "gaussian_weighting": True,
            "amp": self._device.type == "cuda",  # the package autocasts on CUDA only
            "threshold": "logits > 0 (the package's)",
            "prompts_per_call": 1,
            "postprocessing": "none",
        }

    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        if self._predictor is None:
            raise RuntimeError(f"{self.name}: call load(device) before predict")
        if prompt is None or not prompt.text:
            raise ValueError(f"{self.name} needs a Prompt with text, got {prompt!r}")
        text = self.prompt_text(prompt.organ, prompt)
        if text is None:
            raise ValueError(
                f"{self.name}: {self.unsupported(prompt.organ, prompt.protocol)} (prompt"
                f" {prompt.text!r})"
            )
        data, ornt = to_voxtell_array(image)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            embeddings = self._predictor.embed_text_prompts([text])  # a bank lookup
            masks = self._predictor.predict_single_image(data, text_embeddings=embeddings)
        if self._predictor.text_backbone is not None:  # never: every prompt came from the bank
            raise RuntimeError(f"{self.name}: the text encoder was loaded; it must never run here")
        mask = from_voxtell_array(np.asarray(masks[0]), ornt)
        if mask.shape != image.shape:
            raise RuntimeError(
                f"{self.name}: mask shape {mask.shape} is not the scan's {image.shape}"
            )
        return mask.astype(np.uint8, copy=False)
