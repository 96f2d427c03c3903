"""Tiny random MONAI bundles, one per postprocessing kind of the model zoo, and their workflow.

Each config is written here in our own words with the transform kinds the official bundle
declares (read from the model zoo, not copied): the kinds are what the adapter must honour.

- ``spleen_style``: softmax -> ``Invertd`` (bilinear) -> argmax, after Orientation, Spacing,
  intensity window and a foreground crop (spleen_ct, swin_unetr_btcv, pancreas_ct_dints);
- ``brats_style``: sigmoid channels -> ``Invertd`` -> threshold -> ``Lambdad`` remap of the
  nested regions to one label map (brats_mri);
- ``renal_style``: ``Invertd`` of the logits first -> sigmoid -> threshold -> a
  ``MergeClassesd`` from the bundle's own ``scripts`` package (renalStructures_CECT; MONAI has
  no such transform, so the bundle ships one and so does ours).

Every config carries its ``SupervisedEvaluator`` and a ``SaveImaged``, so
:func:`run_bundle_workflow` can run it through ``monai.bundle.run`` as a user of the bundle
would, and read back the file it writes.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from umdbench.volume import Volume

RAS = [["L", "R"], ["P", "A"], ["I", "S"]]

#: A MergeClassesd of our own: channel 0 is background; where several channels are on, the
#: lowest index wins (the rule of renalStructures_CECT's scripts/my_transforms.py).
MERGE_CLASSES = '''
import torch
from monai.transforms import MapTransform


class MergeClassesd(MapTransform):
    """Binary channels (C, X, Y, Z) -> one label map (1, X, Y, Z)."""

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            channels = d[key]
            merged = torch.zeros_like(channels[:1])
            for index in range(channels.shape[0] - 1, 0, -1):
                merged = torch.where(channels[index : index + 1] > 0, index, merged)
            d[key] = merged
        return d
'''


def lps_scan(shape: tuple[int, int, int] = (40, 36, 20), seed: int = 0) -> Volume:
    """An anisotropic LPS CT-like scan: a noisy ellipsoid body in air, so crops matter."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    body = (grid[0] / 0.8) ** 2 + (grid[1] / 0.7) ** 2 + ((grid[2] - 0.1) / 0.75) ** 2 < 1
    array = np.where(body, rng.normal(50, 60, shape), -1000).astype(np.float32)
    affine = np.array(
        [[-0.9, 0, 0, 30.0], [0, -1.1, 0, 25.0], [0, 0, 2.5, -20.0], [0, 0, 0, 1]]
    )
    return Volume(array, affine)


def _unet(in_channels: int, out_channels: int) -> dict[str, Any]:
    return {
        "_target_": "UNet",
        "spatial_dims": 3,
        "in_channels": in_channels,
        "out_channels": out_channels,
        "channels": [4, 8, 8],
        "strides": [2, 2],
        "num_res_units": 1,
    }


def _segresnet(in_channels: int, out_channels: int) -> dict[str, Any]:
    return {
        "_target_": "SegResNet",
        "in_channels": in_channels,
        "out_channels": out_channels,
        "init_filters": 4,
        "norm": ["group", {"num_groups": 2}],
        "blocks_down": [1, 1],
        "blocks_up": [1],
    }


def _load(keys: str = "@image_key", **extra: Any) -> list[dict[str, Any]]:
    return [
        {"_target_": "LoadImaged", "keys": keys, **extra},
        {"_target_": "EnsureChannelFirstd", "keys": keys},
    ]


def _save(**extra: Any) -> dict[str, Any]:
    return {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", **extra}


def _workflow(
    network_def: dict[str, Any],
    preprocessing: list[dict[str, Any]],
    postprocessing: list[dict[str, Any]],
    amp: bool = True,
    loader_in_handlers: bool = False,
) -> dict[str, Any]:
    """A whole inference config: the parts the adapter reads, then the evaluator that runs it.

    ``loader_in_handlers``: the weights load as an evaluator handler during ``run`` (as in
    renalStructures), so nothing is built before ``run`` puts the bundle on ``sys.path``.
    """
    loader = {
        "_target_": "CheckpointLoader",
        "load_path": "$@bundle_root + '/models/model.pt'",
        "load_dict": {"model": "@network"},
    }
    config: dict[str, Any] = {
        "imports": ["$import numpy"],
        "bundle_root": ".",
        "image_key": "image",
        "output_dir": "$@bundle_root + '/eval'",
        "datalist": [],
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing},
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": [16, 16, 16],
            "sw_batch_size": 2,
            "overlap": 0.25,
        },
        "postprocessing": {"_target_": "Compose", "transforms": postprocessing},
        "dataset": {
            "_target_": "Dataset",
            "data": "$[{'image': i} for i in @datalist]",
            "transform": "@preprocessing",
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 0,
        },
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "amp": amp,
        },
        "run": ["$@evaluator.run()"],
    }
    if loader_in_handlers:
        config["evaluator"]["val_handlers"] = [loader]
    else:
        config["checkpointloader"] = loader
        config["initialize"] = ["$@checkpointloader(@evaluator)"]
    return config


def _invert(**extra: Any) -> dict[str, Any]:
    return {
        "_target_": "Invertd",
        "keys": "pred",
        "transform": "@preprocessing",
        "orig_keys": "@image_key",
        "nearest_interp": False,
        "to_tensor": True,
        **extra,
    }


def spleen_style(invert: bool = True) -> dict[str, Any]:
    """Softmax, bilinear ``Invertd`` of a resampling and cropping preprocessing, argmax."""
    preprocessing = [
        *_load(),
        {"_target_": "Orientationd", "keys": "@image_key", "axcodes": "RAS", "labels": RAS},
        {"_target_": "Spacingd", "keys": "@image_key", "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
        {
            "_target_": "ScaleIntensityRanged",
            "keys": "@image_key",
            "a_min": -57,
            "a_max": 164,
            "b_min": 0.0,
            "b_max": 1.0,
            "clip": True,
        },
        {
            "_target_": "CropForegroundd",
            "keys": "@image_key",
            "source_key": "@image_key",
            "allow_smaller": True,
        },
        {"_target_": "EnsureTyped", "keys": "@image_key"},
    ]
    postprocessing = [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        *([_invert()] if invert else []),
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
        _save(output_dtype="$numpy.float32", output_postfix="trans", separate_folder=True),
    ]
    return _workflow(_unet(1, 3), preprocessing, postprocessing)


def brats_style(remap: bool = True) -> dict[str, Any]:
    """Sigmoid region channels (TC, WT, ET), ``Invertd``, threshold, then a label remap."""
    preprocessing = [
        *_load(image_only=False),
        {"_target_": "Orientationd", "keys": "@image_key", "axcodes": "RAS", "labels": RAS},
        {"_target_": "Spacingd", "keys": "@image_key", "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
        {"_target_": "NormalizeIntensityd", "keys": "@image_key", "nonzero": True, "channel_wise": True},
    ]
    # nested regions -> labels: enhancing (ET, channel 2) = 4 over core (TC, 0) = 1 over whole (WT, 1) = 2
    to_labels = (
        "$lambda x: torch.where(x[2:3] > 0, 4,"
        " torch.where(x[0:1] > 0, 1, torch.where(x[1:2] > 0, 2, 0)))"
    )
    postprocessing = [
        {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
        _invert(meta_keys="pred_meta_dict"),
        {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
        *([{"_target_": "Lambdad", "keys": "pred", "func": to_labels}] if remap else []),
        _save(
            meta_keys="pred_meta_dict",
            output_dtype="uint8",
            output_postfix="seg",
            resample=False,
            squeeze_end_dims=True,
        ),
    ]
    return _workflow(_segresnet(1, 3), preprocessing, postprocessing)


def renal_style() -> dict[str, Any]:
    """``Invertd`` of the logits, sigmoid, threshold, the bundle's own ``MergeClassesd``."""
    preprocessing = [
        *_load(image_only=False),
        {"_target_": "Orientationd", "keys": "@image_key", "axcodes": "LPS", "labels": RAS},
        {"_target_": "Spacingd", "keys": "@image_key", "pixdim": [1.5, 1.5, 1.5], "mode": "bilinear"},
        {
            "_target_": "ScaleIntensityRanged",
            "keys": "@image_key",
            "a_min": -1000,
            "a_max": 1000,
            "b_min": 0.0,
            "b_max": 1.0,
            "clip": True,
        },
        {"_target_": "EnsureTyped", "keys": "@image_key"},
    ]
    postprocessing = [
        _invert(device="@device", meta_keys="pred_meta_dict"),
        {"_target_": "Activationsd", "keys": "pred", "softmax": False, "sigmoid": True},
        {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
        {"_target_": "scripts.transforms.MergeClassesd", "keys": "pred"},
        _save(meta_keys="pred_meta_dict"),
    ]
    return _workflow(
        _segresnet(1, 4), preprocessing, postprocessing, amp=False, loader_in_handlers=True
    )


def write_bundle(folder: Path, config: dict[str, Any], seed: int = 0) -> Path:
    """A bundle folder: ``configs/inference.json``, random weights, and a ``scripts`` package
    when the config names one of its transforms."""
    from monai.bundle import ConfigParser

    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "inference.json").write_text(json.dumps(config, indent=1))
    if "scripts.transforms" in json.dumps(config):
        (folder / "scripts").mkdir()
        (folder / "scripts" / "__init__.py").write_text("")
        (folder / "scripts" / "transforms.py").write_text(MERGE_CLASSES)
    torch.manual_seed(seed)
    net = ConfigParser({"network_def": config["network_def"]}).get_parsed_content("network_def")
    torch.save(net.state_dict(), folder / "models" / "model.pt")
    return folder


def forget_scripts_package() -> None:
    """Drop a cached ``scripts`` package so the next import finds the bundle's own one."""
    for name in [n for n in sys.modules if n == "scripts" or n.startswith("scripts.")]:
        del sys.modules[name]


def run_bundle_workflow(folder: Path, scan: Path, out_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Run the bundle as its user would (``monai.bundle.run``: evaluator, SaveImaged to disk)
    on one scan file; the voxels and affine of the one file it writes."""
    from monai.bundle import run

    forget_scripts_package()
    with warnings.catch_warnings():  # expected here: "trust this config", "no CUDA for amp"
        warnings.filterwarnings("ignore", "parsing config_file", UserWarning)
        warnings.filterwarnings("ignore", "CUDA is not available", UserWarning)
        run(
            config_file=str(folder / "configs" / "inference.json"),
            bundle_root=str(folder),
            datalist=[str(scan)],
            output_dir=str(out_dir),
            device="$torch.device('cpu')",
        )
    written = sorted(out_dir.rglob("*.nii.gz"))
    assert len(written) == 1, f"the bundle's workflow wrote {written}, expected one file"
    image = nib.load(str(written[0]))
    return np.asarray(image.dataobj), np.asarray(image.affine)  # type: ignore[attr-defined]
