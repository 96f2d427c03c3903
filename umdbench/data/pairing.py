"""Paired analysis only where both arms exist, and a cohort-wide validation report."""

from __future__ import annotations

from umdbench.cohort import Cohort
from umdbench.data.errors import Problem
from umdbench.data.loader import CachedScanLoader, validate_scan
from umdbench.organs import MODALITIES

__all__ = ["missing_arms", "paired_subjects", "validate_cohort"]


def paired_subjects(cohort: Cohort, arm_a: str, arm_b: str) -> tuple[str, ...]:
    """Subjects with a scan in both arms (the only ones a paired comparison may use)."""
    have_a = {s.subject for s in cohort.scans_of(arm_a)}
    have_b = {s.subject for s in cohort.scans_of(arm_b)}
    return tuple(s for s in cohort.subjects if s in have_a and s in have_b)


def missing_arms(cohort: Cohort) -> list[Problem]:
    """A warning per subject lacking an arm that a paired comparison of this cohort uses."""
    used = {arm for pair in cohort.paired_comparisons for arm in pair}
    problems = []
    for subject in cohort.subjects:
        arms = {s.modality for s in cohort.scans if s.subject == subject}
        for arm in (m for m in MODALITIES if m in used and m not in arms):
            problems.append(Problem(
                "missing_arm", "warning", subject, arm, None,
                f"subject has no {arm} scan; it is left out of the paired comparisons with {arm}",
            ))  # fmt: skip
    return problems


def validate_cohort(cohort: Cohort, loader: CachedScanLoader | None = None) -> list[Problem]:
    """Every problem of every scan, then the missing arms; never raises for a bad scan."""
    problems = [p for scan in cohort.scans for p in validate_scan(scan, loader)]
    return problems + missing_arms(cohort)
