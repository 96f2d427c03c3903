"""Guarded inputs: dataset files confined to the dataset root, manifests whose every fault is a
one-line ValueError naming file, row and fix, and NIfTI headers checked before decoding."""

from __future__ import annotations

import gzip
import json
import os
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import nibabel as nib
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from umdbench.cases import Case
from umdbench.cohort import Cohort, Scan, ScanLoader
from umdbench.data import CachedScanLoader, ScanError, open_dataset, read_manifest
from umdbench.data.geometry import VolumeReadError, read_nifti, save_nifti_atomic
from umdbench.data.importers import import_manifest
from umdbench.models.base import SegmentationModel
from umdbench.policy import Threshold
from umdbench.prediction_cache import PredictionCache
from umdbench.runner import CaseRunner
from umdbench.volume import BUDGET_ENV, VolumeHeaderError, load_volume, max_volume_bytes

A = np.diag([2.0, 2.0, 2.0, 1.0])
HEADER = "subject,session,arm,image,labels,label_map\n"


def _pair(folder: Path, stem: str = "a") -> tuple[Path, Path]:
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[2:5, 2:5, 2:5] = 1
    image, seg = folder / f"{stem}_ct.nii.gz", folder / f"{stem}_seg.nii.gz"
    save_nifti_atomic(np.ones((8, 8, 8), np.float32), A, image)
    save_nifti_atomic(labels, A, seg)
    return image, seg


def _manifest(folder: Path, *rows: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.csv"
    path.write_text(HEADER + "".join(f"{row}\n" for row in rows))
    return path


def _one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


# -- 1. files confined to the dataset root ------------------------------------------------


def test_row_escaping_the_root_is_refused_naming_row_path_and_fix(tmp_path: Path) -> None:
    _pair(tmp_path / "ds")
    _pair(tmp_path / "elsewhere", "x")
    path = _manifest(
        tmp_path / "ds",
        "a,s1,CT,a_ct.nii.gz,a_seg.nii.gz,liver=1",
        "b,s1,CT,../elsewhere/x_ct.nii.gz,a_seg.nii.gz,liver=1",
    )
    with pytest.raises(ValueError) as info:
        open_dataset(str(path), tmp_path / "cache")
    message = _one_line(info)
    for part in (f"{path} row 2 (line 3)", "../elsewhere/x_ct.nii.gz", "resolves to",
                 str((tmp_path / "elsewhere" / "x_ct.nii.gz").resolve()),
                 f"move it under {(tmp_path / 'ds').resolve()}", "--umd-allow-outside-root"):  # fmt: skip
        assert part in message


def test_etc_passwd_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    path = _manifest(tmp_path / "ds", "a,s1,CT,../../../../../../etc/passwd,x.nii.gz,liver=1")
    with pytest.raises(ValueError, match=r"row 1 .*resolves to /etc/passwd, outside"):
        open_dataset(str(path), tmp_path / "cache")


def test_symlink_out_of_the_root_is_judged_by_its_target(tmp_path: Path) -> None:
    outside, _ = _pair(tmp_path / "elsewhere")
    _pair(tmp_path / "ds")
    (tmp_path / "ds" / "link_ct.nii.gz").symlink_to(outside)
    path = _manifest(tmp_path / "ds", "a,s1,CT,link_ct.nii.gz,a_seg.nii.gz,liver=1")
    with pytest.raises(ValueError, match=r"image '.*link_ct.nii.gz' resolves to .*elsewhere"):
        open_dataset(str(path), tmp_path / "cache")
    cohort = open_dataset(str(path), tmp_path / "cache", allow_outside_root=True)
    assert CachedScanLoader(tmp_path / "cache").organ_voxels(cohort.scans[0]) == {"liver": 27}


def test_symlinks_and_absolute_paths_inside_the_root_are_fine(tmp_path: Path) -> None:
    image, seg = _pair(tmp_path / "ds" / "real")
    (tmp_path / "ds" / "link_ct.nii.gz").symlink_to(image)
    path = _manifest(tmp_path / "ds", f"a,s1,CT,link_ct.nii.gz,{seg},liver=1")
    cohort = open_dataset(str(path), tmp_path / "cache")
    assert cohort.scans[0].image == tmp_path / "ds" / "link_ct.nii.gz"


def test_importer_layout_with_a_link_outside_names_the_scan(tmp_path: Path) -> None:
    session = tmp_path / "umd" / "sub-01" / "petct"
    session.mkdir(parents=True)
    outside, _ = _pair(tmp_path / "elsewhere")
    (session / "CT.nii.gz").symlink_to(outside)
    (tmp_path / "umd" / "labels.json").write_text(json.dumps({"liver": 1}))
    with pytest.raises(ValueError) as info:
        open_dataset(str(tmp_path / "umd"), tmp_path / "cache")
    assert "(umd) scan sub-01/CT: image" in _one_line(info)
    assert "--umd-allow-outside-root" in str(info.value)
    cohort = open_dataset(str(tmp_path / "umd"), tmp_path / "cache", allow_outside_root=True)
    assert cohort.scan("sub-01", "CT").image == session / "CT.nii.gz"


def test_totalseg_mask_outside_is_refused_before_merging(tmp_path: Path) -> None:
    subject = tmp_path / "ts" / "s1"
    save_nifti_atomic(np.ones((8, 8, 8), np.float32), A, subject / "ct.nii.gz")
    _, outside = _pair(tmp_path / "elsewhere")
    (subject / "segmentations").mkdir()
    (subject / "segmentations" / "liver.nii.gz").symlink_to(outside)
    with pytest.raises(ValueError, match=r"\(totalseg\) scan s1: mask .*outside the dataset"):
        open_dataset(f"totalseg:{tmp_path / 'ts'}", tmp_path / "cache")
    assert not (tmp_path / "cache" / "derived").exists()


def test_decathlon_training_entry_escaping_names_its_index(tmp_path: Path) -> None:
    root = tmp_path / "Task09"
    _pair(tmp_path / "elsewhere")
    root.mkdir()
    meta = {
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "liver"},
        "training": [{"image": "../elsewhere/a_ct.nii.gz", "label": "../elsewhere/a_seg.nii.gz"}],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"dataset.json training\[0\]: image"):
        open_dataset(f"msd:{root}", tmp_path / "cache")
    (root / "dataset.json").write_text(json.dumps({**meta, "training": [{"image": 3}]}))
    with pytest.raises(ValueError, match=r"training\[0\] must be"):
        open_dataset(f"msd:{root}", tmp_path / "cache")


# -- 2. duplicate and malformed manifest rows ----------------------------------------------


def test_duplicate_rows_name_both_rows_and_the_key(tmp_path: Path) -> None:
    path = _manifest(
        tmp_path,
        "s01,PETCT,CT,a.nii.gz,b.nii.gz,liver=1",
        "s02,PETCT,CT,a.nii.gz,b.nii.gz,liver=1",
        "s01,other,CT,c.nii.gz,b.nii.gz,liver=1",
    )
    with pytest.raises(ValueError) as info:
        read_manifest(path)
    assert _one_line(info) == (
        f"manifest {path}: rows 1 and 3 both give subject 's01' arm CT (sessions 'PETCT' and"
        " 'other'); a subject has one scan per arm: remove one row or give it another subject"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            HEADER + "a,s1,CT,a.nii.gz,b.nii.gz,liver=1,extra\n",
            r"row 1 \(line 2\) has 7 fields, the header has 6",
        ),
        (HEADER + "a,s1,CT,a.nii.gz,b.nii.gz\n", "has 5 fields, the header has 6"),
        (
            HEADER.replace("labels,", "lables,"),
            "unknown column 'lables' \\(did you mean labels\\?\\)",
        ),
        ("subject,session,arm,image,labels\na,s,CT,a,b\n", r"lacks column\(s\) label_map"),
        (
            "subject,subject,session,arm,image,labels,label_map\n",
            "names column\\(s\\) subject twice",
        ),
        (HEADER, "has no scan rows"),
        ("", "has no scan rows"),
        (HEADER + "a,s1,ct,a.nii.gz,b.nii.gz,liver=1\n", "got 'ct' \\(did you mean CT\\?\\)"),
        (HEADER + "a,s1,PET,a.nii.gz,b.nii.gz,liver=1\n", "arm must be one of CT, PET_CT"),
        (HEADER + " ,s1,CT,a.nii.gz,b.nii.gz,liver=1\n", "lacks subject; fill it in"),
        (HEADER + "a,s1,CT,a.nii.gz,b.nii.gz,liver=7-3\n", "must go up"),
        (HEADER + "a,s1,CT,a.nii.gz,b.nii.gz,liver=1-99999999\n", "at most 65535 ids"),
        (HEADER + "a,s1,CT,a\x00.nii.gz,b.nii.gz,liver=1\n", "not valid CSV|NUL"),
        (HEADER + 'a,s1,CT,"a.nii.gz,b.nii.gz,liver=1\n', "has 4 fields|not valid CSV"),
        (
            HEADER + "a,s1,CT,a.nii.gz,b.nii.gz,bad.json\n",
            "row 1 \\(line 2\\): label map .*bad.json is not valid JSON",
        ),
        (
            HEADER + "a,s1,CT,a.nii.gz,b.nii.gz,missing.json\n",
            "row 1 \\(line 2\\): label_map must be",
        ),
        (
            HEADER + "a,s1,CT,a.nii.gz,b.nii.gz,clash.json\n",
            "row 1 \\(line 2\\): label map of a/CT: label 1 .* both 'liver' and 'spleen'",
        ),
    ],
)
def test_malformed_csv_rows_are_one_line_value_errors(tmp_path: Path, text: str, message: str) -> None:  # fmt: skip
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "clash.json").write_text(
        '{"labels": {"1": "liver"}, "organs": {"spleen": ["liver"]}}'
    )
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as info:
        import_manifest(path, tmp_path / "cache", allow_outside_root=True)
    assert str(path) in _one_line(info)


def test_grid_flag_and_encoding_faults(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        HEADER.replace("\n", ",labels_grid_may_differ\n") + "a,s,CT,a,b,liver=1,maybe\n"
    )
    with pytest.raises(ValueError, match=r"row 1 .*labels_grid_may_differ must be true or false"):
        read_manifest(path)
    path.write_bytes(HEADER.encode() + "a,s,CT,ä,b,liver=1\n".encode("latin-1"))
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        read_manifest(path)


def test_spreadsheet_csv_with_bom_and_padded_header_reads(tmp_path: Path) -> None:
    _pair(tmp_path)
    path = tmp_path / "m.csv"
    header = " subject , session,arm,image,labels,label_map\r\n"
    path.write_bytes(
        "\ufeff".encode() + (header + "a,s,CT,a_ct.nii.gz,a_seg.nii.gz,liver=1\r\n\r\n").encode()
    )
    cohort = open_dataset(str(path), tmp_path / "cache")
    assert [s.key for s in cohort.scans] == ["a/CT"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"scans": [5]}, "row 1 must be an object"),
        ({"scans": [{"subject": ["a"]}]}, "row 1: subject must be text"),
        ({"scans": [{"subjet": "a"}]}, "unknown key 'subjet' \\(did you mean subject\\?\\)"),
        (
            {"label_map": {}, "scans": []},
            "unknown top-level key 'label_map' \\(did you mean label_maps\\?\\)",
        ),
        ({"organs": {"liver": "liver"}, "scans": []}, "`organs` must map an organ to a list"),
        ({"label_maps": [], "scans": []}, "`label_maps` must map a name"),
        ({"name": 3, "scans": []}, "`name` must be a string"),
        ({"scans": {}}, "must be a JSON object with a list `scans`"),
    ],
)
def test_malformed_json_manifests(tmp_path: Path, document: object, message: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=message) as info:
        read_manifest(path)
    assert str(path) in _one_line(info)


def test_deeply_nested_json_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text("[" * 100_000)
    with pytest.raises(ValueError, match="not valid JSON"):
        read_manifest(path)


_CELLS = st.sampled_from(
    ["a", "s1", "CT", "PET_MRI", "ct", "", " ", "a.nii.gz", "../x.nii.gz", "/etc/passwd", "~/x",
     "liver=1", "liver=1-3;lung=4,5", "liver=", "=1", "x=9-2", "totalsegmentator:total", "m.json",
     "true", "maybe", '"', '""', "a,b", "\x00", "é", "\ufeff", "labels", "subject", "label_map"]
)  # fmt: skip
_HEADERS = st.one_of(
    st.just(HEADER.strip().split(",")),
    st.lists(st.sampled_from([*HEADER.strip().split(","), "labels_grid_may_differ", "x", ""]),
             max_size=8),
)  # fmt: skip


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(",".join(cells) for cells in [header, *rows])


#: Cells that are mostly right for their column, so that fuzzed manifests also get parsed.
_NEAR_VALID_ROW = st.tuples(
    st.sampled_from(["a", "b", "s01", " ", ""]) | _CELLS,
    st.sampled_from(["s1", "petct"]),
    st.sampled_from(["CT", "MRI", "PET_CT", "ct", "PET"]),
    st.sampled_from(["a_ct.nii.gz", "../x.nii.gz", "/etc/passwd", "", "sub/a.nii"]) | _CELLS,
    st.sampled_from(["a_seg.nii.gz", "b.nii.gz"]),
    st.sampled_from(["liver=1", "m.json", "totalsegmentator:total", "x=9-2", "liver=", "no.json"]),
).map(list)


@settings(max_examples=80, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=300),
        st.builds(_csv_text, _HEADERS, st.lists(st.lists(_CELLS, max_size=8), max_size=4)),
        *[
            st.builds(
                _csv_text, st.just(HEADER.strip().split(",")), st.lists(_NEAR_VALID_ROW, max_size=4)
            )
        ]
        * 2,
    )
)
def test_csv_parser_raises_nothing_but_value_error(tmp_path_factory, text: str) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "m.json").write_text('{"1": "liver"}')
    path = folder / "m.csv"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        entries, _ = read_manifest(path)
    except ValueError as error:
        assert str(path) in str(error) and "\n" not in str(error)
        event("refused by the parser")
        return
    assert entries and all(e.origin.startswith(f"{path} row ") for e in entries)
    try:
        import_manifest(path, folder / "cache")
    except (ValueError, FileNotFoundError) as error:
        assert str(path) in str(error)
        event("parsed, refused when opened")
        return
    event("opened")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | _CELLS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_CELLS, children, max_size=4),
    max_leaves=12,
)
_ROW = st.fixed_dictionaries(
    {}, optional={k: _JSON | _CELLS for k in [*HEADER.strip().split(","), "labels_grid_may_differ"]}
)


@settings(max_examples=80, deadline=None)
@given(
    document=st.one_of(
        _JSON,
        st.fixed_dictionaries({"scans": st.lists(_ROW | _JSON, max_size=3)},
                              optional={"name": _JSON, "label_maps": _JSON, "organs": _JSON}),
    )
)  # fmt: skip
def test_json_parser_raises_nothing_but_value_error(tmp_path_factory, document: object) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "m.json"
    path.write_text(json.dumps(document))
    try:
        import_manifest(path, folder / "cache")
    except (ValueError, FileNotFoundError) as error:
        assert str(path) in str(error) and "\n" not in str(error)


# -- 3. NIfTI headers checked before decoding -----------------------------------------------


def _lying_nifti(
    path: Path, shape: tuple[int, ...], dtype: object, data: int, slope: float | None = None
) -> Path:
    """A NIfTI header declaring ``shape`` followed by ``data`` zero bytes (gzip by suffix)."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    if slope is not None:
        header.set_slope_inter(slope, 0.0)
    raw = header.binaryblock + b"\0" * 4 + bytes(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


@contextmanager
def _budget(value: str | None) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        if value is None:
            patch.delenv(BUDGET_ENV, raising=False)
        else:
            patch.setenv(BUDGET_ENV, value)
        yield


@contextmanager
def _peak_below(limit: int) -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
        assert tracemalloc.get_traced_memory()[1] < limit
    finally:
        tracemalloc.stop()


def test_89_byte_gzip_declaring_1024_cubed_is_refused_without_allocating(tmp_path: Path) -> None:
    path = _lying_nifti(tmp_path / "liar.nii.gz", (1024, 1024, 1024), np.float32, 0)
    assert path.stat().st_size < 100
    with _peak_below(20 << 20), pytest.raises(VolumeReadError) as info:
        read_nifti(path)
    assert info.value.code == "unreadable"
    message = _one_line(info)
    for part in (str(path), "shape (1024, 1024, 1024) float32", "4.29 GB (4294967296 bytes)",
                 f"{path.stat().st_size}-byte gzip file decompresses to at most"):  # fmt: skip
        assert part in message


def test_30000_cubed_names_its_shape_not_memory_error(tmp_path: Path) -> None:
    for name in ("huge.nii", "huge.nii.gz"):
        path = _lying_nifti(tmp_path / name, (30000, 30000, 30000), np.float32, 0)
        with _peak_below(20 << 20), pytest.raises(VolumeReadError, match=r"shape \(30000, 30000, 30000\) float32"):  # fmt: skip
            read_nifti(path)
        with pytest.raises(VolumeHeaderError, match=r"shape \(30000, 30000, 30000\)"):
            load_volume(path)


def test_truncated_uncompressed_nifti_names_file_and_sizes(tmp_path: Path) -> None:
    path = tmp_path / "cut.nii"
    save_nifti_atomic(np.ones((10, 10, 10), np.float32), A, path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(VolumeReadError) as info:
        read_nifti(path)
    assert info.value.code == "unreadable"
    assert "shape (10, 10, 10) float32, 4 KB (4000 bytes) from byte 352, but the file has 2000" \
        " bytes: truncated" in _one_line(info)  # fmt: skip


def test_over_budget_is_too_large_naming_shape_dtype_and_budget(tmp_path: Path) -> None:
    path = tmp_path / "ok.nii.gz"
    save_nifti_atomic(np.ones((16, 16, 16), np.float32), A, path)
    with _budget("8K"), pytest.raises(VolumeReadError) as info:
        read_nifti(path)
    assert info.value.code == "too_large"
    assert _one_line(info) == (
        f"{path}: header declares shape (16, 16, 16) float32: 16.4 KB (16384 bytes) decoded, over"
        " the memory budget of 8.19 KB (8192 bytes); crop or resample the volume, or raise"
        " UMD_MAX_VOLUME_BYTES on a machine with the memory"
    )
    with _budget("16K"):
        assert read_nifti(path)[0].shape == (16, 16, 16)


def test_scaled_voxels_count_at_float64(tmp_path: Path) -> None:
    path = _lying_nifti(tmp_path / "scaled.nii", (16, 16, 16), np.uint8, 4096, slope=2.0)
    with _budget("16K"), pytest.raises(VolumeReadError, match=r"32.8 KB .* decoded \(scaled"):
        read_nifti(path)
    with _budget("32K"):
        assert read_nifti(path)[0].dtype == np.float64


def test_budget_default_and_overrides() -> None:
    with _budget(None):
        assert max_volume_bytes() == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    with _budget("8G"):
        assert max_volume_bytes() == 8 << 30
    with _budget("512MiB"):
        assert max_volume_bytes() == 512 << 20
    with _budget("1000"):
        assert max_volume_bytes() == 1000
    with _budget("lots"), pytest.raises(ValueError, match="UMD_MAX_VOLUME_BYTES must be"):
        max_volume_bytes()


def test_loader_turns_a_lying_header_into_a_scan_error(tmp_path: Path) -> None:
    image = _lying_nifti(tmp_path / "img.nii.gz", (1024, 1024, 1024), np.int16, 0)
    _, labels = _pair(tmp_path)
    scan = Scan("sub-1", "petct", "CT", image, labels, {"liver": (1,)})
    with pytest.raises(ScanError) as info:
        CachedScanLoader(tmp_path / "cache").image(scan)
    assert info.value.codes == ("unreadable",)
    assert "sub-1/CT" in str(info.value) and "shape (1024, 1024, 1024) int16" in str(info.value)


class _Ones(SegmentationModel):
    name = "ones"
    organs = ("liver",)
    label_ids: ClassVar = {"liver": 1}

    def load(self, device: str) -> None: ...

    def predict(self, image, modality, prompt):  # type: ignore[no-untyped-def]
        return (image.array > 0.5).astype(np.uint8)


class _Registry:
    def get(self, name: str) -> type[SegmentationModel]:
        return _Ones


@pytest.mark.parametrize("loader", [ScanLoader(), None], ids=["plain", "cached"])
def test_runner_records_the_guard_per_subject(tmp_path: Path, loader: ScanLoader | None) -> None:
    scans = []
    for subject in ("s0", "s1"):
        image, labels = _pair(tmp_path / subject)
        scans.append(Scan(subject, "petct", "CT", image, labels, {"liver": (1,)}))
    _lying_nifti(scans[1].image, (1024, 1024, 1024), np.float32, 0)
    chosen = loader if loader is not None else CachedScanLoader(tmp_path / "cache")
    runner = CaseRunner(
        Cohort("c", tuple(scans)), _Registry(), "cpu", PredictionCache(None), chosen,  # type: ignore[arg-type]
        isolation="none",  # the load error comes before any model call
    )  # fmt: skip
    outcome = runner.run_case(Case("ones", "CT", "liver"), Threshold("dice", 0.5, "test"))
    records = {r["subject"]: r for r in outcome.records}
    assert records["s0"]["status"] == "ok" and records["s1"]["status"] == "error"
    assert (
        "s1/CT" in records["s1"]["error"] and "shape (1024, 1024, 1024)" in records["s1"]["error"]
    )


_DTYPES = st.sampled_from(
    [np.uint8, np.int16, np.uint16, np.int32, np.float32, np.float64, np.int64]
)
_DIM = st.integers(1, 12) | st.integers(1, 40) | st.integers(0, 32767)
_SHAPES = st.tuples(_DIM, _DIM, _DIM) | st.lists(_DIM, min_size=1, max_size=4).map(tuple)
FUZZ_BUDGET = 64 << 10
COMPLETE = -1  # ``data``: exactly the declared bytes (capped at 256 KiB)


@settings(max_examples=80, deadline=None)
@given(
    shape=_SHAPES,
    dtype=_DTYPES,
    data=st.integers(0, 8192) | st.just(COMPLETE),
    gz=st.booleans(),
    slope=st.sampled_from([None, 2.0]),
)
def test_header_guard_accepts_within_budget_or_names_the_shape(
    tmp_path_factory, shape: tuple[int, ...], dtype: type, data: int, gz: bool, slope: float | None
) -> None:
    if data == COMPLETE:
        data = min(int(np.prod(shape)) * np.dtype(dtype).itemsize, 256 << 10)
    path = tmp_path_factory.mktemp("hdr") / ("v.nii.gz" if gz else "v.nii")
    _lying_nifti(path, shape, dtype, data, slope)
    with _budget(str(FUZZ_BUDGET)), _peak_below(4 * FUZZ_BUDGET + (4 << 20)):
        try:
            array, _ = read_nifti(path)
        except VolumeReadError as error:
            assert error.code in ("unreadable", "too_large", "not_3d")
            assert str(shape) in str(error) and "\n" not in str(error)
            event(f"refused: {error.code}")
            return
    event("accepted")
    assert array.nbytes <= FUZZ_BUDGET and array.shape == shape[:3]
