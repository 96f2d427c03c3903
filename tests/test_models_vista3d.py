"""VISTA3D: what a user meets (weights layouts, the subclass map, skips, recorded settings), with a
random small vista3d132 saved as the bundle's model.pt, through the real adapter.

Agreement with the bundle's own pipeline is in test_models_vista3d_conformance.py.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from umdbench.models.base import ModelUnavailable
from umdbench.models.vista3d import DEFAULT_SUBCLASS, VISTA3D_LABELS, Vista3D, read_subclass_map
from umdbench.organs import CANONICAL_ORGANS
from umdbench.prompts import Prompt
from umdbench.protocols import check_protocols, run_prompted
from umdbench.volume import Volume

pytest.importorskip("einops", reason="VISTA3D needs einops: pip install einops")

#: The bundle's inference.json "subclass" entry, as it is written there.
BUNDLE_SUBCLASS = {
    "2": [14, 5],
    "20": [28, 29, 30, 31, 32],
    "21": "$list(range(33, 57)) + list(range(63, 98)) + [114, 120, 122]",
}


class TinyVista(Vista3D):
    name = "tiny-vista"
    encoder_embed_dim = 16
    patch_size: ClassVar[tuple[int, int, int]] = (32, 32, 32)
    spacing: ClassVar[tuple[float, float, float]] = (3.0, 3.0, 3.0)


@functools.cache
def _state() -> dict[str, torch.Tensor]:
    from monai.networks.nets import vista3d132

    torch.manual_seed(0)
    return vista3d132(encoder_embed_dim=16).state_dict()


def _save_net(path: Path) -> Path:
    """A random network in the bundle's checkpoint form ``{"model": state_dict}``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": _state()}, path)
    return path


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("UMD_WEIGHTS", str(tmp_path))
    return tmp_path


@pytest.fixture
def weights(root: Path) -> Path:
    """Only the bundle's model.pt, as <weights>/tiny-vista/model.pt."""
    return _save_net(root / "tiny-vista" / "model.pt")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> TinyVista:
    """One TinyVista loaded from ``<weights>/tiny-vista/model.pt`` (only the bundle's model.pt),
    shared by the tests that do not change the weights folder."""
    root = tmp_path_factory.mktemp("vista3d-weights")
    _save_net(root / "tiny-vista" / "model.pt")
    model = TinyVista()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UMD_WEIGHTS", str(root))
        model.check_available("cpu")
        model.load("cpu")
    return model


def _bundle(root: Path, subclass: object | None = BUNDLE_SUBCLASS) -> Path:
    """The bundle folder: models/model.pt and configs/inference.json (with ``subclass``)."""
    _save_net(root / "tiny-vista" / "models" / "model.pt")
    config = root / "tiny-vista" / "configs" / "inference.json"
    config.parent.mkdir(parents=True)
    content = {"patch_size": [128, 128, 128]}
    if subclass is not None:
        content["subclass"] = subclass
    config.write_text(json.dumps(content))
    return config


def _scan() -> tuple[Volume, np.ndarray]:
    affine = np.array([[-2.0, 0, 0, 40], [0, -2.5, 0, 30], [0, 0, 4.0, -50], [0, 0, 0, 1]])
    mask = np.zeros((40, 36, 20), dtype=bool)
    mask[12:28, 10:26, 5:15] = True
    image = np.where(mask, 60.0, -100.0).astype(np.float32)
    return Volume(image, affine), mask


def test_label_map_and_protocols() -> None:
    assert set(VISTA3D_LABELS) == set(CANONICAL_ORGANS)
    assert VISTA3D_LABELS["kidney_left"] == 14 and VISTA3D_LABELS["kidney_right"] == 5
    assert VISTA3D_LABELS["lung"] == 20 and 20 in DEFAULT_SUBCLASS
    assert check_protocols(Vista3D) == ("classid", "1click", "classid-1click", "patchpoints")


def test_missing_weights_name_both_layouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UMD_WEIGHTS", raising=False)
    with pytest.raises(ModelUnavailable, match="--umd-weights") as unset:
        Vista3D().check_available("cpu")
    monkeypatch.setenv("UMD_WEIGHTS", str(tmp_path))
    with pytest.raises(ModelUnavailable, match="weights not found") as missing:
        Vista3D().check_available("cpu")
    for error in (unset, missing):
        message = str(error.value)
        assert "vista3d/models/model.pt" in message or "models/model.pt" in message
        assert "configs/inference.json" in message and "vista3d/model.pt" in message
    assert str(tmp_path / "vista3d" / "models" / "model.pt") in str(missing.value)
    assert str(tmp_path / "vista3d" / "model.pt") in str(missing.value)


def test_model_pt_alone_uses_the_built_in_subclass_map(loaded: TinyVista) -> None:
    model = loaded
    settings = model.inference_settings()
    assert settings["weights_layout"] == "model.pt only"
    assert settings["subclass_map_source"] == "built-in (bundle inference.json)"
    assert model.label_prompt(20) == [28, 29, 30, 31, 32] and model.label_prompt(1) == [1]


def test_bundle_folder_reads_the_subclass_map_from_its_config(root: Path) -> None:
    config = _bundle(root, {**BUNDLE_SUBCLASS, "20": "$list(range(28, 30))"})
    model = TinyVista()
    model.load("cpu")
    settings = model.inference_settings()
    assert settings["weights_layout"] == "bundle folder"
    assert settings["subclass_map_source"] == str(config)
    assert settings["subclass_map"]["20"] == [28, 29]  # type: ignore[index]
    assert model.label_prompt(20) == [28, 29]
    assert "[28, 29]" in str(model.unsupported("lung", "classid-1click"))
    assert model.weights_id() != "none"


def test_bundle_folder_without_config_and_config_without_subclass(root: Path) -> None:
    _save_net(root / "tiny-vista" / "models" / "model.pt")
    model = TinyVista()
    model.load("cpu")
    assert model.inference_settings()["weights_layout"] == "bundle folder"
    assert model.label_prompt(20) == [28, 29, 30, 31, 32]  # built-in
    config = root / "tiny-vista" / "configs" / "inference.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"patch_size": [128, 128, 128]}))  # subclass removed
    model = TinyVista()
    model.load("cpu")
    assert model.label_prompt(20) == [20]  # the bundle README: no subclass dict, no expansion
    assert model.unsupported("lung", "classid-1click") is None


def test_subclass_expressions_read_as_monai_evaluates_them(tmp_path: Path) -> None:
    from monai.bundle import ConfigParser

    config = tmp_path / "inference.json"
    config.write_text(json.dumps({"subclass": BUNDLE_SUBCLASS}))
    parsed = ConfigParser({"subclass": BUNDLE_SUBCLASS}).get_parsed_content("subclass")
    expected = {int(k): tuple(v) for k, v in parsed.items()}
    assert read_subclass_map(config) == expected == DEFAULT_SUBCLASS


@pytest.mark.parametrize(
    "value", ["$__import__('os').getcwd()", "$[1, 'a']", "@subclass_lung", [1.5], "$range(1"]
)
def test_subclass_values_other_than_id_lists_are_refused(tmp_path: Path, value: object) -> None:
    config = tmp_path / "inference.json"
    config.write_text(json.dumps({"subclass": {"20": value}}))
    with pytest.raises(ValueError, match=r"subclass 20"):
        read_subclass_map(config)


def test_unsupported_skips_class_with_points_for_subclass_organs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UMD_WEIGHTS", str(tmp_path))  # no bundle config: built-in map
    model = Vista3D()
    for protocol in ("classid-1click", "classid-5clicks"):
        reason = model.unsupported("lung", protocol)
        assert reason is not None and "28, 29, 30, 31, 32" in reason
        assert "Label prompt can only be a single object if provided with point prompts" in reason
        assert model.unsupported("liver", protocol) is None
        assert model.unsupported("kidney_left", protocol) is None  # 14: one object
    for protocol in ("classid", "1click", "patchpoints", None):
        assert model.unsupported("lung", protocol) is None


def test_settings_record_the_bundle_choices() -> None:
    model = TinyVista()
    settings = model.inference_settings()
    window = settings["sliding_window"]
    assert window == {
        "inferer": "SlidingWindowInfererAdapt",
        "roi_size": [32, 32, 32],
        "overlap": 0.25,
        "blend_mode": "constant",
        "padding_mode": "replicate",
    }
    assert settings["amp"] is False and settings["amp_dtype"] is None and settings["path"] is None
    assert "Invertd" in str(settings["postprocessing"])
    json.dumps(settings)  # recorded with every result
    model._device = torch.device("cuda")  # the evaluator's amp: true, on CUDA only
    assert model.inference_settings()["amp"] is True
    assert model.inference_settings()["amp_dtype"] == "float16"


def test_wrong_architecture_is_a_clear_error(weights: Path) -> None:
    class Mismatch(TinyVista):
        encoder_embed_dim = 24

    with pytest.raises(ValueError, match="does not fit vista3d132"):
        Mismatch().load("cpu")


def test_prompts_the_bundle_refuses_are_errors(loaded: TinyVista) -> None:
    image, _ = _scan()
    model = loaded
    click = {"points": np.array([[20.0, 18.0, 10.0]]), "point_labels": np.array([1])}
    with pytest.raises(ValueError, match="single object if provided with point prompts"):
        model.predict(image, "CT", Prompt("classid-1click", "lung", 0, class_id=20, **click))
    with pytest.raises(ValueError, match="Undefined label prompt"):
        model.predict(image, "CT", Prompt("classid", "liver", 0, class_id=16))
    with pytest.raises(ValueError, match="needs a class_id, points or a reference"):
        model.predict(image, "CT", Prompt("classid", "liver", 0))
    with pytest.raises(ValueError, match="point_labels"):
        model.predict(
            image,
            "CT",
            Prompt("1click", "liver", 0, points=click["points"], point_labels=np.array([5])),
        )


def test_points_map_fractionally_into_the_organ_on_the_model_grid(loaded: TinyVista) -> None:
    image, _ = _scan()
    model = loaded
    data = model.preprocessing()(
        {
            "image": model._input_dict(
                image, model._request(Prompt("classid", "liver", 0, class_id=1))
            )["image"]
        }
    )
    assert np.allclose(np.diag(np.asarray(data["image"].affine))[:3], 3.0)  # RAS, 3 mm
    points = np.array([[20.4, 18.2, 10.0], [13.0, 11.0, 6.0]])
    mapped = model.model_points(data["image"], points)
    assert not np.allclose(mapped, np.rint(mapped))  # kept fractional
    world = points @ image.affine[:3, :3].T + image.affine[:3, 3]
    back = (
        mapped @ np.asarray(data["image"].affine)[:3, :3].T
        + np.asarray(data["image"].affine)[:3, 3]
    )
    assert np.allclose(world, back)
    assert all(data["image"][0][tuple(p)] > 0.5 for p in np.rint(mapped).astype(int))


@pytest.mark.slow
def test_class_and_point_protocols_run_on_the_scan_grid(loaded: TinyVista) -> None:
    image, mask = _scan()
    model = loaded
    by_class = run_prompted(model, image, "CT", mask, "liver", "classid", seed=0)
    assert by_class.mask.shape == mask.shape and by_class.prompt["class_id"] == 1
    assert model.inference_settings()["path"] == "class"
    by_click = run_prompted(model, image, "CT", mask, "liver", "1click", seed=0)
    assert by_click.mask.shape == mask.shape and "class_id" not in by_click.prompt
    assert model.inference_settings()["path"] == "points"


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["classid-1click", "patchpoints"])
def test_bundle_evaluation_protocols_run_through_the_protocol_layer(
    loaded: TinyVista, protocol: str
) -> None:
    from umdbench.protocols import parse_protocol

    try:
        parse_protocol(protocol)
    except ValueError:
        pytest.skip(f"umdbench.protocols does not parse {protocol!r} yet")
    image, mask = _scan()
    model = loaded
    result = run_prompted(model, image, "CT", mask, "liver", protocol, seed=0)
    assert result.mask.shape == mask.shape and result.prompt["class_id"] == 1
    last = "class+points" if protocol == "classid-1click" else "patchpoints"
    assert model.inference_settings()["path"] == last
