"""Paired modality gaps: the same subjects and organ, one model, two arms.

The study's controlled comparison. A gap case runs (or, through the shared prediction cache,
reuses) both arms' cases, pairs the subjects' figures and asserts that the mean paired
difference stays within the policy's ``max_gap``. The gap is taken in absolute value: a model
that does much better on PET than on CT is just as inconsistent across physics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from umdbench.cases import GapCase
from umdbench.policy import GapRule
from umdbench.report.stats import PairedStats, paired_comparison, subject_values

__all__ = ["GapOutcome", "evaluate_gap"]


@dataclass
class GapOutcome:
    """Paired statistics of one gap case and its verdict."""

    gap: GapCase
    rule: GapRule
    stats: PairedStats
    skip_reason: str | None = None

    @property
    def passed(self) -> bool:
        return (
            math.isfinite(self.stats.mean_diff) and abs(self.stats.mean_diff) <= self.rule.max_gap
        )

    def summary(self) -> dict[str, Any]:
        """The entry under ``run.gaps`` in the results file."""
        return {
            "gap_id": self.gap.id,
            "model": self.gap.model,
            "organ": self.gap.organ,
            "comparison": self.gap.comparison,
            "protocol": self.gap.protocol,
            "metric": self.rule.metric,
            "max_gap": self.rule.max_gap,
            "rule": self.rule.source,
            **self.stats.as_dict(),
        }

    def failure_message(self) -> str:
        s = self.stats
        return (
            f"{self.gap.id}: mean paired {self.rule.metric} difference"
            f" {self.gap.arm_a} - {self.gap.arm_b} = {s.mean_diff:+.3f}"
            f" (95% CI {s.ci_low:+.3f} to {s.ci_high:+.3f}, Wilcoxon p = {s.p_value:.3g},"
            f" {s.n_pairs} subjects); allowed |gap| <= {self.rule.max_gap:g} ({self.rule.source})"
        )


def _one_case(records: list[dict[str, Any]], metric: str) -> dict[str, float]:
    """``{subject: figure}`` of one case's records, read exactly as the report's paired table
    reads them (:func:`~umdbench.report.stats.subject_values`), so the two always agree."""
    return next(iter(subject_values(records, metric).values()), {})


def evaluate_gap(session: Any, gap: GapCase, seed: int = 0) -> GapOutcome:
    """Run both arms of ``gap`` through ``session`` and compare them subject by subject."""
    rule = session.policy.gap(gap.model, gap.organ, gap.comparison)
    if rule is None:
        rule = GapRule("dice", math.inf, "no [[gap]] rule matches: reported, not judged")
    outcomes = [session.run_case(gap.case(arm)) for arm in (gap.arm_a, gap.arm_b)]
    skipped = next((o.skip_reason for o in outcomes if o.skip_reason), None)
    a, b = (_one_case(o.records, rule.metric) for o in outcomes)
    stats = paired_comparison(a, b, seed=seed)
    if skipped is None and stats.n_pairs == 0:
        skipped = f"no subject has a scored {gap.organ} on both {gap.arm_a} and {gap.arm_b}"
    return GapOutcome(gap, rule, stats, skip_reason=skipped)
