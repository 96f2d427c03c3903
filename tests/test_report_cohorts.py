"""The report follows the cohort: its declared comparisons, its sources and citations, and
whether one subject's prompts on different arms point at the same place."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import pytest

from umdbench.report import render_report
from umdbench.report.stats import document_comparisons, paired_table
from umdbench.report.synthetic import synthetic_results
from umdbench.report.tables import prompt_agreement_table

CITATION = "Someone A et al. A dataset. doi:10.0000/example"


@pytest.fixture
def document() -> dict[str, Any]:
    """Synthetic results as a three-arm cohort with a declared design and a citation; the
    first model's records carry box prompts whose world centres are set by hand."""
    document = synthetic_results(seed=3, n_subjects=6, organs=("liver", "spleen"))
    keep = ("CT", "PET_CT", "MRI")
    document["cases"] = [c for c in document["cases"] if c["modality"] in keep]
    document["records"] = [r for r in document["records"] if r["modality"] in keep]
    cohort = document["run"]["cohort"]
    cohort["modalities"] = list(keep)
    cohort["comparisons"] = ["CT~PET_CT", "PET_CT~MRI"]
    cohort["provenance"] = {"description": "three arms of the same people",
                            "licence": "CC BY 4.0", "citations": [CITATION]}
    model = document["records"][0]["model"]
    shift = {"CT": 0.0, "PET_CT": 3.0, "MRI": 0.0}  # PET's box centre 3 mm along x
    for record in document["records"]:
        if record["model"] == model:
            extra = 4.0 if (record["subject"], record["modality"]) == ("sub-002", "PET_CT") else 0
            x = 10.0 + shift[record["modality"]] + extra
            record["prompt"] = {"protocol": "box", "box_world": [[x - 5, 0, 0], [x + 5, 2, 4]]}
    return document


def test_the_paired_table_makes_the_declared_comparisons_only(document: dict[str, Any]) -> None:
    assert document_comparisons(document) == (("CT", "PET_CT"), ("PET_CT", "MRI"))
    rows = paired_table(document, metrics=("dice",), n_boot=200)
    assert {r.comparison for r in rows} == {"CT~PET_CT", "PET_CT~MRI"}
    legacy = {**document, "run": {**document["run"], "cohort": {}}}
    assert {r.comparison for r in paired_table(legacy, metrics=("dice",), n_boot=200)} == {
        "CT~PET_CT", "CT~MRI",
    }  # the study's four, where both arms exist  # fmt: skip


def test_a_model_scored_on_one_target_gets_no_pooled_row() -> None:
    document = synthetic_results(seed=1, n_subjects=6, organs=("liver",))
    rows = paired_table(document, metrics=("dice",), n_boot=200)
    assert rows and {r.organ for r in rows} == {"liver"}
    two = synthetic_results(seed=1, n_subjects=6, organs=("liver", "spleen"))
    assert "all_organs" in {r.organ for r in paired_table(two, metrics=("dice",), n_boot=200)}


def test_prompt_spread_is_the_largest_distance_between_arms(document: dict[str, Any]) -> None:
    table = prompt_agreement_table(document)
    assert table is not None
    rows = [r for r in table.rows if r[1] == "liver"]
    assert len(rows) == 1
    _, _, subjects, median, largest, worst = rows[0]
    # PET's box is 3 mm off on every subject, and 4 mm more on sub-002
    assert subjects == 6 and math.isclose(median, 3.0) and math.isclose(largest, 7.0)
    assert worst == "sub-002"


def test_the_report_names_its_data_and_what_to_cite(
    document: dict[str, Any], tmp_path: Path
) -> None:
    render_report(document, tmp_path, n_boot=200)
    markdown = (tmp_path / "report.md").read_text()
    assert "## Data" in markdown and f"Cite: {CITATION}" in markdown
    assert "Licence: CC BY 4.0" in markdown
    html = (tmp_path / "report.html").read_text()
    assert "id='data'" in html and "doi:10.0000/example" in html
    assert "Prompts across arms" in markdown
    rows = list(csv.DictReader(io.StringIO((tmp_path / "prompts.csv").read_text())))
    assert {r["modality"] for r in rows} == {"CT", "PET_CT", "MRI"}
    assert {float(r["x_mm"]) for r in rows if r["modality"] == "PET_CT"} == {13.0, 17.0}
    assert {float(r["x_mm"]) for r in rows if r["modality"] != "PET_CT"} == {10.0}
