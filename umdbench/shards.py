"""Shards: split one audit over several machines, and join their results files again.

``--umd-shard K/N`` keeps the models of shard K (1-based) out of N. Whole models stay together
so that a model loads once per machine and an automatic model's single pass serves all its
organ cases. Assignment is round-robin over the *sorted, de-duplicated* model names: every
machine of a CI matrix computes the same split from the same model list, every model lands in
exactly one shard, and shard sizes differ by at most one model. (A stable hash would keep a
model's shard when others are added, but can leave shards empty or lopsided for the handful of
models an audit has; balance matters more here.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from umdbench.results import merge_results

__all__ = ["merge_shards", "parse_shard", "select_shard", "shard_of_document"]


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/3"`` -> ``(2, 3)``; K is 1-based and at most N."""
    if not isinstance(text, str):
        raise TypeError(f"shard must be a string K/N, got {text!r}")
    k_text, sep, n_text = text.strip().partition("/")
    try:
        if not sep:
            raise ValueError("no '/'")
        k, n = int(k_text), int(n_text)
    except ValueError as error:
        raise ValueError(f"shard must read K/N with integers, like 2/3, got {text!r}") from error
    if n < 1:
        raise ValueError(f"shard count N must be at least 1, got {text!r}")
    if not 1 <= k <= n:
        raise ValueError(f"shard index K must be between 1 and N (1-based), got {text!r}")
    return k, n


def select_shard(model_names: Sequence[str], k: int, n: int) -> set[str]:
    """The models shard ``k`` of ``n`` runs (round-robin over sorted names)."""
    if isinstance(model_names, str):
        raise TypeError(f"model_names must be a sequence of names, got the string {model_names!r}")
    if n < 1 or not 1 <= k <= n:
        raise ValueError(f"shard must satisfy 1 <= K <= N, got K={k}, N={n}")
    ordered = sorted(set(model_names))
    return {name for i, name in enumerate(ordered) if i % n == k - 1}


def shard_of_document(document: Mapping[str, Any], models: Iterable[str]) -> dict[str, Any]:
    """The part of a results document that a shard running only ``models`` would write."""
    keep = set(models)
    out = dict(document)
    out["cases"] = [c for c in document["cases"] if c["model"] in keep]
    out["records"] = [r for r in document["records"] if r["model"] in keep]
    out["models"] = {k: v for k, v in document["models"].items() if k in keep}
    return out


def _check_compatible(documents: Sequence[Mapping[str, Any]], names: Sequence[str]) -> None:
    """Shards of one audit share cohort and policy; joining others would mislead the report."""
    first = documents[0].get("run", {})
    for name, document in zip(names[1:], documents[1:], strict=True):
        run = document.get("run", {})
        for key in ("cohort", "policy"):
            if run.get(key) != first.get(key):
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
                raise ValueError(f"record {key[0]} / {key[1]} is in both {seen[key]} and {name}")
            seen[key] = name


def _merged_gaps(documents: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[Any]:
    """The modality-gap verdicts (``run.gaps``) of every shard, each gap id once."""
    gaps: dict[str, Any] = {}
    for name, document in zip(names, documents, strict=True):
        for gap in document.get("run", {}).get("gaps", []):
            key = str(gap.get("gap_id"))
            if key in gaps:
                raise ValueError(f"gap case {key} is in two results files (again in {name})")
            gaps[key] = gap
    return [gaps[k] for k in sorted(gaps)]


def merge_shards(
    documents: Sequence[Mapping[str, Any]], names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Join shard results into one document equal to a single run's, with shard provenance.

    ``names`` (file names) make errors say which file is at fault. The merged ``run`` is the
    first shard's, with ``run["shards"]`` listing each shard's options and creation time.
    """
    if not documents:
        raise ValueError("merge needs at least one results document, got none")
    names = list(names) if names is not None else [f"#{i + 1}" for i in range(len(documents))]
    if len(names) != len(documents):
        raise ValueError(f"names must match documents one to one, got {len(names)} names")
    _check_compatible(documents, names)
    _check_records(documents, names)
    try:
        merged = merge_results(documents)
    except ValueError as error:
        raise ValueError(f"cannot merge {', '.join(names)}: {error}") from error
    run = dict(merged.get("run", {}))
    if any("gaps" in d.get("run", {}) for d in documents):
        run["gaps"] = _merged_gaps(documents, names)
    run["shards"] = [{"source": name, "created": d.get("created"),
                      "options": d.get("run", {}).get("options", {})}
                     for name, d in zip(names, documents, strict=True)]
    merged["run"] = run
    return merged
