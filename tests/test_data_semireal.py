"""The semi-real paired cohort: four arms with the real example CT's anatomy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from umdbench.data import CachedScanLoader, open_dataset
from umdbench.data.semireal import tissue_map

SAMPLES_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "samples"
physics = pytest.importorskip("umdbench.umd_fixtures.physics", reason="physics not available")


def test_tissue_map_uses_labels_then_hu_thresholds():
    ids = physics.TISSUE_IDS
    ct = np.array([-900, -100, 40, 400, 40], dtype=np.float32).reshape(5, 1, 1)
    labels = np.array([0, 0, 0, 0, 5]).reshape(5, 1, 1)  # 5 = liver in the total map
    got = tissue_map(ct, labels, ids).ravel().tolist()
    assert got == [ids["air"], ids["fat"], ids["soft_tissue"], ids["bone"], ids["liver"]]


@pytest.mark.samples
@pytest.mark.skipif(not SAMPLES_DIR.is_dir(), reason=f"real samples not found at {SAMPLES_DIR}")
def test_semireal_arms_share_anatomy_and_differ_in_physics(tmp_path):
    cohort = open_dataset("semireal", tmp_path)
    assert cohort.modalities == ("CT", "PET_CT", "MRI", "PET_MRI")
    loader = CachedScanLoader(tmp_path)
    ct, pet = cohort.scan(cohort.subjects[0], "CT"), cohort.scan(cohort.subjects[0], "PET_CT")
    ct_image, pet_image = loader.image(ct), loader.image(pet)
    assert pet_image.spacing[0] > ct_image.spacing[0]  # PET on a coarser grid
    liver_ml = {
        scan.modality: loader.organ_voxels(scan)["liver"]
        * np.prod(loader.image(scan).spacing)
        / 1000
        for scan in (ct, pet)
    }
    assert liver_ml["PET_CT"] == pytest.approx(liver_ml["CT"], rel=0.05)  # same anatomy
    labels = loader.labels(pet).array
    suv = {o: pet_image.array[np.isin(labels, pet.label_map[o])].mean() for o in ("liver", "lung")}
    assert suv["liver"] > 2 * suv["lung"]  # FDG physics, not CT contrast
    assert open_dataset("semireal", tmp_path).scans == cohort.scans  # rendered once, reused
