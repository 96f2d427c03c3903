"""Paired statistics against hand-worked cases, scipy, and properties."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from umdbench.report.stats import ALL_ORGANS, holm_adjust, paired_comparison, paired_table
from umdbench.report.synthetic import synthetic_results


def _arms(a: list[float], b: list[float]) -> tuple[dict[str, float], dict[str, float]]:
    return ({f"s{i}": v for i, v in enumerate(a)}, {f"s{i}": v for i, v in enumerate(b)})


def test_hand_worked_all_drops() -> None:
    # differences 0.1..0.5, all positive: exact two-sided Wilcoxon p = 2 / 2**5 = 0.0625
    a, b = _arms([0.9, 0.8, 0.7, 0.6, 0.5], [0.8, 0.6, 0.4, 0.2, 0.0])
    s = paired_comparison(a, b, seed=1)
    assert s.n_pairs == 5
    assert s.mean_a == pytest.approx(0.7)
    assert s.mean_b == pytest.approx(0.4)
    assert s.mean_diff == pytest.approx(0.3)
    assert s.median_diff == pytest.approx(0.3)
    assert s.p_value == pytest.approx(0.0625)
    assert 0.1 <= s.ci_low < 0.3 < s.ci_high <= 0.5


def test_hand_worked_one_negative_difference() -> None:
    # differences +1,+2,+3,-4 (ranks 1..4): T = min(W+, W-) = 4. Of the 16 sign patterns,
    # rank sums <= 4 come from {}, {1}, {2}, {3}, {4}, {1,2}, {1,3}: p = 2 * 7/16 = 0.875
    a, b = _arms([1.0, 2.0, 3.0, 0.0], [0.0, 0.0, 0.0, 4.0])
    assert paired_comparison(a, b).p_value == pytest.approx(0.875)


def test_pairs_only_subjects_in_both_arms_and_counts_the_rest() -> None:
    a = {"s1": 0.9, "s2": 0.8, "s3": float("nan"), "s4": 0.7, "only_a": 0.5}
    b = {"s1": 0.5, "s2": 0.4, "s3": 0.3, "s4": None, "only_b1": 0.1, "only_b2": 0.2}
    s = paired_comparison(a, b)
    assert (s.n_pairs, s.n_nan, s.n_only_a, s.n_only_b) == (2, 2, 1, 2)
    assert s.mean_diff == pytest.approx(0.4)


def test_fewer_than_two_pairs() -> None:
    s = paired_comparison({"s1": 0.9}, {"s1": 0.5})
    assert s.n_pairs == 1 and s.mean_diff == pytest.approx(0.4)
    assert math.isnan(s.p_value) and math.isnan(s.ci_low) and "fewer than 2" in s.note
    empty = paired_comparison({"s1": 0.9}, {"s2": 0.5})
    assert empty.n_pairs == 0 and math.isnan(empty.mean_diff) and empty.note == "no pairs"


def test_all_differences_zero_gives_p_one_without_warnings() -> None:
    a, b = _arms([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = paired_comparison(a, b)
    assert s.p_value == 1.0 and s.ci_low == s.ci_high == 0.0
    assert s.n_zero_diff == 3 and "all differences zero" in s.note


def test_some_zero_differences_are_dropped_like_scipy() -> None:
    a, b = _arms([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [0.8, 0.8, 0.5, 0.1, 0.6, 0.0])
    s = paired_comparison(a, b)
    diffs = np.array([0.1, 0.0, 0.2, 0.5, -0.1, 0.4])
    assert s.p_value == pytest.approx(sps.wilcoxon(diffs, zero_method="wilcox").pvalue)
    assert s.n_zero_diff == 1 and "1 zero difference" in s.note


def test_non_numbers_are_refused_with_the_value() -> None:
    with pytest.raises(TypeError, match="paired values must be numbers or None, got 'x'"):
        paired_comparison({"s1": "x"}, {"s1": 0.1})
    with pytest.raises(ValueError, match="n_boot must be a positive integer"):
        paired_comparison({"s1": 0.2}, {"s1": 0.1}, n_boot=0)


def test_bootstrap_is_reproducible_by_seed() -> None:
    rng = np.random.default_rng(3)
    a, b = _arms(list(rng.uniform(0.6, 0.9, 12)), list(rng.uniform(0.3, 0.8, 12)))
    first, again = paired_comparison(a, b, seed=7), paired_comparison(a, b, seed=7)
    other = paired_comparison(a, b, seed=8)
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)


def test_bootstrap_interval_agrees_with_scipy_bootstrap() -> None:
    rng = np.random.default_rng(11)
    diffs = rng.normal(0.15, 0.1, 30)
    a, b = _arms(list(diffs + 0.5), [0.5] * 30)
    ours = paired_comparison(a, b, seed=0, n_boot=20_000)
    ref = sps.bootstrap(
        (diffs,),
        np.mean,
        n_resamples=20_000,
        method="percentile",
        confidence_level=0.95,
        rng=np.random.default_rng(1),
    )
    assert ours.ci_low == pytest.approx(ref.confidence_interval.low, abs=0.006)
    assert ours.ci_high == pytest.approx(ref.confidence_interval.high, abs=0.006)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=2, max_size=25))
def test_p_value_matches_scipy_and_interval_holds_the_mean(
    pairs: list[tuple[float, float]],
) -> None:
    a, b = _arms([p[0] for p in pairs], [p[1] for p in pairs])
    s = paired_comparison(a, b, n_boot=500)
    diffs = np.array([x - y for x, y in pairs])
    assert s.mean_diff == pytest.approx(float(diffs.mean()), abs=1e-12)
    if np.all(diffs == 0):
        assert s.p_value == 1.0
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = sps.wilcoxon(diffs, zero_method="wilcox").pvalue
    assert s.p_value == pytest.approx(expected, nan_ok=True)
    assert diffs.min() - 1e-12 <= s.ci_low <= s.ci_high <= diffs.max() + 1e-12


def test_holm_hand_worked() -> None:
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1 -> max(0.06, 0.04) = 0.06
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm_adjust([0.01, float("nan"), 0.02])  # NaN neither adjusted nor counted
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(0.02)
    assert holm_adjust([0.6, 0.7]) == [1.0, 1.0]


@given(st.lists(st.floats(0, 1), min_size=1, max_size=20))
def test_holm_properties(p: list[float]) -> None:
    adjusted = holm_adjust(p)
    assert all(raw <= adj <= 1.0 for raw, adj in zip(p, adjusted, strict=True))
    for i in range(len(p)):
        for j in range(len(p)):
            if p[i] < p[j]:
                assert adjusted[i] <= adjusted[j]
    assert min(adjusted) == pytest.approx(min(1.0, min(p) * len(p)))


def test_paired_table_from_a_results_document() -> None:
    document = synthetic_results(seed=0)
    rows = paired_table(document, n_boot=1000)
    unet = {
        r.organ: r
        for r in rows
        if r.model == "unet-ct" and r.comparison == "CT~PET_CT" and r.metric == "dice"
    }
    assert set(unet) == {"liver", "spleen", "kidney_left", "aorta", ALL_ORGANS}
    assert unet.pop(ALL_ORGANS).stats.p_value < 0.05  # one test per model: significant with 8
    for row in unet.values():  # the built-in CT -> PET gap is large and consistent
        assert row.stats.n_pairs == 8 and row.stats.mean_diff > 0.2 and row.p_holm < 0.05
    family = [unet[o].stats.p_value for o in sorted(unet)]
    assert [unet[o].p_holm for o in sorted(unet)] == pytest.approx(holm_adjust(family))
    assert {r.metric for r in rows} == {"dice", "nsd_2mm", "nsd_1mm", "hd95"}
    assert {r.comparison for r in rows} == {"CT~PET_CT", "MRI~PET_MRI", "CT~MRI", "PET_CT~PET_MRI"}
    assert not any(r.model == "vista3d" for r in rows)  # skipped model: no records, no rows


def test_paired_table_pairs_by_subject_and_skips_bad_records() -> None:
    document = synthetic_results(seed=0)
    aorta = [
        r
        for r in paired_table(document, metrics=("dice",), n_boot=200)
        if r.model == "unet-ct" and r.organ == "aorta" and r.comparison == "MRI~PET_MRI"
    ]
    # synthetic PET_MRI aorta has one empty reference and one error: 6 pairs, 2 unpaired
    assert aorta[0].stats.n_pairs == 6 and aorta[0].stats.n_only_a == 2


def test_paired_table_tolerates_missing_metric_keys() -> None:
    document = synthetic_results(seed=0, models=["unet-ct"], skipped_model=False)
    for record in document["records"]:
        for key in ("nsd_2mm", "nsd_1mm", "hd95"):
            record.pop(key)
    rows = paired_table(document, n_boot=200)
    assert rows and {r.metric for r in rows} == {"dice"}


def test_all_organs_row_pairs_each_subjects_mean_over_organs() -> None:
    def record(subject: str, organ: str, arm: str, dice: float | None, status: str = "ok") -> dict:
        return {
            "model": "m",
            "protocol": None,
            "organ": organ,
            "modality": arm,
            "subject": subject,
            "status": status,
            "dice": dice,
        }

    records = [
        record("s1", "liver", "CT", 0.9),
        record("s1", "liver", "PET_CT", 0.5),
        record("s1", "lung", "CT", 0.7),
        record("s1", "lung", "PET_CT", 0.3),
        record("s2", "liver", "CT", 0.8),
        record("s2", "liver", "PET_CT", 0.6),
        record("s2", "lung", "CT", 0.6),
        record("s2", "lung", "PET_CT", None, status="error"),
        record("s3", "liver", "CT", 1.0),
        record("s3", "liver", "PET_CT", 0.2),
    ]
    rows = paired_table(
        {"records": records}, metrics=("dice",), comparisons=(("CT", "PET_CT"),), n_boot=200
    )
    (pooled,) = [r for r in rows if r.organ == ALL_ORGANS]
    # s1: mean(0.9, 0.7) - mean(0.5, 0.3) = 0.4; s2: only liver is on both arms: 0.2; s3: 0.8
    assert pooled.stats.n_pairs == 3
    assert pooled.stats.mean_diff == pytest.approx((0.4 + 0.2 + 0.8) / 3)
    assert pooled.p_holm == pooled.stats.p_value  # its own family: not adjusted with the organs
    organ_rows = [r for r in rows if r.organ != ALL_ORGANS]
    assert {r.organ for r in organ_rows} == {"liver", "lung"}
