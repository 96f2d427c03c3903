"""What the audit found, in sentences a reader sees before any table.

Per model that ran: one line per paired comparison (the subject-level gap, its interval, its
Wilcoxon p and the number of subjects), the published claim against the measured figure where a
claim exists, and the verdict counts. Models that did not run are set apart once, with why and
the fix, instead of as empty rows in every table and figure (:func:`models_not_run`,
:func:`ran_only`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from umdbench.report.intervals import MeasuredInterval, measured_with_interval
from umdbench.report.stats import ALL_ORGANS, PairedRow, document_comparisons
from umdbench.report.tables import (
    PASSING,
    Table,
    case_labels,
    model_label,
    outcome_counts,
    passing,
    published_figure,
)

__all__ = [
    "FINDING_COLUMNS",
    "Finding",
    "NotRun",
    "findings",
    "findings_table",
    "model_reason",
    "models_not_run",
    "ran_only",
    "summary_line",
]

@dataclass(frozen=True)
class Finding:
    """One sentence of the findings; ``values`` are its figures unrounded, by name
    (``FINDING_COLUMNS``)."""

    model: str
    kind: str  # "gap", "claim" or "verdicts"
    text: str
    key: str = ""  # the comparison (gap) or the arm (claim)
    values: Mapping[str, float] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class NotRun:
    """A model with no case that ran here, and what would make it run."""

    model: str
    reason: str


def model_reason(model: str, reason: str) -> str:
    """``vista3d needs its weights ...``: the model's name once, whoever wrote the reason."""
    if reason.startswith((f"{model} ", f"{model}:")):
        return reason
    return f"{model}: {reason}"


def models_not_run(document: Mapping[str, Any]) -> list[NotRun]:
    """Models left out of the matrix (``run.models_not_run``) and models in it whose every case
    was skipped (named in ``--umd-models`` but unavailable), each once, sorted."""
    out = {
        str(item["model"]): str(item.get("reason", ""))
        for item in document.get("run", {}).get("models_not_run", [])
        if isinstance(item, Mapping) and "model" in item
    }
    by_model: dict[str, list[Mapping[str, Any]]] = {}
    for case in document.get("cases", []):
        by_model.setdefault(case["model"], []).append(case)
    for model, cases in by_model.items():
        if all(c.get("outcome") == "skipped" for c in cases):
            reasons = Counter(str(c.get("message") or "skipped") for c in cases)
            out[model] = _strip_model(model, reasons.most_common(1)[0][0])
    return [NotRun(model, out[model]) for model in sorted(out)]


def _strip_model(model: str, message: str) -> str:
    """The runner writes ``model: reason``; the section names the model already."""
    prefix = f"{model}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def ran_only(document: Mapping[str, Any], not_run: Sequence[NotRun]) -> dict[str, Any]:
    """The document without the cases and model entries of ``not_run`` (see
    :func:`models_not_run`)."""
    gone = {item.model for item in not_run}
    if not gone:
        return dict(document)
    out = dict(document)
    out["cases"] = [c for c in document.get("cases", []) if c["model"] not in gone]
    out["records"] = [r for r in document.get("records", []) if r["model"] not in gone]
    out["models"] = {k: v for k, v in document.get("models", {}).items() if k not in gone}
    return out


def _verdict_counts(document: Mapping[str, Any], label: str) -> Counter[str]:
    """The outcomes of every case of ``label``, over all arms."""
    total: Counter[str] = Counter()
    for (of, _arm), counts in outcome_counts(document).items():
        if of == label:
            total += counts
    return total


def _pooled_rows(paired: Sequence[PairedRow], label: str) -> dict[str, PairedRow]:
    """Comparison -> the row that answers it for the model: the subject-level mean over
    targets, or the only target's row when the model was scored on one."""
    rows = [r for r in paired if r.metric == "dice" and model_label(r.model, r.protocol) == label]
    out: dict[str, PairedRow] = {}
    for comparison in dict.fromkeys(r.comparison for r in rows):
        of_it = [r for r in rows if r.comparison == comparison]
        pooled = [r for r in of_it if r.organ == ALL_ORGANS]
        if pooled:
            out[comparison] = pooled[0]
        elif len(of_it) == 1:
            out[comparison] = of_it[0]
    return out


def fmt_p(p: float) -> str:
    """``p = 0.008``, ``p < 0.001``."""
    if not math.isfinite(p):
        return "no test"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _gap_finding(label: str, row: PairedRow) -> Finding:
    s = row.stats
    what = "Dice" if row.organ == ALL_ORGANS else f"{row.organ} Dice"
    if not math.isfinite(s.mean_diff):
        text = f"{label}: no subject scored on both {row.arm_a} and {row.arm_b}"
        return Finding(label, "gap", text, row.comparison)
    verb, size, low, high = ("loses", s.mean_diff, s.ci_low, s.ci_high) if s.mean_diff >= 0 \
        else ("gains", -s.mean_diff, -s.ci_high, -s.ci_low)
    interval = (f"95% CI {low:.2f} to {high:.2f}" if math.isfinite(low) and math.isfinite(high)
                else "no interval")
    text = (f"{label} {verb} {size:.2f} {what} from {row.arm_a} to {row.arm_b} ({interval},"
            f" {fmt_p(s.p_value)}, {s.n_pairs} subjects)")
    values = {"change": size, "ci_low": low, "ci_high": high, "p": s.p_value,
              "n_subjects": float(s.n_pairs)}
    return Finding(label, "gap", text, row.comparison, values)


def _claim_finding(label: str, arm: str, published: float,
                   measured: MeasuredInterval | None) -> Finding:
    if measured is None or not math.isfinite(measured.mean):
        text = f"{label} on {arm}: published Dice {published:.2f}; nothing measured here"
        return Finding(label, "claim", text, arm, {"published": published})
    gap = measured.mean - published
    interval = (f"95% CI {measured.low:.2f} to {measured.high:.2f}"
                if math.isfinite(measured.low) and math.isfinite(measured.high) else "no interval")
    text = (f"{label} on {arm}: published Dice {published:.2f}, measured {measured.mean:.2f}"
            f" ({interval}, {measured.n_subjects} subjects), {gap:+.2f}")
    values = {"published": published, "measured": measured.mean, "ci_low": measured.low,
              "ci_high": measured.high, "n_subjects": float(measured.n_subjects),
              "measured_minus_published": gap}
    return Finding(label, "claim", text, arm, values)


def _verdict_finding(label: str, counts: Counter[str]) -> Finding:
    total = sum(counts.values())
    passed = passing(counts)
    others = [f"{counts[o]} {o}" for o in ("failed", "xfailed", "error", "skipped") if counts[o]]
    text = f"{label}: {passed} of {total} cases pass the policy" + (
        f" ({', '.join(others)})" if others else "")
    return Finding(label, "verdicts", text, "", {"passed": float(passed), "cases": float(total)})


def findings(
    document: Mapping[str, Any],
    paired: Sequence[PairedRow],
    *,
    seed: int = 0,
    n_boot: int = 2000,
) -> list[Finding]:
    """Per model that ran, in model order: its verdict counts, its gaps (in the cohort's
    comparison order), its published claims against the measured figures (arm order)."""
    measured = measured_with_interval(document, "dice", seed=seed, n_boot=n_boot)
    order = {f"{a}~{b}": i for i, (a, b) in enumerate(document_comparisons(document))}
    arms = list(document.get("run", {}).get("cohort", {}).get("modalities", []))
    out: list[Finding] = []
    for label, model, _protocol in case_labels(document):
        out.append(_verdict_finding(label, _verdict_counts(document, label)))
        rows = _pooled_rows(paired, label)
        for comparison in sorted(rows, key=lambda c: order.get(c, len(order))):
            out.append(_gap_finding(label, rows[comparison]))
        literature = document.get("models", {}).get(model, {}).get("literature") or {}
        for arm in sorted(literature, key=lambda a: arms.index(a) if a in arms else len(arms)):
            published, _citation = published_figure(document, model, arm)
            if published is not None:
                out.append(_claim_finding(label, arm, published, measured.get((label, arm))))
    return out


#: The figures a finding may carry: ``change`` is the size of a gap (``gains`` or ``loses``
#: says its direction), ``p`` the Wilcoxon p of the subject-level differences.
FINDING_COLUMNS = ("change", "published", "measured", "ci_low", "ci_high", "p", "n_subjects",
                   "measured_minus_published", "passed", "cases")


def findings_table(items: Sequence[Finding]) -> Table:
    """The findings with their figures unrounded (findings.csv)."""
    rows = tuple((f.model, f.kind, f.key, f.text, *(f.values.get(c) for c in FINDING_COLUMNS))
                 for f in items)
    return Table("Findings", ("model", "kind", "key", "text", *FINDING_COLUMNS), rows)


def summary_line(document: Mapping[str, Any], not_run: Sequence[NotRun]) -> str:
    """What ran on what, and how many cases pass, in one sentence."""
    cohort = document.get("run", {}).get("cohort", {})
    ran = {c["model"] for c in document.get("cases", [])}
    cases = document.get("cases", [])
    passed = sum(c.get("outcome") in PASSING for c in cases)
    arms = ", ".join(cohort.get("modalities", [])) or "?"
    line = (f"{_count(len(ran), 'model')} audited on {len(cohort.get('subjects', []))} subjects"
            f" of {cohort.get('name', '?')} ({arms}): {passed} of {len(cases)} cases pass the"
            " policy.")
    if not_run:
        line += f" {_count(len(not_run), 'model')} not run here (see 'Models not run here')."
    return line


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
