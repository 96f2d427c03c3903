"""Real datasets for the audit: manifests, importers, organ mapping, validation and the
decoded-volume cache. The suite calls :func:`open_dataset` and :class:`CachedScanLoader`.

``open_dataset(spec, cache_dir)`` accepts:

- ``samples``: the real sample volumes (raises :class:`DatasetUnavailable` when absent);
- ``semireal``: PET and MRI arms rendered from the real sample CT's anatomy;
- ``ibsi-sts``: the real CT, FDG PET and T1 MRI of 20 sarcoma patients with expert tumour masks
  (:mod:`umdbench.data.ibsi_sts`; raises :class:`DatasetUnavailable` when absent);
- a manifest file (``.csv`` / ``.json``);
- a dataset folder (importer detected) or ``importer:path`` (``nnunet``, ``msd``,
  ``totalseg``, ``autopet``, ``umd``, ``ibsi-sts``, ``manifest``).
"""

from __future__ import annotations

from pathlib import Path

from umdbench.cohort import Cohort
from umdbench.data.errors import PROBLEM_CODES, DatasetUnavailable, Problem, ScanError
from umdbench.data.importers import IMPORTERS, detect_importer, import_dataset
from umdbench.data.loader import CachedScanLoader, validate_scan
from umdbench.data.manifest import ManifestEntry, read_manifest, write_manifest
from umdbench.data.pairing import missing_arms, paired_subjects, validate_cohort
from umdbench.data.scan import DatasetScan

__all__ = [
    "IMPORTERS",
    "PROBLEM_CODES",
    "CachedScanLoader",
    "DatasetScan",
    "DatasetUnavailable",
    "ManifestEntry",
    "Problem",
    "ScanError",
    "detect_importer",
    "missing_arms",
    "open_dataset",
    "paired_subjects",
    "read_manifest",
    "validate_cohort",
    "validate_scan",
    "write_manifest",
]


def open_dataset(spec: str, cache_dir: Path, allow_outside_root: bool = False) -> Cohort:
    """The cohort ``spec`` names (see the module docstring); derived files go to
    ``cache_dir``. An image or label file that resolves (symlinks followed) outside the dataset
    root is a ValueError unless ``allow_outside_root`` (``--umd-allow-outside-root``); the
    built-in ``samples``/``semireal`` are not confined (see :mod:`umdbench.data.confine`)."""
    cache_dir = Path(cache_dir)
    if spec == "samples":
        from umdbench.data.samples import samples_cohort

        return samples_cohort(cache_dir)
    if spec == "semireal":
        from umdbench.data.semireal import semireal_cohort

        return semireal_cohort(cache_dir)
    if spec == "ibsi-sts":
        from umdbench.data.ibsi_sts import ibsi_sts_cohort

        return ibsi_sts_cohort(cache_dir)
    importer, sep, rest = spec.partition(":")
    if sep and importer in IMPORTERS:
        root = _existing(Path(rest).expanduser(), spec)
    else:
        root = _existing(Path(spec).expanduser(), spec)
        importer = "manifest" if root.is_file() else ""
    return import_dataset(root, cache_dir, importer or None, allow_outside_root=allow_outside_root)


def _existing(path: Path, spec: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"dataset must be `samples`, `semireal`, `ibsi-sts`, a manifest file, a dataset folder or"
            f" importer:path ({', '.join(IMPORTERS)}), got {spec!r} ({path} does not exist)"
        )
    return path
