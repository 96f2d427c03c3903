"""Dataset files stay under the dataset's root: a manifest row ``../../etc/passwd``, or a
symlink in a dataset folder pointing elsewhere, is refused before anything is read.

Paths are compared after ``os.path.realpath`` (symlinks followed, ``..`` folded), so a link is
judged by where it leads. The roots are the dataset folder (the folder holding a manifest) and,
for importers, the ``derived/`` folder of the cache where they write merged label files. The
built-in ``samples``/``semireal``/``ibsi-sts`` cohorts are not confined: their file names are fixed in code
and their folder is the one the user named (``UMD_SAMPLES_DIR``), so links there (e.g. into a
download cache) are followed. The check runs when the dataset is opened; a link swapped
afterwards is not seen (the threat is a wrong manifest, not a hostile filesystem).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from umdbench.data.manifest import ManifestEntry

__all__ = ["ALLOW_OPTION", "check_entries_inside", "check_inside"]

#: The pytest option that turns the check off (named in every refusal).
ALLOW_OPTION = "--umd-allow-outside-root"


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def check_inside(path: Path, roots: Sequence[Path], where: str, what: str = "file") -> None:
    """Raise ValueError unless ``path``, symlinks resolved, lies under one of ``roots``
    (the first root is the one named in the fix)."""
    real = _real(path)
    if any(real.is_relative_to(_real(root)) for root in roots):
        return
    root = _real(roots[0])
    raise ValueError(
        f"{where}: {what} {str(path)!r} resolves to {real}, outside the dataset root {root};"
        f" move it under {root} or pass {ALLOW_OPTION}"
    )


def check_entries_inside(entries: Iterable[ManifestEntry], roots: Sequence[Path]) -> None:
    """Every entry's image and labels under ``roots``; the error names the entry's origin
    (manifest file and row, or dataset folder and scan)."""
    for entry in entries:
        where = entry.origin or f"scan {entry.subject}/{entry.arm}"
        check_inside(entry.image, roots, where, "image")
        check_inside(entry.labels, roots, where, "labels")
