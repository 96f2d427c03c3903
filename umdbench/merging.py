"""Join shard results into the document one unsharded run would have written.

Subject shards (:mod:`umdbench.shards`) each run part of a case's subjects, so a case's verdict
and a gap's paired statistics are only known once every shard's records are together: the
merge pools the records and recomputes both with the suite's own functions (the runner's
:func:`~umdbench.runner.score_records` and messages, :func:`~umdbench.report.stats.
paired_comparison`), never averaging shard figures. It refuses shards of another audit (plan,
cohort or policy differ), a shard twice, and a record twice; a missing shard is reported (what it
would have run and the option that reruns it) and leaves the merged file incomplete.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from umdbench.results import merge_results

__all__ = ["merge_shards", "missing_shards"]


def merge_shards(
    documents: Sequence[Mapping[str, Any]], names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Join shard results into one document equal to a single run's, with shard provenance.

    ``names`` (file names) make errors say which file is at fault. The merged ``run`` is the
    first shard's, with ``run["shards"]`` listing each shard's options and creation time and
    ``run["missing_shards"]`` the shards of the plan no file holds.
    """
    if not documents:
        raise ValueError("merge needs at least one results document, got none")
    names = list(names) if names is not None else [f"#{i + 1}" for i in range(len(documents))]
    if len(names) != len(documents):
        raise ValueError(f"names must match documents one to one, got {len(names)} names")
    plan = _common_plan(documents, names)
    _check_compatible(documents, names)
    _check_records(documents, names)
    try:
        merged = merge_results(documents, combine_cases=plan is not None)
    except ValueError as error:
        raise ValueError(f"cannot merge {', '.join(names)}: {error}") from error
    if plan is not None:
        by_case = records_by_case(merged["records"])
        merged["cases"] = [_rescored(entries, by_case) for entries in merged["cases"]]
    run = dict(merged.get("run", {}))
    if any("gaps" in d.get("run", {}) for d in documents):
        run["gaps"] = _merged_gaps(documents, names, merged["records"], plan is not None,
                                   _seed(documents[0]))
    run["shards"] = [{"source": name, "created": d.get("created"),
                      "options": d.get("run", {}).get("options", {}),
                      "shard": _shard_index(d)}
                     for name, d in zip(names, documents, strict=True)]
    if plan is not None:
        run["shard"] = {"count": plan["count"], "plan": plan}
        run["missing_shards"] = missing_shards(documents, plan)
        if run["missing_shards"]:
            merged["complete"] = False
            run["state"] = "incomplete"
            _mark_partial(merged, run["missing_shards"], int(plan["count"]))
    merged["run"] = run
    return merged


def _seed(document: Mapping[str, Any]) -> int:
    seed = document.get("run", {}).get("options", {}).get("seed", 0)
    return int(seed) if isinstance(seed, int) else 0


def _shard_index(document: Mapping[str, Any]) -> int | None:
    shard = document.get("run", {}).get("shard")
    return int(shard["index"]) if isinstance(shard, Mapping) and "index" in shard else None


#: Cohort provenance that names where this machine keeps the files, not what they are: shards
#: on machines with another cache folder or mount point still audit the same cohort.
MACHINE_LOCAL_PROVENANCE = ("cache_folder", "source")


def _identity(run: Mapping[str, Any], key: str) -> Any:
    value = run.get(key)
    if key != "cohort" or not isinstance(value, Mapping):
        return value
    provenance = value.get("provenance")
    if not isinstance(provenance, Mapping):
        return value
    kept = {k: v for k, v in provenance.items() if k not in MACHINE_LOCAL_PROVENANCE}
    return {**value, "provenance": kept}


def _check_compatible(documents: Sequence[Mapping[str, Any]], names: Sequence[str]) -> None:
    """Shards of one audit share cohort and policy; joining others would mislead the report."""
    first = documents[0].get("run", {})
    for name, document in zip(names[1:], documents[1:], strict=True):
        run = document.get("run", {})
        for key in ("cohort", "policy"):
            if _identity(run, key) != _identity(first, key):
                raise ValueError(
                    f"results {name} has a different run.{key} than {names[0]}: shards of "
                    "one audit must share cohort and policy (rerun the shard with the same "
                    "options, or merge only matching files)"
                )


def _check_records(documents: Sequence[Mapping[str, Any]], names: Sequence[str]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for name, document in zip(names, documents, strict=True):
        for record in document["records"]:
            key = (record["case_id"], str(record["subject"]))
            if key in seen:
                raise ValueError(
                    f"record {key[0]} / {key[1]} is in both {seen[key]} and {name}: shards"
                    " overlap (the same shard twice, or shards of different plans)"
                )
            seen[key] = name


def _common_plan(
    documents: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> dict[str, Any] | None:
    """The plan every shard ran under (None for files without one: whole runs being joined).
    Every file must then hold a plan, the same one, and each shard index at most once."""
    plans = [d.get("run", {}).get("shard", {}).get("plan") for d in documents]
    if all(plan is None for plan in plans):
        return None
    if any(plan is None for plan in plans):
        without = [n for n, p in zip(names, plans, strict=True) if p is None]
        raise ValueError(f"{', '.join(without)} ran without --umd-shard and the others with it:"
                         " merge only the shards of one sharded audit")
    for name, plan in zip(names[1:], plans[1:], strict=True):
        if plan != plans[0]:
            raise ValueError(
                f"{name} was planned differently from {names[0]} (another shard count, model"
                " list, cohort or --umd-shard-costs file): every shard of one audit must run"
                " with the same options"
            )
    seen: dict[int, str] = {}
    for name, document in zip(names, documents, strict=True):
        index = _shard_index(document)
        if index in seen:
            raise ValueError(f"shard {index}/{plans[0]['count']} is in both {seen[index]} and"
                             f" {name}: merge each shard once")
        seen[index if index is not None else -1] = name
    return dict(plans[0])


def missing_shards(documents: Sequence[Mapping[str, Any]], plan: Mapping[str, Any]
                   ) -> list[dict[str, Any]]:
    """Each planned shard no document holds: its index and what it should have run."""
    present = {_shard_index(d) for d in documents}
    missing = []
    for k in range(1, int(plan["count"]) + 1):
        units = [u for u in plan["units"] if u["shard"] == k]
        if k not in present and units:
            missing.append({"shard": k, "units": units})
    return missing


def _mark_partial(merged: dict[str, Any], missing: Sequence[Mapping[str, Any]], count: int
                  ) -> None:
    """A case of a model some missing shard ran has only part of its subjects: it is an error
    (no verdict over part of a cohort) and listed in ``missing_cases``, as an interrupted run
    lists what it did not finish, so ``check-baseline`` and ``compare`` count it as not run."""
    lacking = {str(u["model"]): int(gap["shard"]) for gap in missing for u in gap["units"]}
    partial = []
    for case in merged["cases"]:
        shard = lacking.get(str(case.get("model")))
        if shard is None:
            continue
        partial.append(case["case_id"])
        case["outcome"] = "error"
        case["message"] = (f"{case['case_id']}: error: shard {shard}/{count} is missing, so this"
                           " case lacks its subjects there: rerun that shard and merge again")
    merged["missing_cases"] = sorted(set(merged.get("missing_cases", [])) | set(partial))


# -- cases: one verdict from every shard's records -----------------------------------------


def records_by_case(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Case id -> its records, built once: a study-size merge has thousands of cases and tens
    of thousands of records, so filtering the whole list per case would be quadratic."""
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        grouped.setdefault(str(record["case_id"]), []).append(record)
    return grouped


def _rescored(entries: Sequence[Mapping[str, Any]],
              by_case: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """One case entry from each shard's entry of it, scored on all their records."""
    first = dict(entries[0])
    duration = round(math.fsum(float(e.get("duration_s") or 0) for e in entries), 4)
    hard = next((e for e in entries if e.get("error") or "metric" not in e), None)
    if hard is not None:  # a case-level error (the model failed to load) or a crashed case
        return {**first, **hard, "outcome": "error", "duration_s": duration}
    own = list(by_case.get(str(first["case_id"]), []))
    if not own:  # skipped everywhere, for the same reason (the model, the organ, no subject)
        return {**first, "duration_s": duration}
    lost = next((e for e in entries if e.get("outcome") == "skipped"
                 and NOTHING_TO_SCORE not in str(e.get("message", ""))), None)
    if lost is not None:  # the model ran on some shards and was skipped on another
        message = (f"{first['case_id']}: error: skipped on one shard ({lost.get('message')})"
                   " but run on others, so the merged case lacks that shard's subjects; rerun"
                   " that shard where the model can run")
        return {**first, "outcome": "error", "message": message, "duration_s": duration}
    rescored = {**first, **_verdict(first, own), "duration_s": duration}
    if rescored["outcome"] == "passed":
        rescored.pop("message", None)  # a passing case has none (as in an unsharded run)
    return rescored


#: How a case with no scored subject says so (:meth:`umdbench.runner.CaseRunner.run_case`).
NOTHING_TO_SCORE = "nothing to score"


def _verdict(entry: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    from umdbench.cases import parse_case_id
    from umdbench.policy import Threshold
    from umdbench.runner import CaseOutcome, score_records

    bound = entry.get("threshold")
    threshold = Threshold(entry["metric"], math.nan if bound is None else float(bound),
                          str(entry.get("rule", "")))
    outcome = CaseOutcome(parse_case_id(entry["case_id"]), threshold, [dict(r) for r in records])
    score_records(outcome)
    outcome.messages = [f"error: {r['error']}" for r in records if r.get("status") == "error"]
    fields: dict[str, Any] = {"value": outcome.value, "n_valid": outcome.n_valid,
                              "n_empty_reference": outcome.n_empty_reference,
                              "n_errors": outcome.n_errors}
    if outcome.is_error:
        return {**fields, "outcome": "error", "message": outcome.error_message()}
    if outcome.n_valid == 0:
        reason = (f"no {entry['modality']} scan has a non-empty {entry['organ']} reference"
                  f" ({outcome.n_empty_reference} empty): nothing to score")
        return {**fields, "outcome": "skipped", "message": f"Skipped: {reason}"}
    if outcome.passed:
        return {**fields, "outcome": "passed"}
    return {**fields, "outcome": "failed", "message": outcome.failure_message()}


# -- gaps: paired statistics over every shard's subjects -----------------------------------


def _merged_gaps(documents: Sequence[Mapping[str, Any]], names: Sequence[str],
                 records: Sequence[Mapping[str, Any]], recompute: bool, seed: int) -> list[Any]:
    """The modality-gap verdicts (``run.gaps``), each gap id once; for subject shards, the
    paired statistics recomputed over the pooled subjects."""
    gaps: dict[str, list[Mapping[str, Any]]] = {}
    for name, document in zip(names, documents, strict=True):
        for gap in document.get("run", {}).get("gaps", []):
            key = str(gap.get("gap_id"))
            if key in gaps and not recompute:
                raise ValueError(f"gap case {key} is in two results files (again in {name})")
            gaps.setdefault(key, []).append(gap)
    if not recompute:
        return [gaps[k][0] for k in sorted(gaps)]
    by_case = records_by_case(records)
    return [_regapped(gaps[k], by_case, seed) for k in sorted(gaps)]


def _regapped(entries: Sequence[Mapping[str, Any]],
              by_case: Mapping[str, Sequence[Mapping[str, Any]]],
              seed: int) -> dict[str, Any]:
    from umdbench.cases import GapCase
    from umdbench.report.stats import paired_comparison, subject_values

    first = dict(entries[0])
    if any(e.get("outcome") == "error" for e in entries) or "metric" not in first:
        return {**first, "outcome": "error"}
    arm_a, _, arm_b = str(first["comparison"]).partition("~")
    gap = GapCase(first["model"], first["organ"], arm_a, arm_b, first.get("protocol"))
    sides = []
    for arm in (arm_a, arm_b):
        case_id = gap.case(arm).id
        table = subject_values(by_case.get(case_id, []), first["metric"])
        sides.append(next(iter(table.values()), {}))
    stats = paired_comparison(sides[0], sides[1], seed=seed)
    limit = math.inf if first.get("max_gap") is None else float(first["max_gap"])
    if stats.n_pairs == 0 or all(e.get("outcome") == "skipped" for e in entries):
        outcome = "skipped"
    elif math.isfinite(stats.mean_diff) and abs(stats.mean_diff) <= limit:
        outcome = "passed"
    else:
        outcome = "failed"
    return {**first, **stats.as_dict(), "outcome": outcome}
