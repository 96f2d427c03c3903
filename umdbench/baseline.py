"""Known-gap baseline for nightly CI: known failures stay visible without failing every night.

``write_baseline`` records every case that *failed its threshold* in a results document, with
the figure it reached. With ``--umd-baseline FILE`` the plugin marks those cases xfail with that
figure; a case failing that is not in the file fails the run (a regression); a recorded case
that now passes is reported so the baseline can be tightened (``--umd-baseline-update``).

Only ``failed`` outcomes (and ``xfailed``: a known failure of the baseline in force) are
recorded by default: an ``error`` is a broken run, not a measured
gap, and baking it in would hide it (``include_errors=True`` records them anyway). Skipped cases
are never recorded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "BASELINE_VERSION",
    "Baseline",
    "BaselineReview",
    "KnownFailure",
    "Outcome",
    "load_baseline",
    "write_baseline",
]

BASELINE_VERSION = 1
Outcome = Literal["known-failure", "new-failure", "newly-passing", "passing"]
#: Outcomes that count as failing/passing the threshold (xfail/xpass come from a baseline).
_FAILING = ("failed", "xfailed")
_PASSING = ("passed", "xpassed")
_REVIEW_FIELD: dict[str, str] = {"known-failure": "known_failures", "new-failure": "new_failures",
                                 "newly-passing": "newly_passing", "passing": "passing"}


@dataclass(frozen=True)
class KnownFailure:
    """A case recorded as failing, with the figure it reached then."""

    case_id: str
    metric: str | None
    value: float | None
    threshold: float | None
    rule: str | None = None
    outcome: str = "failed"
    message: str = ""

    def reason(self) -> str:
        """The xfail reason: what was measured when the baseline was written."""
        figure = "no figure" if self.value is None else f"{self.metric} {self.value:.3f}"
        bar = f" (threshold {self.threshold:g})" if self.threshold is not None else ""
        return f"known failure in baseline: {figure}{bar}"


@dataclass(frozen=True)
class BaselineReview:
    """A run's cases sorted by what the baseline expected of them."""

    known_failures: list[str] = field(default_factory=list)
    new_failures: list[str] = field(default_factory=list)
    newly_passing: list[str] = field(default_factory=list)
    passing: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """False when a case failed that the baseline does not know: the run must fail."""
        return not self.new_failures

    def summary_lines(self) -> list[str]:
        lines = [f"baseline: {len(self.known_failures)} known failure(s), "
                 f"{len(self.new_failures)} new failure(s), {len(self.newly_passing)} newly "
                 f"passing, {len(self.passing)} passing, {len(self.not_run)} not run"]
        lines += [f"  NEW FAILURE   {c}" for c in self.new_failures]
        lines += [f"  newly passing {c} (tighten: --umd-baseline-update)"
                  for c in self.newly_passing]
        return lines


@dataclass(frozen=True)
class Baseline:
    """The known failures of a baseline file, by case id."""

    known: Mapping[str, KnownFailure]
    source: Mapping[str, Any] = field(default_factory=dict)

    def expectation(self, case_id: str) -> KnownFailure | None:
        return self.known.get(case_id)

    def classify(self, case_id: str, passed: bool) -> Outcome:
        known = case_id in self.known
        if passed:
            return "newly-passing" if known else "passing"
        return "known-failure" if known else "new-failure"

    def review(self, document: Mapping[str, Any]) -> BaselineReview:
        """Classify every passed/failed/error case of a results document; skips are not judged."""
        review = BaselineReview()
        seen = set()
        for case in document.get("cases", []):
            outcome = case.get("outcome")
            if outcome not in (*_PASSING, *_FAILING, "error"):
                continue
            seen.add(case["case_id"])
            verdict = self.classify(case["case_id"], outcome in _PASSING)
            getattr(review, _REVIEW_FIELD[verdict]).append(case["case_id"])
        review.not_run.extend(sorted(set(self.known) - seen))
        return review


def _failures(cases: Iterable[Mapping[str, Any]], include_errors: bool) -> dict[str, Any]:
    keep = (*_FAILING, "error") if include_errors else _FAILING
    out = {}
    for case in sorted(cases, key=lambda c: c["case_id"]):
        if case.get("outcome") in keep:
            out[case["case_id"]] = {k: case.get(k) for k in
                                    ("metric", "value", "threshold", "rule", "outcome", "message")}
    return out


def write_baseline(
    document: Mapping[str, Any], path: str | Path, *, include_errors: bool = False
) -> Path:
    """Record the failing cases of ``document`` (a results document) in a baseline file."""
    if "cases" not in document:
        raise ValueError(f"document must be a results document with 'cases', got keys "
                         f"{sorted(document)}")
    content = {
        "baseline_version": BASELINE_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {"created": document.get("created"),
                   "umdbench_version": document.get("umdbench_version")},
        "known_failures": _failures(document["cases"], include_errors),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=1, allow_nan=False) + "\n")
    return path


def load_baseline(path: str | Path) -> Baseline:
    """Read a baseline file; the error names the file and how to make a valid one."""
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"baseline file not found: {path} (write one with "
                                "--umd-baseline-update or `umdbench baseline`)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"baseline {path} is not valid JSON: {error}") from error
    version = content.get("baseline_version") if isinstance(content, dict) else None
    if version != BASELINE_VERSION:
        raise ValueError(f"baseline {path} must have baseline_version {BASELINE_VERSION}, got "
                         f"{version!r} (rewrite it with --umd-baseline-update)")
    try:
        known = {case_id: KnownFailure(case_id=case_id, **entry)
                 for case_id, entry in content["known_failures"].items()}
    except (KeyError, TypeError, AttributeError) as error:
        message = f"baseline {path} has a malformed known_failures table: {error}"
        raise ValueError(message) from error
    return Baseline(known, content.get("source", {}))

