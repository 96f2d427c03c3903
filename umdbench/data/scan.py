"""A :class:`~umdbench.cohort.Scan` that also knows its dataset's full label map.

The suite reads only the :class:`Scan` fields. The extra fields serve validation: every value in
the label file must be named by ``label_names`` (a value outside it means a wrong map or a wrong
file), and an importer that could not prepare the scan leaves its reason in ``import_error`` so
that scan, and only that scan, fails when loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from umdbench.cohort import Scan

__all__ = ["DatasetScan", "allowed_label_values"]


@dataclass(frozen=True)
class DatasetScan(Scan):
    """A scan from a dataset source; see the module docstring for the extra fields."""

    label_names: Mapping[int, str] = field(default_factory=dict)
    import_error: str | None = None


def allowed_label_values(scan: Scan) -> frozenset[int]:
    """Values a label file of ``scan`` may hold: 0, every named label, every mapped id."""
    names = getattr(scan, "label_names", None) or {}
    mapped = {int(i) for ids in scan.label_map.values() for i in ids}
    return frozenset({0, *(int(i) for i in names), *mapped})
