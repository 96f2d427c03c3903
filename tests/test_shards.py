"""Subject shards: the plan covers every (model, subject) once, balanced, every machine alike;
``--umd-shard auto`` reads the scheduler; merged shards equal the unsharded run (cases rescored
and gaps recomputed over the pooled subjects), overlaps are refused and gaps reported."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from umdbench.cli import main
from umdbench.merging import merge_shards
from umdbench.report.stats import paired_comparison, subject_values
from umdbench.report.synthetic import synthetic_results
from umdbench.results import read_results, write_results
from umdbench.session import UmdOptions, UmdSession
from umdbench.shards import (
    ShardPlan,
    costs_from_results,
    expected_costs,
    parse_shard,
    plan_shards,
    prediction_counts,
    resolve_shard,
)

# -- K/N and auto ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [("1/1", (1, 1)), ("2/3", (2, 3)),
                                                (" 3/3 ", (3, 3))])
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected
    assert resolve_shard(text, {}) == (*expected, "option")


@pytest.mark.parametrize(("text", "message"), [
    ("0/3", "between 1 and N"), ("4/3", "between 1 and N"), ("1/0", "at least 1"),
    ("2", "K/N with integers"), ("a/b", "K/N with integers"), ("1/2/3", "K/N with integers"),
])
def test_parse_shard_errors_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_shard(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(("environ", "expected"), [
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1",
      "SLURM_ARRAY_TASK_MAX": "3"}, (2, 3)),
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "7"},
     (1, 8)),
    ({"SLURM_ARRAY_TASK_ID": "14", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_MAX": "16",
      "SLURM_ARRAY_TASK_STEP": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, (3, 4)),
    ({"JOB_COMPLETION_INDEX": "0", "UMD_SHARD_COUNT": "4"}, (1, 4)),
    ({"CI_NODE_INDEX": "3", "CI_NODE_TOTAL": "5"}, (3, 5)),
])
def test_auto_reads_the_scheduler(environ: dict[str, str], expected: tuple[int, int]) -> None:
    k, n, source = resolve_shard("auto", environ)
    assert (k, n) == expected
    assert source.split("=")[0] in environ


def test_auto_with_a_count_for_an_indexed_job() -> None:
    assert resolve_shard("auto/6", {"JOB_COMPLETION_INDEX": "5"})[:2] == (6, 6)


@pytest.mark.parametrize(("environ", "message"), [
    ({}, "found no scheduler index; it reads SLURM_ARRAY_TASK_ID"),
    ({"SLURM_ARRAY_TASK_ID": "1"}, "is this a SLURM job array"),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "5",
      "SLURM_ARRAY_TASK_COUNT": "3"}, "must be one range"),
    ({"JOB_COMPLETION_INDEX": "1"}, "give --umd-shard auto/N or set \\$UMD_SHARD_COUNT"),
    ({"JOB_COMPLETION_INDEX": "4", "UMD_SHARD_COUNT": "4"}, "between 1 and N"),
    ({"CI_NODE_INDEX": "x", "CI_NODE_TOTAL": "2"}, "CI_NODE_INDEX must be an integer"),
])
def test_auto_errors_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_shard("auto", environ)


# -- the plan ----------------------------------------------------------------------------

work_items = st.dictionaries(
    st.sampled_from(["unet-ct", "segvol", "sam-med3d", "vista3d", "deepbet"]),
    st.dictionaries(st.text("abcdef0123", min_size=1, max_size=4),
                    st.floats(0.0, 100.0, allow_nan=False), min_size=1, max_size=12),
    min_size=1, max_size=5,
)


@settings(max_examples=150, deadline=None)
@given(work_items, st.integers(1, 9))
def test_plan_covers_every_unit_once_in_balanced_contiguous_blocks(
    work: dict[str, dict[str, float]], n: int
) -> None:
    plan = plan_shards(work, n, "test")
    units = [(u.model, s) for u in plan.units for s in u.subjects]
    assert sorted(units) == sorted((m, s) for m in work for s in work[m])
    assert len(units) == len(set(units))
    shards = [u.shard for u in plan.units]
    assert shards == sorted(shards)  # contiguous stretches, shard by shard
    total, biggest = math.fsum(c for m in work.values() for c in m.values()), max(
        c for m in work.values() for c in m.values())
    for k in range(1, n + 1):
        assert plan.load(k) <= total / n + biggest + 1e-9
        if len(units) >= n:
            assert any(u.shard == k for u in plan.units)
    assert len(plan.units) <= len(work) + n - 1  # each cut splits at most one model


def test_plan_splits_one_big_model_and_keeps_small_ones_whole() -> None:
    work = {"big": {f"s{i:02d}": 10.0 for i in range(12)}, "small": {"s00": 1.0, "s01": 1.0}}
    plan = plan_shards(work, 3, "test")
    assert [plan.load(k) for k in (1, 2, 3)] == [40.0, 40.0, 42.0]
    assert plan.subjects_of(3)["small"] == {"s00", "s01"}
    assert plan.describe(1) == "shard 1/3: big on 4 subjects (s00 .. s03)"
    assert ShardPlan(3, plan.units, "test").as_dict() == plan.as_dict()


def test_plan_with_more_shards_than_units_leaves_some_empty() -> None:
    plan = plan_shards({"m": {"a": 1.0, "b": 1.0}}, 4, "test")
    assert sum(bool(plan.subjects_of(k)) for k in range(1, 5)) == 2
    assert plan.describe(4).endswith("nothing") or plan.describe(1).endswith("nothing")


def test_costs_count_predictions_and_read_an_earlier_run() -> None:
    class Scan:
        def __init__(self, subject: str, key: str) -> None:
            self.subject, self.key = subject, key

    class Case:
        def __init__(self, model: str, organ: str, protocol: str | None) -> None:
            self.model, self.organ, self.protocol = model, organ, protocol

    scans = [Scan("a", "a-CT"), Scan("a", "a-PET"), Scan("b", "b-CT")]
    cases = [Case("auto", o, None) for o in ("liver", "spleen")]
    cases += [Case("prompted", o, p) for o in ("liver", "spleen") for p in ("1click", "box")]
    counts = prediction_counts(cases, lambda case: scans, {"auto": True, "prompted": False})
    assert counts == {"auto": {"a": 2.0, "b": 1.0}, "prompted": {"a": 8.0, "b": 4.0}}
    earlier = costs_from_results({"records": [
        {"model": "auto", "subject": "a", "inference_seconds": 3.0},
        {"model": "auto", "subject": "a", "inference_seconds": 9.0, "prediction_reused": True},
        {"model": "auto", "subject": "a", "inference_seconds": 1.0},
        {"model": "auto", "subject": "b", "inference_seconds": None},
    ]})
    assert earlier == {"auto": {"a": 4.0}}
    costs = expected_costs(counts, earlier)
    assert costs["auto"] == {"a": 4.0, "b": 2.0}  # b: the model's 2 s per prediction
    assert costs["prompted"] == {"a": 16.0, "b": 8.0}  # unknown model: the median rate


def test_the_session_plans_before_probing_and_runs_only_its_subjects(tmp_path: Path) -> None:
    def session(k: int) -> UmdSession:
        options = UmdOptions(device="cpu", models=["unet-ct", "classical-otsu"], subjects=3,
                             organs=["liver"], shard=(k, 2), cache=tmp_path)
        return UmdSession(options, is_controller=True)

    plans = [session(k).shard_plan() for k in (1, 2)]
    assert plans[0] == plans[1]
    covered = [(m, s) for k in (1, 2) for m, subjects in plans[0].subjects_of(k).items()
               for s in subjects]
    assert sorted(covered) == sorted((m, f"s0-00{i}") for m in ("classical-otsu", "unet-ct")
                                     for i in range(3))
    info = session(2).shard_info()
    assert info is not None and (info["index"], info["count"], info["source"]) == (2, 2, "")
    assert info["plan"] == plans[0].as_dict()


# -- merging -------------------------------------------------------------------------------


def _shards_of(single: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """What the N shards of ``single``'s audit write: each its subjects' records, an entry
    for every case of its models with figures over those subjects only (here: garbage, which
    the merge must not use), and the plan."""
    work: dict[str, dict[str, float]] = {}
    for record in single["records"]:
        work.setdefault(record["model"], {})[record["subject"]] = 1.0
    plan = plan_shards(work, n, "test")
    shards = []
    for k in range(1, n + 1):
        mine = plan.subjects_of(k)
        shard = copy.deepcopy(single)
        shard["records"] = [r for r in single["records"] if r["subject"] in mine.get(r["model"], ())]
        shard["cases"] = [dict(c, value=-1.0, n_valid=-1, message="partial")
                          for c in single["cases"] if c["model"] in mine]
        shard["models"] = {m: v for m, v in single["models"].items() if m in mine}
        shard["run"]["shard"] = {"index": k, "count": n, "source": "test", "plan": plan.as_dict()}
        shard["run"]["gaps"] = [dict(g, mean_diff=99.0) for g in single["run"].get("gaps", [])
                                if g["model"] in mine]
        shards.append(shard)
    return shards


def _single() -> dict[str, Any]:
    """A results document whose cases agree with their records, with paired gaps."""
    document = synthetic_results(seed=4)
    document["records"] = [r for r in document["records"] if r["status"] == "ok"]
    scored = {r["case_id"] for r in document["records"]}
    document["cases"] = [c for c in document["cases"] if c["case_id"] in scored]
    ran = {r["model"] for r in document["records"]}
    document["models"] = {m: v for m, v in document["models"].items() if m in ran}
    for case in document["cases"]:
        values = [r["dice"] for r in document["records"] if r["case_id"] == case["case_id"]]
        case["value"] = math.fsum(values) / len(values)
        case["n_valid"], case["n_empty_reference"], case["n_errors"] = len(values), 0, 0
        case["outcome"] = "passed" if case["value"] >= case["threshold"] else "failed"
    gaps = []
    for model, protocol in sorted({(r["model"], r["protocol"]) for r in document["records"]
                                   if r["organ"] == "liver"}, key=str):
        a, b = (next(iter(subject_values(
            [r for r in document["records"] if (r["model"], r["protocol"], r["organ"],
                                                r["modality"]) == (model, protocol, "liver", arm)],
            "dice").values())) for arm in ("CT", "PET_CT"))
        stats = paired_comparison(a, b, seed=0)
        suffix = f"-{protocol}" if protocol else ""
        gaps.append({"gap_id": f"{model}-liver-CT~PET_CT{suffix}", "model": model,
                     "organ": "liver", "comparison": "CT~PET_CT", "protocol": protocol,
                     "metric": "dice", "max_gap": 0.1, "rule": "test", **stats.as_dict(),
                     "outcome": "passed" if abs(stats.mean_diff) <= 0.1 else "failed"})
    document["run"]["gaps"] = gaps
    document["run"]["options"] = {"seed": 0}
    return document


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_merged_shards_equal_the_single_run(n: int, tmp_path: Path) -> None:
    single = _single()
    paths = [write_results(tmp_path / f"shard{k}.json", run=s["run"], models=s["models"],
                           cases=s["cases"], records=s["records"])
             for k, s in enumerate(_shards_of(single, n), start=1)]
    assert main(["merge", *map(str, paths), "-o", str(tmp_path / "merged.json")]) == 0
    merged = read_results(tmp_path / "merged.json")
    expected = read_results(write_results(tmp_path / "single.json", run=single["run"],
                                          models=single["models"], cases=single["cases"],
                                          records=single["records"]))
    assert merged["records"] == expected["records"]
    assert merged["models"] == expected["models"]
    for got, want in zip(merged["cases"], expected["cases"], strict=True):
        for key in ("case_id", "value", "n_valid", "outcome"):
            assert got[key] == want[key], (got["case_id"], key)
    assert merged["run"]["gaps"] == expected["run"]["gaps"]
    assert merged["complete"] and merged["run"]["missing_shards"] == []
    assert [s["shard"] for s in merged["run"]["shards"]] == list(range(1, n + 1))


def test_merge_reports_a_missing_shard_and_marks_the_file_incomplete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shards = _shards_of(_single(), 4)  # shard 2 holds part of two models' subjects
    paths = [write_results(tmp_path / f"shard{k}.json", run=s["run"], models=s["models"],
                           cases=s["cases"], records=s["records"])
             for k, s in ((1, shards[0]), (3, shards[2]), (4, shards[3]))]
    assert main(["merge", *map(str, paths), "-o", str(tmp_path / "merged.json")]) == 1
    err = capsys.readouterr().err
    assert "missing shard 2/4:" in err and "--umd-shard 2/4" in err
    merged = read_results(tmp_path / "merged.json")
    assert merged["complete"] is False
    assert [m["shard"] for m in merged["run"]["missing_shards"]] == [2]
    lacking = {u["model"] for u in merged["run"]["missing_shards"][0]["units"]}
    partial = [c for c in merged["cases"] if c["model"] in lacking]
    assert partial and all(c["outcome"] == "error" for c in partial)  # no verdict on a part
    assert "shard 2/4 is missing" in partial[0]["message"]
    assert {c["case_id"] for c in partial} <= set(merged["missing_cases"])


def test_shards_on_machines_with_other_cache_folders_still_merge() -> None:
    shards = _shards_of(_single(), 2)
    for shard, where in zip(shards, ("/root/.cache/umdbench", "/scratch/job-17"), strict=True):
        shard["run"]["cohort"]["provenance"] = {"seed": 0, "cache_folder": f"{where}/cohort",
                                                "source": f"{where}/dataset"}
    assert merge_shards(shards, ["a", "b"])["complete"]
    shards[1]["run"]["cohort"]["provenance"]["seed"] = 1
    with pytest.raises(ValueError, match=r"different run\.cohort"):
        merge_shards(shards, ["a", "b"])


def test_merge_refuses_overlaps_other_plans_and_foreign_cohorts() -> None:
    shards = _shards_of(_single(), 2)
    with pytest.raises(ValueError, match=r"shard 1/2 is in both a\.json and b\.json"):
        merge_shards([shards[0], shards[0]], ["a.json", "b.json"])
    overlapping = copy.deepcopy(shards[1])
    overlapping["records"].append(shards[0]["records"][0])
    with pytest.raises(ValueError, match=r"is in both a\.json and b\.json: shards overlap"):
        merge_shards([shards[0], overlapping], ["a.json", "b.json"])
    other = _shards_of(_single(), 3)[1]
    with pytest.raises(ValueError, match=r"b\.json was planned differently from a\.json"):
        merge_shards([shards[0], other], ["a.json", "b.json"])
    unsharded = copy.deepcopy(shards[1])
    del unsharded["run"]["shard"]
    with pytest.raises(ValueError, match=r"b\.json ran without --umd-shard"):
        merge_shards([shards[0], unsharded], ["a.json", "b.json"])
    foreign = copy.deepcopy(shards[1])
    foreign["run"]["cohort"]["name"] = "another"
    with pytest.raises(ValueError, match=r"b\.json has a different run\.cohort than a\.json"):
        merge_shards([shards[0], foreign], ["a.json", "b.json"])
    with pytest.raises(ValueError, match="at least one"):
        merge_shards([])


def test_a_case_skipped_on_one_shard_but_run_on_another_is_an_error() -> None:
    shards = _shards_of(_single(), 2)
    case_id = next(c["case_id"] for c in shards[1]["cases"]
                   if any(r["case_id"] == c["case_id"] for r in shards[0]["records"]))
    for case in shards[1]["cases"]:
        if case["case_id"] == case_id:
            case.update(outcome="skipped", message="Skipped: unet-ct: needs CUDA")
    shards[1]["records"] = [r for r in shards[1]["records"] if r["case_id"] != case_id]
    merged = merge_shards(shards, ["a", "b"])
    case = next(c for c in merged["cases"] if c["case_id"] == case_id)
    assert case["outcome"] == "error"
    assert "skipped on one shard (Skipped: unet-ct: needs CUDA)" in case["message"]


def test_whole_runs_without_a_plan_still_join_by_case() -> None:
    document = synthetic_results(seed=1)
    a = dict(document, cases=[c for c in document["cases"] if c["model"] == "unet-ct"],
             records=[r for r in document["records"] if r["model"] == "unet-ct"])
    b = dict(document, cases=[c for c in document["cases"] if c["model"] != "unet-ct"],
             records=[r for r in document["records"] if r["model"] != "unet-ct"])
    merged = merge_shards([a, b], ["a", "b"])
    assert [c["case_id"] for c in merged["cases"]] == sorted(c["case_id"] for c in document["cases"])
    with pytest.raises(ValueError, match="appears in two results files"):
        merge_shards([a, dict(a, records=[])], ["a", "b"])
