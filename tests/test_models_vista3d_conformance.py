"""VISTA3D conformance: the adapter's masks equal what MONAI's VISTA3D components give when they
are called the way the MONAI bundle (model-zoo ``models/vista3d``, 0.5.7) calls them.

The reference here is written from the bundle, not from the adapter: a config in the bundle's
own form (``_target_`` transforms, parsed by ``monai.bundle.ConfigParser``, with the bundle's
``$`` expression for the bone subclasses), the scan read from NIfTI by ``LoadImaged``, the
points mapped as ``Vista3dEvaluator`` maps them, the two branches of ``Vista3dInferer``,
``VistaPostTransformd``, ``Invertd`` on a deep copy of the preprocessing after
``reset_ops_id``, ``nan_to_num(255)``. "Equal" is voxel identity: the same MONAI calls on the
same numbers, on CPU, are deterministic.

The scan is built so that every step changes the result: LPS and anisotropic (orientation and
spacing), air around a body that touches the field of view only along z (the crop cuts x; the
sliding window pads y and z, and z's borders are tissue, so replicate padding differs from
zeros), and a model grid of 55 voxels along x, where overlap 0.25 gives two windows and 0.3
would give three.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import nibabel as nib
import numpy as np
import pytest
import torch

from umdbench.models.vista3d import Vista3D
from umdbench.prompts import Prompt
from umdbench.volume import Volume

pytest.importorskip("einops", reason="VISTA3D needs einops: pip install einops")

PATCH = [32, 32, 32]
SPACING = [3.0, 3.0, 3.0]
AFFINE = np.array([[-2.0, 0, 0, 100], [0, -2.5, 0, 45], [0, 0, 4.0, -40], [0, 0, 0, 1]])
SHAPE = (100, 36, 20)
POSITIVE = [43.99, 13.38, 6.37]  # scan voxel indices, inside the liver
NEGATIVE = [60.2, 20.5, 12.3]  # in the body, left of the liver


class TinyVista(Vista3D):
    name = "tiny-vista"
    encoder_embed_dim = 16
    patch_size: ClassVar[tuple[int, int, int]] = (32, 32, 32)
    spacing: ClassVar[tuple[float, float, float]] = (3.0, 3.0, 3.0)


def bundle_like_config(with_label: bool = False) -> dict[str, Any]:
    """The bundle's ``inference.json`` preprocessing and postprocessing (TinyVista's spacing).

    ``with_label``: the same grid for a ground-truth label (nearest), and the bundle's
    validation postprocessing (``AsDiscreted`` threshold 0) instead of ``VistaPostTransformd``.
    """
    keys = ["image", "label"] if with_label else "image"
    post_first = (
        {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.0}
        if with_label
        else {"_target_": "monai.apps.vista3d.transforms.VistaPostTransformd", "keys": "pred"}
    )
    return {
        "subclass": {
            "2": [14, 5],
            "20": [28, 29, 30, 31, 32],
            "21": "$list(range(33, 57)) + list(range(63, 98)) + [114, 120, 122]",
        },
        "preprocessing_transforms": [
            {"_target_": "LoadImaged", "keys": keys, "image_only": True},
            {"_target_": "EnsureChannelFirstd", "keys": keys},
            {"_target_": "EnsureTyped", "keys": keys, "device": "cpu", "track_meta": True},
            {
                "_target_": "Spacingd",
                "keys": keys,
                "pixdim": SPACING,
                "mode": ["bilinear", "nearest"] if with_label else "bilinear",
            },
            {
                "_target_": "CropForegroundd",
                "keys": keys,
                "allow_smaller": True,
                "margin": 10,
                "source_key": "image",
            },
            {
                "_target_": "monai.apps.vista3d.transforms.VistaPreTransformd",
                "keys": "image",
                "subclass": "@subclass",
            },
            {
                "_target_": "ScaleIntensityRanged",
                "keys": "image",
                "a_min": -963.8247715525971,
                "a_max": 1053.678477684517,
                "b_min": 0,
                "b_max": 1,
                "clip": True,
            },
            {"_target_": "Orientationd", "keys": keys, "axcodes": "RAS"},
            {
                "_target_": "CastToTyped",
                "keys": keys,
                "dtype": ["$torch.float32", "$torch.uint8"] if with_label else "$torch.float32",
            },
        ],
        "preprocessing": {"_target_": "Compose", "transforms": "$@preprocessing_transforms"},
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                post_first,
                {
                    "_target_": "Invertd",
                    "keys": "pred",
                    "transform": "$copy.deepcopy(@preprocessing)",
                    "orig_keys": "image",
                    "nearest_interp": True,
                    "to_tensor": True,
                },
                {
                    "_target_": "Lambdad",
                    "func": "$lambda x: torch.nan_to_num(x, nan=255)",
                    "keys": "pred",
                },
            ],
        },
    }


def bundle_transforms(with_label: bool = False) -> tuple[Any, Any]:
    from monai.bundle import ConfigParser

    parser = ConfigParser(bundle_like_config(with_label), globals={"copy": "copy"})
    return parser.get_parsed_content("preprocessing"), parser.get_parsed_content("postprocessing")


def vista3d_inferer(
    inputs: torch.Tensor,
    network: Any,
    point_coords: torch.Tensor | None,
    point_labels: torch.Tensor | None,
    class_vector: torch.Tensor | None,
    use_point_window: bool,
    overlap: float,
    labels: torch.Tensor | None = None,
    label_set: list[int] | None = None,
) -> torch.Tensor:
    """What the bundle's ``Vista3dInferer.__call__`` does: the point window when asked for and
    there are points, else ``SlidingWindowInfererAdapt`` with only roi, batch, coords and
    replicate padding (its ``overlap`` never reaches that inferer)."""
    from monai.apps.vista3d.inferer import point_based_window_inferer
    from monai.inferers import SlidingWindowInfererAdapt

    prompt_class = copy.deepcopy(class_vector)
    if class_vector is not None and torch.any(class_vector > network.point_head.last_supported):
        class_vector = None
    prompts = {
        "point_coords": point_coords,
        "point_labels": point_labels,
        "class_vector": class_vector,
        "prompt_class": prompt_class,
        "prev_mask": None,
        "labels": labels,
        "label_set": label_set,
    }
    if use_point_window and point_coords is not None:
        return point_based_window_inferer(
            inputs=inputs,
            roi_size=PATCH,
            sw_batch_size=1,
            transpose=True,
            with_coord=True,
            predictor=network,
            mode="gaussian",
            sw_device=inputs.device,
            device=inputs.device,
            overlap=overlap,
            **prompts,
        )
    inferer = SlidingWindowInfererAdapt(
        roi_size=PATCH, sw_batch_size=1, with_coord=True, padding_mode="replicate"
    )
    return inferer(inputs, network, transpose=True, **prompts)  # type: ignore[return-value]


def evaluator_points(image: Any, points: list[list[float]]) -> torch.Tensor:
    """``Vista3dEvaluator.transform_points`` with ``inv(inputs.affine) @ original_affine``."""
    matrix = np.linalg.inv(np.asarray(image.affine)) @ np.asarray(image.meta["original_affine"])
    batch = np.asarray([points], dtype=np.float64)  # [1, N, 3]
    homogeneous = np.concatenate([batch, np.ones((*batch.shape[:2], 1))], axis=-1)
    return torch.from_numpy(np.einsum("ij,bnj->bni", matrix, homogeneous)[..., :3])


def reference_user_prompt(
    network: Any,
    scan_path: Path,
    label_prompt: list[int] | None,
    points: list[list[float]] | None = None,
    point_labels: list[int] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The bundle's ``inference.json`` run with a user prompt: the label map it would save
    (0, ids, 255 where nothing was computed) and the preprocessed data."""
    from monai.transforms import reset_ops_id

    preprocessing, postprocessing = bundle_transforms()
    item: dict[str, Any] = {"image": str(scan_path)}
    if label_prompt is not None:
        item["label_prompt"] = label_prompt
    if points is not None:
        item["points"], item["point_labels"] = points, point_labels
    data = preprocessing(item)
    inputs = data["image"][None]
    prompt = data.get("label_prompt")
    class_vector = None if prompt is None else torch.as_tensor(prompt).unsqueeze(-1)
    coords = None if points is None else evaluator_points(data["image"], points)
    labels = None if points is None else torch.as_tensor([data["point_labels"]])
    with torch.no_grad():
        pred = vista3d_inferer(
            inputs, network, coords, labels, class_vector, use_point_window=True, overlap=0.3
        )
    post = {"pred": pred[0], "image": reset_ops_id(data["image"])}
    post["label_prompt"] = class_vector
    post["points"], post["point_labels"] = coords, labels
    return np.asarray(postprocessing(post)["pred"][0]), data


def reference_patchpoints(
    network: Any, scan_path: Path, label_path: Path, class_id: int
) -> np.ndarray:
    """The bundle's point-only validation (``val_head: point``) with the label valued
    ``class_id`` and ``label_set`` ``[0, class_id]``: placeholder points with label -1, no class,
    the validation inferer (no point window; ``train.json``'s ``sw_overlap`` is ignored too)."""
    from monai.transforms import reset_ops_id

    preprocessing, postprocessing = bundle_transforms(with_label=True)
    data = preprocessing({"image": str(scan_path), "label": str(label_path)})
    label_set = [0, class_id]
    points = torch.zeros(len(label_set), 1, 3)
    point_labels = -1 + torch.zeros(len(label_set), 1)
    with torch.no_grad():
        pred = vista3d_inferer(
            data["image"][None],
            network,
            points,
            point_labels,
            None,
            use_point_window=False,
            overlap=0.625,
            labels=data["label"][None],
            label_set=label_set,
        )
    post = postprocessing({"pred": pred[0], "image": reset_ops_id(data["image"])})
    return np.asarray(post["pred"][1])  # the class's channel, back on the scan grid


def computed(model: TinyVista) -> int:
    """How many network calls were computed so far (the rest were the same call again)."""
    memo = model._net.forward
    assert isinstance(memo, Memo)
    return memo.calls


def organ(values: np.ndarray) -> np.ndarray:
    """The bundle's saved label map as our binary mask: any id, not 0, not 255 (NaN)."""
    return ((values != 0) & (values != 255)).astype(np.uint8)


class Memo:
    """The network's forward, computed once per distinct call.

    The adapter and the reference call the same network; where they hand it the same patch and
    the same prompts, the result is the same by determinism, so the second computation is
    skipped (halving the test's time). Every argument is in the key, so any difference in what
    either side gives the network is computed, counted in ``calls`` (the tests assert the
    reference adds none) and shows in the masks.
    """

    def __init__(self, forward: Callable[..., torch.Tensor]) -> None:
        self.forward = forward
        self.cache: dict[Any, torch.Tensor] = {}
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        key = _key((args, kwargs))
        if key not in self.cache:
            self.calls += 1
            self.cache[key] = self.forward(*args, **kwargs)
        return self.cache[key].clone()


def _key(value: Any) -> Any:
    import hashlib

    if isinstance(value, torch.Tensor):
        array = value.detach().cpu().as_subclass(torch.Tensor).contiguous().numpy()
        return ("tensor", str(array.dtype), array.shape, hashlib.sha1(array.tobytes()).hexdigest())
    if isinstance(value, dict):
        return tuple(sorted((k, _key(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_key(v) for v in value)
    return repr(value)


@dataclass(frozen=True)
class Scan:
    volume: Volume
    path: Path
    liver: np.ndarray
    liver_path: Path


def _world() -> np.ndarray:
    ijk = np.indices(SHAPE).reshape(3, -1).T
    return (ijk @ AFFINE[:3, :3].T + AFFINE[:3, 3]).T.reshape(3, *SHAPE)


def _ellipsoid(world: np.ndarray, center: tuple[float, ...], radii: tuple[float, ...]) -> Any:
    return sum(((w - c) / r) ** 2 for w, c, r in zip(world, center, radii, strict=True)) < 1


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Scan:
    """CT-like HU: air, a body cylinder along z, liver on the right, two lungs, a spine."""
    x, y, _ = world = _world()
    body = (x / 54) ** 2 + (y / 40) ** 2 < 1
    liver = _ellipsoid(world, (22, 5, -10), (20, 16, 22))
    lung = _ellipsoid(world, (24, -5, 22), (14, 16, 14)) | _ellipsoid(
        world, (-24, -5, 22), (14, 16, 14)
    )
    spine = (x / 8) ** 2 + ((y + 30) / 7) ** 2 < 1
    image = np.where(body, 40.0, -1000.0)
    image[liver], image[lung], image[spine] = 60.0, -850.0, 700.0
    folder = tmp_path_factory.mktemp("vista3d-scan")
    path, liver_path = folder / "ct.nii.gz", folder / "liver.nii.gz"
    nib.save(nib.Nifti1Image(image.astype(np.float32), AFFINE), str(path))
    nib.save(nib.Nifti1Image(liver.astype(np.float32), AFFINE), str(liver_path))
    return Scan(Volume(image.astype(np.float32), AFFINE), path, liver, liver_path)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyVista]:
    from monai.networks.nets import vista3d132

    root = tmp_path_factory.mktemp("vista3d-weights")
    (root / "tiny-vista").mkdir()
    torch.manual_seed(0)
    torch.save(vista3d132(encoder_embed_dim=16).state_dict(), root / "tiny-vista" / "model.pt")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UMD_WEIGHTS", str(root))
        tiny = TinyVista()
        tiny.load("cpu")
        tiny._net.forward = Memo(tiny._net.forward)
        yield tiny


def test_the_scan_makes_every_preprocessing_step_matter(model: TinyVista, scan: Scan) -> None:
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    preprocessing, _ = bundle_transforms()
    image = preprocessing({"image": str(scan.path)})["image"]
    assert image.shape[1:] == (55, 30, 26)  # x cropped (67 voxels at 3 mm before the crop)
    assert np.allclose(np.diag(np.asarray(image.affine))[:3], 3.0)  # RAS: LPS flipped
    z_faces = image[0][:, :, [0, -1]]
    assert float(z_faces.min()) == 0.0 and float(z_faces.max()) > 0.4  # tissue on the z faces
    windows = {
        overlap: len(
            dense_patch_slices(
                (55, 32, 32), PATCH, _get_scan_interval((55, 32, 32), PATCH, 3, (overlap,) * 3)
            )
        )
        for overlap in (0.25, 0.3)
    }
    assert windows == {0.25: 2, 0.3: 3}
    ours = model.preprocessing()(
        model._input_dict(scan.volume, model._request(Prompt("classid", "liver", 0, class_id=1)))
    )["image"]
    assert torch.equal(ours.as_tensor(), image.as_tensor())
    assert np.array_equal(np.asarray(ours.affine), np.asarray(image.affine))


@pytest.mark.slow
def test_class_prompt_of_a_subclass_organ_equals_the_bundle(model: TinyVista, scan: Scan) -> None:
    prompt = Prompt("classid", "lung", 0, class_id=20)
    ours = model.predict(scan.volume, "CT", prompt)
    calls = computed(model)
    values, data = reference_user_prompt(model._net, scan.path, [20])
    assert computed(model) == calls  # the network got exactly the adapter's inputs
    assert data["label_prompt"] == [28, 29, 30, 31, 32]  # the bundle never prompts 20 itself
    assert len(set(np.unique(values)) & {28, 29, 30, 31, 32}) >= 2  # several lobes won voxels
    assert set(np.unique(values)) <= {0, 28, 29, 30, 31, 32}
    assert 0 < ours.sum() < ours.size
    assert np.array_equal(ours, organ(values))
    assert model.inference_settings()["path"] == "class"


@pytest.mark.slow
def test_points_only_equals_the_bundle(model: TinyVista, scan: Scan) -> None:
    prompt = Prompt("1click", "liver", 0, points=np.array([POSITIVE]), point_labels=np.array([1]))
    ours = model.predict(scan.volume, "CT", prompt)
    calls = computed(model)
    values, _ = reference_user_prompt(model._net, scan.path, None, [POSITIVE], [1])
    assert computed(model) == calls  # the network got exactly the adapter's inputs
    assert 255 in values  # outside the click's window nothing is computed
    assert 0 < ours.sum() and np.array_equal(ours, organ(values))
    # the component filter mattered: without it, more voxels would be foreground
    unfiltered, _ = _raw_points_mask(model, scan)
    assert unfiltered.sum() > ours.sum() and not np.any(ours & ~unfiltered)
    assert model.inference_settings()["path"] == "points"


def _raw_points_mask(model: TinyVista, scan: Scan) -> tuple[np.ndarray, Any]:
    """The point head's mask without ``keep_components_with_positive_points`` (bundle calls
    again: a cache hit on the network)."""
    from monai.transforms import Invertd, reset_ops_id

    preprocessing, _ = bundle_transforms()
    data = preprocessing({"image": str(scan.path)})
    coords = evaluator_points(data["image"], [POSITIVE])
    with torch.no_grad():
        pred = vista3d_inferer(
            data["image"][None],
            model._net,
            coords,
            torch.as_tensor([[1]]),
            None,
            use_point_window=True,
            overlap=0.3,
        )
    raw = {"pred": (pred[0] > 0).float(), "image": reset_ops_id(data["image"])}
    inverted = Invertd("pred", copy.deepcopy(preprocessing), "image", nearest_interp=True)(raw)
    return np.asarray(inverted["pred"][0]).astype(bool), data


@pytest.mark.slow
def test_class_and_points_equal_the_bundle(model: TinyVista, scan: Scan) -> None:
    """classid-1click's click step, here a negative click (label 0)."""
    points = np.array([NEGATIVE])
    prompt = Prompt(
        "classid-1click", "liver", 0, class_id=1, points=points, point_labels=np.array([0]), step=1
    )
    ours = model.predict(scan.volume, "CT", prompt)
    calls = computed(model)
    values, _ = reference_user_prompt(model._net, scan.path, [1], points.tolist(), [0])
    assert computed(model) == calls  # the network got exactly the adapter's inputs
    assert set(np.unique(values)) == {0, 1, 255}
    assert 0 < ours.sum() and np.array_equal(ours, organ(values))
    assert model.inference_settings()["path"] == "class+points"


@pytest.mark.slow
def test_patchpoints_equal_the_bundles_point_validation(model: TinyVista, scan: Scan) -> None:
    prompt = Prompt("patchpoints", "liver", 0, class_id=1, reference=scan.liver)
    ours = model.predict(scan.volume, "CT", prompt)
    calls = computed(model)
    values = reference_patchpoints(model._net, scan.path, scan.liver_path, 1)
    assert computed(model) == calls  # the network got exactly the adapter's inputs
    assert set(np.unique(values)) == {0, 1}
    assert 0 < ours.sum() < ours.size
    assert np.array_equal(ours, organ(values))
    assert model.inference_settings()["path"] == "patchpoints"
