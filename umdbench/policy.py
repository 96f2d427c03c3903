"""Threshold policy: which figure a case must reach to pass, and where that bar comes from.

A policy is a TOML file of ``[[rule]]`` tables (``model``, ``modality``, ``organ`` fnmatch
patterns; ``metric``; ``min``; ``source``) and ``[[gap]]`` tables (``model``, ``organ``,
``comparison`` like ``CT~PET_CT``; ``metric``; ``max_gap``; ``source``). The most specific
matching rule wins, and among equally specific ones the later. Files are layered: a rule of a
later file (``--umd-policy FILE``, read after the defaults) beats every matching rule of an
earlier one, so a user's ``metric = "hd95"`` rule is not shadowed by a default organ rule.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

__all__ = ["GapRule", "Policy", "Threshold", "load_policy"]

_KNOWN_METRICS = ("dice", "iou", "nsd_1mm", "nsd_2mm", "hd95", "hd", "assd", "rve")
#: Metrics where smaller is better: a threshold is then a maximum.
LOWER_IS_BETTER = frozenset({"hd95", "hd", "assd"})


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
        for table in document.get("rule", []):
            self._rules.append(
                self._parse(origin, table, "min", ("model", "modality", "organ"), layer)
            )
        for table in document.get("gap", []):
            self._gaps.append(
                self._parse(origin, table, "max_gap", ("model", "organ", "comparison"), layer)
            )

    def _parse(
        self,
        origin: str,
        table: Mapping[str, Any],
        bound_key: str,
        keys: tuple[str, ...],
        layer: int,
    ) -> _Rule:
        allowed = {*keys, "metric", bound_key, "source"}
        extra = set(table) - allowed
        if extra:
            raise ValueError(
                f"policy {origin}: unknown key(s) {sorted(extra)} in {dict(table)}; allowed: {sorted(allowed)}"
            )
        metric = table.get("metric", "dice")
        if metric not in _KNOWN_METRICS:
            raise ValueError(
                f"policy {origin}: metric must be one of {', '.join(_KNOWN_METRICS)}, got {metric!r}"
            )
        bound = table.get(bound_key)
        if not isinstance(bound, (int, float)) or isinstance(bound, bool):
            raise ValueError(
                f"policy {origin}: `{bound_key}` must be a number, got {bound!r} in {dict(table)}"
            )
        order = len(self._rules) + len(self._gaps)
        patterns = {k: str(table.get(k, "*")) for k in keys}
        return _Rule(patterns, metric, float(bound), str(table.get("source", origin)), order, layer)

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
