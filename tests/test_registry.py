from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from umdbench.models.base import PromptKind, SegmentationModel
from umdbench.registry import ModelRegistry, import_model_class

VENDOR_MODULE = """
from __future__ import annotations
import numpy as np
from umdbench.models.base import SegmentationModel

class VendorThreshold(SegmentationModel):
    name = "acme-threshold"
    organs = ("liver",)
    label_ids = {"liver": 1}

    def load(self, device):
        pass

    def predict(self, image, modality, prompt):
        return (image.array > 50).astype(np.int16)
"""


@pytest.fixture
def vendor_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed vendor distribution exposing a model through the entry-point group."""
    (tmp_path / "acme_umd.py").write_text(VENDOR_MODULE)
    dist = tmp_path / "acme_umd-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-umd\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent("""
        [umdbench.models]
        acme-threshold = acme_umd:VendorThreshold
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("acme_umd", None)


def test_builtins_are_listed() -> None:
    names = ModelRegistry(use_entry_points=False).names()
    assert {"classical-otsu", "unet-ct", "unet-multimodal"} <= set(names)


def test_vendor_model_found_through_entry_point(vendor_package: Path) -> None:
    registry = ModelRegistry()
    cls = registry.get("acme-threshold")
    assert cls.__name__ == "VendorThreshold"
    assert "entry point" in registry.origin("acme-threshold")


def test_vendor_model_by_module_and_class(vendor_package: Path) -> None:
    registry = ModelRegistry(extra_specs=["acme_umd:VendorThreshold"], use_entry_points=False)
    assert registry.origin("acme-threshold").startswith("--umd-model")


def test_unknown_name_lists_close_matches() -> None:
    registry = ModelRegistry(use_entry_points=False)
    with pytest.raises(KeyError, match="did you mean unet-ct"):
        registry.get("unet_ct")
    with pytest.raises(KeyError, match="unknown model"):
        registry.select(["unet-cx"])


def test_select_filters_with_patterns() -> None:
    registry = ModelRegistry(use_entry_points=False)
    assert registry.select(["unet-*"], ["unet-ct"]) == ["unet-multimodal"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "module:Class"),
        ("not_a_module_xyz:Model", "cannot import module"),
        ("umdbench.registry:Missing", "has no attribute"),
        ("umdbench.registry:ModelRegistry", "subclass of SegmentationModel"),
    ],
)
def test_bad_model_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        import_model_class(spec)


def _model(name: str) -> type[SegmentationModel]:
    class Model(SegmentationModel):
        organs = ("liver",)
        prompt_kind = PromptKind.NONE

        def load(self, device: str) -> None: ...

        def predict(self, image, modality, prompt):  # type: ignore[no-untyped-def]
            return np.zeros(image.shape)

    Model.name = name
    return Model


def test_duplicate_names_are_an_error(vendor_package: Path) -> None:
    clash = _model("unet-ct")
    sys.modules["clash_mod"] = type(sys)("clash_mod")
    sys.modules["clash_mod"].Clash = clash  # type: ignore[attr-defined]
    try:
        with pytest.raises(ValueError, match="comes from both") as info:
            ModelRegistry(extra_specs=["clash_mod:Clash"], use_entry_points=False)
    finally:
        del sys.modules["clash_mod"]
    message = str(info.value)
    builtin = ModelRegistry(use_entry_points=False).get("unet-ct")
    assert "\n" not in message
    assert f"built-in ({builtin.__module__}.{builtin.__qualname__})" in message
    assert f"--umd-model clash_mod:Clash ({clash.__module__}.{clash.__qualname__})" in message
    assert message.endswith("rename one of them: give the class another `name`")


@pytest.mark.parametrize("name", ["Bad Name", "foo-CT-bar", "x-PET_MRI", ""])
def test_model_names_must_fit_case_ids(name: str) -> None:
    from umdbench.registry import register_model

    with pytest.raises(TypeError, match="`name` must"):
        register_model(_model(name))


def test_file_sha256_is_remembered_only_while_the_file_is_unchanged(tmp_path) -> None:
    """weights_id() is asked per case: the hash is cached, but never outlives the file's content."""
    import hashlib
    import os

    from umdbench.models.base import file_sha256

    path = tmp_path / "weights.bin"
    path.write_bytes(b"first")
    assert file_sha256(str(path)) == hashlib.sha256(b"first").hexdigest()[:16]
    path.write_bytes(b"other")  # same size: only mtime (forced below) tells them apart
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000))
    assert file_sha256(str(path)) == hashlib.sha256(b"other").hexdigest()[:16]
    assert file_sha256(str(path), length=8) == hashlib.sha256(b"other").hexdigest()[:8]
