"""Shards split whole models deterministically; merged shard results equal a single run's."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from umdbench.cli import main
from umdbench.report.synthetic import synthetic_results
from umdbench.results import read_results, write_results
from umdbench.shards import merge_shards, parse_shard, select_shard, shard_of_document


@pytest.mark.parametrize(("text", "expected"), [("1/1", (1, 1)), ("2/3", (2, 3)),
                                                (" 3/3 ", (3, 3))])
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("0/3", "between 1 and N"), ("4/3", "between 1 and N"), ("1/0", "at least 1"),
    ("2", "K/N with integers"), ("a/b", "K/N with integers"), ("1/2/3", "K/N with integers"),
])
def test_parse_shard_errors_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_shard(text)
    assert repr(text) in str(info.value)


names = st.lists(st.text("abcdefgh-0123", min_size=1, max_size=8), max_size=30)


@given(names, st.integers(1, 8))
def test_every_model_in_exactly_one_balanced_shard(models: list[str], n: int) -> None:
    shards = [select_shard(models, k, n) for k in range(1, n + 1)]
    assert set().union(*shards) == set(models)
    assert sum(len(s) for s in shards) == len(set(models))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


@given(st.permutations(["unet-ct", "segvol", "sam-med3d-turbo", "vista3d", "deepbet"]))
def test_selection_ignores_input_order(models: list[str]) -> None:
    assert select_shard(models, 2, 3) == select_shard(sorted(models), 2, 3)


def test_select_shard_errors() -> None:
    with pytest.raises(ValueError, match="1 <= K <= N"):
        select_shard(["a"], 0, 2)
    with pytest.raises(TypeError, match="sequence of names"):
        select_shard("unet", 1, 1)


def _write(document: dict, path: Path) -> Path:
    return write_results(path, **{k: document[k] for k in ("run", "models", "cases", "records")})


@pytest.mark.parametrize("n", [1, 2, 3])
def test_merge_of_shards_equals_single_run(n: int, tmp_path: Path) -> None:
    single = read_results(_write(synthetic_results(seed=4), tmp_path / "single.json"))
    paths = []
    for k in range(1, n + 1):
        shard = shard_of_document(single, select_shard(list(single["models"]), k, n))
        shard["run"] = dict(shard["run"], options={"umd_shard": f"{k}/{n}"})
        paths.append(_write(shard, tmp_path / f"shard{k}.json"))
    assert main(["merge", *map(str, paths), "-o", str(tmp_path / "merged.json")]) == 0
    merged = read_results(tmp_path / "merged.json")
    for key in ("cases", "records", "models"):
        assert merged[key] == single[key]
    assert merged["run"]["cohort"] == single["run"]["cohort"]
    assert [s["options"]["umd_shard"] for s in merged["run"]["shards"]] == [
        f"{k}/{n}" for k in range(1, n + 1)]


def test_merge_joins_the_gap_verdicts_of_every_shard() -> None:
    document = synthetic_results(seed=1)
    a, b = shard_of_document(document, ["unet-ct"]), shard_of_document(document, ["segvol"])
    a["run"] = dict(a["run"], gaps=[{"gap_id": "unet-ct-liver-CT~PET_CT", "outcome": "failed"}])
    b["run"] = dict(b["run"], gaps=[{"gap_id": "segvol-liver-CT~PET_CT-box", "outcome": "passed"}])
    merged = merge_shards([a, b], ["a", "b"])
    assert [g["gap_id"] for g in merged["run"]["gaps"]] == [
        "segvol-liver-CT~PET_CT-box", "unet-ct-liver-CT~PET_CT"]
    with pytest.raises(ValueError, match="gap case unet-ct-liver-CT~PET_CT is in two"):
        merge_shards([a, shard_of_document(dict(document, run=a["run"]), ["segvol"])])


def test_merge_refuses_overlaps_and_foreign_cohorts() -> None:
    document = synthetic_results(seed=1)
    with pytest.raises(ValueError, match=r"is in both a\.json and b\.json"):
        merge_shards([document, document], ["a.json", "b.json"])
    other = copy.deepcopy(shard_of_document(document, ["segvol"]))
    other["run"]["cohort"]["name"] = "another"
    with pytest.raises(ValueError, match=r"b\.json has a different run\.cohort than a\.json"):
        merge_shards([shard_of_document(document, ["unet-ct"]), other], ["a.json", "b.json"])
    with pytest.raises(ValueError, match="at least one"):
        merge_shards([])
