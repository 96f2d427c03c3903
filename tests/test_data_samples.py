"""The real samples as a cohort, the TotalSegmentator maps, and the fetch command's checksums."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from umdbench.data import CachedScanLoader, DatasetUnavailable, open_dataset, validate_scan
from umdbench.data.fetch_samples import SAMPLES, fetch, verify_file
from umdbench.data.organ_maps import TOTALSEG_TOTAL, TOTALSEG_TOTAL_MR, canonical_label_map

SAMPLES_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "samples"
needs_samples = pytest.mark.skipif(
    not SAMPLES_DIR.is_dir(), reason=f"real samples not found at {SAMPLES_DIR}"
)


@pytest.mark.samples
@needs_samples
def test_builtin_totalsegmentator_maps_match_the_json():
    facts = json.loads((SAMPLES_DIR / "totalsegmentator_label_maps.json").read_text())
    assert TOTALSEG_TOTAL == {int(k): v for k, v in facts["total"].items()}
    assert TOTALSEG_TOTAL_MR == {int(k): v for k, v in facts["total_mr"].items()}


def test_lobes_make_lung_and_sides_stay_apart():
    total = canonical_label_map(TOTALSEG_TOTAL)
    assert total["lung"] == (10, 11, 12, 13, 14)
    assert (total["kidney_left"], total["kidney_right"]) == ((3,), (2,))
    assert canonical_label_map(TOTALSEG_TOTAL_MR)["lung"] == (10, 11)
    assert "kidney_left" not in canonical_label_map({1: "kidney"})


@pytest.mark.samples
@needs_samples
def test_samples_cohort_opens_and_loads(tmp_path, monkeypatch):
    monkeypatch.delenv("UMD_SAMPLES_DIR", raising=False)
    cohort = open_dataset("samples", tmp_path)
    assert set(cohort.subjects) == {"ts-example", "ts-chest", "spm12"}
    assert cohort.provenance["paired_anatomy"]["spm12"] is True
    loader = CachedScanLoader(tmp_path)
    chest = cohort.scan("ts-chest", "CT")
    heart = loader.labels(chest)
    assert heart.same_grid(loader.image(chest)) and heart.array.sum() > 10_000
    assert loader.organ_voxels(cohort.scan("spm12", "PET_MRI"))["brain"] > 100_000
    ct = cohort.scan("ts-example", "CT")
    codes = {(p.code, p.message.split("'")[1]) for p in validate_scan(ct, loader)}
    assert codes == {
        ("empty_organ", "heart"),
        ("empty_organ", "brain"),
        ("empty_organ", "esophagus"),
    }


def test_samples_absent_raise_dataset_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("UMD_SAMPLES_DIR", str(tmp_path / "none"))
    with pytest.raises(DatasetUnavailable, match="fetch_samples"):
        open_dataset("samples", tmp_path)


def test_checksum_verification_on_local_files(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"umd")
    good = hashlib.sha256(b"umd").hexdigest()
    verify_file(path, good)
    with pytest.raises(ValueError, match="sha256 must be"):
        verify_file(path, "0" * 64)
    # files already present are verified, not downloaded
    assert fetch(tmp_path, {"f.bin": ("https://invalid.example/f.bin", good)}) == [path]


@pytest.mark.samples
@needs_samples
def test_fetch_sums_match_the_samples_readme():
    readme = (SAMPLES_DIR / "README.md").read_text()
    for name, (_, sha) in SAMPLES.items():
        assert f"{sha}  {name}" in readme
