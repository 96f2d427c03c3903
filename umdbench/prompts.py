"""Prompts derived from ground truth with a seeded generator, recorded with every result.

A prompt lives in the scan's voxel space (the grid the ground truth is on); it also carries the
world coordinates so a model that resamples can map it, and a test can check it lands inside the
organ after that model's preprocessing.

The click rules follow their sources:

- SAM-Med3D (uni-medical/SAM-Med3D ``utils/infer_utils.py`` ``random_sample_next_click``): the
  first click is a uniformly random ground-truth voxel; each later click a uniformly random
  voxel of the error region, positive when that voxel is a false negative, negative when a
  false positive; with no error left, a random ground-truth voxel again, positive.
- CVPR 2025 interactive challenge (``CVPR25_iter_eval.py``): the click sits at the maximum of the
  Euclidean distance transform of the largest 26-connected error component (the volume border
  counts as outside); ties are broken by the seeded generator.
- CVPR 2025 box (``get_boxes.py``): the mask's range along the slice axis plus the 2D box of the
  middle foreground slice, each side pushed out by a random 0-5 voxel shift (scaled by size/256).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from umdbench.targets import BUILTIN_TARGETS, target_parts, target_text

__all__ = [
    "ORGAN_SYNONYMS",
    "Prompt",
    "PromptView",
    "box_prompt",
    "case_seed",
    "check_protocol_name",
    "cvpr_box_prompt",
    "dsc_auc",
    "edt_click",
    "interior_point",
    "organ_parts",
    "organ_text",
    "random_error_click",
    "random_foreground_point",
    "slice_axis",
    "voxel_to_world",
    "world_to_voxel",
]

#: Names a text-prompted model may be given for each built-in target, the preferred one first
#: (the targets' ``text`` in :mod:`umdbench.targets`; :func:`organ_text` also knows a user's).
ORGAN_SYNONYMS: Mapping[str, tuple[str, ...]] = {
    name: target.text_names for name, target in BUILTIN_TARGETS.items()
}

_MODALITY_MARKERS = ("-CT-", "-PET_CT-", "-MRI-", "-PET_MRI-", "-PET-")
_PROTOCOL_RE = re.compile(r"^[A-Za-z0-9]+(-[A-Za-z0-9]+)*$")

Box = tuple[tuple[int, int, int], tuple[int, int, int]]


@dataclass(frozen=True)
class PromptView:
    """The ground truth as a model's official evaluation sees it, when that code samples its
    clicks there rather than on the scan (SAM-Med3D: resampled to 1.5 mm, RAS, cropped to 128^3
    around the label). Clicks are drawn from ``reference`` and the model's own mask in this
    space, so every click lands inside the model's region of interest, as in the official code.

    ``affine`` maps view voxel indices to world mm (RAS+); ``region`` is the JSON-ready
    description of the region of interest that the results record; ``context`` is the model's
    own data for ``predict`` (the crop it will feed the network), never recorded. After every
    ``predict`` the model stores its mask on the view grid in ``prompt.state["view_mask"]``:
    later clicks come from that mask's errors, as the official loop does.
    """

    reference: np.ndarray
    affine: np.ndarray
    region: dict[str, Any]
    context: Any = field(default=None, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.reference.shape)


@dataclass(frozen=True)
class Prompt:
    """What a promptable model is given for one organ of one scan, at one interaction step.

    ``box`` is ``(lo, hi)`` inclusive voxel indices; ``points`` is ``(N, 3)`` voxel indices (every
    click so far) with ``point_labels`` 1 (foreground) or 0 (background); ``text`` is an organ
    name (``extra["synonyms"]`` lists the others); ``class_id`` is the organ's id in the model's
    own label map. ``previous`` is the model's last mask on the scan grid (iterative protocols).
    ``roi_center`` is the ground-truth box centre (voxel), given only to models that crop around
    the organ; such prompts carry ``oracle=True``. ``state`` is one dict shared by every step of
    one interactive run, where a model keeps what it feeds back (e.g. SAM's low-res logits); it is
    never recorded.

    ``view`` is the model's :class:`PromptView` when it declares one; then ``view_points`` are the
    clicks as integer voxel indices of the view grid (``points`` stay scan voxel indices, possibly
    fractional, of the same world positions). ``reference`` is the ground-truth mask on the scan
    grid, given only under protocols where the model's own evaluation code samples the prompts
    (``patchpoints``: VISTA3D's per-patch sampler). ``part`` names the part of a multi-part organ
    being prompted (``left``/``right`` lung), ``None`` for a whole organ.
    """

    protocol: str
    organ: str
    seed: int
    box: Box | None = None
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    text: str | None = None
    class_id: int | None = None
    step: int = 0
    previous: np.ndarray | None = field(default=None, repr=False, compare=False)
    roi_center: tuple[float, float, float] | None = None
    oracle: bool = False
    state: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    extra: dict[str, Any] = field(default_factory=dict)
    view: PromptView | None = field(default=None, repr=False, compare=False)
    view_points: np.ndarray | None = None
    reference: np.ndarray | None = field(default=None, repr=False, compare=False)
    part: str | None = None

    def to_record(self, affine: np.ndarray | None = None) -> dict[str, Any]:
        """A JSON-ready description, with world coordinates (mm) when the affine is given."""
        record: dict[str, Any] = {"protocol": self.protocol, "seed": self.seed, "step": self.step}
        if self.box is not None:
            record["box_voxel"] = [list(self.box[0]), list(self.box[1])]
            if affine is not None:
                corners = np.array([self.box[0], self.box[1]], dtype=float)
                record["box_world"] = voxel_to_world(corners, affine).round(2).tolist()
        if self.points is not None:
            record["points_voxel"] = np.round(np.asarray(self.points, dtype=float), 3).tolist()
            record["point_labels"] = np.asarray(self.point_labels).tolist()
            if affine is not None:
                record["points_world"] = voxel_to_world(self.points, affine).round(2).tolist()
        if self.view_points is not None:
            record["points_view_voxel"] = np.asarray(self.view_points).tolist()
        if self.view is not None:
            record["region_of_interest"] = self.view.region
        if self.part is not None:
            record["part"] = self.part
        if self.text is not None:
            record["text"] = self.text
        if self.class_id is not None:
            record["class_id"] = self.class_id
        if self.roi_center is not None:
            record["roi_center_voxel"] = [round(float(v), 2) for v in self.roi_center]
        if self.oracle:
            record["oracle"] = True
        record.update(self.extra)
        return record


def voxel_to_world(voxels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``(N, 3)`` voxel indices to world mm (RAS+) through a 4x4 affine."""
    voxels = np.atleast_2d(np.asarray(voxels, dtype=float))
    return voxels @ affine[:3, :3].T + affine[:3, 3]


def world_to_voxel(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``(N, 3)`` world mm to (fractional) voxel indices of the grid with ``affine``."""
    points = np.atleast_2d(np.asarray(points, dtype=float))
    inverse = np.linalg.inv(affine)
    return points @ inverse[:3, :3].T + inverse[:3, 3]


def case_seed(*parts: str | int) -> int:
    """A stable 32-bit seed from names (model, scan, organ): the same on every machine and run."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def check_protocol_name(name: str) -> str:
    """Return ``name`` if it can sit at the end of a case id; the error says what is wrong."""
    if not isinstance(name, str) or not _PROTOCOL_RE.match(name):
        raise ValueError(
            "protocol must be letters and digits joined by single hyphens (e.g. 5clicks-edt),"
            f" got {name!r}"
        )
    padded = f"-{name}-"
    marker = next((m for m in _MODALITY_MARKERS if m in padded), None)
    if marker is not None:
        raise ValueError(
            f"protocol must not contain a modality name ({marker.strip('-')}), got {name!r}"
        )
    return name


def _nonempty(mask: np.ndarray, organ: str, what: str) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"reference mask for {organ!r} must be 3D, got shape {mask.shape}")
    if not mask.any():
        raise ValueError(f"cannot make a {what} prompt for {organ!r}: the reference mask is empty")
    return mask


def box_prompt(
    mask: np.ndarray,
    organ: str,
    seed: int,
    spacing: tuple[float, float, float],
    jitter_mm: float = 0.0,
) -> Prompt:
    """The tight 3D bounding box of ``mask``, optionally grown by a seeded margin of up to
    ``jitter_mm`` per face (as interactive benchmarks jitter boxes)."""
    mask = _nonempty(mask, organ, "box")
    coords = np.argwhere(mask)
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    if jitter_mm > 0:
        rng = np.random.default_rng(seed)
        limit = np.ceil(jitter_mm / np.asarray(spacing)).astype(int)
        lo = lo - rng.integers(0, limit + 1)
        hi = hi + rng.integers(0, limit + 1)
    lo = np.clip(lo, 0, np.asarray(mask.shape) - 1)
    hi = np.clip(hi, 0, np.asarray(mask.shape) - 1)
    protocol = "box" if jitter_mm == 0 else f"box-jitter{jitter_mm:g}mm"
    return Prompt(protocol=protocol, organ=organ, seed=seed, box=_as_box(lo, hi))


def _as_box(lo: np.ndarray, hi: np.ndarray) -> Box:
    return (
        (int(lo[0]), int(lo[1]), int(lo[2])),
        (int(hi[0]), int(hi[1]), int(hi[2])),
    )


def slice_axis(affine: np.ndarray) -> int:
    """The array axis that runs closest to the body's long (superior-inferior) axis."""
    directions = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return int(np.argmax(np.abs(directions[2])))


def cvpr_box_prompt(
    mask: np.ndarray, organ: str, seed: int, affine: np.ndarray, max_shift: int = 5
) -> Prompt:
    """The CVPR 2025 box: full range along the slice axis, 2D box of the middle foreground slice.

    The middle slice is the median slice index over foreground voxels; each in-plane side moves
    out by one seeded shift in ``[0, max_shift]`` scaled by the in-plane size over 256.
    """
    mask = _nonempty(mask, organ, "box")
    axis = slice_axis(affine)
    slices = np.sort(np.nonzero(mask)[axis])
    middle = int(slices[len(slices) // 2])
    plane = np.take(mask, middle, axis=axis)
    in_plane = [a for a in range(3) if a != axis]
    rows, cols = np.nonzero(plane)
    shift = int(np.random.default_rng(seed).integers(0, max_shift + 1))
    lo, hi = np.zeros(3, dtype=int), np.zeros(3, dtype=int)
    lo[axis], hi[axis] = int(slices[0]), int(slices[-1])
    for coords, dim in ((rows, in_plane[0]), (cols, in_plane[1])):
        pad = int(shift * mask.shape[dim] / 256)
        lo[dim] = max(0, int(coords.min()) - pad)
        hi[dim] = min(mask.shape[dim] - 1, int(coords.max()) + pad)
    extra = {"slice_axis": axis, "middle_slice": middle, "shift": shift}
    return Prompt(protocol="box-cvpr", organ=organ, seed=seed, box=_as_box(lo, hi), extra=extra)


def random_foreground_point(mask: np.ndarray, organ: str, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random voxel of the organ (SAM-Med3D's first click), as ``(3,)`` ints."""
    coords = np.argwhere(_nonempty(mask, organ, "point"))
    return coords[rng.integers(len(coords))]


def _padded_edt(mask: np.ndarray) -> np.ndarray:
    """Distance to the nearest outside voxel, the volume border counting as outside."""
    from scipy.ndimage import distance_transform_edt

    padded = np.pad(mask, 1, constant_values=False)
    return np.asarray(distance_transform_edt(padded))[1:-1, 1:-1, 1:-1]


def _argmax_tie(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    best = np.argwhere(values == values.max())
    return best[rng.integers(len(best))]


def interior_point(mask: np.ndarray, organ: str, rng: np.random.Generator) -> np.ndarray:
    """The interior-most organ voxel (distance-transform maximum; seeded tie-break)."""
    return _argmax_tie(_padded_edt(_nonempty(mask, organ, "point")), rng)


def _error_regions(
    previous: np.ndarray, reference: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    previous, reference = previous.astype(bool), reference.astype(bool)
    return reference & ~previous, previous & ~reference


def random_error_click(
    previous: np.ndarray, reference: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """SAM-Med3D's next click: a random error voxel, label 1 if a false negative else 0.

    When the prediction is already perfect, a random organ voxel, positive, as the official
    ``random_sample_next_click`` does (uni-medical/SAM-Med3D ``utils/infer_utils.py``).
    """
    false_neg, false_pos = _error_regions(previous, reference)
    coords = np.argwhere(false_neg | false_pos)
    if len(coords) == 0:
        return random_foreground_point(reference, "the organ", rng), 1
    point = coords[rng.integers(len(coords))]
    return point, int(false_neg[tuple(point)])


def edt_click(
    previous: np.ndarray, reference: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, int] | None:
    """The CVPR 2025 next click: distance-transform maximum of the largest error component.

    Label 1 where that voxel is a false negative, 0 where a false positive; ``None`` when the
    prediction is already perfect.
    """
    import cc3d

    false_neg, _ = _error_regions(previous, reference)
    error = previous.astype(bool) != reference.astype(bool)
    if not error.any():
        return None
    components = cc3d.connected_components(error.astype(np.uint8), connectivity=26)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    largest = components == int(np.argmax(sizes))
    point = _argmax_tie(_padded_edt(largest), rng)
    return point, int(false_neg[tuple(point)])


def organ_parts(
    mask: np.ndarray, organ: str, affine: np.ndarray
) -> list[tuple[str | None, np.ndarray]]:
    """The disjoint parts of a multi-part target (its ``parts``), each as its own mask.

    The ``k`` largest 26-connected components (``k`` = the organ's number of parts) seed the
    parts; every other component joins the nearest seed, so the parts cover the mask exactly.
    Parts are named by side from their centroids' world x. An organ that is not multi-part, or
    whose mask has fewer components than parts (e.g. lungs that touch), is one part, ``None``.
    """
    mask = np.asarray(mask, dtype=bool)
    names = target_parts(organ)
    if not names or not mask.any():
        return [(None, mask)]
    import cc3d
    from scipy.ndimage import distance_transform_edt

    components = np.asarray(cc3d.connected_components(mask.astype(np.uint8), connectivity=26))
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    seeds = [int(i) for i in np.argsort(sizes)[::-1][: len(names)] if sizes[i] > 0]
    if len(seeds) < len(names):
        return [(None, mask)]
    seeded = np.zeros(mask.shape, dtype=np.int32)
    for index, component in enumerate(seeds, start=1):
        seeded[components == component] = index
    nearest = distance_transform_edt(seeded == 0, return_distances=False, return_indices=True)
    owner = seeded[tuple(nearest)] * mask
    parts = [owner == index for index in range(1, len(seeds) + 1)]
    x_world = [voxel_to_world(np.argwhere(p).mean(axis=0), affine)[0, 0] for p in parts]
    # names are ordered by decreasing world x (right first in RAS+)
    order = np.argsort(x_world)[::-1]
    return [(names[rank], parts[int(i)]) for rank, i in enumerate(order)]


def organ_text(organ: str) -> tuple[str, tuple[str, ...]]:
    """The preferred name of a target and its synonyms (for text prompts)."""
    return target_text(organ)


def dsc_auc(dice_per_click: list[float] | np.ndarray) -> float:
    """Area under Dice over click steps, unit step, trapezoid rule (CVPR 2025's DSC_AUC).

    The challenge integrates over the click steps only (not the initial box step), so five clicks
    give an area in ``[0, 4]``. A single step has no area: NaN.
    """
    values = np.asarray(dice_per_click, dtype=float)
    if values.size < 2:
        return float("nan")
    return float(np.sum((values[1:] + values[:-1]) / 2.0))
