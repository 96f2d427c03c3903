"""Decoded-volume cache: a NIfTI (often gzip) is decoded once, stored as an uncompressed
``.npy`` and memory-mapped on every later load, by every model, run and xdist worker.

Keys. The fast key is the sources' stat (resolved path, size, mtime_ns) plus the preprocessing
(``transform``); it points to an entry keyed by the sources' **content** sha256 plus the
transform. A touched but unchanged file (new mtime) is hashed once and finds its old entry; a
changed file gets a new one. Entries are written to a temporary file and published with
``os.replace`` (atomic on one filesystem): parallel workers may decode the same volume twice, but
no one ever reads half a file.

Entries are opened copy-on-write (``mmap_mode="c"``): a model that writes into its input changes
its own pages, never the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from umdbench.volume import Volume

__all__ = ["CACHE_FORMAT", "VolumeCache", "content_sha256"]

#: Bumped when the entry layout or a decoding rule changes, so old entries are not reused.
CACHE_FORMAT = 1

Builder = Callable[[], tuple[Volume, Mapping[str, Any]]]


def content_sha256(path: Path) -> str:
    """sha256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


class VolumeCache:
    """Decoded volumes under ``root`` (``entries/`` and ``index/``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def get(
        self, sources: Sequence[Path], transform: str, build: Builder
    ) -> tuple[Volume, dict[str, Any]]:
        """The volume ``build`` makes from ``sources`` under ``transform``, decoded at most once
        per content; also the JSON-ready facts ``build`` returned beside it."""
        stat_key = _digest(CACHE_FORMAT, transform, [self._stat(p) for p in sources])
        index = self.root / "index" / f"{stat_key}.json"
        entry = self._entry_from_index(index)
        if entry is None:
            hashes = [content_sha256(p) for p in sources]
            entry = _digest(CACHE_FORMAT, transform, hashes)
            if not self._complete(entry):
                self.misses += 1
                volume, facts = build()
                self._write_entry(entry, volume, facts, transform)
                _atomic_write_text(index, json.dumps({"entry": entry}))
                return self._load(entry)
            _atomic_write_text(index, json.dumps({"entry": entry}))
        self.hits += 1
        return self._load(entry)

    @staticmethod
    def _stat(path: Path) -> tuple[str, int, int]:
        stat = path.stat()
        return str(path.resolve()), stat.st_size, stat.st_mtime_ns

    def _entry_from_index(self, index: Path) -> str | None:
        try:
            entry = json.loads(index.read_text())["entry"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return entry if isinstance(entry, str) and self._complete(entry) else None

    def _paths(self, entry: str) -> tuple[Path, Path]:
        folder = self.root / "entries" / entry[:2]
        return folder / f"{entry}.npy", folder / f"{entry}.json"

    def _complete(self, entry: str) -> bool:
        array_path, meta_path = self._paths(entry)
        return meta_path.is_file() and array_path.is_file()

    def _write_entry(
        self, entry: str, volume: Volume, facts: Mapping[str, Any], transform: str
    ) -> None:
        array_path, meta_path = self._paths(entry)
        array_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=array_path.parent, suffix=".npy.tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, np.ascontiguousarray(volume.array), allow_pickle=False)
            os.replace(tmp, array_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        meta = {"affine": volume.affine.tolist(), "transform": transform, "facts": dict(facts)}
        _atomic_write_text(meta_path, json.dumps(meta))  # the meta file commits the entry

    def _load(self, entry: str) -> tuple[Volume, dict[str, Any]]:
        array_path, meta_path = self._paths(entry)
        meta = json.loads(meta_path.read_text())
        array = np.load(array_path, mmap_mode="c", allow_pickle=False)
        return Volume(array, np.asarray(meta["affine"], dtype=np.float64)), meta["facts"]


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
