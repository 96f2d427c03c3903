"""Run-to-run comparison: which cases moved beyond tolerance between two results files.

Per case present in both runs: the mean Dice and mean NSD over ``ok`` subjects (absolute change
against ``dice_tol`` / ``nsd_tol``), the inference time (sum of ``inference_seconds`` over
records whose prediction was not reused, leaving out a host's warm-up call (``timing.warmup``)
unless the case has nothing else; relative change against ``time_tol``, ignored when the
absolute change is under ``time_floor_s`` because sub-second timings are noise), and the outcome
(passed -> failed or error is a regression). A drop, a slow-down or a lost pass is a regression;
the opposite is an improvement. Cases in only one run are listed as ``added`` / ``removed``,
not judged here; ``umdbench compare`` fails on ``removed`` ones (cases of OLD missing from NEW)
unless ``--allow-missing``. A case that ran in OLD and is skipped in NEW is no change at all.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from umdbench.report.tables import Table, finite_number

__all__ = ["Change", "Tolerances", "change_table", "compare_documents"]

Kind = Literal["regression", "improvement", "added", "removed"]
_NSD_KEYS = ("nsd_2mm", "nsd_1mm")


@dataclass(frozen=True)
class Tolerances:
    """How far a figure may move before it is reported."""

    dice: float = 0.02
    nsd: float = 0.02
    time: float = 0.25
    time_floor_s: float = 0.5

    def __post_init__(self) -> None:
        for name in ("dice", "nsd", "time", "time_floor_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} tolerance must be a number >= 0, got {value!r}")


@dataclass(frozen=True)
class Change:
    """One figure of one case that moved beyond tolerance (or a case in one run only)."""

    case_id: str
    quantity: str
    old: Any
    new: Any
    kind: Kind

    @property
    def delta(self) -> float:
        if isinstance(self.old, (int, float)) and isinstance(self.new, (int, float)):
            return float(self.new) - float(self.old)
        return math.nan


def _case_figures(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """case_id -> {outcome, dice, nsd_2mm, nsd_1mm, time}."""
    sums: dict[str, dict[str, list[float]]] = {}
    for r in document.get("records", []):
        bucket = sums.setdefault(r["case_id"], {})
        if r.get("status", "ok") == "ok":
            for key in ("dice", *_NSD_KEYS):
                if finite_number(r.get(key)):
                    bucket.setdefault(key, []).append(float(r[key]))
        if not r.get("prediction_reused") and finite_number(r.get("inference_seconds")):
            warmup = bool((r.get("timing") or {}).get("warmup"))
            bucket.setdefault("warmup" if warmup else "time", []).append(
                float(r["inference_seconds"])
            )
    out = {}
    for case in document.get("cases", []):
        bucket = sums.get(case["case_id"], {})
        figures: dict[str, Any] = {"outcome": case.get("outcome")}
        for key in ("dice", *_NSD_KEYS):
            figures[key] = sum(bucket[key]) / len(bucket[key]) if key in bucket else None
        steady = bucket.get("time") or bucket.get("warmup")  # warm-up only when nothing else
        figures["time"] = sum(steady) if steady else case.get("duration_s")
        out[case["case_id"]] = figures
    return out


def _score_change(case_id: str, key: str, old: Any, new: Any, tol: float) -> Change | None:
    if not (finite_number(old) and finite_number(new)) or abs(new - old) <= tol:
        return None
    return Change(case_id, key, old, new, "regression" if new < old else "improvement")


def _time_change(case_id: str, old: Any, new: Any, tol: Tolerances) -> Change | None:
    if not (finite_number(old) and finite_number(new)) or abs(new - old) < tol.time_floor_s or old <= 0:
        return None
    if abs(new - old) / old <= tol.time:
        return None
    return Change(case_id, "time_s", old, new, "regression" if new > old else "improvement")


_PASSING = ("passed", "xpassed")
_FAILING = ("failed", "xfailed", "error")


def _outcome_change(case_id: str, old: Any, new: Any) -> Change | None:
    if old in _PASSING and new in _FAILING:
        return Change(case_id, "outcome", old, new, "regression")
    if old in _FAILING and new in _PASSING:
        return Change(case_id, "outcome", old, new, "improvement")
    return None


def _case_changes(case_id: str, a: Mapping[str, Any], b: Mapping[str, Any],
                  tol: Tolerances) -> Iterable[Change | None]:
    yield _outcome_change(case_id, a["outcome"], b["outcome"])
    yield _score_change(case_id, "dice", a["dice"], b["dice"], tol.dice)
    for key in _NSD_KEYS:
        yield _score_change(case_id, key, a[key], b[key], tol.nsd)
    yield _time_change(case_id, a["time"], b["time"], tol)


def compare_documents(
    old: Mapping[str, Any], new: Mapping[str, Any], tolerances: Tolerances | None = None
) -> list[Change]:
    """Every change beyond tolerance between two results documents, in case-id order."""
    tol = tolerances or Tolerances()
    before, after = _case_figures(old), _case_figures(new)
    changes: list[Change] = []
    for case_id in sorted(set(before) | set(after)):
        if case_id not in after:
            changes.append(Change(case_id, "case", before[case_id]["outcome"], None, "removed"))
        elif case_id not in before:
            changes.append(Change(case_id, "case", None, after[case_id]["outcome"], "added"))
        else:
            changes += [c for c in _case_changes(case_id, before[case_id], after[case_id], tol)
                        if c is not None]
    return changes


def change_table(changes: Sequence[Change]) -> Table:
    """The changes as a table (regressions first) for the terminal or a report."""
    order = {"regression": 0, "improvement": 1, "removed": 2, "added": 3}
    rows = tuple((c.kind, c.case_id, c.quantity, c.old, c.new, c.delta)
                 for c in sorted(changes, key=lambda c: (order[c.kind], c.case_id, c.quantity)))
    return Table("Run-to-run changes beyond tolerance",
                 ("change", "case", "quantity", "old", "new", "new − old"), rows)
