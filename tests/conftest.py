"""Shared fixtures of the project's own tests."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from umdbench.cohort import Cohort, Scan
from umdbench.volume import Volume, save_volume

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "samples"

# One cohort cache for all test processes: cohorts are keyed by seed and generator version,
# and built under a lock, so sharing is safe and saves minutes.
os.environ.setdefault("UMD_CACHE_DIR", str(Path(tempfile.gettempdir()) / "umdbench-test-cache"))


@pytest.fixture(scope="module")
def brain() -> np.ndarray:
    """The SPM12 brain mask (> 0.5), the reference of the brain-extraction models' real tests."""
    folder = SAMPLES / "spm12"
    if not folder.is_dir():
        pytest.skip(f"SPM12 samples not found at {folder} (see ../shared/samples/README.md)")
    from umdbench.volume import load_volume

    return load_volume(folder / "brainmask.nii", dtype=np.float32).array > 0.5


@pytest.fixture
def tiny_cohort(tmp_path: Path) -> Cohort:
    """Two subjects, CT and PET_CT, a cube 'liver' and a ball 'spleen' on a 20^3 grid."""
    scans = []
    for index in range(2):
        for modality in ("CT", "PET_CT"):
            labels = np.zeros((20, 20, 20), dtype=np.uint8)
            labels[4 + index : 12, 4:12, 4:12] = 1
            grid = np.indices(labels.shape)
            labels[((grid - 15) ** 2).sum(axis=0) < 9] = 2
            image = labels.astype(np.float32) * 100 + np.random.default_rng(index).normal(
                0, 5, labels.shape
            )
            affine = np.diag([2.0, 2.0, 3.0, 1.0])
            folder = tmp_path / f"s{index}"
            save_volume(Volume(image.astype(np.float32), affine), folder / f"{modality}.nii.gz")
            save_volume(Volume(labels, affine), folder / f"{modality}_labels.nii.gz")
            scans.append(
                Scan(
                    f"s{index}",
                    "PETCT",
                    modality,
                    folder / f"{modality}.nii.gz",
                    folder / f"{modality}_labels.nii.gz",
                    {"liver": (1,), "spleen": (2,)},
                )
            )
    return Cohort("tiny", tuple(scans))
