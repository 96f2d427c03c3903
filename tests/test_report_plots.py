"""The report's figures: each draws data, and its CSV holds exactly the figures the study reports.

Expected numbers are computed here with numpy from the records, not with the module's helpers.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread

from umdbench.report.intervals import measured_with_interval
from umdbench.report.plots import Plot, all_plots, forest_plot, heatmap_plot, illusion_plot
from umdbench.report.stats import ALL_ORGANS, PairedRow, paired_table
from umdbench.report.synthetic import synthetic_results
from umdbench.report.tables import measured_means

_N_BOOT = 200
_MODELS = ["unet-ct", "sam-med3d-turbo"]
_COMPARISONS = ("CT~PET_CT", "MRI~PET_MRI")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """Two models (one promptable), 6 subjects, an empty reference and an error, and one model
    whose cases were all skipped (no records), as a run without its weights records."""
    document = synthetic_results(seed=7, n_subjects=6, models=_MODELS, skipped_model=True)
    document["run"]["cohort"]["comparisons"] = list(_COMPARISONS)  # two of four: fewer PNGs
    return document


@pytest.fixture(scope="module")
def paired(document: dict[str, Any]) -> list[PairedRow]:
    return paired_table(document, metrics=("dice",), n_boot=_N_BOOT)


@pytest.fixture(scope="module")
def plots(document: dict[str, Any], paired: list[PairedRow]) -> list[Plot]:
    return all_plots(document, paired=paired, n_boot=_N_BOOT)


def _csv(plot: Plot) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(plot.data.to_csv())))


def _label(record: dict[str, Any]) -> str:
    return record["model"] if not record.get("protocol") else \
        f"{record['model']} [{record['protocol']}]"


def _ok(document: dict[str, Any], label: str, arm: str) -> list[dict[str, Any]]:
    return [r for r in document["records"] if _label(r) == label and r["modality"] == arm
            and r["status"] == "ok" and r.get("dice") is not None and math.isfinite(r["dice"])]


def _macro(records: list[dict[str, Any]]) -> float:
    organs = sorted({r["organ"] for r in records})
    return float(np.mean([np.mean([r["dice"] for r in records if r["organ"] == o])
                          for o in organs]))


def _record(subject: str, organ: str, dice: float | None, arm: str = "CT",
            status: str = "ok") -> dict[str, Any]:
    return {"case_id": f"m-{arm}-{organ}", "model": "m", "protocol": None, "modality": arm,
            "organ": organ, "subject": subject, "status": status, "dice": dice}


def _document(records: list[dict[str, Any]]) -> dict[str, Any]:
    cases = [{"case_id": r["case_id"], "model": r["model"], "protocol": r["protocol"],
              "modality": r["modality"], "organ": r["organ"], "outcome": "passed"}
             for r in records]
    models = {"m": {"literature": {"CT": {"dice": 0.9, "citation": "m paper"}}}}
    return {"run": {}, "models": models, "cases": cases, "records": records}


# -- the illusion figure --------------------------------------------------------------------
def test_illusion_measured_is_the_macro_mean(document: dict[str, Any], plots: list[Plot]) -> None:
    plot = plots[0]
    assert plot.name == "illusion_dice" and plot.primary
    rows = _csv(plot)
    means = measured_means(document["records"])
    assert {(r["model"], r["modality"]) for r in rows} == set(means)
    for row in rows:
        ok = _ok(document, row["model"], row["modality"])
        assert float(row["measured"]) == pytest.approx(_macro(ok), rel=1e-12)
        assert float(row["measured"]) == means[(row["model"], row["modality"])]  # to the digit
        assert int(row["n_subjects"]) == len({r["subject"] for r in ok})
        assert float(row["ci_low"]) <= float(row["measured"]) <= float(row["ci_high"])
        assert float(row["ci_low"]) < float(row["ci_high"])


def test_illusion_literature_is_the_documents(document: dict[str, Any], plots: list[Plot]) -> None:
    for row in _csv(plots[0]):
        model = row["model"].split(" [")[0]
        claim = document["models"][model]["literature"].get(row["modality"])
        if claim is None:
            assert row["literature"] == "" and row["citation"] == ""
        else:
            assert float(row["literature"]) == claim["dice"]
            assert row["citation"] == claim["citation"]
    published = [r for r in _csv(plots[0]) if r["literature"]]
    assert len(published) == 3  # unet-ct CT; sam-med3d CT and MRI


def test_illusion_intervals_are_seeded(document: dict[str, Any]) -> None:
    first = measured_with_interval(document, seed=4, n_boot=_N_BOOT)
    assert measured_with_interval(document, seed=4, n_boot=_N_BOOT) == first
    other = measured_with_interval(document, seed=5, n_boot=_N_BOOT)
    assert any(other[k].low != first[k].low for k in first)
    assert all(other[k].mean == first[k].mean for k in first)
    assert illusion_plot(document, seed=4, n_boot=_N_BOOT).data == \
        illusion_plot(document, seed=4, n_boot=_N_BOOT).data  # type: ignore[union-attr]


def test_interval_resamples_subjects_and_drops_missing_organs() -> None:
    """Against a direct loop over the same resamples: an organ only one subject has is in a
    resample's macro mean only when that subject was drawn."""
    values = {"s1": (0.9, 0.2), "s2": (0.7, None), "s3": (0.6, None), "s4": (0.8, None)}
    records = [_record(s, "liver", a) for s, (a, _b) in values.items()]
    records += [_record(s, "aorta", b) for s, (_a, b) in values.items() if b is not None]
    got = measured_with_interval(_document(records), seed=11, n_boot=500)[("m", "CT")]
    subjects = sorted(values)
    draws = np.random.default_rng(11).integers(0, len(subjects), size=(500, len(subjects)))
    macro = []
    for draw in draws:
        chosen = [subjects[i] for i in draw]
        liver = np.mean([values[s][0] for s in chosen])
        aorta = [values[s][1] for s in chosen if values[s][1] is not None]
        macro.append(np.mean([liver, np.mean(aorta)]) if aorta else liver)
    low, high = np.percentile(macro, [2.5, 97.5])
    assert got.mean == pytest.approx(np.mean([np.mean([0.9, 0.7, 0.6, 0.8]), 0.2]))
    assert (got.low, got.high) == pytest.approx((low, high), rel=1e-12)
    assert got.n_subjects == 4


def test_interval_ignores_bad_records_and_needs_two_subjects() -> None:
    records = [_record("s1", "liver", 0.8), _record("s2", "liver", None, status="error"),
               _record("s3", "liver", float("nan")), _record("s4", "liver", 0.1,
                                                             status="empty_reference")]
    got = measured_with_interval(_document(records), n_boot=50)[("m", "CT")]
    assert got.mean == 0.8 and got.n_subjects == 1
    assert math.isnan(got.low) and math.isnan(got.high)
    plot = illusion_plot(_document(records), n_boot=50)
    assert plot is not None and _csv(plot)[0]["ci_low"] == ""


def test_illusion_needs_a_measured_figure() -> None:
    assert illusion_plot(_document([_record("s1", "liver", None, status="error")])) is None
    assert illusion_plot(synthetic_results(models=[], skipped_model=True)) is None


# -- the forest plot ---------------------------------------------------------------------------
def test_forest_csv_is_the_paired_table(paired: list[PairedRow], plots: list[Plot]) -> None:
    plot = next(p for p in plots if p.name == "forest_dice")
    assert plot.primary
    rows = _csv(plot)
    expected = {(_label({"model": r.model, "protocol": r.protocol}), r.organ, r.comparison): r
                for r in paired if r.metric == "dice" and math.isfinite(r.stats.mean_diff)}
    assert len(rows) == len(expected) > 0
    for row in rows:
        r = expected[(row["model"], row["organ"], row["comparison"])]
        assert int(row["n_pairs"]) == r.stats.n_pairs
        assert float(row["mean_diff"]) == r.stats.mean_diff
        assert (float(row["ci_low"]), float(row["ci_high"])) == (r.stats.ci_low, r.stats.ci_high)
        assert float(row["wilcoxon_p"]) == r.stats.p_value and float(row["holm_p"]) == r.p_holm
    for model in {row["model"] for row in rows}:
        organs = [row["organ"] for row in rows if row["model"] == model]
        pooled = organs.index(ALL_ORGANS)  # the subject-level rows come after every organ's
        assert set(organs[pooled:]) == {ALL_ORGANS} and pooled > 0


def test_forest_leaves_out_nan_rows_and_empty_panels(paired: list[PairedRow]) -> None:
    nan_stats = replace(paired[0].stats, mean_diff=math.nan, ci_low=math.nan, ci_high=math.nan)
    only_nan = [replace(paired[0], model="ghost", stats=nan_stats)]
    assert forest_plot(only_nan) is None and forest_plot([]) is None
    assert forest_plot(paired, metric="hd95") is None  # no row holds that metric
    plot = forest_plot([*paired[:3], *only_nan])
    assert plot is not None and {row["model"] for row in _csv(plot)} != {"ghost"}
    assert len(_csv(plot)) == 3


# -- the heatmap -------------------------------------------------------------------------------
def test_heatmap_drops_models_and_organs_without_figures(document: dict[str, Any],
                                                         plots: list[Plot]) -> None:
    assert any(c["model"] == "vista3d" for c in document["cases"])  # in the cases, no records
    plot = next(p for p in plots if p.name == "heatmap_dice")
    rows = _csv(plot)
    assert "vista3d" not in {row["model"] for row in rows}
    for row in rows:
        ok = [r for r in _ok(document, row["model"], row["modality"]) if r["organ"] == row["organ"]]
        assert float(row["mean"]) == pytest.approx(np.mean([r["dice"] for r in ok]), rel=1e-12)
        assert int(row["n_subjects"]) == len(ok)
    ran = {(_label(r), r["modality"], r["organ"]) for r in document["records"]
           if r["status"] == "ok"}
    assert {(row["model"], row["modality"], row["organ"]) for row in rows} == ran


def test_heatmap_without_figures_is_none() -> None:
    assert heatmap_plot(synthetic_results(models=[], skipped_model=True)) is None
    one = _document([_record("s1", "liver", 0.5), _record("s1", "aorta", None, status="error")])
    plot = heatmap_plot(one)
    assert plot is not None and [row["organ"] for row in _csv(plot)] == ["liver"]


# -- the per-model figures and the whole set ---------------------------------------------------
def test_per_model_figures_hold_the_records(document: dict[str, Any], plots: list[Plot]) -> None:
    by_key = {(_label(r), r["modality"], r["organ"], r["subject"]): r["dice"]
              for r in document["records"] if r["status"] == "ok"}
    distribution = next(p for p in plots if p.name == "distribution_unet-ct_dice")
    rows = _csv(distribution)
    assert len(rows) == len([k for k in by_key if k[0] == "unet-ct"])
    for row in rows:
        assert float(row["value"]) == by_key[(row["model"], row["modality"], row["organ"],
                                              row["subject"])]
    pairs = next(p for p in plots if p.name == "paired_unet-ct_CT_PET_CT_dice")
    for row in _csv(pairs):
        key = (row["model"], row["arm_a"], row["organ"], row["subject"])
        assert float(row["value_a"]) == by_key[key]
        assert float(row["value_b"]) == by_key[(key[0], row["arm_b"], *key[2:])]


def test_every_plot_draws_data_and_decodes(plots: list[Plot]) -> None:
    names = [p.name for p in plots]
    assert names[:3] == ["illusion_dice", "forest_dice", "heatmap_dice"]
    assert [p.primary for p in plots] == [True] * 3 + [False] * (len(plots) - 3)
    assert len(plots) == 3 + len(_MODELS) * (len(_COMPARISONS) + 1)  # and a distribution each
    assert len(set(names)) == len(names)
    for plot in plots:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", plot.name), plot.name
        assert plot.data.rows and all(len(r) == len(plot.data.columns) for r in plot.data.rows)
        pixels = imread(io.BytesIO(plot.png), format="png")
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels[..., :3].std() > 0.05


def test_per_model_figures_come_together(plots: list[Plot]) -> None:
    models = [p.data.rows[0][0] for p in plots[3:]]
    assert models == sorted(models)  # one model's figures, then the next model's


def test_all_plots_computes_the_paired_table_itself() -> None:
    small = synthetic_results(seed=2, n_subjects=4, models=["unet-ct"], organs=("liver", "aorta"),
                              skipped_model=False)
    small["run"]["cohort"]["comparisons"] = ["CT~PET_CT"]  # few figures: the test stays fast
    got = all_plots(small, n_boot=50)
    assert [p.name for p in got] == ["illusion_dice", "forest_dice", "heatmap_dice",
                                     "paired_unet-ct_CT_PET_CT_dice", "distribution_unet-ct_dice"]
    forest = next(p for p in got if p.name == "forest_dice")
    assert forest.data == forest_plot(paired_table(small, n_boot=50)).data  # type: ignore[union-attr]
    assert all_plots(synthetic_results(models=[], skipped_model=True)) == []
