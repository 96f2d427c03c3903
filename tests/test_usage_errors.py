"""Usage errors are one ``ERROR:`` line at start-up, naming the file, the row or key and the fix,
never a 40-line traceback (a bad manifest, a policy typo, a model name collision, a bad budget).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from umdbench.data.geometry import save_nifti_atomic

AUDIT = "def test_segmentation(umd_case):\n    pass\n"


@pytest.fixture(scope="module", autouse=True)
def _models_imported_once() -> None:
    """Import every built-in adapter before pytester snapshots sys.modules, so each in-process
    run does not import monai and torch's model code again."""
    from umdbench.registry import ModelRegistry

    ModelRegistry()


def _usage_error(pytester: pytest.Pytester, *args: str) -> str:
    pytester.makepyfile(test_audit=AUDIT)
    result = pytester.runpytest("-p", "no:cacheprovider", *args)
    output = "\n".join(result.outlines + result.errlines)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output[-3000:]
    assert "Traceback" not in output and "pytest.UsageError" not in output, output[-3000:]
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1, output[-3000:]
    return errors[0]


def _scan_pair(folder: Path) -> None:
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[2:5, 2:5, 2:5] = 1
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    save_nifti_atomic(np.ones((8, 8, 8), np.float32), affine, folder / "a_ct.nii.gz")
    save_nifti_atomic(labels, affine, folder / "a_seg.nii.gz")


def _manifest(folder: Path, *rows: str) -> Path:
    _scan_pair(folder)
    path = folder / "manifest.csv"
    path.write_text("subject,session,arm,image,labels,label_map\n" + "".join(f"{r}\n" for r in rows))
    return path


def test_duplicate_manifest_rows(pytester: pytest.Pytester) -> None:
    row = "s01,PETCT,CT,a_ct.nii.gz,a_seg.nii.gz,liver=1"
    manifest = _manifest(pytester.path, row, row)
    line = _usage_error(pytester, "--umd-dataset", str(manifest))
    assert str(manifest) in line and "rows 1 and 2 both give subject 's01' arm CT" in line


def test_malformed_manifest_row(pytester: pytest.Pytester) -> None:
    manifest = _manifest(pytester.path, "s01,PETCT,CT,a_ct.nii.gz,a_seg.nii.gz")
    line = _usage_error(pytester, "--umd-dataset", str(manifest))
    assert str(manifest) in line and "row 1" in line and "has 5 fields, the header has 6" in line


def test_manifest_path_outside_the_root(pytester: pytest.Pytester) -> None:
    manifest = _manifest(pytester.path / "data", "s01,PETCT,CT,../../../etc/passwd,a_seg.nii.gz,liver=1")
    line = _usage_error(pytester, "--umd-dataset", str(manifest))
    assert "row 1" in line and "/etc/passwd" in line and "--umd-allow-outside-root" in line


@pytest.mark.parametrize("workers", ["0", "2"])
def test_policy_naming_an_unknown_organ(pytester: pytest.Pytester, workers: str) -> None:
    policy = pytester.path / "policy.toml"
    policy.write_text('[[rule]]\norgan = "livr"\nmin = 0.5\nsource = "typo"\n')
    line = _usage_error(pytester, "-n", workers, "--umd-policy", str(policy), "--umd-subjects", "1")
    assert str(policy) in line and "livr" in line and "liver" in line


def test_model_name_colliding_with_a_built_in(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        vendor_clash=(
            "from umdbench.models.base import SegmentationModel\n"
            "class Clash(SegmentationModel):\n"
            "    name = 'unet-ct'\n"
            "    organs = ('liver',)\n"
            "    def load(self, device): pass\n"
            "    def predict(self, image, modality, prompt): pass\n"
        )
    )
    pytester.syspathinsert()
    line = _usage_error(pytester, "--umd-model", "vendor_clash:Clash")
    assert "'unet-ct'" in line and "vendor_clash:Clash" in line and "rename" in line


def test_unreadable_memory_budget(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UMD_MAX_VOLUME_BYTES", "lots")
    line = _usage_error(pytester, "--umd-subjects", "1")
    assert "UMD_MAX_VOLUME_BYTES" in line
