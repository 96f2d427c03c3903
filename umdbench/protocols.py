"""Run a promptable model on one organ under a named prompt protocol.

The suite calls :func:`run_prompted` for every model whose ``prompt_kind`` is not ``none``.
Single-shot protocols build one prompt from the ground truth; iterative ones (clicks) call the
model again with every click so far, its previous mask and a state dict it may feed back.
Everything given to the model is recorded.

Protocol names (the last part of a case id):

============================  ===============================================================
``box``                       tight 3D box of the reference
``box-jitter<N>mm``           the box grown by a seeded margin of up to N mm per face
``box-cvpr``                  CVPR 2025 box (slice range + 2D box of the middle slice)
``box-cvpr-<N>clicks``        that box, then N clicks at the distance-transform maximum of the
                              largest error component (the CVPR 2025 interactive protocol)
``<N>click`` / ``<N>clicks``  SAM-Med3D: a random organ voxel, then random error voxels
``<N>clicks-center``          the same, first click at the organ's interior-most voxel
``<N>clicks-edt``             every click at the largest error component's distance maximum
``text``                      the organ's name (synonyms in the record)
``classid``                   the organ's id in the model's own ``label_ids``
============================  ===============================================================

Iterative protocols record Dice after every step and DSC_AUC over the click steps.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from umdbench.metrics import dice
from umdbench.prompts import (
    Prompt,
    box_prompt,
    check_protocol_name,
    cvpr_box_prompt,
    dsc_auc,
    edt_click,
    interior_point,
    organ_text,
    random_error_click,
    random_foreground_point,
)

if TYPE_CHECKING:
    from umdbench.models.base import SegmentationModel
    from umdbench.volume import Volume

__all__ = [
    "PROTOCOL_EXAMPLES",
    "PromptedResult",
    "ProtocolSpec",
    "check_protocols",
    "parse_protocol",
    "run_prompted",
]

_CLICKS_RE = re.compile(r"^(?P<n>[1-9][0-9]*)clicks?(?:-(?P<rule>center|edt))?$")
_BOX_CVPR_CLICKS_RE = re.compile(r"^box-cvpr-(?P<n>[1-9][0-9]*)clicks?$")
_JITTER_RE = re.compile(r"^box-jitter(?P<mm>[0-9]+)mm$")

#: One example of every protocol form (for help texts and tests).
PROTOCOL_EXAMPLES: tuple[str, ...] = (
    "box", "box-jitter5mm", "box-cvpr", "box-cvpr-5clicks", "1click", "5clicks",
    "1click-center", "5clicks-edt", "text", "classid",
)

ClickRule = Callable[[np.ndarray, np.ndarray, np.random.Generator], "tuple[np.ndarray, int] | None"]


@dataclass(frozen=True)
class ProtocolSpec:
    """A parsed protocol name: the opening prompt, then ``n_clicks`` clicks by ``click_rule``."""

    name: str
    opening: str  # box | box-cvpr | text | classid | click
    n_clicks: int = 0
    first_click: str = "random"  # random | center | edt
    click_rule: str = "random"  # random | edt
    jitter_mm: float = 0.0

    @property
    def iterative(self) -> bool:
        return self.n_clicks > 1 or (self.opening != "click" and self.n_clicks > 0)


def parse_protocol(name: str) -> ProtocolSpec:
    """What a protocol name means; an unknown name lists the forms that exist."""
    check_protocol_name(name)
    if name in ("box", "box-cvpr", "text", "classid"):
        return ProtocolSpec(name, opening=name)
    if match := _JITTER_RE.match(name):
        return ProtocolSpec(name, opening="box", jitter_mm=float(match["mm"]))
    if match := _BOX_CVPR_CLICKS_RE.match(name):
        return ProtocolSpec(name, "box-cvpr", n_clicks=int(match["n"]), click_rule="edt")
    if match := _CLICKS_RE.match(name):
        rule = match["rule"] or "random"
        return ProtocolSpec(
            name,
            opening="click",
            n_clicks=int(match["n"]),
            first_click=rule,
            click_rule="edt" if rule == "edt" else "random",
        )
    raise ValueError(
        "protocol must be one of box, box-jitter<N>mm, box-cvpr, box-cvpr-<N>clicks, <N>clicks,"
        f" <N>clicks-center, <N>clicks-edt, text, classid; got {name!r}"
    )


def check_protocols(cls: type[SegmentationModel]) -> tuple[str, ...]:
    """Validate a model's ``protocols`` (called when the case matrix is built)."""
    from umdbench.models.base import PromptKind

    if cls.prompt_kind is not PromptKind.NONE and not cls.protocols:
        raise TypeError(f"{cls.__name__} is promptable and must list `protocols`, got none")
    for name in cls.protocols:
        try:
            parse_protocol(name)
        except ValueError as error:
            raise TypeError(f"{cls.__name__}.protocols: {error}") from error
    return tuple(cls.protocols)


@dataclass
class PromptedResult:
    """The final mask, the prompt(s) as recorded, and per-step figures for iterative protocols.

    ``steps`` holds one entry per model call (``step``, ``dice``, the click if any); ``dsc_auc``
    is the area under Dice over the click steps (NaN for single-shot protocols).
    """

    mask: np.ndarray
    prompt: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)
    oracle: bool = False
    dsc_auc: float = float("nan")

    def to_record(self) -> dict[str, Any]:
        """The JSON-ready part of a result record: prompt, steps, dsc_auc, oracle."""
        return {
            "prompt": self.prompt,
            "steps": self.steps,
            "dsc_auc": self.dsc_auc,
            "oracle": self.oracle,
        }


@dataclass
class _Run:
    """One interactive run: what the model has been given so far."""

    model: SegmentationModel
    image: Volume
    modality: str
    reference: np.ndarray
    base: Prompt
    rng: np.random.Generator
    points: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    mask: np.ndarray | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    def prompt(self) -> Prompt:
        points = np.asarray(self.points, dtype=int).reshape(-1, 3) if self.points else None
        labels = np.asarray(self.labels, dtype=int) if self.points else None
        return Prompt(
            protocol=self.base.protocol,
            organ=self.base.organ,
            seed=self.base.seed,
            box=self.base.box,
            points=points,
            point_labels=labels,
            text=self.base.text,
            class_id=self.base.class_id,
            step=len(self.steps),
            previous=self.mask,
            roi_center=self.base.roi_center,
            oracle=self.base.oracle,
            state=self.state,
            extra=dict(self.base.extra),
        )

    def call(self, click: tuple[np.ndarray, int] | None = None) -> None:
        entry: dict[str, Any] = {"step": len(self.steps)}
        if click is not None:
            self.points.append(np.asarray(click[0], dtype=int))
            self.labels.append(int(click[1]))
            entry["click_voxel"] = [int(v) for v in click[0]]
            entry["click_label"] = int(click[1])
        self.mask = _as_mask(self.model.predict(self.image, self.modality, self.prompt()), self)
        entry["dice"] = dice(self.mask, self.reference)
        self.steps.append(entry)

    def skip(self) -> None:
        """No error left to click on: the step keeps the previous mask."""
        assert self.mask is not None
        self.steps.append(
            {"step": len(self.steps), "click_voxel": None, "dice": dice(self.mask, self.reference)}
        )


def _as_mask(labels: np.ndarray, run: _Run) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != run.reference.shape:
        raise ValueError(
            f"model {run.model.name!r} must return a mask on the scan grid {run.reference.shape},"
            f" got shape {labels.shape} (map the output back in predict)"
        )
    return labels > 0


def _base_prompt(
    spec: ProtocolSpec,
    model: SegmentationModel,
    image: Volume,
    ref: np.ndarray,
    organ: str,
    seed: int,
) -> Prompt:
    if spec.opening == "box":
        prompt = box_prompt(ref, organ, seed, image.spacing, jitter_mm=spec.jitter_mm)
    elif spec.opening == "box-cvpr":
        prompt = cvpr_box_prompt(ref, organ, seed, image.affine)
    elif spec.opening == "text":
        name, synonyms = organ_text(organ)
        prompt = Prompt(spec.name, organ, seed, text=name, extra={"synonyms": list(synonyms)})
    elif spec.opening == "classid":
        prompt = Prompt(spec.name, organ, seed, class_id=_class_id(model, organ))
    else:
        prompt = Prompt(spec.name, organ, seed)
    changes: dict[str, Any] = {"protocol": spec.name}
    if getattr(model, "oracle_crop", False):
        changes.update(roi_center=_box_center(ref, organ), oracle=True)
    return _replace(prompt, **changes)


def _replace(prompt: Prompt, **changes: Any) -> Prompt:
    from dataclasses import replace

    return replace(prompt, **changes)


def _class_id(model: SegmentationModel, organ: str) -> int:
    if organ not in model.label_ids:
        raise ValueError(
            f"model {model.name!r} has no class id for organ {organ!r} in its label_ids"
            f" (known: {', '.join(sorted(model.label_ids))})"
        )
    return int(model.label_ids[organ])


def _box_center(ref: np.ndarray, organ: str) -> tuple[float, float, float]:
    coords = np.argwhere(ref)
    if len(coords) == 0:
        raise ValueError(f"cannot centre a crop on {organ!r}: the reference mask is empty")
    center = (coords.min(axis=0) + coords.max(axis=0)) / 2.0
    return (float(center[0]), float(center[1]), float(center[2]))


def _first_click(spec: ProtocolSpec, run: _Run) -> tuple[np.ndarray, int]:
    organ = run.base.organ
    if spec.first_click == "center":
        return interior_point(run.reference, organ, run.rng), 1
    if spec.first_click == "edt":
        click = edt_click(np.zeros_like(run.reference), run.reference, run.rng)
        if click is None:  # pragma: no cover - the reference is checked non-empty above
            raise ValueError(f"cannot click on {organ!r}: the reference mask is empty")
        return click
    return random_foreground_point(run.reference, organ, run.rng), 1


def _clicks(run: _Run, rule: ClickRule, count: int) -> None:
    for _ in range(count):
        assert run.mask is not None
        click = rule(run.mask, run.reference, run.rng)
        if click is None:
            run.skip()
        else:
            run.call(click)


def run_prompted(
    model: SegmentationModel,
    image: Volume,
    modality: str,
    reference: np.ndarray,
    organ: str,
    protocol: str,
    seed: int,
) -> PromptedResult:
    """Prompt ``model`` for ``organ`` on ``image`` under ``protocol``; ``reference`` is the
    ground-truth mask on the image grid (the prompts' only source)."""
    spec = parse_protocol(protocol)
    reference = np.asarray(reference, dtype=bool)
    if reference.shape != image.shape:
        raise ValueError(
            f"reference for {organ!r} must be on the image grid {image.shape},"
            f" got {reference.shape}"
        )
    if not reference.any():
        raise ValueError(f"cannot prompt for {organ!r}: the reference mask is empty")
    base = _base_prompt(spec, model, image, reference, organ, seed)
    run = _Run(model, image, modality, reference, base, np.random.default_rng(seed))
    rule: ClickRule = edt_click if spec.click_rule == "edt" else random_error_click
    if spec.opening == "click":
        run.call(_first_click(spec, run))
        _clicks(run, rule, spec.n_clicks - 1)
    else:
        run.call()
        _clicks(run, rule, spec.n_clicks)
    return _result(spec, run, image)


def _result(spec: ProtocolSpec, run: _Run, image: Volume) -> PromptedResult:
    assert run.mask is not None
    click_dice = [s["dice"] for s in run.steps if "click_voxel" in s]
    record = run.prompt().to_record(image.affine)
    record["step"] = len(run.steps) - 1
    return PromptedResult(
        mask=run.mask,
        prompt=record,
        steps=run.steps if spec.iterative else [],
        oracle=run.base.oracle,
        dsc_auc=dsc_auc(click_dice) if spec.iterative else float("nan"),
    )

