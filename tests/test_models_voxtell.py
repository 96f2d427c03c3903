"""VoxTell: a random-weight model folder in the release's own format, the package's predictor.

The folder is what ``VoxTellPredictor.__init__`` reads: ``plans.json`` (``3d_fullres``:
``patch_size`` and the ``ResidualEncoder`` arguments) and ``fold_0/checkpoint_final.pth``
(``network_weights``), with a bank in the package's format (``labels``, float16 ``embeddings``)
at ``embeddings/<release>/text_embeddings.npz``. The reference is the README's Python API,
written here independently of the adapter: ``NibabelIOWithReorient().read_images``,
``VoxTellPredictor(...).predict_single_image(img, prompt)`` (text prompts, the package's own bank
lookup), ``write_seg``, the written file read back.

How small the network can be. ``VoxTellPredictor`` fixes everything but the image encoder
(``text_embedding_dim=2560``, ``query_dim=2048``, 32 fusion heads, a six-layer 2048-wide prompt
decoder), and ``VoxTellModel`` fixes the decoder channels (32, 64, 128, 256, 320, 320) and a
12^3 grid of image tokens at decoder layer 4 (its positional embedding is a checkpoint buffer of
that size). Only depth, kernels, strides and patch size shrink: here one block per stage,
1^3 kernels in the wide stages, one stride of 2 and a 24^3 patch, so a scan is one patch. That
still leaves 350 M parameters (1.4 GB in float32, ~3 s to build) and ~8-10 s per forward pass on
2 cores: those tests are marked ``slow``. The checkpoint stays 84 MB because every tensor is a
view into one shared random buffer (``torch.save`` writes a shared storage once).
"""

from __future__ import annotations

import importlib.util
import json
import pydoc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from umdbench.models.base import ModelUnavailable
from umdbench.organs import CANONICAL_ORGANS
from umdbench.prompts import ORGAN_SYNONYMS, Prompt, organ_text
from umdbench.volume import Volume, load_volume, save_volume


def _has_voxtell() -> bool:
    try:
        return importlib.util.find_spec("voxtell.inference.predictor") is not None
    except ModuleNotFoundError:
        return False


if not _has_voxtell():
    pytest.skip("voxtell is not installed: pip install voxtell", allow_module_level=True)

from umdbench.models import voxtell as vt  # noqa: E402

RELEASE = "voxtell_v1.1"
REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]
ARCH_KWARGS: dict[str, Any] = {
    "n_stages": 6,
    "features_per_stage": [32, 64, 128, 256, 320, 320],
    "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[3, 3, 3]] * 3 + [[1, 1, 1]] * 3,
    "strides": [[1, 1, 1], [2, 2, 2]] + [[1, 1, 1]] * 4,
    "n_blocks_per_stage": [1] * 6,
    "n_conv_per_stage_decoder": [1] * 5,
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "norm_op_kwargs": {"eps": 1e-5, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}
PATCH = [24, 24, 24]
#: Bank entries: "kidney left" stands for kidney_left (a synonym, not its preferred name); the
#: capitalised label checks that the package's reader lower-cases keys.
BANK_LABELS = ("liver", "spleen", "kidney left", "Urinary Bladder")
SHAPE = (20, 22, 18)
#: Array axes point P, S, L (permuted and flipped against RAS), anisotropic.
AFFINE_PSL = np.array(
    [[0.0, 0.0, -1.2, 30.0], [-1.5, 0.0, 0.0, 10.0], [0.0, 2.0, 0.0, -5.0], [0.0, 0.0, 0.0, 1.0]]
)


# -- a model folder in the release's format -----------------------------------------------------
def _plans() -> dict[str, Any]:
    architecture = {
        "network_class_name": "voxtell.model.voxtell_model.VoxTellModel",
        "arch_kwargs": ARCH_KWARGS,
        "_kw_requires_import": REQUIRES_IMPORT,
    }
    return {"configurations": {"3d_fullres": {"patch_size": PATCH, "architecture": architecture}}}


def _state_shapes() -> dict[str, torch.Size]:
    """The network's state-dict shapes, from a model built on the meta device (no memory)."""
    from voxtell.model.voxtell_model import VoxTellModel

    kwargs = dict(ARCH_KWARGS)
    for key in REQUIRES_IMPORT:
        if kwargs[key] is not None:
            kwargs[key] = pydoc.locate(kwargs[key])
    with torch.device("meta"):
        network = VoxTellModel(
            input_channels=1,
            **kwargs,
            decoder_layer=4,
            text_embedding_dim=2560,
            num_maskformer_stages=5,
            num_heads=32,
            query_dim=2048,
            project_to_decoder_hidden_dim=2048,
            deep_supervision=False,
        )
    return {key: value.shape for key, value in network.state_dict().items()}


def write_release(root: Path, seed: int = 0) -> Path:
    """``root/voxtell/voxtell_v1.1/{plans.json, fold_0/checkpoint_final.pth}`` (seeded random)."""
    folder = root / "voxtell" / RELEASE
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(_plans()))
    shapes = _state_shapes()
    generator = torch.Generator().manual_seed(seed)
    largest = max(shape.numel() for shape in shapes.values())
    weights = torch.randn(largest + 4096, generator=generator) * 0.02
    scales = 1.0 + 0.1 * torch.randn(4096, generator=generator)  # norm weights: about 1
    offsets = np.random.default_rng(seed)
    state = {}
    for key, shape in shapes.items():
        pool = scales if key.endswith("weight") and len(shape) == 1 else weights
        start = int(offsets.integers(0, pool.numel() - shape.numel() + 1))
        state[key] = pool[start : start + shape.numel()].view(shape)
    torch.save({"network_weights": state}, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def write_bank(path: Path, labels: tuple[str, ...] = BANK_LABELS, seed: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    vectors = np.random.default_rng(seed).normal(0.0, 1.0, (len(labels), vt.EMBEDDING_DIM))
    np.savez(path, labels=np.array(labels, dtype=str), embeddings=vectors.astype(np.float16))
    return path


def bank_path(root: Path) -> Path:
    return root / "voxtell" / "embeddings" / RELEASE / vt.BANK_FILE


def _scan_array(shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """A bright blob on a noisy background, with a zero slab (VoxTell crops to nonzero)."""
    rng = np.random.default_rng(7)
    grid = np.indices(shape, dtype=np.float32)
    blob = 200 * np.exp(
        -((grid[0] - 7) ** 2) / 20 - (grid[1] - 14) ** 2 / 30 - (grid[2] - 6) ** 2 / 12
    )
    array = (blob + rng.normal(40.0, 10.0, shape)).astype(np.float32)
    array[:, :, 15:] = 0.0
    return array


def _text_prompt(organ: str) -> Prompt:
    name, synonyms = organ_text(organ)
    return Prompt("text", organ, 0, text=name, extra={"synonyms": list(synonyms)})


# -- fast: layout, skips, orientation, prompt strings ------------------------------------------
def test_missing_package_folder_or_bank_skips_naming_the_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = vt.VoxTell()
    monkeypatch.delenv("UMD_WEIGHTS", raising=False)
    with pytest.raises(ModelUnavailable, match=r"--umd-weights") as error:
        model.check_available("cpu")
    assert f"voxtell/{RELEASE}/" in str(error.value) and vt.BANK_FILE in str(error.value)

    monkeypatch.setenv("UMD_WEIGHTS", str(tmp_path))
    with pytest.raises(ModelUnavailable, match=rf"expected {tmp_path / 'voxtell' / RELEASE}"):
        model.check_available("cpu")

    folder = tmp_path / "voxtell" / RELEASE
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text("{}")
    with pytest.raises(ModelUnavailable, match=r"incomplete: missing fold_0/checkpoint_final.pth"):
        model.check_available("cpu")

    (folder / "fold_0").mkdir()
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
    with pytest.raises(ModelUnavailable, match=r"local text-embedding bank") as error:
        model.check_available("cpu")
    assert str(bank_path(tmp_path)) in str(error.value)
    assert "'labels'" in str(error.value) and "build_embedding_bank" in str(error.value)

    write_bank(bank_path(tmp_path))
    model.check_available("cpu")  # complete layout: available

    real_find_spec = importlib.util.find_spec

    def without_voxtell(name: str, *args: Any) -> Any:
        return None if name.startswith("voxtell") else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_voxtell)
    with pytest.raises(ModelUnavailable, match=r"pip install voxtell"):
        model.check_available("cpu")


def test_the_newest_release_folder_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UMD_WEIGHTS", str(tmp_path))
    for name in ("voxtell_v1.0", "voxtell_v1.1", "voxtell_v1.10"):
        (tmp_path / "voxtell" / name / "fold_0").mkdir(parents=True)
        (tmp_path / "voxtell" / name / "plans.json").write_text("{}")
        (tmp_path / "voxtell" / name / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
    folder = vt.find_model_folder()
    assert folder.name == "voxtell_v1.10"  # by number, not by string
    with pytest.raises(ModelUnavailable, match=r"embeddings/voxtell_v1\.10/text_embeddings"):
        vt.find_embedding_bank(folder)  # the bank of that release, beside it


def _oblique(affine: np.ndarray, degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return rotation @ affine


ORIENTATIONS = {
    "RAS": np.diag([1.5, 1.5, 3.0, 1.0]),
    "LPS": np.diag([-0.8, -0.8, 2.5, 1.0]),
    "PSL": AFFINE_PSL,
    "PSL-oblique-10deg": _oblique(AFFINE_PSL, 10.0),
}


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_arrays_are_what_nibabel_io_with_reorient_reads_and_writes(
    name: str, tmp_path: Path
) -> None:
    """The README's reader and writer (nnU-Net's NibabelIOWithReorient) on the same file."""
    from nibabel.orientations import aff2axcodes
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIOWithReorient

    path = save_volume(Volume(_scan_array(), ORIENTATIONS[name]), tmp_path / "scan.nii.gz")
    scan = load_volume(path)
    ours, ornt = vt.to_voxtell_array(scan)
    official, props = NibabelIOWithReorient().read_images([str(path)])
    assert ours.dtype == official.dtype == np.float32
    assert ours.shape == official.shape and np.array_equal(ours, official)
    assert ours.strides == official.strides  # the same layout: VoxTell's z-score sums alike
    assert aff2axcodes(props["nibabel_stuff"]["reoriented_affine"]) == ("R", "A", "S")

    # RAS, checked from the affine: the corner voxel that is furthest right, anterior and
    # superior (each array axis taken along the world axis it mostly points to) must land at
    # [-1, -1, -1] of the (S, A, R) array.
    columns = scan.affine[:3, :3]
    corner = tuple(
        n - 1 if columns[np.argmax(np.abs(columns[:, axis])), axis] > 0 else 0
        for axis, n in enumerate(SHAPE)
    )
    marked = scan.array.copy()
    marked[corner] = 1e6
    assert vt.to_voxtell_array(scan.with_array(marked))[0][0, -1, -1, -1] == 1e6

    mask = (np.random.default_rng(3).random(official.shape[1:]) > 0.5).astype(np.uint8)
    NibabelIOWithReorient().write_seg(mask, str(tmp_path / "mask.nii.gz"), props)
    written = load_volume(tmp_path / "mask.nii.gz")
    assert written.same_grid(scan)
    back = vt.from_voxtell_array(mask, ornt)
    assert back.shape == scan.shape and np.array_equal(back, written.array)
    if name != "RAS":  # the reorientation did something, so the check above could fail
        assert not np.array_equal(back, np.transpose(mask, (2, 1, 0)))


def test_prompt_strings_come_from_the_organ_table() -> None:
    assert vt.prompt_candidates("kidney_left", "Left Kidney", ["kidney left"]) == [
        "left kidney",
        "kidney left",
        "left renal",
    ]
    assert vt.prompt_candidates("liver") == ["liver", "hepar"]
    prompts = vt.bank_prompts()
    assert len(prompts) == len(set(prompts)) and all(p == p.lower() for p in prompts)
    for organ in (*CANONICAL_ORGANS, "tumor"):
        assert {n.lower() for n in ORGAN_SYNONYMS.get(organ, organ_text(organ)[:1])} <= set(prompts)
    assert {"tumour", "sarcoma", "lesion"} <= set(prompts)


def test_a_wrong_bank_is_an_error_naming_the_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UMD_WEIGHTS", str(tmp_path))
    folder = tmp_path / "voxtell" / RELEASE
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text("{}")
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
    bank = bank_path(tmp_path)
    bank.parent.mkdir(parents=True)
    np.savez(bank, names=np.array(["liver"]), vectors=np.zeros((1, 2560), np.float16))
    with pytest.raises(ValueError, match=r"cannot read voxtell embedding bank .*'embeddings'"):
        vt.VoxTell().load("cpu")
    np.savez(bank, labels=np.array(["liver"]), embeddings=np.zeros((1, 1024), np.float16))
    with pytest.raises(ValueError, match=r"shape \[\(1024,\)\].*takes \(2560,\)"):
        vt.VoxTell().load("cpu")


# -- slow: the package's predictor on the random-weight release --------------------------------
@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("voxtell-weights")
    write_release(root)
    write_bank(bank_path(root))
    return root


@pytest.fixture(scope="module")
def scan_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("voxtell-scan")
    return save_volume(Volume(_scan_array(), AFFINE_PSL), folder / "scan.nii.gz")


@pytest.fixture(scope="module")
def model(weights: Path) -> vt.VoxTell:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UMD_WEIGHTS", str(weights))
        loaded = vt.VoxTell()
        loaded.check_available("cpu")
        loaded.load("cpu")
    return loaded


class Readme:
    """The README's Python API, one call per prompt: ``readme(prompt)`` is the mask the README's
    writer puts on disk, read back (the scan grid)."""

    def __init__(self, weights: Path, scan_file: Path, out: Path) -> None:
        from nnunetv2.imageio.nibabel_reader_writer import NibabelIOWithReorient
        from voxtell.inference.predictor import VoxTellPredictor

        self.predictor = VoxTellPredictor(
            model_dir=str(weights / "voxtell" / RELEASE),
            device=torch.device("cpu"),
            embedding_bank=str(bank_path(weights)),
            use_precomputed_embeddings=False,
        )
        self.io = NibabelIOWithReorient()
        self.img, self.props = self.io.read_images([str(scan_file)])
        self.out = out
        self.masks: dict[str, np.ndarray] = {}

    def __call__(self, prompt: str) -> np.ndarray:
        if prompt not in self.masks:
            seg = self.predictor.predict_single_image(self.img, [prompt])
            path = self.out / f"{prompt.replace(' ', '_')}.nii.gz"
            self.io.write_seg(seg[0], str(path), self.props)
            self.masks[prompt] = load_volume(path).array
        return self.masks[prompt]


@pytest.fixture(scope="module")
def readme(weights: Path, scan_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Readme:
    return Readme(weights, scan_file, tmp_path_factory.mktemp("voxtell-readme"))


@pytest.mark.slow
def test_prediction_equals_the_readme_call(
    model: vt.VoxTell, readme: Readme, scan_file: Path
) -> None:
    scan = load_volume(scan_file)
    ours = model.predict(scan, "CT", _text_prompt("liver"))
    reference = readme("liver")
    assert ours.shape == scan.shape and ours.dtype == np.uint8
    assert 0 < ours.sum() < ours.size  # a mask with both values: the comparison means something
    assert np.array_equal(ours, reference)
    assert model._predictor.text_backbone is None  # the text encoder never ran
    assert readme.predictor.text_backbone is None


@pytest.mark.slow
def test_the_text_protocol_uses_a_synonym_the_bank_holds(
    model: vt.VoxTell, readme: Readme, scan_file: Path
) -> None:
    """kidney_left: the bank has no "left kidney", only "kidney left" (its synonym)."""
    from umdbench.protocols import check_protocols, run_prompted

    assert check_protocols(vt.VoxTell) == ("text",)
    scan = load_volume(scan_file)
    reference = np.zeros(scan.shape, dtype=bool)
    reference[4:12, 8:18, 2:10] = True
    result = run_prompted(model, scan, "CT", reference, "kidney_left", "text", seed=0)
    assert result.prompt["text"] == "left kidney"  # what the suite asked for, recorded
    assert model.prompt_text("kidney_left") == "kidney left"  # what VoxTell was given
    assert model.inference_settings()["prompt_text"]["kidney_left"] == "kidney left"
    assert np.array_equal(result.mask, readme("kidney left"))
    assert not np.array_equal(result.mask, readme("liver"))  # the prompt steers the mask


@pytest.mark.slow
def test_skipping_the_reorientation_would_change_the_mask(
    model: vt.VoxTell, readme: Readme, scan_file: Path
) -> None:
    """The scan array only transposed (no RAS reorientation) gives another mask: the equality
    tests above fail if the adapter loses the reorientation."""
    scan = load_volume(scan_file)
    raw = np.ascontiguousarray(np.transpose(scan.array, (2, 1, 0))[None], dtype=np.float32)
    unoriented = readme.predictor.predict_single_image(raw, ["liver"])[0]
    assert not np.array_equal(np.transpose(unoriented, (2, 1, 0)), readme("liver"))


@pytest.mark.slow
def test_organs_missing_from_the_bank_are_skipped_with_the_strings(model: vt.VoxTell) -> None:
    assert model.unsupported("liver", "text") is None
    assert model.unsupported("urinary_bladder", "text") is None  # "Urinary Bladder" lower-cased
    reason = model.unsupported("pancreas", "text")
    assert reason is not None and "'pancreas'" in reason and vt.BANK_FILE in reason
    with pytest.raises(ValueError, match=r"holds none of 'pancreas'"):
        model.predict(Volume(_scan_array(), AFFINE_PSL), "CT", _text_prompt("pancreas"))
    settings = model.inference_settings()
    assert settings["release"] == RELEASE and settings["patch_size"] == PATCH
    assert settings["prompt_text"]["pancreas"] is None
    assert len(model.weights_id()) == 16


@pytest.mark.slow
def test_a_checkpoint_with_pickled_objects_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    folder = tmp_path / "voxtell" / RELEASE
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(_plans()))
    checkpoint = {"network_weights": {}, "args": argparse.Namespace(lr=1)}
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    write_bank(bank_path(tmp_path))
    monkeypatch.setenv("UMD_WEIGHTS", str(tmp_path))
    with pytest.raises(ValueError, match=r"weights_only=True") as info:
        vt.VoxTell().load("cpu")
    path = folder / "fold_0" / "checkpoint_final.pth"
    assert str(path) in str(info.value) and "weights_only=False" not in str(info.value)


def _tiny_text_encoder(folder: Path) -> Path:
    """A one-layer random Qwen3 with a word-level tokenizer, saved as a local model folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

    words = ["[UNK]", "[PAD]", "Query:", "liver", "left", "kidney"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]"
    ).save_pretrained(folder)
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
    )  # fmt: skip
    Qwen3Model(config).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_build_embedding_bank_writes_the_packages_format(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """VoxTell's own embedding code with a stand-in text encoder; the file reads back with the
    package's ``load_embedding_bank`` and equals the package's float16 cache of each prompt."""
    try:
        import transformers.models.qwen3.modeling_qwen3  # noqa: F401
    except Exception as error:  # e.g. a torchvision that does not match torch
        pytest.skip(f"transformers' Qwen3 does not import here: {error}")
    from voxtell.inference.predictor import VoxTellPredictor
    from voxtell.utils.embedding_bank import load_embedding_bank

    encoder = _tiny_text_encoder(tmp_path / "encoder")
    release = request.getfixturevalue("weights") / "voxtell" / RELEASE
    out = vt.build_embedding_bank(
        tmp_path / "bank.npz", encoder, ["Liver", "left kidney", "liver"], model_folder=release
    )
    bank = load_embedding_bank(str(out))
    assert list(bank) == ["liver", "left kidney"]
    assert all(v.dtype == np.float16 and v.shape == (32,) for v in bank.values())
    direct = VoxTellPredictor(
        model_dir=str(release),
        device=torch.device("cpu"),
        text_encoding_model=str(encoder),
        use_precomputed_embeddings=False,
    )
    vectors = direct.embed_text_prompts(["liver", "left kidney"])[0].numpy()
    assert np.array_equal(np.stack(list(bank.values())), vectors.astype(np.float16))
    assert not np.array_equal(bank["liver"], bank["left kidney"])


# -- opt-in: the published weights ------------------------------------------------------------
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "totalsegmentator"


@pytest.mark.slow
def test_real_weights_on_the_totalsegmentator_example_ct() -> None:
    """Opt-in: runs only with the published release and bank under ``UMD_WEIGHTS`` (several
    minutes on CPU). References are TotalSegmentator's own predictions (not manual labels)."""
    from umdbench.metrics import dice

    model = vt.VoxTell()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        model.check_available(device)
    except ModelUnavailable as reason:
        pytest.skip(f"opt-in real-weights test, skipped by default: {reason}")
    if not SAMPLES.is_dir():
        pytest.skip(f"no TotalSegmentator samples at {SAMPLES} (see ../shared/samples/README.md)")
    model.load(device)
    scan = load_volume(SAMPLES / "example_ct.nii.gz", dtype=np.float32)
    labels = load_volume(SAMPLES / "example_seg_fast_force_split.nii.gz").array
    for organ in ("liver", "kidney_left"):
        if missing := model.unsupported(organ, "text"):
            pytest.skip(f"the bank cannot prompt {organ}: {missing}")
    liver = model.predict(scan, "CT", _text_prompt("liver"))
    assert dice(liver > 0, labels == 5) > 0.8
    left = model.predict(scan, "CT", _text_prompt("kidney_left")) > 0
    # the left kidney prompt finds the left kidney (label 3), not the right one (label 2): RAS
    assert dice(left, labels == 3) > 0.5 and dice(left, labels == 3) > 2 * dice(left, labels == 2)
