"""The results file: everything a report is rendered from, and nothing a report needs besides.

Schema (``schema_version`` 1), one JSON object:

- ``schema_version``, ``created`` (ISO 8601 UTC), ``umdbench_version``;
- ``run``: ``options`` (the ``--umd-*`` values), ``environment`` (python, numpy, torch, monai
  versions, platform, device, GPU name), ``cohort`` (``name``, ``provenance``, ``subjects``,
  ``modalities``, ``organs``, ``comparisons``), ``policy`` (path and rules), ``gaps``,
  ``models_not_run`` (``{model, reason}`` of each model left out of the matrix: missing
  weights, package or CUDA, or left out of the synthetic cohort); ``shard`` (a sharded run:
  ``index``, ``count``, ``source`` (``option`` or the scheduler variable ``auto`` read),
  ``load`` and the ``plan``: ``count``, ``cost_source`` and ``units`` of ``{shard, model,
  subjects, cost}``); a merged file has ``shards`` (each source file's index and options) and
  ``missing_shards`` (planned shards no file held, with their units);
- ``complete``: false when the run was interrupted (or is still running: a run writes such a
  placeholder when it starts, so a killed run never leaves an older run's file looking
  current); ``missing_cases`` lists the collected cases with no result;
- ``models``: name -> the model's ``metadata()`` plus ``weights_id`` and ``origin``;
- ``cases``: one per case id (``model``, ``modality``, ``organ``, ``protocol`` or null,
  ``outcome`` passed / failed / skipped / error, ``metric``, ``threshold``, ``rule``, ``value``
  (mean over valid subjects), ``n_valid``, ``n_empty_reference``, ``n_errors``, ``error`` (a
  case-level error: the model failed to load, a resume was refused; else null), ``isolation``
  (where the model ran: ``child process`` or ``in-process``), ``message``, ``worker``,
  ``duration_s``);
- ``records``: one per (case, subject): ``case_id``, ``model``, ``modality``, ``organ``,
  ``protocol``, ``subject``, ``session``, ``scan``, ``image``, ``labels``, ``status`` (ok /
  empty_reference / error), the metric figures (``dice``, ``tp``, ``fp``, ``fn``, ``n_ref``,
  ``n_pred`` and whatever else the metrics engine gives), ``spacing``, ``inference_seconds``,
  ``prediction_reused`` (true when another organ case's pass was reused: do not count its time
  twice), ``device``, ``prompt`` (or null), ``error`` (or null), ``inference`` (the model's
  ``inference_settings()``: e.g. overlap, AMP, postprocessing, where it states them),
  ``timing`` (the inference call as measured in the model's host, :mod:`umdbench.timing`:
  ``wall_s`` (= ``inference_seconds``), ``warmup`` (the host's first call of the model: keep
  it out of steady-state times), ``amp`` (``--umd-amp``), ``device``, ``device_name`` (the
  card, or the CPU model); on CUDA ``cuda_event_s``, ``peak_gpu_bytes`` (max_memory_allocated,
  reset per call), ``peak_gpu_reserved_bytes``, ``gpu_bytes_before``; ``peak_rss_bytes``,
  ``rss_before_bytes`` and ``peak_rss_source`` (``VmHWM``: this call's peak; ``ru_maxrss``: the
  process's peak so far), either way at least the largest VmRSS sampled every
  ``rss_sampled_every_s`` during the call. Like ``inference_seconds``, a reused prediction's are its first
  pass's), ``weights_id`` and ``code_version`` (a hash of the model's source file), ``cached_from``
  (``{run_id, created}`` when taken from an earlier run's ``--umd-prediction-cache``) and
  ``resumed`` (true when taken from the journal by ``--umd-resume``).
  A promptable record's ``prompt`` holds the clicks in scan voxels, world mm and, for models
  with a prompt view, view voxels with the ``region_of_interest``; a multi-part organ's prompt
  holds ``parts``, one prompt record (with its steps) per part.

NaN is written as ``null``.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA_VERSION",
    "environment_info",
    "finite_or_none",
    "merge_results",
    "read_results",
    "write_results",
]

SCHEMA_VERSION = 1


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN: write missing figures as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()  # numpy scalars
    return finite_or_none(obj)


def environment_info(device: str) -> dict[str, Any]:
    """Versions and hardware that produced a run, attached to every results file."""
    import numpy
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "device": device,
    }
    info["monai"] = _installed_version("monai")  # not imported: that costs seconds
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _installed_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:  # pragma: no cover - monai is a dependency
        return None


def write_results(
    path: str | Path,
    *,
    run: Mapping[str, Any],
    models: Mapping[str, Any],
    cases: Iterable[Mapping[str, Any]],
    records: Iterable[Mapping[str, Any]],
    complete: bool = True,
    missing_cases: Iterable[str] = (),
) -> Path:
    """Write one results file, cases and records sorted so two runs diff cleanly.

    ``complete`` is False for a run that was interrupted (or is still running): its
    ``missing_cases`` were collected but have no result.
    """
    from umdbench import __version__

    document = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "umdbench_version": __version__,
        "complete": bool(complete),
        "missing_cases": sorted(missing_cases),
        "run": dict(run),
        "models": dict(models),
        "cases": sorted(cases, key=lambda c: c["case_id"]),
        "records": sorted(records, key=lambda r: (r["case_id"], r["subject"])),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(document), indent=1, allow_nan=False))
    tmp.replace(path)
    return path


def read_results(path: str | Path) -> dict[str, Any]:
    """Read a results file, refusing a schema this version does not know."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"results file not found: {path}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not a results file (invalid JSON: {error})") from error
    version = document.get("schema_version") if isinstance(document, dict) else None
    if version != SCHEMA_VERSION:
        raise ValueError(
            f"{path} has results schema_version {version!r}; this umdbench reads {SCHEMA_VERSION}"
        )
    return document


def merge_results(
    documents: Iterable[Mapping[str, Any]], combine_cases: bool = False
) -> dict[str, Any]:
    """Join results of separate runs (shards); a case id in two of them is an error, unless
    ``combine_cases`` (subject shards, each holding part of a case's subjects): then
    ``cases`` holds, per case id, the list of every file's entry, for the caller to rescore."""
    documents = list(documents)
    if not documents:
        raise ValueError("merge_results needs at least one results document")
    cases: dict[str, list[Any]] = {}
    records: list[Any] = []
    models: dict[str, Any] = {}
    for document in documents:
        for case in document["cases"]:
            if case["case_id"] in cases and not combine_cases:
                raise ValueError(f"case {case['case_id']} appears in two results files")
            cases.setdefault(case["case_id"], []).append(case)
        records.extend(document["records"])
        models.update(document["models"])
    merged = dict(documents[0])
    merged["complete"] = all(d.get("complete", True) for d in documents)
    merged["missing_cases"] = sorted({m for d in documents for m in d.get("missing_cases", [])})
    merged["cases"] = [
        entries if combine_cases else entries[0]
        for _, entries in sorted(cases.items())
    ]
    merged["records"] = sorted(records, key=lambda r: (r["case_id"], r["subject"]))
    merged["models"] = models
    merged["run"] = {**documents[0].get("run", {}),
                     "models_not_run": _models_not_run_of(documents, set(models))}
    return merged


def _models_not_run_of(documents: list[Mapping[str, Any]], ran: set[str]) -> list[Any]:
    """Models some shard left out and no shard ran (each shard probes its own machine)."""
    left_out: dict[str, Any] = {}
    for document in documents:
        for item in document.get("run", {}).get("models_not_run", []):
            if item.get("model") not in ran:
                left_out.setdefault(item.get("model"), item)
    return [left_out[name] for name in sorted(left_out)]
