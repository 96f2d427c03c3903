"""Render the audit report from one results file: Markdown, self-contained HTML, CSV, PNG.

Everything comes from the results document alone (see :mod:`umdbench.results`), so a report
can be rendered again later, on another machine, from an archived or merged file.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from umdbench.report.findings import (
    Finding,
    NotRun,
    findings,
    findings_table,
    models_not_run,
    ran_only,
    summary_line,
)
from umdbench.report.plots import Plot, all_plots
from umdbench.report.stats import PairedRow, paired_table
from umdbench.report.tables import (
    ArmCell,
    Table,
    case_table,
    fmt,
    gap_table,
    illusion_table,
    model_arm_grid,
    model_arm_table,
    paired_csv_table,
    paired_stats_table,
    prompt_agreement_table,
    prompt_centres_table,
    records_table,
    verdict_table,
)
from umdbench.results import read_results

__all__ = ["load_document", "render_report"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;padding:1em 1.5em;max-width:1400px;
color:#222;line-height:1.45}
h1{font-size:1.5em;margin:0.2em 0}h2{margin-top:1.4em;border-bottom:1px solid #ddd}
#findings ul{padding-left:1.2em}#findings li{margin:0.25em 0}
#findings li.verdicts{list-style:none;margin-left:-1.2em;font-weight:600;margin-top:0.6em}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.85em}
th,td{border:1px solid #bbb;padding:2px 6px;text-align:left;white-space:nowrap}
td:last-child{white-space:normal;min-width:12em;max-width:40em}
th{background:#eee}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.passed{background:#d4f4d4}td.failed{background:#f8d0d0}td.skipped{background:#eee}
td.error{background:#f8e0a0}td.xfailed{background:#f4e4f4}td.xpassed{background:#d4e4f8}
#model-arm td.cell{text-align:center;min-width:6em;font-variant-numeric:tabular-nums}
#model-arm td.cell small{display:block;color:#333}
#not-run td:last-child{white-space:normal;max-width:60em;font-size:0.95em}
.note{color:#555;font-size:0.85em}details{margin:0.4em 0}summary{cursor:pointer}
figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #ddd}
@media (max-width:640px){body{padding:0.5em 0.7em;font-size:15px}h1{font-size:1.25em}
#findings ul{padding-left:1em}}
"""


def load_document(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A results document from a path (validated by ``read_results``) or as given."""
    if isinstance(source, Mapping):
        if "cases" not in source or "records" not in source:
            raise ValueError("results document must have 'cases' and 'records' keys, got "
                             f"keys {sorted(source)}")
        return dict(source)
    if not isinstance(source, (str, Path)):
        raise TypeError(f"results must be a path or a results document, got {type(source)}")
    return read_results(source)


@dataclass(frozen=True)
class _Report:
    """Everything the Markdown and HTML renderings show, computed once."""

    document: dict[str, Any]  # without the models that did not run
    summary: str
    findings: list[Finding]
    not_run: list[NotRun]
    grid: tuple[list[str], list[tuple[str, list[ArmCell | None]]]]
    paired: list[PairedRow]
    details: list[tuple[str, Table]]
    plots: list[Plot]


def _details(document: Mapping[str, Any], paired: Sequence[PairedRow]) -> list[tuple[str, Table]]:
    """The evidence behind the findings, shortest first: the per-case table last."""
    out = [("verdicts", verdict_table(document)), ("illusion", illusion_table(document))]
    gaps = gap_table(document)
    if gaps is not None:
        out.append(("gaps", gaps))
    prompts = prompt_agreement_table(document)
    if prompts is not None:
        out.append(("prompts", prompts))
    metrics = list(dict.fromkeys(r.metric for r in paired))
    out += [(f"paired-{m}", paired_stats_table(paired, m)) for m in metrics]
    out.append(("cases", case_table(document)))
    return out


def _provenance(document: Mapping[str, Any]) -> dict[str, Any]:
    run = document.get("run", {})
    cohort = dict(run.get("cohort", {}))
    if isinstance(cohort.get("subjects"), list):
        cohort["subjects"] = f"{len(cohort['subjects'])} subjects"
    return {"created": document.get("created"), "umdbench": document.get("umdbench_version"),
            "cohort": cohort, "options": run.get("options", {}),
            "environment": run.get("environment", {})}


def _data_lines(document: Mapping[str, Any]) -> list[str]:
    """Where the images come from, their licence and what to cite, when the cohort says."""
    provenance = document.get("run", {}).get("cohort", {}).get("provenance", {})
    if not isinstance(provenance, Mapping):
        return []
    lines = [f"{key.capitalize()}: {provenance[key]}" for key in ("description", "labels",
             "licence", "upstream") if provenance.get(key)]
    return lines + [f"Cite: {citation}" for citation in provenance.get("citations", [])]


def _headline(document: Mapping[str, Any]) -> str:
    """One line saying what was audited, on what, where: the details are under Provenance."""
    run = document.get("run", {})
    cohort = run.get("cohort", {})
    environment = run.get("environment", {})
    return (f"Cohort {cohort.get('name', '?')} ({len(cohort.get('subjects', []))} subjects,"
            f" arms {', '.join(cohort.get('modalities', []))}); {len(document.get('cases', []))}"
            f" cases; device {environment.get('device', '?')}; created {document.get('created')};"
            f" umdbench {document.get('umdbench_version')}.")


_NOT_RUN_NOTE = ("These models have no case that ran here. Each line says why and what to put"
                 " where; name a model in --umd-models (or --umd-models all) to list its cases"
                 " as skips.")


def _not_run_table(not_run: Sequence[NotRun]) -> Table:
    return Table("Models not run here", ("model", "why, and the fix"),
                 tuple((item.model, item.reason) for item in not_run))


# -- Markdown ------------------------------------------------------------------------------
def _markdown(report: _Report, plot_dir: str) -> str:
    parts = ["# umdbench audit report", "", "## Findings", "", report.summary, ""]
    parts += [f"- {'**' + f.text + '**' if f.kind == 'verdicts' else f.text}"
              for f in report.findings] or ["- No model ran here."]
    parts += ["", f"_{_headline(report.document)}_", ""]
    parts += ["## Model x arm", "", model_arm_table(report.document).to_markdown()]
    if report.not_run:
        parts += [f"## Models not run here ({len(report.not_run)})", "", _NOT_RUN_NOTE, ""]
        parts += [f"- **{item.model}**: {item.reason}" for item in report.not_run] + [""]
    primary = [p for p in report.plots if p.primary]
    parts += ["## Figures", ""]
    parts += [f"![{p.title}]({plot_dir}/{p.name}.png) ([data]({plot_dir}/{p.name}.csv))\n"
              for p in primary]
    data = _data_lines(report.document)
    if data:
        parts += ["## Data", "", *(f"- {line}" for line in data), ""]
    parts += ["## Details", ""]
    parts += [t.to_markdown() for _, t in report.details]
    others = [p for p in report.plots if not p.primary]
    if others:
        parts += ["### More figures", ""]
        parts += [f"![{p.title}]({plot_dir}/{p.name}.png) ([data]({plot_dir}/{p.name}.csv))\n"
                  for p in others]
    parts += ["## Provenance", "", "```json",
              json.dumps(_provenance(report.document), indent=1, default=str), "```", ""]
    return "\n".join(parts)


# -- HTML ----------------------------------------------------------------------------------
def _findings_html(report: _Report) -> str:
    items = "".join(
        f"<li class='{f.kind}' data-model='{html.escape(f.model)}' data-kind='{f.kind}'"
        f" data-key='{html.escape(f.key)}'>{html.escape(f.text)}</li>"
        for f in report.findings
    ) or "<li>No model ran here.</li>"
    return (f"<section id='findings'><h2>Findings</h2><p id='summary'>"
            f"{html.escape(report.summary)}</p><ul>{items}</ul>"
            f"<p class='note'>{html.escape(_headline(report.document))}</p></section>")


def _heat(value: float) -> str:
    """Red (Dice 0) through yellow to green (Dice 1), light enough for black text."""
    hue = 120.0 * min(1.0, max(0.0, value))
    return f"background:hsl({hue:.0f},70%,80%)"


def _grid_html(report: _Report) -> str:
    arms, rows = report.grid
    head = "<th>model</th>" + "".join(f"<th>{html.escape(a)}</th>" for a in arms)
    body = []
    for label, cells in rows:
        tds = [f"<th scope='row'>{html.escape(label)}</th>"]
        for arm, cell in zip(arms, cells, strict=True):
            if cell is None:
                tds.append("<td class='cell'></td>")
                continue
            style = f" style='{_heat(cell.mean)}'" if math.isfinite(cell.mean) else ""
            tds.append(f"<td class='cell' data-model='{html.escape(label)}'"
                       f" data-arm='{html.escape(arm)}'{style}>{html.escape(fmt(cell.mean))}"
                       f"<small>{cell.passed}/{cell.cases} pass</small></td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    note = html.escape(model_arm_table(report.document).note)
    return (f"<section id='model-arm-section'><h2>Model x arm</h2><p class='note'>{note}</p>"
            f"<div class='scroll'><table id='model-arm'><thead><tr>{head}</tr></thead><tbody>"
            + "".join(body) + "</tbody></table></div></section>")


def _not_run_html(report: _Report) -> str:
    if not report.not_run:
        return ""
    table = _not_run_table(report.not_run).to_html(table_id="not-run")
    return (f"<section id='not-run-section'><h2>Models not run here ({len(report.not_run)})"
            f"</h2><p class='note'>{html.escape(_NOT_RUN_NOTE)}</p><div class='scroll'>{table}"
            "</div></section>")


def _figure_html(plot: Plot) -> str:
    png = base64.b64encode(plot.png).decode("ascii")
    data = base64.b64encode(plot.data.to_csv().encode("utf-8")).decode("ascii")
    name = html.escape(plot.name)
    return (f"<figure id='{name}'><img alt='{html.escape(plot.title)}' "
            f"src='data:image/png;base64,{png}'><figcaption>{html.escape(plot.title)} "
            f"(<a download='{name}.csv' href='data:text/csv;base64,{data}'>data, CSV</a>)"
            "</figcaption></figure>")


def _table_details(ident: str, table: Table) -> str:
    return (f"<details id='details-{html.escape(ident)}'><summary>{html.escape(table.title)}"
            f" ({len(table.rows)} rows)</summary><div class='scroll'>"
            f"{table.to_html(table_id=ident)}</div></details>")


def _html(report: _Report) -> str:
    body = ["<h1>umdbench audit report</h1>", _findings_html(report), _grid_html(report),
            _not_run_html(report)]
    primary = [p for p in report.plots if p.primary]
    if primary:
        body.append("<section id='figures'><h2>Figures</h2>"
                    + "".join(_figure_html(p) for p in primary) + "</section>")
    sources = _data_lines(report.document)
    if sources:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in sources)
        body.append(f"<section><h2>Data</h2><ul id='data'>{items}</ul></section>")
    body.append("<section id='details'><h2>Details</h2>")
    body += [_table_details(ident, t) for ident, t in report.details]
    others = [p for p in report.plots if not p.primary]
    if others:
        body.append(f"<details id='more-figures'><summary>More figures ({len(others)})</summary>"
                    + "".join(_figure_html(p) for p in others) + "</details>")
    provenance = html.escape(json.dumps(_provenance(report.document), indent=1, default=str))
    body.append("<details><summary>Provenance: cohort, options, environment</summary>"
                f"<pre id='provenance'>{provenance}</pre></details></section>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>umdbench audit report</title><style>{_CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def render_report(
    results: str | Path | Mapping[str, Any],
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_boot: int = 10_000,
) -> list[Path]:
    """Write report.md, report.html (self-contained: plots and their data embedded), CSVs,
    and each figure as PNG with its CSV beside it; return the paths written.

    ``seed`` and ``n_boot`` drive the bootstrap intervals, so a report renders identically.
    Models that did not run are one section of the report, not rows of every table; the CSVs
    of cases and records keep every case.
    """
    full = load_document(results)
    out = Path(out_dir)
    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    report = _build(full, seed, n_boot)
    written = []
    for p in report.plots:
        written += [_write(plot_dir / f"{p.name}.png", p.png),
                    _write(plot_dir / f"{p.name}.csv", p.data.to_csv())]
    written.append(_write(out / "report.md", _markdown(report, "plots")))
    written.append(_write(out / "report.html", _html(report)))
    document = report.document
    csvs = {"cases.csv": case_table(full), "records.csv": records_table(full),
            "paired.csv": paired_csv_table(report.paired), "illusion.csv": illusion_table(document),
            "verdicts.csv": verdict_table(document), "model_arm.csv": model_arm_table(document),
            "findings.csv": findings_table(report.findings),
            "not_run.csv": _not_run_table(report.not_run)}
    if prompt_agreement_table(document) is not None:
        csvs["prompts.csv"] = prompt_centres_table(document)
    written += [_write(out / name, table.to_csv()) for name, table in csvs.items()]
    return written


def _build(full: Mapping[str, Any], seed: int, n_boot: int) -> _Report:
    not_run = models_not_run(full)
    document = ran_only(full, not_run)
    paired = paired_table(document, seed=seed, n_boot=n_boot)
    return _Report(
        document=document,
        summary=summary_line(document, not_run),
        findings=findings(document, paired, seed=seed, n_boot=n_boot),
        not_run=not_run,
        grid=model_arm_grid(document),
        paired=paired,
        details=_details(document, paired),
        plots=all_plots(document, paired=paired, seed=seed, n_boot=n_boot),
    )


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path
