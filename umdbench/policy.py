"""Threshold policy: which figure a case must reach to pass, and where that bar comes from.

A policy is a TOML file of ``[[rule]]`` tables (``model``, ``modality``, ``organ`` fnmatch
patterns; ``metric``; ``min``; ``source``) and ``[[gap]]`` tables (``model``, ``organ``,
``comparison`` like ``CT~PET_CT``; ``metric``; ``max_gap``; ``source``). The most specific
matching rule wins, and among equally specific ones the later. Files are layered: a rule of a
later file (``--umd-policy FILE``, read after the defaults) beats every matching rule of an
earlier one, so a user's ``metric = "hd95"`` rule is not shadowed by a default organ rule.

A name that matches nothing is a typo, not a rule that never applies: an unknown key, metric,
modality or comparison is refused when the file is read, and :meth:`Policy.check_names` refuses
a model, organ or metric the run does not know (a pattern must match at least one), each error
naming the file, the table and its number, e.g. ``policy.toml [[rule]] #3: organ = "livr" is
not a known organ (did you mean liver?)``.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from umdbench.organs import MODALITIES

__all__ = [
    "COMPARISONS",
    "KNOWN_METRICS",
    "LOWER_IS_BETTER",
    "GapRule",
    "Policy",
    "Threshold",
    "load_policy",
]

#: The figures the metrics engine gives per organ that a rule may name.
KNOWN_METRICS: tuple[str, ...] = ("dice", "iou", "nsd_1mm", "nsd_2mm", "hd95", "hd", "assd", "rve")
#: Metrics where smaller is better: a threshold is then a maximum.
LOWER_IS_BETTER = frozenset({"hd95", "hd", "assd"})
#: The gap comparisons a rule may name: every pair of arms in arm order (``CT~PET_CT``, the
#: study's four, and those a cohort declares, e.g. ``PET_CT~MRI`` for ibsi-sts).
COMPARISONS: tuple[str, ...] = tuple(
    f"{a}~{b}" for i, a in enumerate(MODALITIES) for b in MODALITIES[i + 1 :]
)
#: Keys whose vocabulary is fixed, checked when the file is read.
_FIXED_NAMES: dict[str, Sequence[str]] = {"modality": MODALITIES, "comparison": COMPARISONS}
_WILDCARDS = "*?["


@dataclass(frozen=True)
class Threshold:
    """The resolved bar for one case."""

    metric: str
    min: float
    source: str

    def passes(self, value: float) -> bool:
        if self.metric in LOWER_IS_BETTER:
            return value <= self.min
        return value >= self.min

    def describe(self) -> str:
        sign = "<=" if self.metric in LOWER_IS_BETTER else ">="
        return f"mean {self.metric} {sign} {self.min:g}"


@dataclass(frozen=True)
class _Rule:
    patterns: Mapping[str, str]
    metric: str
    bound: float
    source: str
    order: int
    layer: int
    where: str = ""  # ``policy.toml [[rule]] #3``, for messages

    def matches(self, keys: Mapping[str, str]) -> bool:
        return all(fnmatch.fnmatchcase(keys.get(k, ""), p) for k, p in self.patterns.items())

    @property
    def specificity(self) -> int:
        return sum(1 for p in self.patterns.values() if p != "*")


@dataclass(frozen=True)
class GapRule:
    """The largest paired loss allowed between two arms."""

    metric: str
    max_gap: float
    source: str


class Policy:
    """Rules read from TOML files, later files overriding earlier ones on ties."""

    def __init__(self, documents: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        self.sources: list[str] = []
        self._rules: list[_Rule] = []
        self._gaps: list[_Rule] = []
        for layer, (origin, document) in enumerate(documents):
            self.sources.append(origin)
            self._read(origin, document, layer)
        if not self._rules:
            raise ValueError("the policy has no [[rule]]: every case needs a threshold")

    def _read(self, origin: str, document: Mapping[str, Any], layer: int) -> None:
        unknown = set(document) - {"rule", "gap"}
        if unknown:
            raise ValueError(
                f"policy {origin}: unknown table(s) {sorted(unknown)}; use [[rule]] and [[gap]]"
            )
        for kind, into, bound, keys in (
            ("rule", self._rules, "min", ("model", "modality", "organ")),
            ("gap", self._gaps, "max_gap", ("model", "organ", "comparison")),
        ):
            for index, table in enumerate(_tables(origin, document, kind), start=1):
                where = f"{origin} [[{kind}]] #{index}"
                into.append(self._parse(where, origin, table, bound, keys, layer))

    def _parse(
        self,
        where: str,
        origin: str,
        table: Mapping[str, Any],
        bound_key: str,
        keys: tuple[str, ...],
        layer: int,
    ) -> _Rule:
        allowed = sorted({*keys, "metric", bound_key, "source"})
        for key in table:
            if key not in allowed:
                raise ValueError(
                    f"{where}: unknown key {key!r}{_hint(key, allowed)}; allowed:"
                    f" {', '.join(allowed)}"
                )
        metric = table.get("metric", "dice")
        if metric not in KNOWN_METRICS:
            raise ValueError(
                f"{where}: metric must be one of {', '.join(KNOWN_METRICS)}, got"
                f" {metric!r}{_hint(str(metric), KNOWN_METRICS)}"
            )
        bound = table.get(bound_key)
        if not isinstance(bound, (int, float)) or isinstance(bound, bool):
            raise ValueError(f"{where}: `{bound_key}` must be a number, got {bound!r}")
        patterns = {k: _text(table.get(k, "*"), k, where) for k in keys}
        for key, names in _FIXED_NAMES.items():
            if key in patterns:
                _check_pattern(where, key, patterns[key], names)
        order = len(self._rules) + len(self._gaps)
        source = _text(table.get("source", origin), "source", where)
        return _Rule(patterns, metric, float(bound), source, order, layer, where)

    def check_names(
        self, models: Iterable[str], organs: Iterable[str], metrics: Iterable[str]
    ) -> None:
        """Raise ValueError at the first rule naming a model, organ or metric this run does
        not know (a pattern must match one); call with every registered model, not only the
        selected ones, so a rule for a model left out of this run is not an error."""
        known = {"model": sorted(set(models)), "organ": sorted(set(organs))}
        metric_names = sorted(set(metrics))
        for rule in sorted([*self._rules, *self._gaps], key=lambda r: r.order):
            for key, names in known.items():
                if key in rule.patterns:
                    _check_pattern(rule.where, key, rule.patterns[key], names)
            if rule.metric not in metric_names:
                raise ValueError(
                    f"{rule.where}: metric = {json.dumps(rule.metric)} is not a metric this run computes"
                    f"{_hint(rule.metric, metric_names)} (computed: {', '.join(metric_names)})"
                )

    @staticmethod
    def _best(rules: list[_Rule], keys: Mapping[str, str]) -> _Rule | None:
        matching = [r for r in rules if r.matches(keys)]
        return max(matching, key=lambda r: (r.layer, r.specificity, r.order), default=None)

    def threshold(self, model: str, modality: str, organ: str) -> Threshold:
        rule = self._best(self._rules, {"model": model, "modality": modality, "organ": organ})
        if rule is None:
            raise LookupError(
                f"no policy rule matches model={model} modality={modality} organ={organ}"
            )
        return Threshold(rule.metric, rule.bound, rule.source)

    def gap(self, model: str, organ: str, comparison: str) -> GapRule | None:
        rule = self._best(self._gaps, {"model": model, "organ": organ, "comparison": comparison})
        return None if rule is None else GapRule(rule.metric, rule.bound, rule.source)

    def describe(self) -> dict[str, Any]:
        """The rules as recorded in the results file."""

        def dump(rule: _Rule, bound: str) -> dict[str, Any]:
            return {
                **rule.patterns,
                "metric": rule.metric,
                bound: rule.bound,
                "source": rule.source,
            }

        return {
            "files": self.sources,
            "rules": [dump(r, "min") for r in self._rules],
            "gaps": [dump(r, "max_gap") for r in self._gaps],
        }


def _tables(origin: str, document: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    tables = document.get(kind, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ValueError(
            f"policy {origin}: `{kind}` must be an array of tables: write [[{kind}]], not"
            f" [{kind}] or {kind} = ..."
        )
    return tables


def _text(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: {key} must be a string, got {value!r}")
    return value


def _hint(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _check_pattern(where: str, key: str, pattern: str, known: Sequence[str]) -> None:
    """A literal name must be known, a pattern must match a known name; ``*`` always passes."""
    if pattern == "*":
        return
    if any(ch in pattern for ch in _WILDCARDS):
        if not any(fnmatch.fnmatchcase(name, pattern) for name in known):
            raise ValueError(
                f"{where}: {key} = {json.dumps(pattern)} matches no known {key} (known:"
                f" {_listing(known)}); fix the pattern or remove the rule"
            )
        return
    if pattern not in known:
        hint = _hint(pattern, known) or f" (known: {_listing(known)})"
        raise ValueError(f"{where}: {key} = {json.dumps(pattern)} is not a known {key}{hint}")


def _listing(names: Sequence[str], limit: int = 12) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return (", ".join(names[:limit]) or "none") + more


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"policy file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"policy file {path} is not valid TOML: {error}") from error


def load_policy(extra: str | Path | None = None) -> Policy:
    """The default policy, with a user's file appended when given."""
    default = resources.files("umdbench").joinpath("default_policy.toml").read_text()
    documents: list[tuple[str, Mapping[str, Any]]] = [
        ("umdbench default policy", tomllib.loads(default))
    ]
    if extra is not None:
        documents.append((str(extra), _read_toml(Path(extra))))
    return Policy(documents)
