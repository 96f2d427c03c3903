"""SegVol and SAT-Pro: adapters over the user's own copy of the official code.

Neither model's code can be installed here, so these tests check two things only:

- without the user's copy, the case skips with a reason that names every expected file, the
  environment variable and the requirements (and a copy whose dependencies do not import skips
  naming the missing module);
- the **call contract**, on tiny fake copies that this file writes into ``tmp_path``: modules
  with the official module names and function signatures whose bodies are a few lines written
  here (not the authors' code). They record what the adapter hands them (arguments, axis order,
  prompt coordinates, environment) and return masks made by a threshold, so the tests see that
  the adapter calls the published entry points with the right arguments and puts the output
  back on the scan grid. They say nothing about either model's accuracy, nor that the real
  code runs in this environment: it does not (SegVol needs an older MONAI; SAT needs CUDA and
  its own dependencies).
"""

from __future__ import annotations

import json
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from umdbench.models.base import ModelUnavailable, Tier
from umdbench.organs import CANONICAL_ORGANS, MODALITIES
from umdbench.prompts import Prompt
from umdbench.protocols import check_protocols
from umdbench.registry import ModelRegistry
from umdbench.volume import Volume

segvol = pytest.importorskip("umdbench.models.segvol")
sat = pytest.importorskip("umdbench.models.sat")


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def _calls(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in records if kind is None or r["kind"] == kind]


@pytest.fixture
def no_locations(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("UMD_WEIGHTS", segvol.ENV_VAR, sat.ENV_VAR):
        monkeypatch.delenv(name, raising=False)


# --- registry metadata --------------------------------------------------------------------


def test_registry_metadata() -> None:
    registry = ModelRegistry(
        extra_specs=["umdbench.models.segvol:SegVol", "umdbench.models.sat:SatPro"],
        use_entry_points=False,
    )
    seg = registry.get("segvol").metadata()
    pro = registry.get("sat-pro").metadata()
    assert seg["tier"] == pro["tier"] == Tier.USER_CODE.value
    assert seg["protocols"] == ["text", "box", "1click"] and pro["protocols"] == ["text"]
    assert seg["modalities_claimed"] == ["CT"] and pro["modalities_claimed"] == list(MODALITIES)
    assert seg["organs"] == pro["organs"] == list(CANONICAL_ORGANS)
    assert {a: c["dice"] for a, c in seg["literature"].items()} == {"CT": 0.793}  # type: ignore[union-attr]
    assert {a: c["dice"] for a, c in pro["literature"].items()} == {  # type: ignore[union-attr]
        "CT": 0.756, "MRI": 0.838, "PET_CT": 0.634, "PET_MRI": 0.634,
    }  # fmt: skip
    for meta in (seg, pro):
        for claim in meta["literature"].values():  # type: ignore[union-attr]
            assert "UMD study digest" in claim["citation"] and "2602.07643" in claim["citation"]
    check_protocols(registry.get("segvol"))
    check_protocols(registry.get("sat-pro"))


def test_sat_modality_words() -> None:
    assert sat.SAT_MODALITY == {"CT": "ct", "PET_CT": "pet", "MRI": "mri", "PET_MRI": "pet"}


# --- absent or incomplete copies ----------------------------------------------------------


def test_segvol_absent_names_the_layout(no_locations: None) -> None:
    with pytest.raises(ModelUnavailable) as caught:
        segvol.SegVol().check_available("cpu")
    message = str(caught.value)
    for expected in (
        *segvol.RELEASE_FILES, *segvol.WEIGHT_FILES, "UMD_SEGVOL_CODE", "--umd-weights",
        "huggingface.co/BAAI/SegVol", "pos_embed", "monai==0.9.0",
    ):  # fmt: skip
        assert expected in message, expected


def test_segvol_incomplete_folder_lists_missing(
    no_locations: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "segvol").mkdir()
    (tmp_path / "segvol" / "vocab.json").write_text("{}")
    monkeypatch.setenv("UMD_WEIGHTS", str(tmp_path))
    with pytest.raises(ModelUnavailable, match="incomplete") as caught:
        segvol.SegVol().check_available("cpu")
    absent = [name for name in segvol.RELEASE_FILES if name != "vocab.json"]
    listed = ", ".join([*absent, " or ".join(segvol.WEIGHT_FILES)])
    assert f"missing {listed} (expected" in str(caught.value)
    monkeypatch.setenv(segvol.ENV_VAR, str(tmp_path / "elsewhere"))
    with pytest.raises(ModelUnavailable, match=r"\$UMD_SEGVOL_CODE=.*elsewhere"):
        segvol.SegVol().check_available("cpu")


def test_sat_absent_names_the_layout(no_locations: None) -> None:
    with pytest.raises(ModelUnavailable) as caught:
        sat.SatPro().check_available("cuda")
    message = str(caught.value)
    for expected in (
        *sat.CHECKOUT_FILES, "Pro/SAT_Pro.pth", "Pro/text_encoder.pth", "BioLORD-2023-C",
        "UMD_SAT_CODE", "github.com/zhaoziheng/SAT", "zzh99/SAT", "CUDA", "monai==1.1.0",
    ):  # fmt: skip
        assert expected in message, expected


def test_sat_incomplete_lists_missing(
    no_locations: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sat" / "Pro").mkdir(parents=True)
    (tmp_path / "sat" / "Pro" / "SAT_Pro.pth").write_bytes(b"")
    monkeypatch.setenv("UMD_WEIGHTS", str(tmp_path))
    with pytest.raises(ModelUnavailable) as caught:
        sat.SatPro().check_available("cuda")
    message = str(caught.value).split("(expected")[0]
    assert "text_encoder.pth" in message and "BioLORD-2023-C/config.json" in message
    assert "SAT_Pro.pth" not in message and "inference.py" in message


# --- SegVol: a fake Hugging Face release --------------------------------------------------

FAKE_SEGVOL = '''
"""A stand-in for the release's model_segvol_single.py: same names, bodies written for tests."""
import json
import os

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "calls.jsonl")


def log(kind, **data):
    with open(LOG, "a") as handle:
        handle.write(json.dumps({"kind": kind, **data}) + "\\n")


class SegVolConfig:
    def __init__(self, test_mode=True, **kwargs):
        self.spatial_size = [4, 8, 8]
        self.patch_size = [2, 4, 4]
        self.test_mode = test_mode


class TextEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.tokenizer = None


class SegVol(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.text_encoder = TextEncoder()
        self.scale = torch.nn.Parameter(torch.zeros(1))


def build_binary_points(points, labels, shape):
    out = torch.zeros(shape, dtype=torch.int16)
    for point, label in zip(points.long().tolist(), labels.tolist()):
        if label == 1:
            out[tuple(point)] = 1
    return out


def bounding_box(mask):
    found = torch.nonzero(mask > 0)
    return torch.cat([found.min(dim=0).values, found.max(dim=0).values])


class SegVolProcessor:
    def __init__(self, spatial_size):
        self.spatial_size = spatial_size

    def preprocess_ct_gt(self, ct_path, gt_path, category):
        ct = np.asanyarray(nib.load(ct_path).dataobj).astype(np.float32)
        gt = np.asanyarray(nib.load(gt_path).dataobj)
        log("preprocess_ct_gt", ct_shape=list(ct.shape), category=category, gt_sum=int(gt.sum()))
        return ct[None], np.stack([(gt == i + 1) for i in range(len(category))]).astype(np.int32)

    def zoom_transform(self, ct_npy, gt_npy):
        image = torch.as_tensor(np.swapaxes(ct_npy, -1, -3).copy())
        label = torch.as_tensor(np.swapaxes(gt_npy, -1, -3).copy())
        found = np.argwhere(image[0].numpy() > 0)
        start, end = found.min(axis=0), found.max(axis=0) + 1
        window = (slice(None),) + tuple(slice(int(s), int(e)) for s, e in zip(start, end))
        image, label = image[window], label[window]
        size = tuple(self.spatial_size)
        zoom_image = F.interpolate(image[None].float(), size=size, mode="nearest-exact")[0]
        zoom_label = F.interpolate(label[None].float(), size=size, mode="nearest-exact")[0]
        voxels = np.argwhere(gt_npy[0] > 0)
        box = [voxels.min(axis=0).tolist(), voxels.max(axis=0).tolist()] if len(voxels) else None
        log("zoom_transform", label_shape=list(gt_npy.shape), label_box_ijk=box,
            label_sum=int(gt_npy.sum()))
        return {"image": image, "label": label, "zoom_out_image": zoom_image,
                "zoom_out_label": zoom_label, "foreground_start_coord": start,
                "foreground_end_coord": end}

    def bbox_prompt_b(self, label_single_resize, device="cpu"):
        box = bounding_box(label_single_resize).float()[None].to(device)
        cube = torch.zeros(label_single_resize.shape)
        lo, hi = box[0, :3].long().tolist(), box[0, 3:].long().tolist()
        cube[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = 1
        log("bbox_prompt_b", input_shape=list(label_single_resize.shape), box=box[0].tolist())
        return box, cube[None, None]

    def save_preds(self, ct_path, save_path, logits_mask, start_coord, end_coord):
        # the release swaps the caller's coordinate arrays in place: so does this stand-in
        start_coord[[0, 2]] = start_coord[[2, 0]]
        end_coord[[0, 2]] = end_coord[[2, 0]]
        reference = nib.load(ct_path)
        volume = torch.zeros(reference.shape)
        window = tuple(slice(int(s), int(e)) for s, e in zip(start_coord, end_coord))
        volume[window] = torch.sigmoid(logits_mask.permute(2, 1, 0))
        nib.save(nib.Nifti1Image((volume > 0.5).float().numpy(), reference.affine), save_path)


class SegVolModel(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = SegVol()
        self.processor = SegVolProcessor(config.spatial_size)

    def forward_test(self, image, zoomed_image=None, text_prompt=None, bbox_prompt_group=None,
                     point_prompt_group=None, use_zoom=True):
        record = {"image_shape": list(image.shape), "zoomed_shape": list(zoomed_image.shape),
                  "text_prompt": text_prompt, "use_zoom": use_zoom,
                  "scale": float(self.model.scale), "draw": float(torch.rand(1))}
        if text_prompt is not None:
            record["tokens"] = self.model.text_encoder.tokenizer(text_prompt)["input_ids"]
        if bbox_prompt_group is not None:
            record["box"] = bbox_prompt_group[0][0].tolist()
            record["box_map_shape"] = list(bbox_prompt_group[1].shape)
        if point_prompt_group is not None:
            (points, labels), binary = point_prompt_group
            record["points"] = points.tolist()
            record["point_labels"] = labels.tolist()
            record["binary_points"] = torch.nonzero(binary[0, 0]).tolist()
            record["binary_shape"] = list(binary.shape)
        log("forward_test", **record)
        return torch.where(image > 50, 10.0, -10.0).cpu()
'''


def _tokenizer_files(folder: Path) -> None:
    """A tiny real tokenizer (word level) that transformers' AutoTokenizer reads offline."""
    tokenizers = pytest.importorskip("tokenizers")
    words = ["[UNK]", "liver", "left", "kidney", "spleen", "target"]
    model = tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]")
    tokenizer = tokenizers.Tokenizer(model)
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "special_tokens_map.json").write_text(json.dumps({"unk_token": "[UNK]"}))
    (folder / "vocab.json").write_text("{}")  # the real release's BPE files: present, unread
    (folder / "merges.txt").write_text("")
    (folder / "config.json").write_text(json.dumps({"model_type": "segvol"}))


@pytest.fixture
def segvol_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_locations: None) -> Path:
    pytest.importorskip("transformers")
    folder = tmp_path / "weights" / "segvol"
    _write(folder, {"model_segvol_single.py": FAKE_SEGVOL})
    _tokenizer_files(folder)
    state = {
        "model.scale": torch.tensor([3.0]),
        # a buffer older transformers saved and newer ones no longer keep: ignored, recorded
        "model.text_encoder.clip_text_model.text_model.embeddings.position_ids": torch.arange(4),
    }
    torch.save(state, folder / "pytorch_model.bin")
    monkeypatch.setenv("UMD_WEIGHTS", str(tmp_path / "weights"))
    return folder


def _segvol_scan() -> Volume:
    """10 x 12 x 14, body (20) on [1:9, 2:11, 3:13], a bright block (100); an LPS affine."""
    array = np.zeros((10, 12, 14), dtype=np.float32)
    array[1:9, 2:11, 3:13] = 20
    array[3:7, 4:9, 5:11] = 100
    affine = np.diag([-1.5, -1.0, 2.5, 1.0])
    affine[:3, 3] = (10, 20, -30)
    return Volume(array, affine)


def test_segvol_contract(segvol_release: Path) -> None:
    log = segvol_release / "calls.jsonl"
    model = segvol.SegVol()
    if not segvol.monai_vit_takes_pos_embed():  # MONAI here is newer than the release's
        with pytest.raises(ModelUnavailable, match="pos_embed"):
            model.check_available("cpu")
    model.load("cpu")
    assert model.inference_settings()["ignored_state_keys"] == [
        "model.text_encoder.clip_text_model.text_model.embeddings.position_ids"
    ]
    scan = _segvol_scan()
    expected = (scan.array > 50).astype(np.uint8)

    text = model.predict(scan, "CT", Prompt("text", "liver", seed=7, text="liver"))
    assert text.shape == scan.shape and text.dtype == np.uint8
    np.testing.assert_array_equal(text, expected)  # back on the scan grid, axes undone
    call = _calls(log, "forward_test")[-1]
    # DimTranspose: (i, j, k) -> (k, j, i); the body's crop is 10 x 9 x 8 in that order
    assert call["image_shape"] == [1, 1, 10, 9, 8] and call["zoomed_shape"] == [1, 1, 4, 8, 8]
    assert call["text_prompt"] == ["liver"] and call["tokens"] == [[1]] and call["use_zoom"]
    assert call["scale"] == 3.0  # the weights were read
    assert "box" not in call and "points" not in call

    box = ((2, 3, 4), (7, 9, 11))
    boxed = model.predict(scan, "CT", Prompt("box", "liver", seed=7, box=box))
    np.testing.assert_array_equal(boxed, expected)
    transform = _calls(log, "zoom_transform")[-1]
    assert transform["label_shape"] == [1, 10, 12, 14]  # preprocess_ct_gt's (C, i, j, k)
    assert transform["label_box_ijk"] == [[2, 3, 4], [7, 9, 11]]
    assert transform["label_sum"] == 6 * 7 * 8
    given = _calls(log, "bbox_prompt_b")[-1]
    assert given["input_shape"] == [4, 8, 8]  # zoom_out_label[0]: the one channel, no batch
    call = _calls(log, "forward_test")[-1]
    assert call["box"] == given["box"] and call["box_map_shape"] == [1, 1, 4, 8, 8]
    assert call["text_prompt"] is None
    # (k, j, i) in the crop: k 1..8 of 10, j 1..7 of 9, i 1..6 of 8; nearest-exact to 4 x 8 x 8
    assert call["box"] == [0.0, 1.0, 1.0, 3.0, 6.0, 6.0]

    click = Prompt(
        "1click", "liver", seed=7, points=np.array([[5, 6, 7]]), point_labels=np.array([1])
    )
    clicked = model.predict(scan, "CT", click)
    np.testing.assert_array_equal(clicked, expected)
    call = _calls(log, "forward_test")[-1]
    # (5, 6, 7) -> (7, 6, 5) - crop start (3, 2, 1) = (4, 4, 4) -> floor(4.5 * (4/10, 8/9, 8/8))
    assert call["points"] == [[[1.0, 4.0, 4.0]]] and call["point_labels"] == [[1.0]]
    assert call["binary_points"] == [[1, 4, 4]] and call["binary_shape"] == [1, 1, 4, 8, 8]

    # one read of the scan for three prompts; the same prompt draws the same numbers
    assert len(_calls(log, "preprocess_ct_gt")) == 1
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    model.predict(scan, "CT", click)
    assert torch.rand(1) == before  # the global RNG is restored after the call
    draws = [c["draw"] for c in _calls(log, "forward_test")]
    assert draws[-1] == draws[-2] and draws[0] == draws[1]  # seeded from the prompt

    other = Volume(scan.array.copy(), scan.affine)
    model.predict(other, "CT", Prompt("text", "liver", seed=7, text="liver"))
    assert len(_calls(log, "preprocess_ct_gt")) == 2


def test_segvol_refuses_wrong_weights(segvol_release: Path) -> None:
    torch.save({"model.other": torch.zeros(1)}, segvol_release / "pytorch_model.bin")
    with pytest.raises(ValueError, match="does not fit SegVolModel"):
        segvol.SegVol().load("cpu")


def test_segvol_missing_dependency_is_a_skip(segvol_release: Path) -> None:
    code = segvol_release / "model_segvol_single.py"
    code.write_text("import umdbench_absent_dependency_xyz\n" + code.read_text())
    with pytest.raises(ModelUnavailable, match="umdbench_absent_dependency_xyz"):
        segvol.SegVol().check_available("cpu")


def test_segvol_monai_check(monkeypatch: pytest.MonkeyPatch, segvol_release: Path) -> None:
    monkeypatch.setattr(segvol, "monai_vit_takes_pos_embed", lambda: True)
    segvol.SegVol().check_available("cpu")  # the fake imports; MONAI passes: available
    monkeypatch.setattr(segvol, "monai_vit_takes_pos_embed", lambda: False)
    with pytest.raises(ModelUnavailable, match="pos_embed='perceptron'"):
        segvol.SegVol().check_available("cpu")


def test_to_zoom_out_clips_into_the_crop() -> None:
    points = np.array([[0.0, 0.0, 0.0], [9.4, 11.6, 13.0]])
    zoomed = segvol.to_zoom_out(points, np.array([3, 2, 1]), (10, 9, 8), (4, 8, 8))
    assert zoomed.tolist() == [[0, 0, 0], [3, 7, 7]]


# --- SAT: a fake checkout -----------------------------------------------------------------

_LOG_HELPER = """
import json
import os

LOG = os.environ["UMD_TEST_SAT_LOG"]


def log(kind, **data):
    with open(LOG, "a") as handle:
        handle.write(json.dumps({"kind": kind, **data}) + "\\n")
"""

FAKE_SAT = {
    "inference.py": "# stand-in: the adapter calls what main() calls, not main itself\n",
    "train/__init__.py": "",
    "train/dist.py": """
        import os


        def is_master():
            return int(os.environ["RANK"]) == 0
        """,
    "train/log.py": _LOG_HELPER,
    "evaluate/__init__.py": "",
    "evaluate/params.py": """
        import argparse


        def parse_args():
            parser = argparse.ArgumentParser()
            for name in ("--rcd_dir", "--datasets_jsonl", "--checkpoint", "--text_encoder",
                         "--text_encoder_checkpoint", "--vision_backbone"):
                parser.add_argument(name, type=str)
            parser.add_argument("--max_queries", type=int, default=256)
            parser.add_argument("--batchsize_3d", type=int, default=2)
            parser.add_argument("--crop_size", type=int, nargs="+", default=[288, 288, 96])
            parser.add_argument("--patch_size", type=int, nargs="+", default=[32, 32, 32])
            parser.add_argument("--deep_supervision", default=False)
            parser.add_argument("--partial_load", default=True)
            parser.add_argument("--text_encoder_partial_load", default=True)
            return parser.parse_args()
        """,
    "evaluate/inference_engine.py": """
        from pathlib import Path

        import nibabel as nib
        import numpy as np
        import torch

        from train.dist import is_master
        from train.log import log


        def inference(model, text_encoder, device, testset, testloader, nib_dir):
            assert is_master()
            for batch in testloader:
                queries = text_encoder(batch["labels"], batch["modality"])
                masks = model(queries=queries, image_input=batch["image"])
                folder = Path(nib_dir) / batch["dataset_name"] / f"seg_{batch['sample_id']}"
                folder.mkdir(parents=True, exist_ok=True)
                for label, mask in zip(batch["labels"], masks):
                    image = nib.Nifti1Image(mask.numpy().astype(np.float32), np.eye(4))
                    nib.save(image, str(folder / f"{label}.nii.gz"))
                log("inference", labels=batch["labels"], modality=batch["modality"],
                    device=str(device), grid=list(batch["image"].shape))
        """,
    "data/__init__.py": "",
    "data/inference_dataset.py": """
        import json

        import nibabel as nib
        import numpy as np
        import torch
        from monai.data import MetaTensor

        from train.dist import is_master
        from train.log import log


        def Normalization(torch_image, image_type):
            return torch_image.as_tensor()


        def load_image(datum):
            image = nib.as_closest_canonical(nib.load(datum["image"]))  # RAS, like Orientationd
            array = np.asanyarray(image.dataobj).astype(np.float32)
            found = np.argwhere(array > 0)
            start, end = found.min(axis=0), found.max(axis=0) + 1
            shift = np.eye(4)
            shift[:3, 3] = start
            window = tuple(slice(int(s), int(e)) for s, e in zip(start, end))
            tensor = MetaTensor(torch.as_tensor(array[window])[None],
                                affine=torch.as_tensor(image.affine @ shift))
            return Normalization(tensor, datum["modality"]), datum["label"], datum["modality"]


        class Inference_Dataset:
            def __init__(self, jsonl_file, max_queries=256, batch_size=2):
                with open(jsonl_file) as handle:
                    self.lines = [json.loads(line) for line in handle]
                self.jsonl_file = jsonl_file
                log("dataset", lines=self.lines, max_queries=max_queries, batch_size=batch_size,
                    master=is_master())

            def __len__(self):
                return len(self.lines)

            def __getitem__(self, index):
                image, labels, modality = load_image(self.lines[index])
                return {"dataset_name": self.lines[index]["dataset"], "sample_id": "scan",
                        "image": image, "labels": labels, "modality": modality}


        def collate_fn(data):
            return data[0]
        """,
    "model/__init__.py": "",
    "model/knowledge_encoder.py": """
        import os

        import torch

        from train.log import log


        class Knowledge_Encoder(torch.nn.Module):
            def __init__(self, biolord_checkpoint="FremyCompany/BioLORD-2023-C"):
                super().__init__()
                log("knowledge_encoder", biolord=biolord_checkpoint,
                    offline=os.environ.get("HF_HUB_OFFLINE"))
        """,
    "model/text_encoder.py": """
        import torch

        from train.log import log

        from .knowledge_encoder import Knowledge_Encoder

        THRESHOLDS = {"liver": 50.0, "spleen": 150.0}


        class Text_Encoder(torch.nn.Module):
            def __init__(self, text_encoder, checkpoint=None, open_bert_layer=12,
                         open_modality_embed=False, partial_load=False, gpu_id=None,
                         device=None):
                super().__init__()
                self.model = {"ours": Knowledge_Encoder}[text_encoder]()
                # as SAT's own code reads it: the adapter must force weights_only around it
                torch.load(checkpoint, map_location="cpu", weights_only=False)
                log("text_encoder", text_encoder=text_encoder, checkpoint=checkpoint,
                    partial_load=partial_load, open_bert_layer=open_bert_layer,
                    open_modality_embed=open_modality_embed, gpu_id=gpu_id)

            def forward(self, label_name, modality_name):
                return torch.tensor([THRESHOLDS.get(name, 1e9) for name in label_name])
        """,
    "model/build_model.py": """
        import dynamic_network_architectures
        import torch

        from train.log import log


        class Thresholds(torch.nn.Module):
            def forward(self, queries, image_input):
                return torch.stack([image_input[0] > q for q in queries])


        def build_maskformer(args, device, gpu_id):
            log("build_maskformer", backbone=args.vision_backbone, crop=args.crop_size,
                patch=args.patch_size, deep=args.deep_supervision, queries=args.max_queries,
                batch=args.batchsize_3d, text_encoder=args.text_encoder,
                text_checkpoint=args.text_encoder_checkpoint, gpu_id=gpu_id,
                fork=dynamic_network_architectures.MARK)
            return Thresholds()


        def load_checkpoint(checkpoint, resume, partial_load, model, device, optimizer=None):
            # as SAT's own code reads it: the adapter must force weights_only around it
            torch.load(checkpoint, map_location="cpu", weights_only=False)
            log("load_checkpoint", checkpoint=checkpoint, resume=resume,
                partial_load=partial_load)
            return model, optimizer, 1
        """,
    "model/dynamic-network-architectures-main/dynamic_network_architectures/__init__.py": (
        'MARK = "SAT fork"\n'
    ),
}


class _Pickled:
    """An object a weights-only load refuses (defined here, so unpickling would import it)."""


@pytest.fixture
def sat_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_locations: None) -> Any:
    base = tmp_path / "weights" / "sat"
    _write(base / "SAT", FAKE_SAT)
    (base / "Pro").mkdir(parents=True)
    torch.save({"model_state_dict": {"w": torch.zeros(1)}}, base / "Pro" / "SAT_Pro.pth")
    torch.save({"model_state_dict": {"w": torch.ones(1)}}, base / "Pro" / "text_encoder.pth")
    _write(base / "BioLORD-2023-C", {"config.json": "{}"})
    log = tmp_path / "sat-calls.jsonl"
    monkeypatch.setenv("UMD_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("UMD_TEST_SAT_LOG", str(log))
    return types.SimpleNamespace(base=base, log=log)


def _sat_scan() -> Volume:
    """9 x 10 x 11, body 20, 'liver' 100, 'spleen' 200; LPS with anisotropic voxels."""
    array = np.zeros((9, 10, 11), dtype=np.float32)
    array[1:8, 2:9, 1:10] = 20
    array[2:5, 3:7, 2:6] = 100
    array[5:7, 6:8, 6:9] = 200
    affine = np.diag([-2.0, -1.5, 3.0, 1.0])
    affine[:3, 3] = (40, 30, -20)
    return Volume(array, affine)


def test_sat_contract(sat_checkout: Any) -> None:
    log: Path = sat_checkout.log
    sentinel = types.ModuleType("model")  # another package called 'model' must survive
    saved_modules = {k: sys.modules.get(k) for k in ("model", "data", "evaluate", "train")}
    dna_before = sys.modules.get("dynamic_network_architectures")
    path_before = list(sys.path)
    sys.modules["model"] = sentinel
    try:
        model = sat.SatPro()
        with pytest.raises(ModelUnavailable, match="CUDA only"):
            model.check_available("cpu")  # the fake imports; the real code needs CUDA
        model.load("cpu")
        scan = _sat_scan()
        liver = model.predict(scan, "CT", Prompt("text", "liver", seed=1, text="liver"))
        spleen = model.predict(scan, "CT", Prompt("text", "spleen", seed=1, text="spleen"))
        pet = model.predict(scan, "PET_CT", Prompt("text", "liver", seed=1, text="liver"))
        assert sys.modules["model"] is sentinel
        for name in ("data", "evaluate", "train"):
            assert sys.modules.get(name) is saved_modules[name]
        assert sys.modules.get("dynamic_network_architectures") is dna_before
        assert sys.path == path_before
    finally:
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module

    assert liver.shape == scan.shape and liver.dtype == np.uint8
    np.testing.assert_array_equal(liver, scan.array > 50)  # flips and crop undone
    np.testing.assert_array_equal(spleen, scan.array > 150)
    np.testing.assert_array_equal(pet, scan.array > 50)

    built = _calls(log, "build_maskformer")[0]
    assert built["backbone"] == "UNET-L" and built["queries"] == 256 and built["batch"] == 1
    assert built["crop"] == [288, 288, 96] and built["patch"] == [32, 32, 32]
    assert built["text_encoder"] == "ours" and built["fork"] == "SAT fork"
    assert built["text_checkpoint"] == str(sat_checkout.base / "Pro" / "text_encoder.pth")
    loaded = _calls(log, "load_checkpoint")[0]
    assert loaded["checkpoint"] == str(sat_checkout.base / "Pro" / "SAT_Pro.pth")
    assert loaded["resume"] is False and loaded["partial_load"] is True
    knowledge = _calls(log, "knowledge_encoder")[0]
    assert knowledge["biolord"] == str(sat_checkout.base / "BioLORD-2023-C")
    assert knowledge["offline"] == "1"
    encoder = _calls(log, "text_encoder")[0]
    assert encoder["open_bert_layer"] == 12 and encoder["open_modality_embed"] is False

    datasets = _calls(log, "dataset")
    assert len(datasets) == 2 and all(d["master"] for d in datasets)  # RANK=0 was set
    first = datasets[0]["lines"][0]
    assert first["modality"] == "ct" and datasets[1]["lines"][0]["modality"] == "pet"
    assert first["label"][:3] == ["liver", "left kidney", "right kidney"]
    assert len(first["label"]) == len(CANONICAL_ORGANS)  # every organ in one pass
    assert first["image"].endswith("scan.nii.gz") and first["dataset"] == "umdbench"
    assert datasets[0]["max_queries"] == 256 and datasets[0]["batch_size"] == 1
    runs = _calls(log, "inference")
    assert len(runs) == 2 and runs[0]["grid"] == [1, 7, 7, 9]  # RAS crop of the body


def test_sat_new_text_runs_alone(sat_checkout: Any) -> None:
    model = sat.SatPro()
    model.load("cpu")
    scan = _sat_scan()
    model.predict(scan, "MRI", Prompt("text", "liver", seed=1, text="liver"))
    other = model.predict(scan, "MRI", Prompt("text", "liver", seed=1, text="Hepar"))
    assert not other.any()  # an unknown word: the fake's threshold is out of reach
    lines = [d["lines"][0] for d in _calls(sat_checkout.log, "dataset")]
    assert [line["label"] for line in lines][1] == ["hepar"]
    assert {line["modality"] for line in lines} == {"mri"}


def test_sat_loads_weights_only(sat_checkout: Any) -> None:
    torch.save(
        {"model_state_dict": {}, "args": _Pickled()}, sat_checkout.base / "Pro" / "SAT_Pro.pth"
    )
    with pytest.raises(Exception, match=r"(?i)weights.only|unsupported global"):
        sat.SatPro().load("cpu")


def test_sat_missing_dependency_is_a_skip(sat_checkout: Any) -> None:
    builder = sat_checkout.base / "SAT" / "model" / "build_model.py"
    builder.write_text("import positional_encodings_absent_xyz\n" + builder.read_text())
    with pytest.raises(ModelUnavailable, match="positional_encodings_absent_xyz"):
        sat.SatPro().check_available("cpu")
    assert "model" not in sys.modules or not hasattr(sys.modules["model"], "build_model")
