"""Importers and manifests of umdbench.data on small dataset trees the tests write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from umdbench.data import CachedScanLoader, open_dataset, read_manifest, write_manifest
from umdbench.data.geometry import save_nifti_atomic
from umdbench.data.importers import arm_of_channel, detect_importer
from umdbench.data.organ_maps import canonical_label_map

A = np.diag([2.0, 2.0, 2.0, 1.0])


def _labels(*values: int) -> np.ndarray:
    labels = np.zeros((8, 8, 8), np.uint8)
    for i, value in enumerate(values):
        labels[i : i + 2, 1:4, 1:4] = value
    return labels


def _img(path: Path) -> None:
    save_nifti_atomic(np.ones((8, 8, 8), np.float32), A, path)


def test_nnunet_channels_become_arms(tmp_path):
    root = tmp_path / "Dataset001_Test"
    meta = {
        "channel_names": {"0": "CT", "1": "PET"},
        "file_ending": ".nii.gz",
        "numTraining": 2,
        "labels": {"background": 0, "liver": 1, "lung_left": 2, "lung_right": 3},
    }
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps(meta))
    for case in ("case_001", "case_002"):
        _img(root / "imagesTr" / f"{case}_0000.nii.gz")
        _img(root / "imagesTr" / f"{case}_0001.nii.gz")
        save_nifti_atomic(_labels(1, 2, 3), A, root / "labelsTr" / f"{case}.nii.gz")
    assert detect_importer(root) == "nnunet"
    cohort = open_dataset(f"nnunet:{root}", tmp_path / "cache")
    assert cohort.subjects == ("case_001", "case_002") and cohort.modalities == ("CT", "PET_CT")
    scan = cohort.scan("case_002", "PET_CT")
    assert scan.image.name == "case_002_0001.nii.gz" and scan.label_map["lung"] == (2, 3)
    assert CachedScanLoader(tmp_path / "cache").organ_voxels(scan) == {"liver": 9, "lung": 27}


@pytest.mark.parametrize(
    ("name", "others", "arm"),
    [
        ("CT", ["PET"], "CT"),
        ("PET", ["CT"], "PET_CT"),
        ("PET", ["T1"], "PET_MRI"),
        ("T2w", [], "MRI"),
    ],
)
def test_arm_of_channel(name, others, arm):
    assert arm_of_channel(name, [name, *others]) == arm


def test_unknown_channel_name_says_what_to_do():
    with pytest.raises(ValueError, match="name channels CT, PET"):
        arm_of_channel("rgb", ["rgb"])


def test_msd_training_list(tmp_path):
    root = tmp_path / "Task09_Spleen"
    meta = {
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "spleen"},
        "training": [
            {"image": "./imagesTr/spleen_2.nii.gz", "label": "./labelsTr/spleen_2.nii.gz"},
            {"image": "./imagesTr/._spleen_2.nii.gz", "label": "./labelsTr/._x.nii.gz"},
        ],
    }
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps(meta))
    _img(root / "imagesTr/spleen_2.nii.gz")
    save_nifti_atomic(_labels(1), A, root / "labelsTr/spleen_2.nii.gz")
    cohort = open_dataset(str(root), tmp_path / "cache")
    assert [s.key for s in cohort.scans] == ["spleen_2/CT"]
    assert cohort.scans[0].label_map == {"spleen": (1,)}


def test_msd_multimodal_task_points_to_the_converter(tmp_path):
    root = tmp_path / "Task01"
    root.mkdir()
    (root / "dataset.json").write_text(
        json.dumps({"modality": {"0": "FLAIR", "1": "T1w"}, "labels": {}, "training": []})
    )
    with pytest.raises(ValueError, match="nnUNetv2_convert_MSD_dataset"):
        open_dataset(f"msd:{root}", tmp_path / "cache")


def test_totalseg_masks_are_merged_and_lobes_make_lung(tmp_path):
    subject = tmp_path / "ts" / "s0001"
    _img(subject / "ct.nii.gz")
    for i, name in enumerate(
        ["liver", "lung_upper_lobe_left", "lung_lower_lobe_right", "femur_left"]
    ):
        mask = np.zeros((8, 8, 8), np.uint8)
        mask[i, :, :] = 1
        save_nifti_atomic(mask, A, subject / "segmentations" / f"{name}.nii.gz")
    cohort = open_dataset(str(tmp_path / "ts"), tmp_path / "cache")
    scan = cohort.scans[0]
    assert scan.modality == "CT" and set(scan.label_map) == {"liver", "lung"}
    voxels = CachedScanLoader(tmp_path / "cache").organ_voxels(scan)
    assert voxels == {"liver": 64, "lung": 128}


def test_totalseg_mask_on_another_grid_fails_that_scan_only(tmp_path):
    for name in ("good", "bad"):
        subject = tmp_path / "ts" / name
        _img(subject / "ct.nii.gz")
        save_nifti_atomic(np.ones((8, 8, 8), np.uint8), A, subject / "segmentations/liver.nii.gz")
        if name == "bad":
            save_nifti_atomic(
                np.ones((4, 4, 4), np.uint8), A, subject / "segmentations/spleen.nii.gz"
            )
    cohort = open_dataset(f"totalseg:{tmp_path / 'ts'}", tmp_path / "cache")
    loader = CachedScanLoader(tmp_path / "cache")
    assert loader.labels(cohort.scan("good", "CT")).array.sum() == 512
    from umdbench.data import ScanError

    with pytest.raises(ScanError, match="another grid"):
        loader.image(cohort.scan("bad", "CT"))


def test_autopet_needs_an_organ_map_then_gives_ct_and_pet(tmp_path):
    study = tmp_path / "ap" / "PETCT_0a1b" / "2004-01-01"
    for name in ("CTres.nii.gz", "SUV.nii.gz", "CT.nii.gz"):
        _img(study / name)
    save_nifti_atomic(_labels(5), A, study / "SEG.nii.gz")
    with pytest.raises(FileNotFoundError, match="lesions, not organs"):
        open_dataset(str(tmp_path / "ap"), tmp_path / "cache")
    (tmp_path / "ap" / "labels.json").write_text(json.dumps({"5": "liver"}))
    cohort = open_dataset(str(tmp_path / "ap"), tmp_path / "cache")
    assert [s.key for s in cohort.scans] == ["PETCT_0a1b/CT", "PETCT_0a1b/PET_CT"]
    assert (
        cohort.scans[0].image.name == "CTres.nii.gz" and cohort.scans[1].image.name == "SUV.nii.gz"
    )
    assert cohort.scans[0].session == "2004-01-01"
    # its own lesion labels, audited as the tumor target
    (tmp_path / "ap" / "labels.json").write_text(json.dumps({"5": "lesion"}))
    lesions = open_dataset(str(tmp_path / "ap"), tmp_path / "cache")
    assert lesions.organs == ("tumor",) and lesions.scans[1].label_map == {"tumor": (5,)}


def test_umd_convention_pet_labels_resampled_to_its_coarser_grid(tmp_path):
    session = tmp_path / "umd" / "sub-01" / "petct"
    fine = np.diag([1.0, 1.0, 1.0, 1.0])
    save_nifti_atomic(np.zeros((16, 16, 16), np.float32), fine, session / "CT.nii.gz")
    labels = np.zeros((16, 16, 16), np.uint8)
    labels[4:12, 4:12, 4:12] = 1
    save_nifti_atomic(labels, fine, session / "labels.nii.gz")
    coarse = np.diag([4.0, 4.0, 4.0, 1.0])
    coarse[:3, 3] = 1.5
    save_nifti_atomic(np.zeros((4, 4, 4), np.float32), coarse, session / "PET.nii.gz")
    (tmp_path / "umd" / "labels.json").write_text(json.dumps({"liver": 1}))
    cohort = open_dataset(str(tmp_path / "umd"), tmp_path / "cache")
    pet = cohort.scan("sub-01", "PET_CT")
    assert pet.labels_grid_may_differ and not cohort.scan("sub-01", "CT").labels_grid_may_differ
    pet_labels = CachedScanLoader(tmp_path / "cache").labels(pet)
    assert pet_labels.shape == (4, 4, 4) and pet_labels.array[1:3, 1:3, 1:3].all()
    assert pet_labels.array.sum() == 8


def _write_flat(tmp_path: Path) -> Path:
    flat = tmp_path / "flat"
    for subject in ("a", "b"):
        _img(flat / f"{subject}_ct.nii.gz")
        save_nifti_atomic(_labels(1, 2), A, flat / f"{subject}_seg.nii.gz")
    (flat / "map.json").write_text(
        json.dumps({"labels": {"1": "Leber", "2": "left kidney"}, "organs": {"liver": ["leber"]}})
    )
    (flat / "cohort.csv").write_text(
        "subject,session,arm,image,labels,label_map\n"
        "a,s1,CT,a_ct.nii.gz,a_seg.nii.gz,map.json\n"
        "b,s1,CT,b_ct.nii.gz,b_seg.nii.gz,liver=1;kidney_left=2\n"
    )
    return flat


def test_flat_folder_with_a_csv(tmp_path):
    cohort = open_dataset(str(_write_flat(tmp_path)), tmp_path / "cache")
    assert cohort.subjects == ("a", "b")
    for scan in cohort.scans:
        assert scan.label_map == {"liver": (1,), "kidney_left": (2,)}


def test_manifest_round_trip_and_json_manifest(tmp_path):
    flat = _write_flat(tmp_path)
    entries, _ = read_manifest(flat / "cohort.csv")
    out = write_manifest(entries, tmp_path / "copy" / "manifest.csv")
    again, _ = read_manifest(out)  # absolute paths outside copy/: parsed, refused when opened
    with pytest.raises(ValueError, match="outside the dataset root"):
        open_dataset(str(out), tmp_path / "cache")
    assert [(e.subject, e.image.resolve()) for e in again] == [
        (e.subject, e.image.resolve()) for e in entries
    ]
    doc = {
        "name": "j",
        "label_maps": {"m": {"liver": 1, "kidney_left": 2}},
        "scans": [
            {
                "subject": "a",
                "session": "s",
                "arm": "MRI",
                "image": str(flat / "a_ct.nii.gz"),
                "labels": str(flat / "a_seg.nii.gz"),
                "label_map": "m",
            }
        ],
    }
    (tmp_path / "m.json").write_text(json.dumps(doc))
    cohort = open_dataset(str(tmp_path / "m.json"), tmp_path / "cache")
    assert cohort.name == "j" and cohort.scans[0].label_map == {"liver": (1,), "kidney_left": (2,)}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("a,s1,XRAY,a_ct.nii.gz,a_seg.nii.gz,liver=1", "arm must be one of CT"),
        ("a,s1,CT,,a_seg.nii.gz,liver=1", "lacks image"),
        ("a,s1,CT,a_ct.nii.gz,a_seg.nii.gz,nope.json", "nope.json does not exist"),
        ("a,s1,CT,a_ct.nii.gz,a_seg.nii.gz,liver=x", "must look like liver=1"),
    ],
)
def test_bad_manifest_rows_name_the_row(tmp_path, row, message):
    path = tmp_path / "m.csv"
    path.write_text("subject,session,arm,image,labels,label_map\n" + row + "\n")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        open_dataset(str(path), tmp_path / "cache")


def test_duplicate_scan_is_an_error(tmp_path):
    path = tmp_path / "m.csv"
    row = "a,s1,CT,a.nii.gz,b.nii.gz,liver=1\n"
    path.write_text("subject,session,arm,image,labels,label_map\n" + row + row)
    with pytest.raises(ValueError, match="rows 1 and 2 both give subject 'a' arm CT"):
        open_dataset(str(path), tmp_path / "cache")


def test_unknown_spec_says_what_is_accepted(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"samples.*semireal.*importer:path"):
        open_dataset(str(tmp_path / "nowhere"), tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot tell the layout"):
        open_dataset(str(tmp_path / "empty"), tmp_path / "cache")


def test_organ_override_conflict_is_an_error():
    with pytest.raises(ValueError, match="both 'liver' and 'spleen'"):
        canonical_label_map({1: "liver"}, {"spleen": ["liver"]})
