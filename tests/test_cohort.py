"""The built-in synthetic cohort: determinism, geometry of the paired arms, physics, caching."""

from __future__ import annotations

import hashlib
import multiprocessing
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from umdbench.cohort import Cohort, Scan, ScanLoader
from umdbench.organs import CANONICAL_ORGANS, MODALITIES
from umdbench.umd_fixtures.anatomy import Warp
from umdbench.umd_fixtures.physics import (
    PET_FWHM_MM,
    TISSUE_IDS,
    render_ct,
    render_mri,
    render_pet,
    tissue_from_ct,
)
from umdbench.umd_fixtures.synthetic import (
    GENERATOR_VERSION,
    build_synthetic_cohort,
    subject_ids,
    subject_seeds,
)
from umdbench.volume import Volume

LARGE_ORGANS = ("liver", "lung", "brain", "heart")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("umd-cache")


@pytest.fixture(scope="module")
def cohort(cache: Path) -> Cohort:
    return build_synthetic_cohort(n_subjects=2, seed=0, cache_dir=cache)


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _masks(scan: Scan) -> tuple[Volume, dict[str, np.ndarray]]:
    labels = ScanLoader().labels(scan)
    return labels, {organ: scan.organ_mask(labels, organ) for organ in scan.organs}


def _centroid_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    index = np.argwhere(mask).mean(axis=0)
    return affine[:3, :3] @ index + affine[:3, 3]


def _volume_ml(mask: np.ndarray, labels: Volume) -> float:
    return float(mask.sum() * np.prod(labels.spacing) / 1000.0)


def _organ_stats(scan: Scan) -> dict[str, tuple[np.ndarray, float]]:
    labels, masks = _masks(scan)
    return {o: (_centroid_mm(m, labels.affine), _volume_ml(m, labels)) for o, m in masks.items()}


# --- the API and its provenance ---------------------------------------------------------------


def test_cohort_has_every_subject_arm_and_organ(cohort: Cohort) -> None:
    assert cohort.name == "synthetic-seed0-n2"
    assert cohort.subjects == ("s0-000", "s0-001")
    assert cohort.modalities == MODALITIES
    assert cohort.organs == CANONICAL_ORGANS
    for scan in cohort.scans:
        assert dict(scan.label_map) == {o: (i + 1,) for i, o in enumerate(CANONICAL_ORGANS)}
        assert scan.session == ("PETCT" if scan.modality in ("CT", "PET_CT") else "PETMRI")


def test_provenance_records_seeds_and_version(cohort: Cohort) -> None:
    provenance = cohort.provenance
    assert provenance["seed"] == 0 and provenance["n_subjects"] == 2
    assert provenance["generator_version"] == GENERATOR_VERSION
    assert provenance["subject_seeds"] == dict(
        zip(subject_ids(2, 0), subject_seeds(2, 0), strict=True)
    )


def test_modalities_select_the_returned_scans(cache: Path, cohort: Cohort) -> None:
    pet_only = build_synthetic_cohort(2, 0, cache, modalities=("PET_CT", "PET_MRI"))
    assert pet_only.modalities == ("PET_CT", "PET_MRI")
    assert {s.image for s in pet_only.scans} < {s.image for s in cohort.scans}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_subjects": 0}, "n_subjects must be a positive integer, got 0"),
        ({"n_subjects": True}, "n_subjects must be a positive integer"),
        ({"seed": -1}, "seed must be a non-negative integer, got -1"),
        ({"modalities": ("CT", "XR")}, "modality must be one of"),
        ({"modalities": "CT"}, "modalities must be a non-empty sequence"),
        ({"modalities": ()}, "modalities must be a non-empty sequence"),
    ],
)
def test_bad_arguments_say_what_is_wrong(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_synthetic_cohort(cache_dir=tmp_path, **kwargs)
    assert not any(tmp_path.iterdir()), "nothing may be generated for bad arguments"


def test_subject_seeds_of_two_cohort_seeds_are_disjoint() -> None:
    assert subject_seeds(8, 0) == subject_seeds(8, 0)
    assert subject_seeds(3, 0) == subject_seeds(8, 0)[:3]
    for other in (1, 2, 100):
        assert not set(subject_seeds(200, 0)) & set(subject_seeds(200, other))
        assert not set(subject_ids(200, 0)) & set(subject_ids(200, other))


def test_cache_dir_defaults_to_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UMD_CACHE_DIR", str(tmp_path))
    built = build_synthetic_cohort(n_subjects=1, seed=3)
    assert Path(built.provenance["cache_folder"]).parent == tmp_path


def test_incomplete_cache_folder_is_reported(tmp_path: Path) -> None:
    (tmp_path / f"{GENERATOR_VERSION}-seed4-n1").mkdir()
    with pytest.raises(FileExistsError, match="delete it and run again"):
        build_synthetic_cohort(n_subjects=1, seed=4, cache_dir=tmp_path)


# --- determinism and caching ------------------------------------------------------------------


@pytest.mark.slow
def test_same_seed_gives_the_same_bytes(cohort: Cohort, tmp_path: Path) -> None:
    again = build_synthetic_cohort(n_subjects=2, seed=0, cache_dir=tmp_path)
    first = _digests(Path(cohort.provenance["cache_folder"]))
    second = _digests(Path(again.provenance["cache_folder"]))
    assert len(first) == 2 * 4 * 2 + 1
    assert first == second


@pytest.mark.slow
def test_other_seed_gives_other_volumes(cohort: Cohort, tmp_path: Path) -> None:
    other = build_synthetic_cohort(n_subjects=1, seed=1, cache_dir=tmp_path)
    assert other.subjects == ("s1-000",)
    for modality in MODALITIES:
        ours, theirs = cohort.scans_of(modality)[0], other.scans_of(modality)[0]
        assert ours.image.read_bytes() != theirs.image.read_bytes()
        assert ours.labels.read_bytes() != theirs.labels.read_bytes()


def _build_in_child(cache: str, queue: multiprocessing.Queue) -> None:
    built = build_synthetic_cohort(n_subjects=1, seed=5, cache_dir=Path(cache))
    queue.put((built.provenance["cache_folder"], _digests(Path(built.provenance["cache_folder"]))))


@pytest.mark.slow
def test_concurrent_builds_make_one_cohort(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_build_in_child, args=(str(tmp_path), queue)) for _ in "ab"]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert results[0] == results[1]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f".{GENERATOR_VERSION}-seed5-n1.lock", f"{GENERATOR_VERSION}-seed5-n1"]


# --- files as real data -----------------------------------------------------------------------


def test_files_are_nifti_with_the_expected_grids(cohort: Cohort) -> None:
    expected = {"CT": "RAS", "PET_CT": "RAS", "MRI": "LPS", "PET_MRI": "LPS"}
    dtypes = {"CT": np.int16, "PET_CT": np.float32, "MRI": np.float32, "PET_MRI": np.float32}
    for scan in cohort.scans:
        image = cast(nib.Nifti1Image, nib.load(scan.image))
        labels = cast(nib.Nifti1Image, nib.load(scan.labels))
        assert int(image.header["qform_code"]) == 1 and int(image.header["sform_code"]) == 1
        assert "".join(nib.aff2axcodes(image.affine)) == expected[scan.modality]
        assert image.get_data_dtype() == dtypes[scan.modality]
        assert labels.get_data_dtype() == np.uint8
        assert labels.shape == image.shape
        np.testing.assert_allclose(labels.affine, image.affine)
        spacing = scan.load_image().spacing
        if scan.modality.startswith("PET"):
            assert spacing == pytest.approx((4.0, 4.0, 4.0))
        voxels = int(np.prod(image.shape))
        if scan.modality in ("CT", "MRI"):
            assert 0.5e6 <= voxels <= 1.2e6, f"{scan.key}: {image.shape}"


def test_every_organ_is_present_in_every_arm(cohort: Cohort) -> None:
    for scan in cohort.scans:
        labels, masks = _masks(scan)
        assert set(np.unique(labels.array)) == set(range(14)), scan.key
        for organ, mask in masks.items():
            assert _volume_ml(mask, labels) >= 10.0, f"{scan.key}: {organ}"
            assert ndimage.label(mask)[1] <= 3, f"{scan.key}: {organ} is shattered"


# --- geometry of the pairs --------------------------------------------------------------------


@pytest.mark.parametrize(("anatomical", "pet"), [("CT", "PET_CT"), ("MRI", "PET_MRI")])
def test_arms_of_one_session_agree_in_world_space(
    cohort: Cohort, anatomical: str, pet: str
) -> None:
    for subject in cohort.subjects:
        ours = _organ_stats(cohort.scan(subject, anatomical))
        theirs = _organ_stats(cohort.scan(subject, pet))
        for organ in CANONICAL_ORGANS:
            (c1, v1), (c2, v2) = ours[organ], theirs[organ]
            assert np.linalg.norm(c1 - c2) < 3.0, f"{subject} {organ}: {c1} vs {c2}"
            tolerance = 0.08 if organ in LARGE_ORGANS else 0.15
            assert abs(v1 - v2) <= tolerance * max(v1, v2), f"{subject} {organ}: {v1} vs {v2} ml"


def test_the_patient_moved_between_sessions(cohort: Cohort) -> None:
    for subject in cohort.subjects:
        ct = _organ_stats(cohort.scan(subject, "CT"))
        mri = _organ_stats(cohort.scan(subject, "MRI"))
        shifts = np.array([np.linalg.norm(ct[o][0] - mri[o][0]) for o in CANONICAL_ORGANS])
        assert 8.0 < np.median(shifts) < 35.0, f"{subject}: shifts {shifts.round(1)}"
        for organ in LARGE_ORGANS:  # same anatomy, so the same volume
            v1, v2 = ct[organ][1], mri[organ][1]
            assert abs(v1 - v2) <= 0.15 * max(v1, v2), f"{subject} {organ}: {v1} vs {v2} ml"


def test_organs_are_anatomically_placed(cohort: Cohort) -> None:
    """RAS+: +x is the subject's right, +y anterior, +z superior (nibabel's convention)."""
    for scan in cohort.scans:
        c = {organ: centroid for organ, (centroid, _) in _organ_stats(scan).items()}
        x, y, z = ({o: v[axis] for o, v in c.items()} for axis in range(3))
        assert x["liver"] > 10 > -10 > x["spleen"], scan.key
        assert x["kidney_right"] > 20 and x["kidney_left"] < -20, scan.key
        assert x["stomach"] < -10 and x["heart"] < 0 and x["aorta"] < 0, scan.key
        assert z["brain"] > z["esophagus"] > z["liver"] > z["kidney_left"] > z["urinary_bladder"]
        assert z["heart"] > z["liver"] and abs(z["heart"] - z["lung"]) < 50, scan.key
        assert y["urinary_bladder"] > y["colon"] - 40 and y["aorta"] < y["heart"], scan.key
        assert y["esophagus"] < y["heart"] and y["pancreas"] < y["stomach"], scan.key


# --- physics in the images --------------------------------------------------------------------


def _organ_means(scan: Scan) -> dict[str, float]:
    """Mean intensity in each organ's core (eroded once), away from partial volumes."""
    image = scan.load_image().array
    _, masks = _masks(scan)
    means = {}
    for organ, mask in masks.items():
        core = ndimage.binary_erosion(mask)
        means[organ] = float(image[core if core.sum() >= 5 else mask].mean())
    return means


@pytest.mark.parametrize("modality", ["PET_CT", "PET_MRI"])
def test_pet_uptake_ordering(cohort: Cohort, modality: str) -> None:
    for scan in cohort.scans_of(modality):
        suv = _organ_means(scan)
        assert suv["urinary_bladder"] > suv["brain"] > suv["heart"] > suv["liver"], suv
        assert suv["kidney_left"] > suv["liver"] > suv["lung"] > 0.2, suv
        assert 1.5 < suv["liver"] < 3.0 and suv["lung"] < 1.0, suv


def test_ct_attenuation(cohort: Cohort) -> None:
    for scan in cohort.scans_of("CT"):
        hu = _organ_means(scan)
        assert hu["lung"] < -600 and hu["colon"] < 0, hu
        for organ in ("liver", "spleen", "heart", "brain", "pancreas", "urinary_bladder"):
            assert -20 < hu[organ] < 100, (organ, hu)


def test_mri_contrast_differs_from_ct(cohort: Cohort) -> None:
    for scan in cohort.scans_of("MRI"):
        t1 = _organ_means(scan)
        assert t1["liver"] > t1["spleen"] > t1["urinary_bladder"] > t1["lung"], t1
        # CT: bladder ~ brain ~ 10-35 HU; T1: urine much darker than brain
        assert t1["urinary_bladder"] < 0.5 * t1["brain"], t1


# --- physics functions on hand-made tissue maps ----------------------------------------------


def _slab(organ: str, shape: tuple[int, int, int] = (40, 40, 40)) -> np.ndarray:
    tissue = np.full(shape, TISSUE_IDS["fat"], dtype=np.uint8)
    tissue[:, :, shape[2] // 2 :] = TISSUE_IDS[organ]
    return tissue


def test_pet_psf_has_the_stated_width() -> None:
    """A step edge blurred by a Gaussian of FWHM w rises 10 % -> 90 % over 1.0 * w (2.563 sigma)."""
    tissue = Volume(_slab("urinary_bladder", (20, 20, 120)), np.diag([1.0, 1.0, 0.5, 1.0]))
    suv = render_pet(tissue, tissue.affine, tissue.shape, np.random.default_rng(0))
    profile = suv.mean(axis=(0, 1))
    low, high = profile[:20].mean(), profile[-20:].mean()
    level = (profile - low) / (high - low)
    z = np.arange(len(profile)) * 0.5
    rise = np.interp(0.9, level, z) - np.interp(0.1, level, z)
    assert rise == pytest.approx(2.563 * PET_FWHM_MM / 2.355, rel=0.15)


def test_pet_noise_grows_as_sqrt_of_signal() -> None:
    tissue = np.full((40, 40, 40), TISSUE_IDS["liver"], dtype=np.uint8)
    tissue[20:] = TISSUE_IDS["urinary_bladder"]
    volume = Volume(tissue, np.diag([2.0, 2.0, 2.0, 1.0]))
    suv = render_pet(volume, volume.affine, volume.shape, np.random.default_rng(1))
    low, high = suv[2:14, 5:-5, 5:-5], suv[26:38, 5:-5, 5:-5]
    ratio = (high.var() / high.mean()) / (low.var() / low.mean())
    assert 0.5 < ratio < 2.0, ratio


def test_pet_is_resampled_by_world_position() -> None:
    """A hot cube on a 2 mm RAS grid stays at the same world place on a 4 mm LPS grid."""
    tissue = np.full((60, 60, 60), TISSUE_IDS["fat"], dtype=np.uint8)
    tissue[40:50, 10:20, 25:35] = TISSUE_IDS["urinary_bladder"]
    fine = Volume(tissue, np.diag([2.0, 2.0, 2.0, 1.0]))
    target = np.array([[-4.0, 0, 0, 118], [0, -4.0, 0, 118], [0, 0, 4.0, 0], [0, 0, 0, 1]])
    suv = render_pet(fine, target, (30, 30, 30), np.random.default_rng(2))
    hot = np.unravel_index(np.argmax(ndimage.gaussian_filter(suv, 1.0)), suv.shape)
    world_hot = target[:3, :3] @ np.asarray(hot) + target[:3, 3]
    np.testing.assert_allclose(world_hot, [89.0, 29.0, 59.0], atol=4.0)


def test_renderers_reject_bad_tissue_maps() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"tissue must hold ids 0\.\.16"):
        render_ct(np.full((4, 4, 4), 99, dtype=np.uint8), rng)
    with pytest.raises(ValueError, match="tissue must be a 3D array"):
        render_mri(np.zeros((4, 4), dtype=np.uint8), np.eye(4), rng)
    with pytest.raises(ValueError, match="affine must be 4x4"):
        render_mri(np.zeros((4, 4, 4), dtype=np.uint8), np.eye(3), rng)
    tissue = Volume(np.zeros((4, 4, 4), dtype=np.uint8), np.eye(4))
    with pytest.raises(ValueError, match="target_shape must be three positive sizes"):
        render_pet(tissue, np.eye(4), (4, 0, 4), rng)


def test_tissue_ids_cover_body_and_organs() -> None:
    assert TISSUE_IDS["air"] == 0
    assert {"fat", "soft_tissue", "bone", *CANONICAL_ORGANS} < set(TISSUE_IDS)
    assert sorted(TISSUE_IDS.values()) == list(range(len(TISSUE_IDS)))


def test_tissue_from_ct_thresholds_and_organs() -> None:
    hu = np.array([-1000, -800, -100, 40, 700, 55], dtype=np.int16).reshape(1, 2, 3)
    liver = np.zeros(hu.shape, dtype=bool)
    liver[0, 1, 2] = True
    tissue = tissue_from_ct(hu, {"liver": liver})
    names = {v: k for k, v in TISSUE_IDS.items()}
    assert [names[int(t)] for t in tissue.ravel()] == [
        "air", "air", "fat", "soft_tissue", "bone", "liver",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="organ must be a canonical organ"):
        tissue_from_ct(hu, {"livr": liver})
    with pytest.raises(ValueError, match="mask of 'liver' must have the CT's shape"):
        tissue_from_ct(hu, {"liver": liver[0]})


def test_mri_bias_field_is_within_twenty_percent() -> None:
    tissue = np.full((30, 30, 30), TISSUE_IDS["fat"], dtype=np.uint8)
    affine = np.diag([10.0, 10.0, 10.0, 1.0])  # 300 mm across, as a body
    t1 = ndimage.uniform_filter(render_mri(tissue, affine, np.random.default_rng(3)), 5)[5:-5]
    assert t1.max() / t1.min() < 1.2 / 0.8
    assert t1.max() / t1.min() > 1.03, "the bias field should be visible"


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), amplitude=st.floats(0.0, 10.0))
def test_warp_never_moves_points_further_than_its_amplitude(seed: int, amplitude: float) -> None:
    rng = np.random.default_rng(seed)
    warp = Warp.random(rng, amplitude, (50.0, 200.0))
    points = rng.uniform(-300, 300, (200, 3))
    assert np.linalg.norm(warp(points), axis=1).max() <= amplitude + 1e-9
