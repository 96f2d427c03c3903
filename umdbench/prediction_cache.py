"""Predictions made once per (model, weights, scan, prompt) and shared by every organ case.

Two layers: an in-process LRU bounded in bytes (the organ cases of one scan follow each other on
one worker), and an on-disk store that other xdist workers, and later runs when the user asks
for it, read instead of predicting again. A file lock per key makes a second worker wait for the
first one's result rather than compute it too.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

__all__ = ["CachedPrediction", "PredictionCache", "prediction_key"]


@dataclass(frozen=True)
class CachedPrediction:
    """A label map and how it was made (seconds are those of the original pass; ``run_id`` and
    ``created`` say which run made it, so a record can say it was reused from an older one)."""

    labels: np.ndarray
    seconds: float
    device: str
    extra: dict[str, object]
    run_id: str = ""
    created: str = ""


def prediction_key(*parts: str) -> str:
    """A file-name-safe key for a prediction."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


class PredictionCache:
    """Memory LRU over an optional shared folder."""

    def __init__(self, folder: Path | None, memory_bytes: int = 2 << 30, run_id: str = "") -> None:
        self.folder = folder
        self.run_id = run_id
        self.memory_bytes = memory_bytes
        self._memory: OrderedDict[str, CachedPrediction] = OrderedDict()
        self._records: dict[str, tuple[list[dict[str, object]], dict[str, str] | None]] = {}
        self._used = 0
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def get_or_make(
        self, key: str, make: Callable[[], CachedPrediction]
    ) -> tuple[CachedPrediction, bool]:
        """The cached prediction for ``key`` or a new one; the flag is True when reused."""
        hit = self._memory.get(key)
        if hit is not None:
            self._memory.move_to_end(key)
            return hit, True
        if self.folder is None:
            made = self._stamped(make())
            self._remember(key, made)
            return made, False
        with self._locked(key):
            stored = self._read(key)
            if stored is not None:
                self._remember(key, stored)
                return stored, True
            made = self._stamped(make())
            self._write(key, made)
        self._remember(key, made)
        return made, False

    def get_or_make_records(
        self, key: str, make: Callable[[], list[dict[str, object]]]
    ) -> tuple[list[dict[str, object]], dict[str, str] | None]:
        """A case's per-subject records, computed once per run (a gap case reuses them), and,
        when they come from an earlier run's folder, which run made them and when."""
        if key in self._records:
            return self._records[key]
        if self.folder is None:
            self._records[key] = (make(), None)
            return self._records[key]
        path = self.folder / f"{key}.records.json"
        with self._locked(key):
            if path.exists():
                stored = json.loads(path.read_text())
                records, origin = stored["records"], self._origin(stored)
            else:
                records, origin = make(), None
                stored = {"run_id": self.run_id, "created": _now(), "records": records}
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(stored, allow_nan=True))
                os.replace(tmp, path)
        self._records[key] = (records, origin)
        return self._records[key]

    def _stamped(self, made: CachedPrediction) -> CachedPrediction:
        return replace(made, run_id=self.run_id, created=_now())

    def origin(self, prediction: CachedPrediction) -> dict[str, str] | None:
        """Which earlier run made ``prediction``; None when this run did."""
        return self._origin({"run_id": prediction.run_id, "created": prediction.created})

    def _origin(self, stored: dict[str, str]) -> dict[str, str] | None:
        run = stored.get("run_id", "")
        if run == self.run_id:
            return None
        return {"run_id": run or "unknown", "created": stored.get("created", "")}

    def _remember(self, key: str, value: CachedPrediction) -> None:
        self._memory[key] = value
        self._used += value.labels.nbytes
        while self._used > self.memory_bytes and len(self._memory) > 1:
            _, dropped = self._memory.popitem(last=False)
            self._used -= dropped.labels.nbytes

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        assert self.folder is not None
        with open(self.folder / f"{key}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _paths(self, key: str) -> tuple[Path, Path]:
        assert self.folder is not None
        return self.folder / f"{key}.npy", self.folder / f"{key}.json"

    def _read(self, key: str) -> CachedPrediction | None:
        array_path, meta_path = self._paths(key)
        if not (array_path.exists() and meta_path.exists()):
            return None
        meta = json.loads(meta_path.read_text())
        return CachedPrediction(
            np.load(array_path),
            meta["seconds"],
            meta["device"],
            meta["extra"],
            meta.get("run_id", ""),
            meta.get("created", ""),
        )

    def _write(self, key: str, value: CachedPrediction) -> None:
        array_path, meta_path = self._paths(key)
        tmp = array_path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, value.labels)
        os.replace(tmp, array_path)
        meta = {
            "seconds": value.seconds,
            "device": value.device,
            "extra": value.extra,
            "run_id": value.run_id,
            "created": value.created,
        }
        tmp_meta = meta_path.with_suffix(f".{os.getpid()}.tmp")
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_meta, meta_path)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
