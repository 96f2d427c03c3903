"""Download the sample volumes from their upstream repositories and check their sha256.

Usage: ``python -m umdbench.data.fetch_samples DEST`` then ``export UMD_SAMPLES_DIR=DEST``.
Every file is checked against the sum below (from the samples README); a mismatch deletes the
download and fails, naming the file.
"""

from __future__ import annotations

import argparse
import sys
import urllib.request
from pathlib import Path

from umdbench.data.cache import content_sha256

__all__ = ["SAMPLES", "fetch", "main", "verify_file"]

_TS = "https://github.com/wasserth/TotalSegmentator/raw/0e65a448/tests/reference_files"
_SPM = "https://github.com/spm/spm12/raw/03ac9473/toolbox"

#: relative path -> (upstream address, sha256)
SAMPLES: dict[str, tuple[str, str]] = {
    "totalsegmentator/example_ct.nii.gz": (
        f"{_TS}/example_ct.nii.gz",
        "dbd3ae6d614d1d7ef3a46925c30c70038ed52da6b37fdd6afdc7b9b71387e3e1"),
    "totalsegmentator/example_mr_sm.nii.gz": (
        f"{_TS}/example_mr_sm.nii.gz",
        "209b46efaff595dd54a9332872e17a722b62654bbb68dbd89acd5090701bbd4f"),
    "totalsegmentator/example_seg_fast_force_split.nii.gz": (
        f"{_TS}/example_seg_fast_force_split.nii.gz",
        "e8097758e56e73099075b6caaebce23ef11bc6fad66a4ec3753b9406846558c7"),
    "totalsegmentator/example_seg_mr.nii.gz": (
        f"{_TS}/example_seg_mr.nii.gz",
        "e73a5ee12962aa2bb2f3e43ab58dfc67990c5a7ef2dcb426a1bf5e5982b9587f"),
    "totalsegmentator/pulmonary_ct_cropped.nii.gz": (
        f"{_TS}/pulmonary_report/pulmonary_ct_cropped.nii.gz",
        "4da078fe43c9aa4d358903ac95105cea4fbe93b029474e4701bdde4db72126eb"),
    "totalsegmentator/pulmonary_heart.nii.gz": (
        f"{_TS}/pulmonary_report/pulmonary_heart.nii.gz",
        "3c3eaf9e029e07aa3248e8d9973103b3168f35cc37756867bcb47b507cad288a"),
    "spm12/PET.nii": (
        f"{_SPM}/OldNorm/PET.nii",
        "649d5c7777af0a0e5b00452084a436cd897cb7ce34a1b9db82f5b9ed38a564df"),
    "spm12/T1.nii": (
        f"{_SPM}/OldNorm/T1.nii",
        "0a46093036c8c9edb2746b917ab0156ba0efda5901abc0ea8784b571fa4007fe"),
    "spm12/brainmask.nii": (
        f"{_SPM}/FieldMap/brainmask.nii",
        "a502a410ef43fd7505bb55c3fc70068aef0cd28ad2587ac6b1025aaeb4feb163"),
    "spm12/grey.nii": (
        f"{_SPM}/FieldMap/grey.nii",
        "776bb83a03968fba46391dd6cf3e059d05d7039660e23d82bd2cbf229354ebd9"),
    "spm12/white.nii": (
        f"{_SPM}/FieldMap/white.nii",
        "da41cffa30910cf88351dfbea787baa47f8e209552d96b6e162afddcfc271182"),
}  # fmt: skip


def verify_file(path: Path, expected_sha256: str) -> None:
    """Raise ``ValueError`` naming ``path`` when its sha256 is not the expected one."""
    actual = content_sha256(path)
    if actual != expected_sha256:
        raise ValueError(
            f"{path}: sha256 must be {expected_sha256}, got {actual} (a changed upstream file"
            " or a broken download; delete it and fetch again)"
        )


def fetch(dest: Path, samples: dict[str, tuple[str, str]] = SAMPLES) -> list[Path]:
    """Download each missing file to ``dest`` and verify every file; returns the paths."""
    paths = []
    for name, (url, sha) in samples.items():
        path = dest / name
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".part")
            urllib.request.urlretrieve(url, tmp)
            try:
                verify_file(tmp, sha)
            except ValueError:
                tmp.unlink(missing_ok=True)
                raise
            tmp.replace(path)
        verify_file(path, sha)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    prog = "python -m umdbench.data.fetch_samples"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("dest", type=Path, metavar="DEST", help="folder to download into")
    args = parser.parse_args(argv)
    try:
        paths = fetch(args.dest)
    except (OSError, ValueError) as error:
        print(f"fetch_samples: {error}", file=sys.stderr)
        return 1
    print(f"{len(paths)} files verified in {args.dest}; export UMD_SAMPLES_DIR={args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
