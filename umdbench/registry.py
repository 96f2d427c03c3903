"""Find models by name: the built-ins, vendor packages (entry points) and ``module:Class``.

A vendor ships a model without touching this suite, in either way:

- an entry point in their package: ``[project.entry-points."umdbench.models"]
  acme-seg = "acme_seg.umd:AcmeSeg"``;
- on the command line: ``--umd-model acme_seg.umd:AcmeSeg``.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import re
from collections.abc import Iterable
from importlib.metadata import entry_points

from umdbench.models.base import ModelUnavailable, SegmentationModel
from umdbench.organs import MODALITIES

__all__ = [
    "BUILTIN_MODULES",
    "ENTRY_POINT_GROUP",
    "ModelRegistry",
    "import_model_class",
    "register_model",
    "unavailable_reason",
]

ENTRY_POINT_GROUP = "umdbench.models"

#: Modules under ``models/`` whose classes register themselves on import.
BUILTIN_MODULES: tuple[str, ...] = (
    "umdbench.models.classical",
    "umdbench.models.unet",
    "umdbench.models.deepbet",
    "umdbench.models.hd_bet",
    "umdbench.models.vista3d",
    "umdbench.models.sam_med3d",
    "umdbench.models.nninteractive",
    "umdbench.models.nnunet",
    "umdbench.models.voxtell",
    "umdbench.models.totalsegmentator",
    "umdbench.models.segvol",
    "umdbench.models.sat",
    "umdbench.models.monai_bundle",
)

_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_BUILTINS: dict[str, type[SegmentationModel]] = {}


def register_model(cls: type[SegmentationModel]) -> type[SegmentationModel]:
    """Class decorator for built-in adapters; a second model of the same name is an error
    (the same class of a module imported again, as pytester's module snapshots do, is not)."""
    _check_model_class(cls, origin=f"{cls.__module__}.{cls.__qualname__}")
    existing = _BUILTINS.get(cls.name)
    if existing is not None and _where(existing) != _where(cls):
        raise ValueError(f"model name {cls.name!r} is registered twice: {existing} and {cls}")
    _BUILTINS[cls.name] = cls
    return cls


def unavailable_reason(cls: type[SegmentationModel], device: str) -> str | None:
    """Why ``cls`` cannot run on ``device`` here (its ``check_available`` says so), or None.

    Asked at collection, so a model without its weights leaves the default matrix with one line
    instead of a skip per case. Any other exception keeps the model in: its cases then report
    the error in full when the model host loads it.
    """
    try:
        cls().check_available(device)
    except ModelUnavailable as reason:
        return str(reason)
    except Exception:  # reported by the load, with its traceback
        return None
    return None


def _where(cls: type) -> tuple[str, str]:
    return (cls.__module__, cls.__qualname__)


def import_model_class(spec: str) -> type[SegmentationModel]:
    """Import ``module:Class``; the error says which part is wrong."""
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise ValueError(f"a model must be given as module:Class, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"cannot import module {module_name!r} for model {spec!r}: {error}"
        ) from error
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"module {module_name!r} has no attribute {class_name!r} (model {spec!r})")
    _check_model_class(cls, origin=spec)
    return cls


def _check_model_class(cls: object, origin: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, SegmentationModel)):
        raise TypeError(f"{origin} must be a subclass of SegmentationModel, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise TypeError(
            f"{origin}: `name` must be lower-case letters, digits, '.', '_' or '-', got {name!r}"
        )
    if any(f"-{arm}-" in f"-{name}-" for arm in MODALITIES):
        raise TypeError(
            f"{origin}: `name` must not contain a modality ({', '.join(MODALITIES)}), got {name!r}"
        )
    if not getattr(cls, "organs", ()):
        raise TypeError(f"{origin} must list the targets it segments in `organs` (umdbench.targets)")


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class ModelRegistry:
    """All models known to one run: built-ins, entry points, then ``--umd-model`` classes."""

    def __init__(self, extra_specs: Iterable[str] = (), use_entry_points: bool = True) -> None:
        self._models: dict[str, type[SegmentationModel]] = {}
        self._origins: dict[str, str] = {}
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        for cls in _BUILTINS.values():
            self._add(cls, "built-in")
        if use_entry_points:
            for entry in entry_points(group=ENTRY_POINT_GROUP):
                cls = entry.load()
                _check_model_class(cls, origin=f"entry point {entry.name} = {entry.value}")
                self._add(cls, f"entry point {entry.value}")
        for spec in extra_specs:
            self._add(import_model_class(spec), f"--umd-model {spec}")

    def _add(self, cls: type[SegmentationModel], origin: str) -> None:
        """Add ``cls``; a second class of one name is an error naming both (the registry must
        be unambiguous before any selection, so --umd-skip-models cannot resolve it)."""
        existing = self._models.get(cls.name)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"model name {cls.name!r} comes from both {self._origins[cls.name]}"
                f" ({_qualified(existing)}) and {origin} ({_qualified(cls)}); rename one of"
                " them: give the class another `name`"
            )
        self._models[cls.name] = cls
        self._origins[cls.name] = origin

    def names(self) -> list[str]:
        return sorted(self._models)

    def origin(self, name: str) -> str:
        return self._origins[name]

    def get(self, name: str) -> type[SegmentationModel]:
        """The model class called ``name``; an unknown name lists the closest ones."""
        try:
            return self._models[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.4)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(
                f"unknown model {name!r}{hint} (known: {', '.join(self.names())})"
            ) from None

    def select(self, include: Iterable[str] = ("*",), exclude: Iterable[str] = ()) -> list[str]:
        """Names matching any ``include`` pattern and no ``exclude`` pattern (fnmatch).

        A pattern without wildcards must name a known model, so a typo is an error, not an
        empty audit.
        """
        include, exclude = list(include), list(exclude)
        for pattern in include + exclude:
            if not any(ch in pattern for ch in "*?[") and pattern not in self._models:
                self.get(pattern)  # raises with close matches
        return [
            name
            for name in self.names()
            if any(fnmatch.fnmatchcase(name, p) for p in include)
            and not any(fnmatch.fnmatchcase(name, p) for p in exclude)
        ]
