"""The report: tables hold the results file's figures; files are written and round-trip."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread

from umdbench.report import illusion_table, render_report, verdict_table
from umdbench.report.plots import all_plots
from umdbench.report.synthetic import synthetic_results
from umdbench.report.tables import fmt, measured_means
from umdbench.results import read_results, write_results


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return synthetic_results(seed=5)


def _write(document: dict[str, Any], path: Path) -> Path:
    return write_results(path, **{k: document[k] for k in ("run", "models", "cases", "records")})


def test_results_round_trip(document: dict[str, Any], tmp_path: Path) -> None:
    back = read_results(_write(document, tmp_path / "r.json"))
    assert back["cases"] == document["cases"]
    assert back["records"] == document["records"]
    assert back["models"] == document["models"] and back["run"] == document["run"]


def test_measured_means_are_macro_means_over_organs(document: dict[str, Any]) -> None:
    by_organ: dict[str, list[float]] = {}
    for r in document["records"]:
        if r["model"] == "unet-ct" and r["modality"] == "PET_MRI" and r["status"] == "ok":
            by_organ.setdefault(r["organ"], []).append(r["dice"])
    expected = np.mean([np.mean(v) for v in by_organ.values()])
    assert measured_means(document["records"])[("unet-ct", "PET_MRI")] == pytest.approx(expected)


def test_verdict_table_counts_case_outcomes(document: dict[str, Any]) -> None:
    rows = {(r[0], r[1]): r for r in verdict_table(document).rows}
    for label, modality in rows:
        model = label.split(" [")[0]
        outcomes = [c["outcome"] for c in document["cases"]
                    if c["model"] == model and c["modality"] == modality]
        row = rows[(label, modality)]
        columns = ("passed", "failed", "xfailed", "xpassed", "skipped", "error")
        assert row[3:] == tuple(outcomes.count(o) for o in columns)
    assert math.isnan(rows[("vista3d", "CT")][2])  # skipped everywhere: no mean


def test_xfail_outcomes_and_gap_verdicts_are_shown(tmp_path: Path) -> None:
    document = synthetic_results(seed=5)
    next(c for c in document["cases"] if c["outcome"] == "failed")["outcome"] = "xfailed"
    document["run"]["gaps"] = [{"gap_id": "unet-ct-liver-CT~PET_CT", "metric": "dice",
                                "gap": 0.4, "max_gap": 0.1, "outcome": "failed"}]
    table = verdict_table(document)
    assert "xfailed" in table.columns
    assert sum(r[table.columns.index("xfailed")] for r in table.rows) == 1
    render_report(document, tmp_path, n_boot=100)
    page = (tmp_path / "report.html").read_text()
    assert "unet-ct-liver-CT~PET_CT" in page and "Modality-gap cases" in page


def test_illusion_table_puts_literature_beside_measured(document: dict[str, Any]) -> None:
    rows = {(r[0], r[1]): r for r in illusion_table(document).rows}
    label, published = "sam-med3d-turbo [1click]", 0.79
    measured = measured_means(document["records"])[(label, "CT")]
    row = rows[(label, "CT")]
    assert row[2] is True and row[3] == published and row[4] == pytest.approx(measured)
    assert row[5] == pytest.approx(measured - published)
    assert "synthetic" in row[6]
    assert rows[(label, "PET_CT")][3] is None and math.isnan(rows[(label, "PET_CT")][5])


def test_render_report_writes_every_output(document: dict[str, Any], tmp_path: Path) -> None:
    written = render_report(_write(document, tmp_path / "r.json"), tmp_path / "out", n_boot=500)
    names = {p.name for p in written}
    assert {"report.md", "report.html", "cases.csv", "records.csv", "paired.csv",
            "illusion.csv", "verdicts.csv", "heatmap_dice.png"} <= names
    assert all(p.exists() and p.stat().st_size > 0 for p in written)
    markdown = (tmp_path / "out" / "report.md").read_text()
    for case in document["cases"]:
        if case["model"] == "vista3d":  # never ran: one line, no rows
            assert case["case_id"] not in markdown
            continue
        assert case["case_id"] in markdown
        if case["value"] is not None:
            assert fmt(case["value"]) in markdown
    assert markdown.startswith("# umdbench audit report\n\n## Findings\n")
    assert "- **vista3d**: ModelUnavailable: weights not found" in markdown
    for plot in ("illusion_dice", "forest_dice", "heatmap_dice"):
        assert f"(plots/{plot}.png) ([data](plots/{plot}.csv))" in markdown
        assert (tmp_path / "out" / "plots" / f"{plot}.csv").is_file()


def test_csv_holds_full_precision_figures(document: dict[str, Any], tmp_path: Path) -> None:
    render_report(document, tmp_path, n_boot=200)
    records = list(csv.DictReader(io.StringIO((tmp_path / "records.csv").read_text())))
    assert len(records) == len(document["records"])
    first = document["records"][0]
    assert float(records[0]["dice"]) == first["dice"] and records[0]["subject"] == first["subject"]
    cases = list(csv.DictReader(io.StringIO((tmp_path / "cases.csv").read_text())))
    assert [c["case_id"] for c in cases] == [c["case_id"] for c in document["cases"]]
    skipped = next(c for c in cases if c["outcome"] == "skipped")
    assert skipped["value"] == ""
    paired = list(csv.DictReader(io.StringIO((tmp_path / "paired.csv").read_text())))
    assert {"p_value", "p_holm", "ci_low", "ci_high", "n_pairs"} <= set(paired[0])


def test_report_is_deterministic(document: dict[str, Any], tmp_path: Path) -> None:
    render_report(document, tmp_path / "a", n_boot=300, seed=3)
    render_report(document, tmp_path / "b", n_boot=300, seed=3)
    for name in ("report.md", "paired.csv"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()


def test_plots_are_not_blank(document: dict[str, Any]) -> None:
    plots = all_plots(document)
    assert len(plots) == 3 + 3 * 4 + 3  # 3 primary, 3 models x 4 comparisons, 3 distributions
    for plot in plots:
        pixels = imread(io.BytesIO(plot.png), format="png")
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels[..., :3].std() > 0.05


def test_no_records_gives_tables_but_no_plots(tmp_path: Path) -> None:
    document = synthetic_results(models=[], skipped_model=True)
    written = render_report(document, tmp_path, n_boot=100)
    assert not [p for p in written if p.suffix == ".png"]
    assert "vista3d" in (tmp_path / "report.html").read_text()


def test_bad_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="results file not found"):
        render_report(tmp_path / "missing.json", tmp_path)
    with pytest.raises(ValueError, match="must have 'cases' and 'records'"):
        render_report({"cases": []}, tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not a results file"):
        render_report(tmp_path / "bad.json", tmp_path)
