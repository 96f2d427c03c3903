"""The real sample volumes (``../shared/samples``) as a cohort.

Subjects and the pairing that is honest:

- ``ts-example``: TotalSegmentator's abdomen CT (CT arm) and abdomen MR (MRI arm), with that
  model's own predictions as labels. They are two test cases of one repository, **not known to
  be one person**: a CT-vs-MRI comparison over them shows plumbing, not a paired anatomy.
- ``ts-chest``: the chest CT angiography (CT arm) with its heart mask on another grid
  (resampled by affine).
- ``spm12``: the SPM12 T1 template (MRI arm) and PET template (PET_MRI arm) on one grid with the
  brain mask thresholded at 0.5: population averages, so the MRI/PET pair for ``brain`` is
  honest at the population level (same anatomy, other physics).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from umdbench.cohort import Cohort
from umdbench.data.errors import DatasetUnavailable
from umdbench.data.geometry import read_nifti, save_nifti_atomic
from umdbench.data.manifest import LabelMap, ManifestEntry, cohort_from_entries
from umdbench.data.organ_maps import TOTALSEG_TOTAL, TOTALSEG_TOTAL_MR

__all__ = ["SAMPLE_FILES", "samples_cohort", "samples_dir"]

#: Files the cohort reads, relative to the samples folder.
SAMPLE_FILES: tuple[str, ...] = (
    "totalsegmentator/example_ct.nii.gz",
    "totalsegmentator/example_seg_fast_force_split.nii.gz",
    "totalsegmentator/example_mr_sm.nii.gz",
    "totalsegmentator/example_seg_mr.nii.gz",
    "totalsegmentator/pulmonary_ct_cropped.nii.gz",
    "totalsegmentator/pulmonary_heart.nii.gz",
    "spm12/T1.nii",
    "spm12/PET.nii",
    "spm12/brainmask.nii",
)
BRAIN_THRESHOLD = 0.5


def samples_dir() -> Path:
    """``$UMD_SAMPLES_DIR``, else ``<repo>/../shared/samples``; raises
    :class:`DatasetUnavailable` (the suite skips) when the files are not there."""
    env = os.environ.get("UMD_SAMPLES_DIR")
    repo = Path(__file__).resolve().parents[2]
    folder = Path(env).expanduser() if env else repo.parent / "shared" / "samples"
    missing = [name for name in SAMPLE_FILES if not (folder / name).is_file()]
    if missing:
        raise DatasetUnavailable(
            f"sample volumes not found in {folder} (missing {', '.join(missing[:3])}...); fetch"
            " them with `python -m umdbench.data.fetch_samples DEST` and set UMD_SAMPLES_DIR=DEST"
        )
    return folder


def _brain_labels(folder: Path, cache_dir: Path) -> Path:
    """The SPM12 brain mask thresholded at 0.5, written once as a label file."""
    source = folder / "spm12/brainmask.nii"
    stat = source.stat()
    name = f"brainmask_ge0.5_{stat.st_size}_{stat.st_mtime_ns}.nii.gz"
    out = cache_dir / "derived" / "samples" / name
    if not out.is_file():
        mask, affine = read_nifti(source)
        save_nifti_atomic((mask >= BRAIN_THRESHOLD).astype(np.uint8), affine, out)
    return out


def samples_cohort(cache_dir: Path) -> Cohort:
    """The real samples as a cohort (see the module docstring for what is paired)."""
    folder = samples_dir()
    ts, spm = folder / "totalsegmentator", folder / "spm12"
    total, total_mr = LabelMap(TOTALSEG_TOTAL, {}), LabelMap(TOTALSEG_TOTAL_MR, {})
    heart, brain = LabelMap({1: "heart"}, {}), LabelMap({1: "brain"}, {})
    brain_labels = _brain_labels(folder, cache_dir)
    entries = [
        ManifestEntry("ts-example", "ct", "CT", ts / "example_ct.nii.gz",
                      ts / "example_seg_fast_force_split.nii.gz", total),
        ManifestEntry("ts-example", "mr", "MRI", ts / "example_mr_sm.nii.gz",
                      ts / "example_seg_mr.nii.gz", total_mr),
        ManifestEntry("ts-chest", "ct", "CT", ts / "pulmonary_ct_cropped.nii.gz",
                      ts / "pulmonary_heart.nii.gz", heart, labels_grid_may_differ=True),
        ManifestEntry("spm12", "template", "MRI", spm / "T1.nii", brain_labels, brain),
        ManifestEntry("spm12", "template", "PET_MRI", spm / "PET.nii", brain_labels, brain),
    ]  # fmt: skip
    provenance = {
        "source": str(folder),
        "importer": "samples",
        "labels": "TotalSegmentator predictions (not manual); SPM12 brain mask >= 0.5",
        "paired_anatomy": {"ts-example": False, "ts-chest": False, "spm12": True},
    }
    return cohort_from_entries("samples", entries, folder, provenance)
