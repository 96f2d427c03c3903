"""What a case segments: the targets, organs and lesions, with their names and rules.

The built-in targets are the study's 13 paired organs (:data:`umdbench.organs.CANONICAL_ORGANS`)
and ``tumor``, a lesion. A target's *kind* sets who runs it: an automatic model runs the
targets it declares in ``organs`` (a liver model is no tumour model), a promptable model runs
every target of the cohort, since its box, clicks or text say what to segment (its
``unsupported`` may still refuse one, e.g. a class id it lacks). Nothing else in the suite
knows the list: cases, policy names, ``--umd-organs``, manifests and text prompts all ask here.

More targets come from a TOML file, ``--umd-targets FILE`` (also ``$UMD_TARGETS``, so the
model host processes read the same file)::

    [targets.prostate]
    kind = "organ"                       # or "lesion"
    text = ["prostate", "prostate gland"] # text-prompt names, the preferred first
    labels = ["prostate", "prostata"]    # dataset label names that make it (normalised)
    parts = []                           # disjoint parts prompted one by one, e.g. ["right", "left"]

A file's target gets the default policy rule unless the policy names it (``organ = "prostate"``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import tomllib

__all__ = [
    "BUILTIN_TARGETS",
    "KINDS",
    "Target",
    "check_target",
    "get_target",
    "known_targets",
    "load_targets_file",
    "target_parts",
    "target_text",
    "user_target_definitions",
]

#: ``organ``: anatomy every subject has; ``lesion``: a finding (tumour, metastasis) that only
#: promptable models and models declaring it are asked to segment.
KINDS: tuple[str, ...] = ("organ", "lesion")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Target:
    """One thing to segment, and how datasets and text prompts name it."""

    name: str
    kind: str = "organ"
    #: Names a text-prompted model may be given, the preferred first.
    text: tuple[str, ...] = ()
    #: Normalised dataset label names that make it (several merge); empty: the name itself.
    labels: frozenset[str] = frozenset()
    #: Disjoint parts prompted one by one and merged (lung: right, left), named by side (world
    #: x of the part's centroid; RAS+: larger x is the subject's right), as SAM-Med3D's
    #: evaluation prompts each ground-truth label id on its own (one click on one lung cannot
    #: segment the other). How parts are found: ``umdbench.prompts.organ_parts``.
    parts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(
                f"target name must be lower case letters, digits and _ (it sits in case ids),"
                f" got {self.name!r}"
            )
        if self.kind not in KINDS:
            raise ValueError(f"target {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def text_names(self) -> tuple[str, ...]:
        return self.text or (self.name.replace("_", " "),)

    @property
    def label_names(self) -> frozenset[str]:
        return self.labels or frozenset({self.name})


def _organ(name: str, *text: str, parts: tuple[str, ...] = ()) -> Target:
    return Target(name, "organ", text=text, parts=parts)


#: The study's 13 organs (in report order), then the lesion target.
BUILTIN_TARGETS: Mapping[str, Target] = {t.name: t for t in (
    _organ("liver", "liver", "hepar"),
    _organ("kidney_left", "left kidney", "kidney left", "left renal"),
    _organ("kidney_right", "right kidney", "kidney right", "right renal"),
    _organ("spleen", "spleen", "lien"),
    _organ("heart", "heart", "cardiac"),
    _organ("aorta", "aorta", "aortic"),
    _organ("lung", "lung", "lungs", "pulmonary", parts=("right", "left")),
    _organ("brain", "brain", "cerebrum", "encephalon"),
    _organ("colon", "colon", "large intestine", "large bowel"),
    _organ("urinary_bladder", "urinary bladder", "bladder"),
    _organ("pancreas", "pancreas"),
    _organ("esophagus", "esophagus", "oesophagus"),
    _organ("stomach", "stomach", "gaster"),
    Target(
        "tumor",
        "lesion",
        text=("tumor", "tumour", "lesion", "mass", "sarcoma"),
        labels=frozenset({
            "tumor", "tumour", "tumors", "tumours", "lesion", "lesions", "mass", "gtv",
            "gtv_mass", "gtv_primary", "gross_tumor_volume", "gross_tumour_volume", "sarcoma",
            "neoplasm",
        }),
    ),
)}  # fmt: skip


def load_targets_file(path: str | Path) -> dict[str, Target]:
    """The targets a TOML file defines (see the module docstring); errors name file and key."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"targets file {path}: {error}") from error
    unknown = set(document) - {"targets"}
    if unknown or not isinstance(document.get("targets"), dict):
        raise ValueError(f"targets file {path}: expected [targets.NAME] tables, got {sorted(document)}")
    builtin = sorted(set(document["targets"]) & set(BUILTIN_TARGETS))
    if builtin:
        raise ValueError(
            f"targets file {path}: [targets.{builtin[0]}] is a built-in target; give yours"
            " another name (a built-in's names and bar stay as documented)"
        )
    return {name: _read_target(path, name, table) for name, table in document["targets"].items()}


def _read_target(path: Path, name: str, table: Any) -> Target:
    where = f"targets file {path} [targets.{name}]"
    if not isinstance(table, dict):
        raise ValueError(f"{where}: must be a table")
    extra = set(table) - {"kind", "text", "labels", "parts"}
    if extra:
        raise ValueError(f"{where}: unknown key(s) {sorted(extra)}; use kind, text, labels, parts")
    lists = {}
    for key in ("text", "labels", "parts"):
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"{where}: {key} must be a list of names, got {value!r}")
        lists[key] = value
    from umdbench.data.organ_maps import normalise_name

    try:
        return Target(
            name,
            table.get("kind", "organ"),
            text=tuple(lists["text"]),
            labels=frozenset(normalise_name(n) for n in lists["labels"]),
            parts=tuple(lists["parts"]),
        )
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from error


@lru_cache(maxsize=8)
def _targets(extra_file: str) -> Mapping[str, Target]:
    targets = dict(BUILTIN_TARGETS)
    if extra_file:
        targets.update(load_targets_file(extra_file))
    return targets


def _all() -> Mapping[str, Target]:
    return _targets(os.environ.get("UMD_TARGETS", ""))


def known_targets() -> tuple[str, ...]:
    """Every target name this run knows: the built-in ones, then ``$UMD_TARGETS``'s."""
    return tuple(_all())


def get_target(name: str) -> Target:
    """The target ``name``; unknown names are checked first by :func:`check_target`."""
    return _all()[check_target(name)]


def check_target(name: str) -> str:
    """Return ``name`` if it is a known target; the error suggests the closest names."""
    targets = _all()
    if name in targets:
        return name
    import difflib

    close = difflib.get_close_matches(name, list(targets), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(
        f"target must be one of the known targets (organs, tumor, or one defined with"
        f" --umd-targets FILE), got {name!r}{hint}"
    )


def target_text(name: str) -> tuple[str, tuple[str, ...]]:
    """The preferred text-prompt name of a target and its other names."""
    targets = _all()
    names = targets[name].text_names if name in targets else (name.replace("_", " "),)
    return names[0], names[1:]


def user_target_definitions() -> dict[str, dict[str, Any]]:
    """The targets a file added, as data: what a resumed run and the prediction cache must
    share (the file's path alone would miss an edit)."""
    return {
        name: {"kind": t.kind, "text": list(t.text), "labels": sorted(t.labels),
               "parts": list(t.parts)}
        for name, t in _all().items()
        if name not in BUILTIN_TARGETS
    }  # fmt: skip


def target_parts(name: str) -> tuple[str, ...]:
    """The parts a target is prompted in (empty: one whole)."""
    target = _all().get(name)
    return target.parts if target is not None else ()
