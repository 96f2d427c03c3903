"""Render the audit report from one results file: Markdown, self-contained HTML, CSV, PNG.

Everything comes from the results document alone (see :mod:`umdbench.results`), so a report
can be rendered again later, on another machine, from an archived or merged file.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from umdbench.report.plots import Plot, all_plots
from umdbench.report.stats import PairedRow, paired_table
from umdbench.report.tables import (
    Table,
    case_table,
    gap_table,
    illusion_table,
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
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.85em}
th,td{border:1px solid #bbb;padding:2px 6px;text-align:left;white-space:nowrap}
td:last-child{white-space:normal;min-width:12em;max-width:40em}
th{background:#eee}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.passed{background:#d4f4d4}td.failed{background:#f8d0d0}td.skipped{background:#eee}
td.error{background:#f8e0a0}td.xfailed{background:#f4e4f4}td.xpassed{background:#d4e4f8}.note{color:#555;font-size:0.85em}
figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}
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


def _tables(document: Mapping[str, Any], paired: Sequence[PairedRow]) -> list[tuple[str, Table]]:
    out = [("verdicts", verdict_table(document)), ("illusion", illusion_table(document))]
    metrics = list(dict.fromkeys(r.metric for r in paired))
    out += [(f"paired-{m}", paired_stats_table(paired, m)) for m in metrics]
    gaps = gap_table(document)
    if gaps is not None:
        out.append(("gaps", gaps))
    prompts = prompt_agreement_table(document)
    if prompts is not None:
        out.append(("prompts", prompts))
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


def _markdown(document: Mapping[str, Any], tables: list[tuple[str, Table]], plots: list[Plot],
              plot_dir: str) -> str:
    parts = ["# umdbench audit report", "", _headline(document), ""]
    data = _data_lines(document)
    if data:
        parts += ["## Data", "", *(f"- {line}" for line in data), ""]
    parts += [t.to_markdown() for _, t in tables]
    parts += ["## Figures", ""]
    parts += [f"![{p.title}]({plot_dir}/{p.name}.png)\n" for p in plots]
    parts += ["## Provenance", "", "```json",
              json.dumps(_provenance(document), indent=1, default=str), "```", ""]
    return "\n".join(parts)


def _headline(document: Mapping[str, Any]) -> str:
    """One line saying what was audited, on what, where: the details are under Provenance."""
    run = document.get("run", {})
    cohort = run.get("cohort", {})
    environment = run.get("environment", {})
    return (f"Cohort {cohort.get('name', '?')} ({len(cohort.get('subjects', []))} subjects,"
            f" arms {', '.join(cohort.get('modalities', []))}); {len(document.get('cases', []))}"
            f" cases; device {environment.get('device', '?')}; created {document.get('created')};"
            f" umdbench {document.get('umdbench_version')}.")


def _html(document: Mapping[str, Any], tables: list[tuple[str, Table]], plots: list[Plot]) -> str:
    provenance = html.escape(json.dumps(_provenance(document), indent=1, default=str))
    body = [f"<h1>umdbench audit report</h1><p>{html.escape(_headline(document))}</p>"]
    sources = _data_lines(document)
    if sources:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in sources)
        body.append(f"<h2>Data</h2><ul id='data'>{items}</ul>")
    body += [t.to_html(table_id=ident) for ident, t in tables]
    body.append("<h2>Figures</h2>")
    for p in plots:
        data = base64.b64encode(p.png).decode("ascii")
        body.append(f"<figure id='{html.escape(p.name)}'><img alt='{html.escape(p.title)}' "
                    f"src='data:image/png;base64,{data}'><figcaption>{html.escape(p.title)}"
                    "</figcaption></figure>")
    body.append("<details><summary>Provenance: cohort, options, environment</summary>"
                f"<pre id='provenance'>{provenance}</pre></details>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>umdbench audit report</title><style>{_CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def render_report(
    results: str | Path | Mapping[str, Any],
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_boot: int = 10_000,
) -> list[Path]:
    """Write report.md, report.html (plots embedded), CSVs and PNGs; return the paths written.

    ``seed`` and ``n_boot`` drive the bootstrap intervals, so a report renders identically.
    """
    document = load_document(results)
    out = Path(out_dir)
    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    paired = paired_table(document, seed=seed, n_boot=n_boot)
    tables = _tables(document, paired)
    plots = all_plots(document)
    written = [_write(plot_dir / f"{p.name}.png", p.png) for p in plots]
    written.append(_write(out / "report.md", _markdown(document, tables, plots, "plots")))
    written.append(_write(out / "report.html", _html(document, tables, plots)))
    csvs = {"cases.csv": case_table(document), "records.csv": records_table(document),
            "paired.csv": paired_csv_table(paired), "illusion.csv": illusion_table(document),
            "verdicts.csv": verdict_table(document)}
    if prompt_agreement_table(document) is not None:
        csvs["prompts.csv"] = prompt_centres_table(document)
    written += [_write(out / name, table.to_csv()) for name, table in csvs.items()]
    return written


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path
