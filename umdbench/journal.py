"""The run's journal: each per-subject record on disk the moment it exists, and resuming from it.

Records used to live in memory until the session ended, so SIGTERM, SIGKILL, Ctrl-C or a lost
CI runner lost every figure of the run. Now each worker appends every record it makes to its
own JSON-lines file under ``<results>.journal/`` (flushed and fsynced, one line a record), and
``--umd-resume`` starts a run that reuses what the journal holds and computes only the rest.

A resume is refused when the run would not be the same run: ``run.json`` holds the
fingerprint of the interrupted run (options, cohort files, policy, model code, umdbench
version), and every journalled record carries its model's weights id and code version,
checked again when the model is loaded.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from umdbench.provenance import differences

__all__ = ["JournalWriter", "begin_journal", "journal_folder", "read_journal"]

RUN_FILE = "run.json"


def journal_folder(results: Path) -> Path:
    """``umd-results/results.json`` -> ``umd-results/results.journal``."""
    return results.with_name(f"{results.stem}.journal")


def begin_journal(folder: Path, fingerprint: Mapping[str, Any], resume: bool) -> None:
    """Check the journal against this run (resume) or start a new one.

    A new run keeps the previous journal as ``<folder>.previous`` rather than deleting it.
    """
    fingerprint = _normalised(fingerprint)
    if resume:
        _check_resumable(folder, fingerprint)
        return
    if folder.exists():
        previous = folder.with_name(folder.name + ".previous")
        shutil.rmtree(previous, ignore_errors=True)
        folder.rename(previous)
    folder.mkdir(parents=True)
    _write_synced(folder / RUN_FILE, json.dumps({"fingerprint": fingerprint}, indent=1))


def _check_resumable(folder: Path, fingerprint: Mapping[str, Any]) -> None:
    run_file = folder / RUN_FILE
    if not run_file.is_file():
        raise ValueError(
            f"--umd-resume: no journal at {folder} (nothing was interrupted there); run without"
            " --umd-resume, or point --umd-results at the interrupted run's results file"
        )
    try:
        old = json.loads(run_file.read_text())["fingerprint"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"--umd-resume: {run_file} is unreadable ({error}); run afresh") from error
    changed = _grouped(differences(old, fingerprint))
    if changed:
        shown = ", ".join(changed[:8]) + (
            f" and {len(changed) - 8} more" if len(changed) > 8 else ""
        )
        raise ValueError(
            f"--umd-resume refused: this run differs from the interrupted one ({run_file}) in"
            f" {shown}. Resume with the same options, cohort, policy and model code, or run"
            " without --umd-resume to start afresh"
        )


def _grouped(paths: list[str]) -> list[str]:
    """Options first; the cohort's files as one entry with a count (there may be thousands)."""
    files = [p for p in paths if p.startswith("cohort.files.")]
    rest = sorted(
        (p for p in paths if not p.startswith("cohort.files.")),
        key=lambda p: (not p.startswith("options."), p),
    )
    return rest + ([f"cohort.files ({len(files)} scans)"] if files else [])


def _normalised(value: Mapping[str, Any]) -> Any:
    """As JSON would give it back (tuples become lists), so a stored copy compares equal."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


class JournalWriter:
    """One process's journal file: a JSON line per record, flushed and fsynced at once."""

    def __init__(self, folder: Path, worker: str) -> None:
        self.path = folder / f"records-{worker}-{os.getpid()}.jsonl"
        self._handle: IO[str] | None = None

    def append(self, record: Mapping[str, Any]) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
            _sync_folder(self.path.parent)
        self._handle.write(json.dumps(record, default=str) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def read_journal(folder: Path) -> tuple[dict[tuple[str, str], dict[str, Any]], int]:
    """Records by ``(case id, scan key)``, and how many lines were unreadable.

    A process killed mid-write leaves at most its last line torn: such lines are skipped (the
    subject is computed again), never an error.
    """
    records: dict[tuple[str, str], dict[str, Any]] = {}
    torn = 0
    for path in sorted(folder.glob("records-*.jsonl")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
                key = (str(record["case_id"]), str(record["scan"]))
            except (ValueError, KeyError, TypeError):
                torn += 1
                continue
            records[key] = record
    return records, torn


def _write_synced(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make a new file's name durable too (a file fsynced into an unsynced folder can vanish)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory descriptors
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
