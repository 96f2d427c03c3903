"""Paired intra-subject statistics: the same subjects seen through two imaging arms.

The study's claim is intra-subject (same anatomy, other physics), so arms are compared on the
subjects that have both, never as two independent samples. For each model x organ x comparison
(``umdbench.organs.PAIRED_COMPARISONS``) and metric we give the mean paired difference, a seeded
percentile-bootstrap 95% interval of that mean, the Wilcoxon signed-rank p-value (scipy) and a
Holm adjustment across the organs of one model, comparison and metric.

Sign convention: ``mean_diff = mean(a - b)`` where ``a`` is the first arm of the comparison
(CT in ``CT~PET_CT``). For Dice and NSD a positive figure is a *drop* from ``a`` to ``b``: the
gap the audit looks for. For distance metrics (hd95) a positive figure means ``b`` is better.

Edge cases (all documented in ``docs/report.md``):

- a value that is None/NaN in either arm leaves that subject out; the count is ``n_nan``;
- fewer than 2 pairs: no interval and no test (NaN) and ``note`` says why;
- all differences zero: scipy's ``wilcoxon`` cannot rank an empty set (it warns and returns
  NaN, older releases raise), so we return ``p_value = 1.0`` (no evidence of a difference),
  ``ci_low = ci_high = 0`` and a ``note``;
- zero differences among non-zero ones are dropped by the test (scipy's ``zero_method="wilcox"``,
  Wilcoxon's original rule), as the note records.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from umdbench.organs import PAIRED_COMPARISONS

__all__ = [
    "ALL_ORGANS",
    "DEFAULT_METRICS",
    "PairedRow",
    "PairedStats",
    "comparison_label",
    "document_comparisons",
    "holm_adjust",
    "paired_comparison",
    "paired_table",
    "subject_values",
]

#: Metrics the paired table covers when a results file holds them (missing keys are skipped).
DEFAULT_METRICS: tuple[str, ...] = ("dice", "nsd_2mm", "nsd_1mm", "hd95")
_BOOTSTRAP_SAMPLES = 10_000
#: The organ name of the subject-level rows (each subject's mean over organs).
ALL_ORGANS = "all_organs"


@dataclass(frozen=True)
class PairedStats:
    """Paired figures of one comparison; NaN where a figure cannot be computed (see ``note``)."""

    n_pairs: int
    mean_a: float
    mean_b: float
    mean_diff: float
    median_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n_nan: int = 0
    n_only_a: int = 0
    n_only_b: int = 0
    n_zero_diff: int = 0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PairedRow:
    """One line of the paired table: which comparison, and its statistics."""

    model: str
    protocol: str | None
    organ: str
    arm_a: str
    arm_b: str
    metric: str
    stats: PairedStats
    p_holm: float = math.nan
    subjects: tuple[str, ...] = field(default=(), compare=False)

    @property
    def comparison(self) -> str:
        return comparison_label(self.arm_a, self.arm_b)

    def as_dict(self) -> dict[str, Any]:
        row = {k: getattr(self, k) for k in ("model", "protocol", "organ", "arm_a", "arm_b")}
        row.update(comparison=self.comparison, metric=self.metric, **self.stats.as_dict())
        row["p_holm"] = self.p_holm
        return row


def comparison_label(arm_a: str, arm_b: str) -> str:
    """``CT~PET_CT``: the spelling policy gap rules and pytest ids use."""
    return f"{arm_a}~{arm_b}"


def _as_float(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"paired values must be numbers or None, got {value!r}") from error


def _pairs(
    a: Mapping[str, Any], b: Mapping[str, Any]
) -> tuple[list[str], np.ndarray, np.ndarray, int]:
    """Subjects in both arms with finite values (sorted), their values, and the NaN count."""
    subjects, va, vb, n_nan = [], [], [], 0
    for subject in sorted(set(a) & set(b)):
        x, y = _as_float(a[subject]), _as_float(b[subject])
        if math.isfinite(x) and math.isfinite(y):
            subjects.append(subject)
            va.append(x)
            vb.append(y)
        else:
            n_nan += 1
    return subjects, np.asarray(va, float), np.asarray(vb, float), n_nan


def _bootstrap_ci(diffs: np.ndarray, seed: int, n_boot: int) -> tuple[float, float]:
    """Percentile 95% interval of the mean difference, resampling subjects with replacement."""
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    step = max(1, 2_000_000 // max(1, diffs.size))  # bound memory on large cohorts
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        idx = rng.integers(0, diffs.size, size=(stop - start, diffs.size))
        means[start:stop] = diffs[idx].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def _wilcoxon(diffs: np.ndarray) -> float:
    # imported here: scipy.stats costs ~0.3 s to import, and a run without paired comparisons
    # (one arm) never needs it
    from scipy import stats as sps

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        result = sps.wilcoxon(diffs, zero_method="wilcox")
    return float(result.pvalue)


def paired_comparison(
    a: Mapping[str, Any], b: Mapping[str, Any], seed: int = 0, n_boot: int = _BOOTSTRAP_SAMPLES
) -> PairedStats:
    """Compare two arms over the subjects present in both (``a[subject]`` vs ``b[subject]``)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    subjects, va, vb, n_nan = _pairs(a, b)
    n_only_a, n_only_b = len(set(a) - set(b)), len(set(b) - set(a))
    n = len(subjects)
    counts = {"n_nan": n_nan, "n_only_a": n_only_a, "n_only_b": n_only_b}
    if n == 0:
        nan = math.nan
        return PairedStats(0, nan, nan, nan, nan, nan, nan, nan, note="no pairs", **counts)
    diffs = va - vb
    means = (float(va.mean()), float(vb.mean()), float(diffs.mean()), float(np.median(diffs)))
    n_zero = int(np.count_nonzero(diffs == 0.0))
    counts["n_zero_diff"] = n_zero
    if n < 2:
        note = "fewer than 2 pairs: no interval, no test"
        return PairedStats(n, *means, math.nan, math.nan, math.nan, note=note, **counts)
    if n_zero == n:
        note = "all differences zero: p = 1 by convention (scipy cannot rank them)"
        return PairedStats(n, *means, 0.0, 0.0, 1.0, note=note, **counts)
    low, high = _bootstrap_ci(diffs, seed, n_boot)
    note = f"{n_zero} zero difference(s) left out of the test" if n_zero else ""
    return PairedStats(n, *means, low, high, _wilcoxon(diffs), note=note, **counts)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values; NaN entries stay NaN and are not counted."""
    finite = [(p, i) for i, p in enumerate(p_values) if p is not None and math.isfinite(p)]
    adjusted = [math.nan] * len(p_values)
    m = len(finite)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(finite)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def subject_values(
    records: Iterable[Mapping[str, Any]], metric: str
) -> dict[tuple[str, str | None, str, str], dict[str, float]]:
    """(model, protocol, organ, modality) -> subject -> figure, from ``ok`` records only.

    Records with another status (empty reference, error) or without the metric key count as
    missing; a None figure stays NaN so :func:`paired_comparison` counts it.
    """
    table: dict[tuple[str, str | None, str, str], dict[str, float]] = {}
    for record in records:
        if record.get("status", "ok") != "ok" or metric not in record:
            continue
        key = (record["model"], record.get("protocol"), record["organ"], record["modality"])
        table.setdefault(key, {})[str(record["subject"])] = _as_float(record[metric])
    return table


def _metrics_present(records: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[str]:
    return [m for m in metrics if any(r.get(m) is not None for r in records)]


def document_comparisons(document: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The comparisons the audited cohort declares (``run.cohort.comparisons``, e.g. ibsi-sts's
    CT~PET_CT, CT~MRI, PET_CT~MRI); the study's four for a results file without them."""
    declared = document.get("run", {}).get("cohort", {}).get("comparisons")
    if not declared:
        return PAIRED_COMPARISONS
    pairs = [str(c).split("~") for c in declared]
    return tuple((p[0], p[1]) for p in pairs if len(p) == 2)


def paired_table(
    document: Mapping[str, Any],
    metrics: Sequence[str] = DEFAULT_METRICS,
    comparisons: Sequence[tuple[str, str]] | None = None,
    seed: int = 0,
    n_boot: int = _BOOTSTRAP_SAMPLES,
) -> list[PairedRow]:
    """Every paired comparison a results document supports, Holm-adjusted across organs.

    A Holm family is one (model, protocol, comparison, metric): the organs are the hypotheses
    tested together. Metrics absent from every record are left out.
    """
    records = list(document.get("records", []))
    if comparisons is None:
        comparisons = document_comparisons(document)
    rows: list[PairedRow] = []
    for metric in _metrics_present(records, metrics):
        values = subject_values(records, metric)
        units = sorted({k[:3] for k in values}, key=lambda k: (k[0], k[1] or "", k[2]))
        for arm_a, arm_b in comparisons:
            for model, protocol, organ in units:
                a = values.get((model, protocol, organ, arm_a))
                b = values.get((model, protocol, organ, arm_b))
                if a is None or b is None:
                    continue
                stats = paired_comparison(a, b, seed=seed, n_boot=n_boot)
                both = tuple(sorted(set(a) & set(b)))
                row = PairedRow(model, protocol, organ, arm_a, arm_b, metric, stats, subjects=both)
                rows.append(row)
            rows.extend(_all_organ_rows(values, units, arm_a, arm_b, metric, seed, n_boot))
    return _with_holm(rows)


def _all_organ_rows(
    values: Mapping[tuple[str, str | None, str, str], Mapping[str, float]],
    units: Sequence[tuple[str, str | None, str]],
    arm_a: str,
    arm_b: str,
    metric: str,
    seed: int,
    n_boot: int,
) -> list[PairedRow]:
    """One row per (model, protocol): each subject's mean over the organs scored on both arms.

    With few subjects no single organ can survive a Holm correction (8 subjects: the smallest
    exact two-sided Wilcoxon p is 2/256, times 13 organs); the subject-level mean answers the
    model-level question with one test, outside the organ family. A model scored on one
    target only gets no such row (it would repeat that target's).
    """
    rows = []
    for model, protocol in sorted({u[:2] for u in units}, key=lambda u: (u[0], u[1] or "")):
        per_subject: dict[str, tuple[list[float], list[float]]] = {}
        organs = sorted({u[2] for u in units if u[:2] == (model, protocol)})
        if len(organs) < 2:
            continue  # one target (ibsi-sts: the tumour): its own row says it all
        for organ in organs:
            a = values.get((model, protocol, organ, arm_a), {})
            b = values.get((model, protocol, organ, arm_b), {})
            for subject in set(a) & set(b):
                if math.isfinite(a[subject]) and math.isfinite(b[subject]):
                    pair = per_subject.setdefault(subject, ([], []))
                    pair[0].append(a[subject])
                    pair[1].append(b[subject])
        if len(per_subject) == 0:
            continue
        mean_a = {s: float(np.mean(v[0])) for s, v in per_subject.items()}
        mean_b = {s: float(np.mean(v[1])) for s, v in per_subject.items()}
        stats = paired_comparison(mean_a, mean_b, seed=seed, n_boot=n_boot)
        subjects = tuple(sorted(per_subject))
        rows.append(
            PairedRow(model, protocol, ALL_ORGANS, arm_a, arm_b, metric, stats, subjects=subjects)
        )
    return rows


def _with_holm(rows: list[PairedRow]) -> list[PairedRow]:
    families: dict[tuple[Any, ...], list[int]] = {}
    for i, row in enumerate(rows):
        pooled = row.organ == ALL_ORGANS  # a family of its own: one test per model
        families.setdefault(
            (row.model, row.protocol, row.comparison, row.metric, pooled), []
        ).append(i)
    out = list(rows)
    for members in families.values():
        adjusted = holm_adjust([rows[i].stats.p_value for i in members])
        for i, p in zip(members, adjusted, strict=True):
            out[i] = replace(rows[i], p_holm=p)
    return out
