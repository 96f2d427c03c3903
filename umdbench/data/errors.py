"""What can go wrong with a dataset, said so a person can fix it.

A :class:`Problem` is one finding about one scan (subject, arm, file). A :class:`ScanError` is
raised for one scan only: the suite records it as an error for that subject and goes on. A
:class:`DatasetUnavailable` means the whole dataset is absent here (the plugin turns it into a
skip with the message as the reason).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["PROBLEM_CODES", "DatasetUnavailable", "Problem", "ScanError"]

#: Problem codes and what each means (also the table in docs/datasets.md).
PROBLEM_CODES: dict[str, str] = {
    "missing_file": "the image or label file does not exist",
    "unreadable": "the file cannot be decoded (truncated or corrupt gzip, not NIfTI)",
    "too_large": "the header declares a volume over the memory budget (UMD_MAX_VOLUME_BYTES)",
    "not_3d": "the file holds a 4D (or 2D) array; one 3D volume per file is needed",
    "non_finite": "the image holds NaN or infinite voxels",
    "non_integer_labels": "the label file holds values that are not whole numbers",
    "unknown_label_values": "the label file holds values the label map does not name",
    "grid_mismatch": "labels on another grid than the image, beyond the tolerance",
    "no_overlap": "labels and image do not overlap in world space",
    "import_failed": "the importer could not prepare this scan (see the message)",
    "empty_organ": "an organ of the label map has no voxel in this scan (reported, not fatal)",
    "missing_arm": "a subject lacks an arm; it is left out of paired comparisons with it",
}


@dataclass(frozen=True)
class Problem:
    """One finding about one scan; ``severity`` is ``error`` (the scan cannot be used) or
    ``warning`` (the scan is used, e.g. an empty organ left out of that organ's mean)."""

    code: str
    severity: str
    subject: str
    modality: str
    path: Path | None
    message: str

    def __str__(self) -> str:
        where = f" ({self.path})" if self.path is not None else ""
        return f"{self.subject}/{self.modality}{where}: {self.message}"


class ScanError(ValueError):
    """One scan cannot be used; the message names subject, arm and file, and what to do."""

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("ScanError needs at least one problem")
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(p.code for p in self.problems)


class DatasetUnavailable(Exception):
    """The dataset is not on this machine; the message says where it was looked for and how
    to get it."""
