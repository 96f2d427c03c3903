"""A manifest: any cohort in one file, one row per scan.

CSV (header row) or JSON. Columns / keys: ``subject``, ``session``, ``arm`` (CT, PET_CT, MRI,
PET_MRI), ``image``, ``labels`` (paths, relative to the manifest's folder or absolute),
``label_map`` and optionally ``labels_grid_may_differ`` (true/false, default false). A
``label_map`` is one of:

- a built-in name: ``totalsegmentator:total`` (CT) or ``totalsegmentator:total_mr`` (MR);
- inline ``name=ids`` pairs: ``liver=1;kidney_left=2;lung=3-7`` (ids: ``3,4`` or ``3-7``);
- a JSON file: ``{"1": "liver", ...}``, ``{"liver": 1, ...}``, or ``{"labels": {...},
  "organs": {"liver": ["liver", "liver_tumour"]}}`` where ``organs`` overrides the synonyms;
- in a JSON manifest, also a key of its ``label_maps`` object.

Names go to canonical organs through :mod:`umdbench.data.organ_maps`. See docs/datasets.md.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from umdbench.cohort import Cohort
from umdbench.data.organ_maps import BUILTIN_LABEL_MAPS, canonical_label_map, parse_label_names
from umdbench.data.scan import DatasetScan
from umdbench.organs import MODALITIES

__all__ = [
    "MANIFEST_COLUMNS",
    "LabelMap",
    "ManifestEntry",
    "cohort_from_entries",
    "read_manifest",
    "resolve_label_map",
    "write_manifest",
]

MANIFEST_COLUMNS: tuple[str, ...] = (
    "subject", "session", "arm", "image", "labels", "label_map", "labels_grid_may_differ",
)  # fmt: skip
_REQUIRED = MANIFEST_COLUMNS[:6]
_RANGE = r"\s*\d+(\s*-\s*\d+)?\s*"
_IDS = re.compile(rf"{_RANGE}(,{_RANGE})*")


@dataclass(frozen=True)
class LabelMap:
    """A dataset's label ids -> names, plus per-dataset organ overrides."""

    names: Mapping[int, str]
    overrides: Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class ManifestEntry:
    """One scan as a manifest row states it (paths absolute once read)."""

    subject: str
    session: str
    arm: str
    image: Path
    labels: Path
    label_map: str | LabelMap
    labels_grid_may_differ: bool = False
    import_error: str | None = None


def resolve_label_map(
    spec: str | LabelMap, base: Path, named: Mapping[str, Any] | None = None
) -> LabelMap:
    """Turn a ``label_map`` cell into a :class:`LabelMap` (see the module docstring)."""
    if isinstance(spec, LabelMap):
        return spec
    spec = spec.strip()
    if named and spec in named:
        return _label_map_from_json(named[spec], f"label_maps[{spec!r}]")
    if spec in BUILTIN_LABEL_MAPS:
        return LabelMap(dict(BUILTIN_LABEL_MAPS[spec]), {})
    if "=" in spec:
        return LabelMap(_parse_inline(spec), {})
    path = Path(spec) if Path(spec).is_absolute() else base / spec
    if not path.is_file():
        raise FileNotFoundError(
            f"label_map must be a built-in map ({', '.join(BUILTIN_LABEL_MAPS)}), inline"
            f" name=ids pairs, or a JSON file; got {spec!r} and {path} does not exist"
        )
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"label map {path} is not valid JSON: {error}") from error
    return _label_map_from_json(raw, str(path))


def _label_map_from_json(raw: Any, where: str) -> LabelMap:
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(raw).__name__}")
    if "labels" in raw and isinstance(raw["labels"], dict):
        overrides = raw.get("organs", {})
        if not isinstance(overrides, dict):
            raise ValueError(f"{where}: organs must map organ -> list of names, got {overrides!r}")
        return LabelMap(parse_label_names(raw["labels"], where), overrides)
    return LabelMap(parse_label_names(raw, where), {})


def _parse_inline(spec: str) -> dict[int, str]:
    names: dict[int, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, _, ids = part.partition("=")
        if not name.strip() or not _IDS.fullmatch(ids):
            raise ValueError(
                f"label_map inline pairs must look like liver=1;lung=10-14, got {part!r}"
            )
        for chunk in ids.split(","):
            low, _, high = chunk.partition("-")
            for label_id in range(int(low), int(high or low) + 1):
                names[label_id] = name.strip()
    return names


def read_manifest(path: Path) -> tuple[list[ManifestEntry], dict[str, Any]]:
    """Rows of a CSV or JSON manifest, paths made absolute, plus the JSON's top-level
    ``name``/``label_maps``/``organs`` (empty for CSV)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path} (give a .csv or .json manifest)")
    if path.suffix.lower() == ".json":
        try:
            document = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"manifest {path} is not valid JSON: {error}") from error
        if not isinstance(document, dict) or not isinstance(document.get("scans"), list):
            raise ValueError(f"manifest {path} must be a JSON object with a list `scans`")
        rows, extra = document["scans"], {k: v for k, v in document.items() if k != "scans"}
    elif path.suffix.lower() == ".csv":
        with open(path, newline="") as handle:
            rows, extra = list(csv.DictReader(handle)), {}
    else:
        raise ValueError(f"manifest must be a .csv or .json file, got {path}")
    entries = [_entry(row, i, path) for i, row in enumerate(rows, start=1)]
    return entries, extra


def _entry(row: Any, number: int, manifest: Path) -> ManifestEntry:
    where = f"{manifest} row {number}"
    if not isinstance(row, dict):
        raise ValueError(f"{where} must be an object with {', '.join(_REQUIRED)}")
    missing = [c for c in _REQUIRED if not str(row.get(c) or "").strip()]
    if missing:
        raise ValueError(f"{where} (subject {row.get('subject')!r}) lacks {', '.join(missing)}")
    arm = str(row["arm"]).strip()
    if arm not in MODALITIES:
        raise ValueError(f"{where}: arm must be one of {', '.join(MODALITIES)}, got {arm!r}")
    base = manifest.parent
    return ManifestEntry(
        subject=str(row["subject"]).strip(),
        session=str(row["session"]).strip(),
        arm=arm,
        image=_absolute(row["image"], base),
        labels=_absolute(row["labels"], base),
        label_map=str(row["label_map"]),
        labels_grid_may_differ=_boolean(row.get("labels_grid_may_differ"), where),
    )


def _absolute(value: Any, base: Path) -> Path:
    path = Path(str(value).strip()).expanduser()
    return path if path.is_absolute() else base / path


def _boolean(value: Any, where: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("", "0", "false", "no"):
        return False
    if text in ("1", "true", "yes"):
        return True
    raise ValueError(f"{where}: labels_grid_may_differ must be true or false, got {value!r}")


def cohort_from_entries(
    name: str,
    entries: Iterable[ManifestEntry],
    base: Path,
    provenance: Mapping[str, Any] | None = None,
    named_maps: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Sequence[str]] | None = None,
) -> Cohort:
    """Build the cohort; a duplicate subject/arm or a bad label map is an error naming it."""
    resolved: dict[str, LabelMap] = {}
    scans = []
    for entry in entries:
        key = entry.label_map if isinstance(entry.label_map, str) else repr(entry.label_map)
        if key not in resolved:
            resolved[key] = resolve_label_map(entry.label_map, base, named_maps)
        label_map = resolved[key]
        organ_overrides = {**(overrides or {}), **label_map.overrides}
        where = f"label map of {entry.subject}/{entry.arm}"
        scans.append(
            DatasetScan(
                subject=entry.subject,
                session=entry.session,
                modality=entry.arm,
                image=entry.image,
                labels=entry.labels,
                label_map=canonical_label_map(label_map.names, organ_overrides, where=where),
                labels_grid_may_differ=entry.labels_grid_may_differ,
                label_names=dict(label_map.names),
                import_error=entry.import_error,
            )
        )
    return Cohort(name, tuple(scans), dict(provenance or {}))


def write_manifest(entries: Iterable[ManifestEntry], path: Path) -> Path:
    """Write a CSV manifest (paths relative to its folder where possible), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(MANIFEST_COLUMNS)
        for e in entries:
            if not isinstance(e.label_map, str):
                raise ValueError(f"{e.subject}/{e.arm}: write a label map file and name it")
            writer.writerow([
                e.subject, e.session, e.arm, _relative(e.image, path.parent),
                _relative(e.labels, path.parent), e.label_map,
                str(e.labels_grid_may_differ).lower(),
            ])  # fmt: skip
    tmp.replace(path)
    return path


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())
