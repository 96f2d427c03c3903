"""Cohorts: subjects x modality arms, each scan an image plus a label file of its targets.

Every data source (the built-in synthetic cohort, a manifest, the real samples) ends as a
:class:`Cohort`; the suite reads nothing else. Label values are mapped to target names
(organs, lesions) here, once, so no model or metric ever sees a dataset's own label ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from umdbench.organs import MODALITIES, PAIRED_COMPARISONS, check_comparison, check_modality
from umdbench.volume import Volume, load_volume

__all__ = ["Cohort", "Scan", "ScanLoader"]


@dataclass(frozen=True)
class Scan:
    """One image of one subject in one arm, with its organ labels.

    ``label_map`` maps a canonical organ to the label values that make it in ``labels`` (several
    values merge, e.g. five lung lobes make ``lung``). Image and labels share world space; the
    labels may sit on another grid when ``labels_grid_may_differ`` (resampled by affine).
    """

    subject: str
    session: str
    modality: str
    image: Path
    labels: Path
    label_map: Mapping[str, tuple[int, ...]]
    labels_grid_may_differ: bool = False

    def __post_init__(self) -> None:
        check_modality(self.modality)

    @property
    def key(self) -> str:
        """A name unique within a cohort, used in messages and records."""
        return f"{self.subject}/{self.modality}"

    @property
    def organs(self) -> tuple[str, ...]:
        return tuple(self.label_map)

    def load_image(self) -> Volume:
        return load_volume(self.image, dtype=np.float32)

    def load_labels(self) -> Volume:
        return load_volume(self.labels)

    def organ_mask(self, labels: Volume, organ: str) -> np.ndarray:
        """Boolean mask of ``organ`` in a label volume read from this scan's label file."""
        if organ not in self.label_map:
            raise KeyError(f"{self.key}: no label for organ {organ!r} in {self.labels}")
        return np.isin(labels.array, np.asarray(self.label_map[organ]))


@dataclass(frozen=True)
class Cohort:
    """A named set of scans plus the provenance that made it (seed, source, version).

    ``comparisons``: the paired arm comparisons this cohort's design supports (the ibsi-sts
    cohort: CT~PET_CT, CT~MRI, PET_CT~MRI); None: the study's four, where both arms exist.
    """

    name: str
    scans: tuple[Scan, ...]
    provenance: Mapping[str, Any] = field(default_factory=dict)
    comparisons: tuple[tuple[str, str], ...] | None = None

    def __post_init__(self) -> None:
        for arm_a, arm_b in self.comparisons or ():
            check_comparison(arm_a, arm_b)
        if self.comparisons is not None and len(set(self.comparisons)) < len(self.comparisons):
            raise ValueError(f"cohort {self.name!r} lists a comparison twice: {self.comparisons}")
        keys = [scan.key for scan in self.scans]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise ValueError(f"cohort {self.name!r} lists a scan twice: {', '.join(duplicates)}")

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(scan.subject for scan in self.scans))

    @property
    def modalities(self) -> tuple[str, ...]:
        present = {scan.modality for scan in self.scans}
        return tuple(m for m in MODALITIES if m in present)

    @property
    def organs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(o for scan in self.scans for o in scan.organs))

    @property
    def paired_comparisons(self) -> tuple[tuple[str, str], ...]:
        """The comparisons to make: the declared ones, else the study's, with both arms here."""
        present = set(self.modalities)
        chosen = self.comparisons if self.comparisons is not None else PAIRED_COMPARISONS
        return tuple((a, b) for a, b in chosen if a in present and b in present)

    def organs_of(self, modality: str) -> tuple[str, ...]:
        """Organs labelled in at least one scan of ``modality`` (the only ones worth a case)."""
        return tuple(dict.fromkeys(o for scan in self.scans_of(modality) for o in scan.organs))

    def scans_of(self, modality: str) -> tuple[Scan, ...]:
        return tuple(scan for scan in self.scans if scan.modality == modality)

    def scan(self, subject: str, modality: str) -> Scan:
        for scan in self.scans:
            if scan.subject == subject and scan.modality == modality:
                return scan
        raise KeyError(f"cohort {self.name!r} has no {modality} scan of subject {subject!r}")


class ScanLoader:
    """Reads a scan's image and its labels *on the image's grid*.

    The plain loader reads NIfTI through nibabel each time and refuses labels on another grid;
    ``umdbench.data`` provides a cached loader that also resamples labels by affine.
    """

    def image(self, scan: Scan) -> Volume:
        return scan.load_image()

    def labels(self, scan: Scan) -> Volume:
        image, labels = scan.load_image(), scan.load_labels()
        if not image.same_grid(labels):
            raise ValueError(
                f"{scan.key}: labels {scan.labels} (shape {labels.shape}) are not on the grid of"
                f" image {scan.image} (shape {image.shape}); resample them, or use a loader"
                " that does (umdbench.data)"
            )
        return labels
