"""What a result was made from, as keys: data files, model code, the whole run.

The prediction cache and the journal reuse work only while these stay the same. The old cache
key (case id, weights id, cohort name) kept serving figures after a scan was repaired, labels
changed or a vendor edited their model; these keys change with any of them.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["cohort_identity", "file_identity", "model_code_version", "new_run_id"]


def file_identity(path: str | Path) -> str:
    """``size:mtime_ns:inode`` of a file (what changes when it is rewritten), or ``missing``.

    Cheap on GB-sized scans where a content hash is not; the cost is a spurious miss when a
    file is rewritten with the same bytes.
    """
    try:
        info = os.stat(path)
    except OSError:
        return "missing"
    return f"{info.st_size}:{info.st_mtime_ns}:{info.st_ino}"


def model_code_version(cls: type) -> str:
    """A hash of the source file defining the model class, plus its ``version`` if it has one.

    Editing a vendor's adapter (or ours) changes it, so no cached or journalled result made by
    the old code is reused.
    """
    try:
        source = inspect.getsourcefile(cls)
    except (TypeError, OSError):
        source = None
    version = str(getattr(cls, "version", ""))
    return _digest(source, file_identity(source) if source else "", version)


@functools.lru_cache(maxsize=256)
def _digest(source: str | None, identity: str, version: str) -> str:
    digest = hashlib.sha256(version.encode())
    if source:
        with open(source, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()[:16]


def cohort_identity(scans: Iterable[Any]) -> dict[str, list[str]]:
    """``scan key -> [image path, its identity, labels path, its identity]`` of every scan."""
    return {
        scan.key: [
            str(scan.image),
            file_identity(scan.image),
            str(scan.labels),
            file_identity(scan.labels),
        ]
        for scan in scans
    }


def differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The keys whose values differ between two JSON-like mappings, as dotted paths."""
    found = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found.extend(differences(a, b, f"{path}."))
        elif a != b:
            found.append(path)
    return found


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]
