"""A manifest: any cohort in one file, one row per scan. A JSON manifest may also name its
design's paired comparisons (``"comparisons": ["CT~PET_CT", "CT~MRI", "PET_CT~MRI"]``; the
study's four by default).

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

A malformed manifest is a one-line ValueError naming the file, the row and the fix (see
:func:`read_manifest`); opened as a dataset, its files must also resolve under its folder
(:mod:`umdbench.data.confine`).
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

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
_TOP_KEYS = ("name", "label_maps", "organs", "comparisons", "scans")
_RANGE = r"\s*\d+(\s*-\s*\d+)?\s*"
_IDS = re.compile(rf"{_RANGE}(,{_RANGE})*")
_MAX_RANGE = 65535  # label ids of one inline range; more is a typo, and would take minutes


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
    #: Where the entry was stated (``manifest.csv row 3 (line 4)``), for messages.
    origin: str = ""


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
        if not isinstance(overrides, dict) or not all(_names(v) for v in overrides.values()):
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
            for label_id in _id_range(chunk, part):
                names[label_id] = name.strip()
    return names


def _id_range(chunk: str, part: str) -> range:
    low_text, _, high_text = chunk.partition("-")
    low, high = int(low_text), int(high_text or low_text)
    if not low <= high <= low + _MAX_RANGE:
        raise ValueError(
            f"label_map inline range {chunk.strip()!r} in {part!r} must go up, by at most"
            f" {_MAX_RANGE} ids (e.g. lung=10-14)"
        )
    return range(low, high + 1)


def read_manifest(path: Path) -> tuple[list[ManifestEntry], dict[str, Any]]:
    """Rows of a CSV or JSON manifest, paths made absolute, plus the JSON's top-level
    ``name``/``label_maps``/``organs`` (empty for CSV).

    Anything malformed (an unknown or missing column, a row with the wrong number of fields,
    an unknown arm, two rows for one subject and arm, text that is not CSV, JSON or UTF-8) is a
    one-line ValueError naming the file, the row (the n-th scan, from 1; for CSV also its line)
    and the fix. Whether the files exist, and stay under the root, is checked later."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path} (give a .csv or .json manifest)")
    suffix = path.suffix.lower()
    if suffix not in (".json", ".csv"):
        raise ValueError(f"manifest must be a .csv or .json file, got {path}")
    text = _read_text(path)
    rows, extra = _json_rows(text, path) if suffix == ".json" else (_csv_rows(text, path), {})
    if not rows:
        raise ValueError(
            f"manifest {path} has no scan rows; give one row per scan with {', '.join(_REQUIRED)}"
        )
    entries = [_entry(row, where, path) for where, row in rows]
    _check_duplicates(entries, path)
    return entries, extra


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets write a BOM
    except UnicodeDecodeError as error:
        raise ValueError(
            f"manifest {path} is not UTF-8 text ({error}); save it as UTF-8 CSV or JSON"
        ) from error


def _json_rows(text: str, path: Path) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"manifest {path} is not valid JSON: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("scans"), list):
        raise ValueError(f"manifest {path} must be a JSON object with a list `scans`")
    _check_keys(document, _TOP_KEYS, f"manifest {path}", "top-level key")
    extra = {k: v for k, v in document.items() if k != "scans"}
    _check_extra(extra, path)
    return [(f"{path} row {n}", row) for n, row in enumerate(document["scans"], 1)], extra


def _check_extra(extra: dict[str, Any], path: Path) -> None:
    if not isinstance(extra.get("name", ""), str):
        raise ValueError(f"manifest {path}: `name` must be a string, got {extra['name']!r}")
    maps = extra.get("label_maps", {})
    if not isinstance(maps, dict):
        raise ValueError(
            f"manifest {path}: `label_maps` must map a name to a label map object, got {maps!r}"
        )
    if "comparisons" in extra:
        extra["comparisons"] = _comparisons(extra["comparisons"], path)
    organs = extra.get("organs", {})
    if not isinstance(organs, dict) or not all(_names(v) for v in organs.values()):
        raise ValueError(
            f"manifest {path}: `organs` must map an organ to a list of label names, e.g."
            f' {{"liver": ["liver", "liver_tumour"]}}, got {organs!r}'
        )


def _comparisons(value: Any, path: Path) -> list[tuple[str, str]]:
    """``["CT~PET_CT", "PET_CT~MRI"]``: the design's paired comparisons."""
    from umdbench.organs import check_comparison

    if not _names(value) or not value:
        raise ValueError(
            f'manifest {path}: `comparisons` must list arm pairs, e.g. ["CT~PET_CT", "CT~MRI"],'
            f" got {value!r}"
        )
    pairs = []
    for item in value:
        arm_a, sep, arm_b = item.partition("~")
        try:
            if not sep:
                raise ValueError("it must read ARM~ARM, e.g. CT~PET_CT")
            pairs.append(check_comparison(arm_a, arm_b))
        except ValueError as error:
            raise ValueError(f"manifest {path}: comparison {item!r}: {error}") from error
    if len(set(pairs)) < len(pairs):
        raise ValueError(f"manifest {path}: `comparisons` lists a pair twice: {value!r}")
    return pairs


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _csv_rows(text: str, path: Path) -> list[tuple[str, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[tuple[str, dict[str, Any]]] = []
    try:
        for record in reader:
            if not any(field.strip() for field in record):
                continue  # blank line
            if header is None:
                header = _csv_header(record, path)
                continue
            where = f"{path} row {len(rows) + 1} (line {reader.line_num})"
            if len(record) != len(header):
                raise ValueError(
                    f"{where} has {len(record)} fields, the header has {len(header)}; give"
                    " every row one field per column (quote a field that holds a comma)"
                )
            rows.append((where, dict(zip(header, record, strict=True))))
    except csv.Error as error:
        raise ValueError(
            f"manifest {path} line {reader.line_num} is not valid CSV ({error}); fix that line"
        ) from error
    return rows


def _csv_header(record: list[str], path: Path) -> list[str]:
    header = [name.strip() for name in record]
    where = f"manifest {path} header (line 1)"
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ValueError(f"{where} names column(s) {', '.join(repeated)} twice; keep one of each")
    _check_keys(dict.fromkeys(header), MANIFEST_COLUMNS, where, "column")
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        raise ValueError(
            f"{where} lacks column(s) {', '.join(missing)}; the header must name"
            f" {', '.join(_REQUIRED)} (and optionally labels_grid_may_differ)"
        )
    return header


def _check_keys(table: Mapping[Any, Any], allowed: Sequence[str], where: str, kind: str) -> None:
    """An unknown key or column is a typo until shown otherwise: say which, and the closest."""
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(
                f"{where}: unknown {kind} {str(key)!r}{hint}; allowed: {', '.join(allowed)}"
            )


def _entry(row: Any, where: str, manifest: Path) -> ManifestEntry:
    if not isinstance(row, dict):
        raise ValueError(f"{where} must be an object with {', '.join(_REQUIRED)}")
    _check_keys(row, MANIFEST_COLUMNS, where, "key")
    cells = {column: _cell(row.get(column), column, where) for column in _REQUIRED}
    missing = [c for c in _REQUIRED if not cells[c]]
    if missing:
        raise ValueError(
            f"{where} (subject {cells['subject']!r}) lacks {', '.join(missing)}; fill it in"
            " or remove the row"
        )
    base = manifest.parent
    return ManifestEntry(
        subject=cells["subject"],
        session=cells["session"],
        arm=_arm(cells["arm"], where),
        image=_absolute(cells["image"], base, "image", where),
        labels=_absolute(cells["labels"], base, "labels", where),
        label_map=cells["label_map"],
        labels_grid_may_differ=_boolean(row.get("labels_grid_may_differ"), where),
        origin=where,
    )


def _cell(value: Any, column: str, where: str) -> str:
    """A cell as stripped text; JSON numbers are allowed (subject 7), objects and lists not."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{where}: {column} must be text, got {value!r}")
    return str(value).strip()


def _arm(arm: str, where: str) -> str:
    if arm in MODALITIES:
        return arm
    close = [m for m in MODALITIES if m.lower() == arm.lower().replace("-", "_")]
    close = close or difflib.get_close_matches(arm.upper(), MODALITIES, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ValueError(f"{where}: arm must be one of {', '.join(MODALITIES)}, got {arm!r}{hint}")


def _absolute(value: str, base: Path, column: str, where: str) -> Path:
    if "\x00" in value:
        raise ValueError(f"{where}: {column} path holds a NUL character: {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _check_duplicates(entries: Sequence[ManifestEntry], manifest: Path) -> None:
    """One scan per subject and arm (the cohort's key), said with both row numbers."""
    first: dict[tuple[str, str], int] = {}
    for number, entry in enumerate(entries, start=1):
        key = (entry.subject, entry.arm)
        if key not in first:
            first[key] = number
            continue
        other = entries[first[key] - 1]
        sessions = (
            f"session {entry.session!r}"
            if other.session == entry.session
            else f"sessions {other.session!r} and {entry.session!r}"
        )
        raise ValueError(
            f"manifest {manifest}: rows {first[key]} and {number} both give subject"
            f" {entry.subject!r} arm {entry.arm} ({sessions}); a subject has one scan per arm:"
            " remove one row or give it another subject"
        )


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
    comparisons: Sequence[tuple[str, str]] | None = None,
) -> Cohort:
    """Build the cohort; a duplicate subject/arm or a bad label map is an error naming it (and
    the row that gave it, when the entry knows its ``origin``). ``comparisons``: the paired
    comparisons of the design (None: the study's)."""
    resolved: dict[str, LabelMap] = {}
    scans = []
    for entry in entries:
        key = entry.label_map if isinstance(entry.label_map, str) else repr(entry.label_map)
        if key not in resolved:
            resolved[key] = _located(
                entry, partial(resolve_label_map, entry.label_map, base, named_maps)
            )
        label_map = resolved[key]
        organ_overrides = {**(overrides or {}), **label_map.overrides}
        where = f"label map of {entry.subject}/{entry.arm}"
        organs = _located(
            entry, partial(canonical_label_map, label_map.names, organ_overrides, where=where)
        )
        scans.append(
            DatasetScan(
                subject=entry.subject,
                session=entry.session,
                modality=entry.arm,
                image=entry.image,
                labels=entry.labels,
                label_map=organs,
                labels_grid_may_differ=entry.labels_grid_may_differ,
                label_names=dict(label_map.names),
                import_error=entry.import_error,
            )
        )
    pairs = None if comparisons is None else tuple((a, b) for a, b in comparisons)
    return Cohort(name, tuple(scans), dict(provenance or {}), comparisons=pairs)


_T = TypeVar("_T")


def _located(entry: ManifestEntry, make: Callable[[], _T]) -> _T:
    """``make()``, its ValueError or FileNotFoundError prefixed with where the entry came from."""
    try:
        return make()
    except FileNotFoundError as error:
        if not entry.origin:
            raise
        raise FileNotFoundError(f"{entry.origin}: {error}") from error
    except ValueError as error:
        if not entry.origin:
            raise
        raise ValueError(f"{entry.origin}: {error}") from error


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
