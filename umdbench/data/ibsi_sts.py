"""The IBSI soft-tissue sarcoma cohort: CT, FDG PET and T1 MRI of the same patients' tumours.

The only real data here in which one structure of one person is seen by three modalities, so
the study's intra-subject design runs on real images with expert masks. Layout, one folder per
patient (the IBSI validation set, ``ibsi_validation/nifti/`` of github.com/theibsi/data_sets, 51
patients of TCIA's Soft-tissue-Sarcoma collection; ``../shared/samples/ibsi_sts`` holds 20)::

    STS_001/CT_image.nii.gz     CT_mask.nii.gz      -> arm CT,     session petct
            PET_image.nii.gz    PET_mask.nii.gz     -> arm PET_CT, session petct (SUV)
            MR_T1_image.nii.gz  MR_T1_mask.nii.gz   -> arm MRI,    session mr (registered to
                                                       the PET/CT frame by the curator)

Each mask is the expert gross tumour volume (``GTV_Mass``, value 1) rasterised on its own
image's grid, so each arm is scored, and prompted, on its own mask: the box and clicks a user
would give that image. The target is ``tumor`` (a lesion: automatic organ models do not run it).
The comparisons are CT~PET_CT, CT~MRI and PET_CT~MRI over the patients that have both arms.

``--umd-dataset ibsi-sts`` opens the 20 patients in ``$UMD_IBSI_STS_DIR``, else
``$UMD_SAMPLES_DIR/ibsi_sts``, else ``../shared/samples/ibsi_sts``; ``ibsi-sts:PATH`` (or a
folder with that layout) opens a user's copy, e.g. all 51 patients.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from umdbench.cohort import Cohort
from umdbench.data.confine import check_entries_inside
from umdbench.data.errors import DatasetUnavailable
from umdbench.data.manifest import LabelMap, ManifestEntry, cohort_from_entries

__all__ = [
    "ARM_FILES",
    "COMPARISONS",
    "PROVENANCE",
    "default_ibsi_sts_dir",
    "ibsi_sts_cohort",
    "import_ibsi_sts",
    "looks_like_ibsi_sts",
]

#: Arm -> (session, image file, mask file) in each patient's folder.
ARM_FILES: Mapping[str, tuple[str, str, str]] = {
    "CT": ("petct", "CT_image.nii.gz", "CT_mask.nii.gz"),
    "PET_CT": ("petct", "PET_image.nii.gz", "PET_mask.nii.gz"),
    "MRI": ("mr", "MR_T1_image.nii.gz", "MR_T1_mask.nii.gz"),
}
COMPARISONS: tuple[tuple[str, str], ...] = (("CT", "PET_CT"), ("CT", "MRI"), ("PET_CT", "MRI"))
_LABELS = LabelMap({1: "GTV_Mass"}, {})

#: What the results and the report carry about where these images come from.
PROVENANCE: Mapping[str, Any] = {
    "description": (
        "IBSI validation set: extremity soft-tissue sarcomas, CT (HU) and FDG PET (SUV, body"
        " weight) of one PET/CT session and a T1 MRI (N4-corrected, normalised on fat) of"
        " another session registered into the PET/CT frame; the gross tumour volume"
        " (GTV_Mass) drawn by expert radiation oncologists, rasterised on each image's grid;"
        " images cropped 5 cm around the tumour by the curator (A. Zwanenburg, MIRP)"
    ),
    "labels": "expert GTV contours (manual), one per modality on its own grid",
    "paired_anatomy": True,
    "sessions": {"petct": ["CT", "PET_CT"], "mr": ["MRI"]},
    "licence": "CC BY 3.0 (Creative Commons Attribution 3.0 Unported); TCIA data usage policy",
    "upstream": "github.com/theibsi/data_sets ibsi_validation/nifti/ at"
    " 6da96021bc91faf4c0cb7fd7fa56a4225d2064a8 (TCIA Soft-tissue-Sarcoma)",
    "citations": [
        "Vallières M, Freeman CR, Skamene SR, El Naqa I (2015). A radiomics model from joint"
        " FDG-PET and MRI texture features for the prediction of lung metastases in soft-tissue"
        " sarcomas of the extremities. The Cancer Imaging Archive."
        " doi:10.7937/K9/TCIA.2015.7GO2GSKS",
        "Vallières M, Freeman CR, Skamene SR, El Naqa I. Physics in Medicine and Biology"
        " 60(14):5471, 2015. doi:10.1088/0031-9155/60/14/5471",
        "Clark K et al. The Cancer Imaging Archive (TCIA). J Digit Imaging 26(6):1045-1057,"
        " 2013. doi:10.1007/s10278-013-9622-7",
        "Zwanenburg A et al. The Image Biomarker Standardization Initiative. Radiology"
        " 295(2):328-338, 2020.",
    ],
}


def default_ibsi_sts_dir() -> Path:
    """Where ``--umd-dataset ibsi-sts`` looks (see the module docstring)."""
    if os.environ.get("UMD_IBSI_STS_DIR"):
        return Path(os.environ["UMD_IBSI_STS_DIR"]).expanduser()
    if os.environ.get("UMD_SAMPLES_DIR"):
        return Path(os.environ["UMD_SAMPLES_DIR"]).expanduser() / "ibsi_sts"
    return Path(__file__).resolve().parents[2].parent / "shared" / "samples" / "ibsi_sts"


def looks_like_ibsi_sts(root: Path) -> bool:
    """A folder of patient folders holding ``CT_image.nii.gz`` and ``MR_T1_image.nii.gz``."""
    return any(
        (p / "CT_image.nii.gz").is_file() and (p / "MR_T1_image.nii.gz").is_file()
        for p in root.iterdir()
        if p.is_dir()
    )


def ibsi_sts_cohort(cache_dir: Path) -> Cohort:
    """``--umd-dataset ibsi-sts``: the default folder, or a skip saying where to put it."""
    root = default_ibsi_sts_dir()
    if not root.is_dir() or not looks_like_ibsi_sts(root):
        raise DatasetUnavailable(
            f"the ibsi-sts cohort is not at {root} (expected STS_xxx/CT_image.nii.gz, ...);"
            " set UMD_IBSI_STS_DIR to a copy of ibsi_validation/nifti/ of"
            " github.com/theibsi/data_sets, or UMD_SAMPLES_DIR to a samples folder holding"
            " ibsi_sts/"
        )
    # not confined, as the built-in samples: the folder is the one the user named
    return import_ibsi_sts(root, cache_dir, allow_outside_root=True, name="ibsi-sts")


def import_ibsi_sts(
    root: Path, cache_dir: Path, *, allow_outside_root: bool = False, name: str | None = None
) -> Cohort:
    """The cohort of an IBSI-layout folder. An arm whose image is absent is left out (the paired
    comparisons with it skip that patient); an image whose mask is absent is a scan error."""
    entries = [entry for patient in _patients(root) for entry in _entries(patient)]
    if not entries:
        raise ValueError(
            f"no <patient>/CT_image.nii.gz, PET_image.nii.gz or MR_T1_image.nii.gz under {root}"
        )
    if not allow_outside_root:
        check_entries_inside(entries, (root, Path(cache_dir) / "derived"))
    provenance = {"source": str(root), "importer": "ibsi-sts", **PROVENANCE}
    return cohort_from_entries(name or root.name, entries, root, provenance, comparisons=COMPARISONS)


def _patients(root: Path) -> list[Path]:
    return sorted(
        p for p in root.iterdir()
        if p.is_dir() and any((p / files[1]).is_file() for files in ARM_FILES.values())
    )  # fmt: skip


def _entries(patient: Path) -> list[ManifestEntry]:
    entries = []
    for arm, (session, image, mask) in ARM_FILES.items():
        if not (patient / image).is_file():
            continue
        error = None if (patient / mask).is_file() else (
            f"{patient / image} has no mask {mask} beside it; the IBSI layout gives each image"
            " its own mask"
        )
        entries.append(ManifestEntry(
            patient.name, session, arm, patient / image, patient / mask, _LABELS,
            import_error=error, origin=f"{patient} (ibsi-sts) {arm}",
        ))  # fmt: skip
    return entries
