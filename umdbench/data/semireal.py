"""A semi-real paired cohort: PET and MRI arms rendered from the real sample CT's anatomy.

The TotalSegmentator example CT (CT arm, real voxels) gives the anatomy: its organ labels map to
tissue ids, unlabelled voxels get one by HU (air < -500, fat -200..-30, bone > 250, else soft
tissue). The built-in cohort's physics (``umdbench.umd_fixtures.physics``) renders from it an
MRI on the CT grid and a PET on a coarser 4 mm grid for each session, so every arm carries the
same real anatomy and only the physics changes. The labels are the CT's (TotalSegmentator
predictions), resampled by affine onto each PET grid.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import numpy as np

from umdbench.cohort import Cohort
from umdbench.data.geometry import read_nifti, save_nifti_atomic
from umdbench.data.manifest import LabelMap, ManifestEntry, cohort_from_entries
from umdbench.data.organ_maps import TOTALSEG_TOTAL, canonical_label_map
from umdbench.data.samples import samples_dir
from umdbench.volume import Volume

__all__ = ["PET_SPACING_MM", "SEED", "semireal_cohort", "tissue_map"]

SEED = 20260207
PET_SPACING_MM = 4.0
SUBJECT = "ts-example-semireal"


def tissue_map(ct: np.ndarray, labels: np.ndarray, tissue_ids: dict[str, int]) -> np.ndarray:
    """Tissue id per voxel: organs from the labels, the rest by HU thresholds."""
    tissue = np.full(ct.shape, tissue_ids["soft_tissue"], dtype=np.uint8)
    tissue[ct < -500] = tissue_ids["air"]
    tissue[(ct >= -200) & (ct <= -30)] = tissue_ids["fat"]
    tissue[ct > 250] = tissue_ids["bone"]
    for organ, ids in canonical_label_map(TOTALSEG_TOTAL).items():
        tissue[np.isin(labels, ids)] = tissue_ids[organ]
    return tissue


def _pet_grid(
    ct_affine: np.ndarray, ct_shape: tuple[int, ...]
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A coarser grid covering the CT's extent, axes as the CT's."""
    spacing = np.linalg.norm(ct_affine[:3, :3], axis=0)
    scale = PET_SPACING_MM / spacing
    affine = ct_affine.copy()
    affine[:3, :3] = ct_affine[:3, :3] * scale
    affine[:3, 3] = ct_affine[:3, :3] @ ((scale - 1) / 2) + ct_affine[:3, 3]
    shape = tuple(int(np.ceil(n / s)) for n, s in zip(ct_shape, scale, strict=True))
    return affine, shape  # type: ignore[return-value]


def semireal_cohort(cache_dir: Path) -> Cohort:
    """The four arms of one subject with the example CT's anatomy (rendered once, cached)."""
    from umdbench.umd_fixtures import physics

    folder = samples_dir() / "totalsegmentator"
    ct_path, seg_path = folder / "example_ct.nii.gz", folder / "example_seg_fast_force_split.nii.gz"
    key = hashlib.sha256(
        f"{SEED}:{PET_SPACING_MM}:{inspect.getsource(physics)}:{ct_path.stat().st_size}".encode()
    ).hexdigest()[:16]
    out = Path(cache_dir) / "derived" / "semireal" / key
    files = {arm: out / f"{arm}.nii.gz" for arm in ("MRI", "PET_CT", "PET_MRI")}
    if not all(p.is_file() for p in files.values()):
        _render(ct_path, seg_path, files, physics)
    total = LabelMap(TOTALSEG_TOTAL, {})
    entries = [
        ManifestEntry(SUBJECT, "petct", "CT", ct_path, seg_path, total),
        ManifestEntry(SUBJECT, "petct", "PET_CT", files["PET_CT"], seg_path, total, True),
        ManifestEntry(SUBJECT, "petmri", "MRI", files["MRI"], seg_path, total),
        ManifestEntry(SUBJECT, "petmri", "PET_MRI", files["PET_MRI"], seg_path, total, True),
    ]
    provenance = {
        "source": str(folder), "importer": "semireal", "seed": SEED,
        "pet_spacing_mm": PET_SPACING_MM,
        "note": "CT real; MRI and PET rendered from its anatomy by umd_fixtures.physics",
    }  # fmt: skip
    return cohort_from_entries("semireal", entries, folder, provenance)


def _render(ct_path: Path, seg_path: Path, files: dict[str, Path], physics: object) -> None:
    ct, affine = read_nifti(ct_path)
    labels, _ = read_nifti(seg_path)
    tissue = tissue_map(ct, labels, physics.TISSUE_IDS)  # type: ignore[attr-defined]
    rng = np.random.default_rng(SEED)
    mri = physics.render_mri(tissue, affine, rng)  # type: ignore[attr-defined]
    save_nifti_atomic(np.asarray(mri, np.float32), affine, files["MRI"])
    pet_affine, pet_shape = _pet_grid(affine, ct.shape)
    for arm in ("PET_CT", "PET_MRI"):
        pet = physics.render_pet(Volume(tissue, affine), pet_affine, pet_shape, rng)  # type: ignore[attr-defined]
        save_nifti_atomic(np.asarray(pet, np.float32), pet_affine, files[arm])
