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
``classid-<N>clicks``         that id, then N random error clicks with it (class + points)
``patchpoints``               the model's own evaluation sampler draws the points from the
                              ground truth (VISTA3D: one point per sliding-window patch)
============================  ===============================================================

Iterative protocols record Dice after every step and DSC_AUC over the click steps.

Where clicks come from. A model whose official evaluation samples clicks on its own view of the
ground truth (SAM-Med3D: resampled, canonical, cropped to 128^3) declares ``prompt_view``; every
click is then drawn from that view and from the model's own mask in it, so it lands inside the
crop exactly as in the official loop, and the record carries the region of interest with the
clicks in view, scan and world coordinates. Other models are clicked on the scan grid.

Organs in several parts (a target's ``parts``: lung = right + left). Under spatial protocols
(boxes and clicks) each part is prompted on its own, with its own seed, and the masks are merged;
the record lists each part's prompt and steps, and the merged Dice per step.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from umdbench.metrics import dice
from umdbench.outputs import check_label_map
from umdbench.prompts import (
    Prompt,
    PromptView,
    box_prompt,
    case_seed,
    check_protocol_name,
    cvpr_box_prompt,
    dsc_auc,
    edt_click,
    interior_point,
    organ_parts,
    organ_text,
    random_error_click,
    random_foreground_point,
    voxel_to_world,
    world_to_voxel,
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
_CLASSID_CLICKS_RE = re.compile(r"^classid-(?P<n>[1-9][0-9]*)clicks?$")

#: One example of every protocol form (for help texts and tests).
PROTOCOL_EXAMPLES: tuple[str, ...] = (
    "box", "box-jitter5mm", "box-cvpr", "box-cvpr-5clicks", "1click", "5clicks",
    "1click-center", "5clicks-edt", "text", "classid", "classid-1click", "patchpoints",
)

ClickRule = Callable[[np.ndarray, np.ndarray, np.random.Generator], "tuple[np.ndarray, int] | None"]
_OPENINGS = ("box", "box-cvpr", "text", "classid", "patchpoints")


@dataclass(frozen=True)
class ProtocolSpec:
    """A parsed protocol name: the opening prompt, then ``n_clicks`` clicks by ``click_rule``."""

    name: str
    opening: str  # box | box-cvpr | text | classid | patchpoints | click
    n_clicks: int = 0
    first_click: str = "random"  # random | center | edt
    click_rule: str = "random"  # random | edt
    jitter_mm: float = 0.0

    @property
    def iterative(self) -> bool:
        return self.n_clicks > 1 or (self.opening != "click" and self.n_clicks > 0)

    @property
    def spatial(self) -> bool:
        """Boxes or clicks: prompts that point at one place (multi-part organs go by part)."""
        return self.opening in ("box", "box-cvpr", "click") or self.n_clicks > 0


def parse_protocol(name: str) -> ProtocolSpec:
    """What a protocol name means; an unknown name lists the forms that exist."""
    check_protocol_name(name)
    if name in _OPENINGS:
        return ProtocolSpec(name, opening=name)
    if match := _CLASSID_CLICKS_RE.match(name):
        return ProtocolSpec(name, "classid", n_clicks=int(match["n"]))
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
        " <N>clicks-center, <N>clicks-edt, text, classid, classid-<N>clicks, patchpoints;"
        f" got {name!r}"
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
    """One interactive run on one organ (or one part of it): what the model has been given.

    Clicks are drawn from ``source`` (the reference on the model's view when it has one, else on
    the scan grid) and from the model's last mask in that same space.
    """

    model: SegmentationModel
    image: Volume
    modality: str
    reference: np.ndarray
    base: Prompt
    rng: np.random.Generator
    view: PromptView | None = None
    points: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    mask: np.ndarray | None = None
    masks: list[np.ndarray] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> np.ndarray:
        return self.view.reference if self.view is not None else self.reference

    def source_mask(self) -> np.ndarray:
        """The model's last mask in the space clicks are drawn from."""
        assert self.mask is not None
        if self.view is None:
            return self.mask
        view_mask = self.state.get("view_mask")
        if view_mask is None or np.shape(view_mask) != self.view.shape:
            raise ValueError(
                f"model {self.model.name!r} declares a prompt view, so predict must store its"
                f" mask on the view grid {self.view.shape} in prompt.state['view_mask']"
            )
        return np.asarray(view_mask, dtype=bool)

    def _scan_points(self) -> np.ndarray | None:
        if not self.points:
            return None
        points = np.asarray(self.points, dtype=float).reshape(-1, 3)
        if self.view is None:
            return points.astype(int)
        world = voxel_to_world(points, self.view.affine)
        return world_to_voxel(world, self.image.affine)

    def prompt(self) -> Prompt:
        view_points = None
        if self.view is not None and self.points:
            view_points = np.asarray(self.points, dtype=int).reshape(-1, 3)
        return replace(
            self.base,
            points=self._scan_points(),
            point_labels=np.asarray(self.labels, dtype=int) if self.points else None,
            step=len(self.steps),
            previous=self.mask,
            state=self.state,
            extra=dict(self.base.extra),
            view=self.view,
            view_points=view_points,
        )

    def call(self, click: tuple[np.ndarray, int] | None = None) -> None:
        entry: dict[str, Any] = {"step": len(self.steps)}
        if click is not None:
            self.points.append(np.asarray(click[0], dtype=int))
            self.labels.append(int(click[1]))
            entry.update(self._click_record(click))
        self.mask = _as_mask(self.model.predict(self.image, self.modality, self.prompt()), self)
        self._finish_step(entry)

    def empty(self, reason: str) -> None:
        """The official code returns an empty mask without calling the network."""
        self.mask = np.zeros(self.reference.shape, dtype=bool)
        self._finish_step({"step": len(self.steps), "note": reason})

    def _finish_step(self, entry: dict[str, Any]) -> None:
        assert self.mask is not None
        entry["dice"] = dice(self.mask, self.reference)
        self.steps.append(entry)
        self.masks.append(self.mask)

    def _click_record(self, click: tuple[np.ndarray, int]) -> dict[str, Any]:
        voxel = [int(v) for v in click[0]]
        if self.view is None:
            return {"click_voxel": voxel, "click_label": int(click[1])}
        world = voxel_to_world(np.asarray(voxel, dtype=float), self.view.affine)
        scan = world_to_voxel(world, self.image.affine)[0]
        return {
            "click_view_voxel": voxel,
            "click_voxel": [round(float(v), 3) for v in scan],
            "click_world": [round(float(v), 2) for v in world[0]],
            "click_label": int(click[1]),
        }

    def skip(self) -> None:
        """No error left to click on: the step keeps the previous mask."""
        assert self.mask is not None
        self.steps.append(
            {"step": len(self.steps), "click_voxel": None, "dice": dice(self.mask, self.reference)}
        )
        self.masks.append(self.mask)


def _as_mask(labels: np.ndarray, run: _Run) -> np.ndarray:
    """Each step's output checked as returned (values 0 and 1 on the scan grid), then a mask."""
    return check_label_map(labels, run.reference.shape, [1]) > 0


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
    elif spec.opening == "patchpoints":
        prompt = Prompt(
            spec.name, organ, seed, class_id=_class_id(model, organ), reference=ref.copy()
        )
    else:
        prompt = Prompt(spec.name, organ, seed)
    changes: dict[str, Any] = {"protocol": spec.name}
    if getattr(model, "oracle_crop", False):
        changes.update(roi_center=_box_center(ref), oracle=True)
    return replace(prompt, **changes)


def _box_center(ref: np.ndarray) -> tuple[float, float, float]:
    """The reference box centre, for models that crop around the organ (an oracle)."""
    coords = np.argwhere(ref)
    center = (coords.min(axis=0) + coords.max(axis=0)) / 2.0
    return (float(center[0]), float(center[1]), float(center[2]))


def protocol_unsupported(model: Any, organ: str, protocol: str | None) -> str | None:
    """Why ``protocol`` cannot prompt ``organ`` for this model, whatever the model says: a
    protocol that gives the model's own class id (``classid``, ``classid-<N>clicks``,
    ``patchpoints``) needs the target in its ``label_ids`` (VISTA3D has no class for a
    sarcoma; its clicks still work). None: it can."""
    if protocol is None or parse_protocol(protocol).opening not in ("classid", "patchpoints"):
        return None
    if organ in model.label_ids:
        return None
    return (
        f"{protocol} prompts by the model's own class id, and its label_ids have none for"
        f" {organ!r}; its spatial protocols still run"
    )


def _class_id(model: SegmentationModel, organ: str) -> int:
    if organ not in model.label_ids:
        raise ValueError(
            f"model {model.name!r} has no class id for organ {organ!r} in its label_ids"
            f" (known: {', '.join(sorted(model.label_ids))})"
        )
    return int(model.label_ids[organ])


def _first_click(spec: ProtocolSpec, run: _Run) -> tuple[np.ndarray, int]:
    organ, source = run.base.organ, run.source
    if spec.first_click == "center":
        return interior_point(source, organ, run.rng), 1
    if spec.first_click == "edt":
        click = edt_click(np.zeros_like(source), source, run.rng)
        if click is None:  # pragma: no cover - the reference is checked non-empty above
            raise ValueError(f"cannot click on {organ!r}: the reference mask is empty")
        return click
    return random_foreground_point(source, organ, run.rng), 1


def _clicks(run: _Run, rule: ClickRule, count: int) -> None:
    for _ in range(count):
        click = rule(run.source_mask(), run.source, run.rng)
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
    parts = organ_parts(reference, organ, image.affine) if spec.spatial else [(None, reference)]
    runs = [
        _run_part(spec, model, image, modality, mask, organ, _part_seed(seed, part), part)
        for part, mask in parts
    ]
    if len(runs) == 1:
        return _result(spec, runs[0], image)
    return _merged_result(spec, runs, reference, image, seed)


def _part_seed(seed: int, part: str | None) -> int:
    return seed if part is None else case_seed(seed, part)


def _run_part(
    spec: ProtocolSpec,
    model: SegmentationModel,
    image: Volume,
    modality: str,
    reference: np.ndarray,
    organ: str,
    seed: int,
    part: str | None,
) -> _Run:
    base = replace(_base_prompt(spec, model, image, reference, organ, seed), part=part)
    view = model.prompt_view(image, reference) if spec.spatial else None
    run = _Run(model, image, modality, reference, base, np.random.default_rng(seed), view)
    rule: ClickRule = edt_click if spec.click_rule == "edt" else random_error_click
    if view is not None and not view.reference.any():
        run.empty("the reference is empty in the model's region of interest")
        return run
    if spec.opening == "click":
        run.call(_first_click(spec, run))
        _clicks(run, rule, spec.n_clicks - 1)
    else:
        run.call()
        _clicks(run, rule, spec.n_clicks)
    return run


def _result(spec: ProtocolSpec, run: _Run, image: Volume) -> PromptedResult:
    assert run.mask is not None
    record = run.prompt().to_record(image.affine)
    record["step"] = len(run.steps) - 1
    return PromptedResult(
        mask=run.mask,
        prompt=record,
        steps=run.steps if spec.iterative else [],
        oracle=run.base.oracle,
        dsc_auc=_auc(spec, run.steps),
    )


def _auc(spec: ProtocolSpec, steps: list[dict[str, Any]]) -> float:
    if not spec.iterative:
        return float("nan")
    return dsc_auc([s["dice"] for s in steps if "click_voxel" in s])


def _merged_result(
    spec: ProtocolSpec, runs: list[_Run], reference: np.ndarray, image: Volume, seed: int
) -> PromptedResult:
    """Parts prompted on their own, masks merged step by step; each part's record kept."""
    n_steps = len(runs[0].masks)
    merged = [np.logical_or.reduce([run.masks[k] for run in runs]) for k in range(n_steps)]
    steps = [
        {"step": k, "dice": dice(mask, reference), **_clicked(runs, k)}
        for k, mask in enumerate(merged)
    ]
    parts = []
    for run in runs:
        part = _result(spec, run, image)
        parts.append({**part.prompt, "steps": run.steps, "n_reference": int(run.reference.sum())})
    prompt = {"protocol": spec.name, "seed": seed, "step": n_steps - 1, "parts": parts}
    if runs[0].base.oracle:
        prompt["oracle"] = True
    return PromptedResult(
        mask=merged[-1],
        prompt=prompt,
        steps=steps if spec.iterative else [],
        oracle=runs[0].base.oracle,
        dsc_auc=_auc(spec, steps),
    )


def _clicked(runs: list[_Run], step: int) -> dict[str, Any]:
    """Marks a merged step as a click step when the parts clicked at it (for DSC_AUC)."""
    if any("click_voxel" in run.steps[step] for run in runs):
        return {"click_voxel": "per part"}
    return {}
