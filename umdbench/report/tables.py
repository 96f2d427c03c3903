"""The report's tables, computed from one results document and rendered as Markdown, HTML or CSV.

Measured Dice of a model on an arm is the *macro* mean: the mean over organs of each organ's mean
over subjects with status ``ok`` and a finite Dice (empty references and errors are left out and
counted in the case table). That is how the study averages, so the illusion table compares like
with like as far as a literature figure allows.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from umdbench.organs import MODALITIES
from umdbench.report.stats import PairedRow

__all__ = [
    "PASSING",
    "ArmCell",
    "Table",
    "case_labels",
    "case_table",
    "finite_number",
    "fmt",
    "gap_table",
    "illusion_table",
    "measured_means",
    "model_arm_grid",
    "model_arm_table",
    "model_label",
    "outcome_counts",
    "paired_csv_table",
    "paired_stats_table",
    "passing",
    "prompt_agreement_table",
    "prompt_box_centres",
    "prompt_centres_table",
    "published_figure",
    "records_table",
    "verdict_table",
]

#: Case outcomes as the controller records them (xfailed: a known failure of the baseline).
_OUTCOMES = ("passed", "failed", "xfailed", "xpassed", "skipped", "error")
#: The outcomes that meet the policy (xpassed: a known failure that now passes).
PASSING = ("passed", "xpassed")


def passing(counts: Mapping[str, int]) -> int:
    """How many of these outcome counts meet the policy."""
    return sum(counts.get(o, 0) for o in PASSING)


@dataclass(frozen=True)
class Table:
    """Column names and raw cell values; formatting happens at render time."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    note: str = ""

    def to_markdown(self) -> str:
        head = "| " + " | ".join(self.columns) + " |"
        rule = "|" + "|".join("---" for _ in self.columns) + "|"
        body = ["| " + " | ".join(fmt(c).replace("|", "\\|") for c in r) + " |" for r in self.rows]
        note = f"\n{self.note}\n" if self.note else ""
        return "\n".join([f"### {self.title}", note, head, rule, *body, ""])

    def to_html(self, table_id: str = "") -> str:
        ident = f' id="{html.escape(table_id)}"' if table_id else ""
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td{_css(c)}>{html.escape(fmt(c))}</td>" for c in r) + "</tr>"
            for r in self.rows
        )
        note = f"<p class='note'>{html.escape(self.note)}</p>" if self.note else ""
        return (f"<h3>{html.escape(self.title)}</h3>{note}<table{ident}><thead><tr>{head}"
                f"</tr></thead><tbody>{body}</tbody></table>")

    def to_text(self) -> str:
        """Aligned plain-text columns, for a terminal."""
        cells = [list(self.columns), *([fmt(c) for c in r] for r in self.rows)]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                 for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join([self.title, *lines])

    def to_csv(self) -> str:
        """Full precision, empty cells for missing figures: for spreadsheets and pandas."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow(_csv_cell(c) for c in row)
        return buffer.getvalue()


def _css(value: Any) -> str:
    if isinstance(value, str) and value in _OUTCOMES:
        return f' class="{value}"'
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return ' class="num"' if numeric or value is None else ""


def _csv_cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def fmt(value: Any, digits: int = 3) -> str:
    """Three decimals for figures, an em dash for missing ones."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "—"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def model_label(model: str, protocol: str | None) -> str:
    """``sam-med3d-turbo [1click]``: a promptable model's protocols are separate rows."""
    return model if not protocol else f"{model} [{protocol}]"


def finite_number(value: Any) -> bool:
    """A real, finite figure (not None, NaN, inf, or a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def measured_means(
    records: Iterable[Mapping[str, Any]], metric: str = "dice"
) -> dict[tuple[str, str], float]:
    """(model label, modality) -> macro mean of ``metric`` over organs (see module docstring)."""
    per_organ: dict[tuple[str, str, str], list[float]] = {}
    for r in records:
        if r.get("status", "ok") == "ok" and finite_number(r.get(metric)):
            key = (model_label(r["model"], r.get("protocol")), r["modality"], r["organ"])
            per_organ.setdefault(key, []).append(float(r[metric]))
    organ_means: dict[tuple[str, str], list[float]] = {}
    for (label, modality, _organ), values in per_organ.items():
        organ_means.setdefault((label, modality), []).append(sum(values) / len(values))
    return {k: sum(v) / len(v) for k, v in organ_means.items()}


def case_labels(document: Mapping[str, Any]) -> list[tuple[str, str, str | None]]:
    """(label, model, protocol) for every model/protocol with a case, in sorted order."""
    seen = {(model_label(c["model"], c.get("protocol")), c["model"], c.get("protocol"))
            for c in document.get("cases", [])}
    return sorted(seen, key=lambda t: t[0])


def _modalities(document: Mapping[str, Any]) -> list[str]:
    present = {c["modality"] for c in document.get("cases", [])}
    return [m for m in MODALITIES if m in present] + sorted(present - set(MODALITIES))


def outcome_counts(document: Mapping[str, Any]) -> dict[tuple[str, str], Counter[str]]:
    """(model label, modality) -> how many of its cases had each outcome."""
    counts: dict[tuple[str, str], Counter[str]] = {}
    for c in document.get("cases", []):
        key = (model_label(c["model"], c.get("protocol")), c["modality"])
        counts.setdefault(key, Counter())[c.get("outcome", "error")] += 1
    return counts


def published_figure(document: Mapping[str, Any], model: str, arm: str,
                     metric: str = "dice") -> tuple[float | None, str]:
    """The figure ``model`` published for ``arm`` (``models[model]["literature"][arm]``) and
    its citation; None when it published none."""
    meta = document.get("models", {}).get(model) or {}
    claim = (meta.get("literature") or {}).get(arm)
    if not isinstance(claim, Mapping):
        return None, ""
    value: Any = claim.get(metric)
    citation = str(claim.get("citation") or "")
    if not finite_number(value):
        return None, citation
    return float(value), citation


def verdict_table(document: Mapping[str, Any]) -> Table:
    """Model x modality: mean Dice and how many organ cases passed, failed, skipped, errored."""
    means = measured_means(document.get("records", []))
    counts = outcome_counts(document)
    rows = []
    for label, _model, _protocol in case_labels(document):
        for modality in _modalities(document):
            if (label, modality) in counts:
                n = counts[(label, modality)]
                mean = means.get((label, modality), math.nan)
                rows.append((label, modality, mean, *(n[o] for o in _OUTCOMES)))
    return Table("Verdicts: model x modality", ("model", "modality", "mean Dice", *_OUTCOMES),
                 tuple(rows), "Mean Dice: mean over organs of the per-organ mean over subjects.")


@dataclass(frozen=True)
class ArmCell:
    """One model on one arm: the macro-mean Dice and how many of its cases pass."""

    mean: float
    passed: int
    cases: int

    def text(self) -> str:
        return f"{fmt(self.mean)} ({self.passed}/{self.cases} pass)"


def model_arm_grid(
    document: Mapping[str, Any],
) -> tuple[list[str], list[tuple[str, list[ArmCell | None]]]]:
    """(arms, rows): per model label, one cell per arm (None where it has no case)."""
    means = measured_means(document.get("records", []))
    counts = outcome_counts(document)
    arms = _modalities(document)
    rows = []
    for label, _model, _protocol in case_labels(document):
        cells = [ArmCell(means.get((label, arm), math.nan), passing(counts[(label, arm)]),
                         sum(counts[(label, arm)].values()))
                 if (label, arm) in counts else None for arm in arms]
        rows.append((label, cells))
    return arms, rows


def model_arm_table(document: Mapping[str, Any]) -> Table:
    """The grid as a table (Markdown, CSV): mean Dice and passing cases per model and arm."""
    arms, grid = model_arm_grid(document)
    rows = tuple((label, *(c.text() if c else None for c in cells)) for label, cells in grid)
    note = ("Mean Dice over targets (each target's mean over subjects), and how many of the"
            " model's cases on that arm pass the policy.")
    return Table("Model x arm: mean Dice (cases passing)", ("model", *arms), rows, note)


def illusion_table(document: Mapping[str, Any]) -> Table:
    """Literature-reported Dice beside the Dice measured here, per model and arm."""
    means = measured_means(document.get("records", []))
    models = document.get("models", {})
    rows = []
    for label, model, _protocol in case_labels(document):
        claimed = set(models.get(model, {}).get("modalities_claimed") or ())
        for modality in _modalities(document):
            published, citation = published_figure(document, model, modality)
            measured = means.get((label, modality), math.nan)
            ok = published is not None and finite_number(measured)
            diff = measured - published if ok and published is not None else math.nan
            rows.append((label, modality, modality in claimed, published, measured, diff,
                         citation))
    columns = ("model", "modality", "claimed", "literature Dice", "measured Dice",
               "measured − literature", "citation")
    note = ("The generalization illusion: published figures beside this audit's. "
            "'claimed' = the model says it supports the arm.")
    return Table("Illusion table: literature vs measured Dice", columns, tuple(rows), note)


def case_table(document: Mapping[str, Any]) -> Table:
    """Per-case verdicts, in case-id order."""
    keys = ("case_id", "model", "modality", "organ", "protocol", "outcome", "metric", "value",
            "threshold", "n_valid", "n_empty_reference", "n_errors", "duration_s", "message")
    rows = tuple(tuple(c.get(k) for k in keys) for c in
                 sorted(document.get("cases", []), key=lambda c: c["case_id"]))
    return Table("Per-case verdicts", keys, rows)


def _box_centre_world(prompt: Any) -> tuple[float, float, float] | None:
    corners = prompt.get("box_world") if isinstance(prompt, Mapping) else None
    if not (isinstance(corners, list) and len(corners) == 2):
        return None
    (x0, y0, z0), (x1, y1, z1) = corners
    return ((x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2)


def prompt_box_centres(
    document: Mapping[str, Any],
) -> dict[tuple[str, str, str], dict[str, tuple[float, float, float]]]:
    """(model label, target, subject) -> arm -> the world centre (mm) of the box prompt given
    on that arm (each arm's box comes from that arm's own mask)."""
    centres: dict[tuple[str, str, str], dict[str, tuple[float, float, float]]] = {}
    for record in document.get("records", []):
        centre = _box_centre_world(record.get("prompt"))
        if centre is None:
            continue
        key = (model_label(record["model"], record.get("protocol")), record["organ"],
               str(record["subject"]))
        centres.setdefault(key, {})[record["modality"]] = centre
    return centres


def prompt_agreement_table(document: Mapping[str, Any]) -> Table | None:
    """Whether one subject's box prompts point at the same place in every arm: per model and
    target, the largest distance (mm) between the box centres of two arms of one subject.
    A few mm (one coarse voxel) says the arms' masks, and so the prompts, are the same
    structure; None when no record has a box prompt on two arms."""
    spreads: dict[tuple[str, str], list[tuple[float, str]]] = {}
    for (label, organ, subject), by_arm in prompt_box_centres(document).items():
        if len(by_arm) < 2:
            continue
        points = list(by_arm.values())
        spread = max(math.dist(a, b) for i, a in enumerate(points) for b in points[i + 1:])
        spreads.setdefault((label, organ), []).append((spread, subject))
    if not spreads:
        return None
    rows = []
    for (label, organ), values in sorted(spreads.items()):
        worst = max(values)
        median = statistics.median(v for v, _ in values)
        rows.append((label, organ, len(values), median, worst[0], worst[1]))
    columns = ("model", "target", "subjects", "median spread (mm)", "largest spread (mm)",
               "subject with the largest")
    note = ("Each arm is prompted from its own mask, as a user would prompt that image; the box"
            " centres are compared in world coordinates (records: prompt.box_world). The spread"
            " of one subject is the largest distance between two arms' box centres. Targets"
            " prompted in parts (lung) are not included: each part has its own box.")
    return Table("Prompts across arms: box centres in world space", columns, tuple(rows), note)


def prompt_centres_table(document: Mapping[str, Any]) -> Table:
    """Every box prompt's world centre per model, target, subject and arm (prompts.csv)."""
    rows = tuple(
        (label, organ, subject, arm, *(round(v, 2) for v in centre))
        for (label, organ, subject), by_arm in sorted(prompt_box_centres(document).items())
        for arm, centre in by_arm.items()
    )
    columns = ("model", "target", "subject", "modality", "x_mm", "y_mm", "z_mm")
    return Table("Box prompt centres (world, RAS mm)", columns, rows)


def records_table(document: Mapping[str, Any]) -> Table:
    """Every (case, subject) record with every key any record has (for CSV)."""
    records = list(document.get("records", []))
    first = ["case_id", "model", "modality", "organ", "protocol", "subject", "status"]
    others = sorted({k for r in records for k in r} - set(first))
    columns = (*first, *others)
    rows = tuple(tuple(r.get(k) for k in columns) for r in records)
    return Table("Per-subject records", columns, rows)


def paired_stats_table(rows: Sequence[PairedRow], metric: str | None = None) -> Table:
    """The paired statistics; ``metric`` keeps one metric (the report shows Dice first)."""
    keep = [r for r in rows if metric is None or r.metric == metric]
    body = tuple(
        (model_label(r.model, r.protocol), r.organ, r.comparison, r.metric, r.stats.n_pairs,
         r.stats.mean_a, r.stats.mean_b, r.stats.mean_diff, r.stats.ci_low, r.stats.ci_high,
         _fmt_p(r.stats.p_value), _fmt_p(r.p_holm), r.stats.n_nan,
         r.stats.n_only_a + r.stats.n_only_b, r.stats.note)
        for r in keep
    )
    columns = ("model", "organ", "comparison", "metric", "n pairs", "mean A", "mean B",
               "mean A−B", "95% CI low", "95% CI high", "Wilcoxon p", "Holm p", "n NaN",
               "n unpaired", "note")
    note = ("A−B > 0: arm B lower than arm A (a drop for Dice/NSD). Seeded percentile bootstrap "
            "interval; Holm across organs of one model, comparison and metric. n unpaired: "
            "subjects with an ok figure in one arm only (empty reference or error in the other).")
    title = f"Paired intra-subject comparisons ({metric or 'all metrics'})"
    return Table(title, columns, body, note)


def gap_table(document: Mapping[str, Any]) -> Table | None:
    """The plugin's modality-gap cases (``run.gaps``), every key they carry; None if none."""
    gaps = [g for g in document.get("run", {}).get("gaps", []) if isinstance(g, Mapping)]
    if not gaps:
        return None
    columns = tuple(dict.fromkeys(k for g in gaps for k in g))
    rows = tuple(tuple(g.get(k) for k in columns) for g in gaps)
    return Table("Modality-gap cases (policy verdicts)", columns, rows)


def paired_csv_table(rows: Sequence[PairedRow]) -> Table:
    """The paired statistics at full precision, for CSV."""
    dicts = [r.as_dict() for r in rows]
    columns = tuple(dicts[0]) if dicts else ("model", "organ", "comparison", "metric")
    return Table("paired", columns, tuple(tuple(d.get(k) for k in columns) for d in dicts))
