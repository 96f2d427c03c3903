"""Shards: split one audit over several machines at (model, block of subjects) granularity.

A study-size audit is one model's hundreds of scans, so shards must split a model's subjects,
not only the models. The unit of work is one (model, subject): every prediction of that model
on that subject's scans (all arms, organs, prompts) stays on one machine, so no (model, scan)
prediction is ever made twice and every paired (intra-subject) comparison has both arms
together. Units are laid out model by model (sorted names), subject by subject (sorted), and
the sequence is cut into N contiguous stretches of about equal expected cost. Contiguity keeps a
model on as few machines as balance allows (each cut splits at most one model, so an audit of M
models loads at most M + N - 1 times in all); balance is within the cost of one unit.

Expected cost comes from a previous run's results when given (``--umd-shard-costs``: the
inference seconds each (model, subject) took), else from counting the predictions each unit
makes, weighted by the model's declared ``shard_cost`` (a classical method costs a hundredth
of a network's pass). Every machine computes the same plan from the same options and cohort, and writes it
into its results (``run.shard``), so ``umdbench merge`` can check that the shards belong
together, refuse overlaps and name what is missing (:mod:`umdbench.merging`).

``--umd-shard auto`` reads the scheduler's index and count (:func:`resolve_shard`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ShardPlan",
    "ShardUnit",
    "costs_from_results",
    "parse_shard",
    "plan_shards",
    "resolve_shard",
]

#: Scheduler variables ``--umd-shard auto`` reads, in the order they are tried.
AUTO_SOURCES = (
    "SLURM_ARRAY_TASK_ID (with SLURM_ARRAY_TASK_COUNT or SLURM_ARRAY_TASK_MIN/MAX)",
    "JOB_COMPLETION_INDEX (a Kubernetes Indexed Job; the count as auto/N or $UMD_SHARD_COUNT)",
    "CI_NODE_INDEX with CI_NODE_TOTAL (CI matrices, 1-based)",
)


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
        raise ValueError(
            f"shard must read K/N with integers, like 2/3, or auto, got {text!r}"
        ) from error
    return _checked(k, n, repr(text))


def _checked(k: int, n: int, what: str) -> tuple[int, int]:
    if n < 1:
        raise ValueError(f"shard count N must be at least 1, got {what}")
    if not 1 <= k <= n:
        raise ValueError(f"shard index K must be between 1 and N (1-based), got {what}")
    return k, n


def resolve_shard(text: str, environ: Mapping[str, str]) -> tuple[int, int, str]:
    """``K/N``, or ``auto`` / ``auto/N`` from the scheduler: ``(k, n, where it came from)``."""
    head, _, count = text.strip().partition("/")
    if head.strip().lower() != "auto":
        k, n = parse_shard(text)
        return k, n, "option"
    given = count.strip() or environ.get("UMD_SHARD_COUNT", "").strip() or None
    for reader in (_from_slurm, _from_kubernetes, _from_ci):
        found = reader(environ, given)
        if found is not None:
            return found
    raise ValueError(
        "--umd-shard auto found no scheduler index; it reads " + "; ".join(AUTO_SOURCES)
        + ". Outside a scheduler give --umd-shard K/N"
    )


def _int_var(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"--umd-shard auto: ${name} must be an integer, got {value!r}") from None


def _count(given: str | None, where: str) -> int | None:
    if given is None:
        return None
    try:
        return int(given)
    except ValueError:
        raise ValueError(f"--umd-shard auto: the shard count must be an integer, got {given!r}"
                         f" ({where})") from None


def _from_slurm(environ: Mapping[str, str], given: str | None) -> tuple[int, int, str] | None:
    """SLURM array tasks: index = the task's position in MIN..MAX (step STEP)."""
    task = _int_var(environ, "SLURM_ARRAY_TASK_ID")
    if task is None:
        return None
    low, high = _int_var(environ, "SLURM_ARRAY_TASK_MIN"), _int_var(environ, "SLURM_ARRAY_TASK_MAX")
    step = _int_var(environ, "SLURM_ARRAY_TASK_STEP") or 1
    count = _int_var(environ, "SLURM_ARRAY_TASK_COUNT")
    if low is None:
        raise ValueError("--umd-shard auto: $SLURM_ARRAY_TASK_ID is set but not"
                         " $SLURM_ARRAY_TASK_MIN: is this a SLURM job array (sbatch --array)?")
    span = None if high is None else (high - low) // step + 1
    count = count if count is not None else span
    if count is None:
        raise ValueError("--umd-shard auto: SLURM gives neither $SLURM_ARRAY_TASK_COUNT nor"
                         " $SLURM_ARRAY_TASK_MAX")
    if (span is not None and span != count) or (task - low) % step:
        raise ValueError(
            f"--umd-shard auto: the array's indices must be one range (like --array=1-{count}),"
            f" got task {task} of {count} with MIN {low}, MAX {high}, STEP {step}"
        )
    k, n = _checked((task - low) // step + 1, count, f"SLURM array task {task}")
    return k, n, f"SLURM_ARRAY_TASK_ID={task} (array {low}-{high}, {count} tasks)"


def _from_kubernetes(environ: Mapping[str, str], given: str | None) -> tuple[int, int, str] | None:
    index = _int_var(environ, "JOB_COMPLETION_INDEX")
    if index is None:
        return None
    count = _count(given, "auto/N or $UMD_SHARD_COUNT")
    if count is None:
        raise ValueError("--umd-shard auto: $JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) has"
                         " no count: give --umd-shard auto/N or set $UMD_SHARD_COUNT to the"
                         " Job's completions")
    k, n = _checked(index + 1, count, f"JOB_COMPLETION_INDEX={index} of {count}")
    return k, n, f"JOB_COMPLETION_INDEX={index} ({count} completions)"


def _from_ci(environ: Mapping[str, str], given: str | None) -> tuple[int, int, str] | None:
    index = _int_var(environ, "CI_NODE_INDEX")
    if index is None:
        return None
    total = _int_var(environ, "CI_NODE_TOTAL") or _count(given, "auto/N")
    if total is None:
        raise ValueError("--umd-shard auto: $CI_NODE_INDEX is set but not $CI_NODE_TOTAL")
    k, n = _checked(index, total, f"CI_NODE_INDEX={index} of CI_NODE_TOTAL={total}")
    return k, n, f"CI_NODE_INDEX={index} (CI_NODE_TOTAL={total})"


# -- the plan -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardUnit:
    """One model's block of subjects, run on one shard."""

    shard: int
    model: str
    subjects: tuple[str, ...]
    cost: float

    def as_dict(self) -> dict[str, Any]:
        return {"shard": self.shard, "model": self.model, "subjects": list(self.subjects),
                "cost": round(self.cost, 6)}


@dataclass(frozen=True)
class ShardPlan:
    """Which (model, subjects) every shard of an N-way split runs."""

    count: int
    units: tuple[ShardUnit, ...]
    cost_source: str

    def subjects_of(self, k: int) -> dict[str, frozenset[str]]:
        """Model -> the subjects shard ``k`` runs it on (models absent: not on this shard)."""
        out: dict[str, set[str]] = {}
        for unit in self.units:
            if unit.shard == k:
                out.setdefault(unit.model, set()).update(unit.subjects)
        return {model: frozenset(subjects) for model, subjects in out.items()}

    def load(self, k: int) -> float:
        return sum(unit.cost for unit in self.units if unit.shard == k)

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "cost_source": self.cost_source,
                "units": [unit.as_dict() for unit in self.units]}

    def describe(self, k: int) -> str:
        """One line: what shard ``k`` runs, for the terminal and for merge's gap report."""
        parts = [f"{u.model} on {_subject_span(u.subjects)}" for u in self.units if u.shard == k]
        return f"shard {k}/{self.count}: " + ("; ".join(parts) if parts else "nothing")


def _subject_span(subjects: Sequence[str]) -> str:
    if len(subjects) <= 3:
        return ", ".join(subjects)
    return f"{len(subjects)} subjects ({subjects[0]} .. {subjects[-1]})"


def plan_shards(work: Mapping[str, Mapping[str, float]], n: int, cost_source: str) -> ShardPlan:
    """Cut model -> subject -> expected cost into ``n`` contiguous stretches of equal cost.

    Cut ``j`` goes to the unit boundary nearest ``j/n`` of the total, kept strictly after the
    previous cut while there are units enough, so no shard is empty unless units are fewer
    than shards.
    """
    if n < 1:
        raise ValueError(f"shard count must be at least 1, got {n}")
    sequence = [(model, subject, float(work[model][subject]))
                for model in sorted(work) for subject in sorted(work[model])]
    for model, subject, cost in sequence:
        if not (math.isfinite(cost) and cost >= 0):
            raise ValueError(f"the expected cost of {model} on {subject} must be >= 0, got {cost}")
    cuts = _cuts([cost for _, _, cost in sequence], n)
    shard_of = [next(k for k, end in enumerate(cuts, start=1) if i < end)
                for i in range(len(sequence))]
    return ShardPlan(n, tuple(_blocks(sequence, shard_of)), cost_source)


def _cuts(costs: Sequence[float], n: int) -> list[int]:
    """End index (exclusive) of each of the ``n`` stretches."""
    total = math.fsum(costs)
    prefix = [0.0]
    for cost in costs:
        prefix.append(prefix[-1] + cost)
    count = len(costs)
    cuts, previous = [], 0
    for j in range(1, n):
        target = total * j / n
        best = min(range(count + 1), key=lambda i: (abs(prefix[i] - target), i))
        low = previous + 1 if count - previous > n - j else previous
        high = count - (n - j) if count >= n else count
        best = min(max(best, low), max(high, low))
        cuts.append(best)
        previous = best
    return [*cuts, count]


def _blocks(sequence: Sequence[tuple[str, str, float]], shard_of: Sequence[int]) -> list[ShardUnit]:
    """Consecutive (model, subject) units of one model on one shard, as one block."""
    blocks: list[ShardUnit] = []
    for (model, subject, cost), shard in zip(sequence, shard_of, strict=True):
        last = blocks[-1] if blocks else None
        if last is not None and last.model == model and last.shard == shard:
            blocks[-1] = ShardUnit(shard, model, (*last.subjects, subject), last.cost + cost)
        else:
            blocks.append(ShardUnit(shard, model, (subject,), cost))
    return blocks


def prediction_counts(
    cases: Iterable[Any], scans_of: Any, automatic: Mapping[str, bool],
    weights: Mapping[str, float] | None = None,
) -> dict[str, dict[str, float]]:
    """Model -> subject -> predictions the unit makes (times the model's ``weights``, its
    declared ``shard_cost``): the cost when no earlier run is given.

    An automatic model predicts once per scan whatever the organ; a promptable one once per
    (scan, organ, protocol). ``scans_of(case)`` gives the scans a case runs on.
    """
    made: dict[str, dict[str, set[tuple[str, ...]]]] = {}
    for case in cases:
        for scan in scans_of(case):
            key = (scan.key,) if automatic[case.model] else (
                scan.key, case.organ, str(case.protocol))
            made.setdefault(case.model, {}).setdefault(str(scan.subject), set()).add(key)
    weight = weights or {}
    return {model: {subject: len(keys) * float(weight.get(model, 1.0))
                    for subject, keys in subjects.items()}
            for model, subjects in made.items()}


def costs_from_results(document: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Model -> subject -> inference seconds an earlier run spent (reused predictions once)."""
    costs: dict[str, dict[str, float]] = {}
    for record in document.get("records", []):
        seconds = record.get("inference_seconds")
        if record.get("prediction_reused") or not isinstance(seconds, (int, float)):
            continue
        by_subject = costs.setdefault(str(record["model"]), {})
        subject = str(record["subject"])
        by_subject[subject] = by_subject.get(subject, 0.0) + float(seconds)
    return costs


def expected_costs(
    counts: Mapping[str, Mapping[str, float]], earlier: Mapping[str, Mapping[str, float]] | None
) -> dict[str, dict[str, float]]:
    """Each unit's cost in seconds from an earlier run where it has one; a unit it lacks costs
    its model's median seconds per prediction there (or all models' median) times its count."""
    if not earlier:
        return {model: dict(subjects) for model, subjects in counts.items()}
    per_prediction = {
        model: statistics.median(
            earlier[model][s] / counts[model][s] for s in earlier[model]
            if s in counts.get(model, {}) and counts[model][s] > 0
        )
        for model in earlier
        if any(s in counts.get(model, {}) for s in earlier[model])
    }
    fallback = statistics.median(per_prediction.values()) if per_prediction else 1.0
    return {
        model: {
            subject: earlier.get(model, {}).get(
                subject, per_prediction.get(model, fallback) * count)
            for subject, count in subjects.items()
        }
        for model, subjects in counts.items()
    }
