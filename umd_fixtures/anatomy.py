"""A parametric whole-body anatomy: organs as implicit functions in world millimetres.

Coordinates are RAS+ (nibabel's convention): +x to the subject's Right, +y Anterior,
+z Superior. A *template* places the 13 canonical organs and the body tissues in a canonical
frame centred in the field of view; :func:`sample_subject` varies it per subject (global and
per-organ scale, offsets, smooth shape perturbations), and a :class:`Pose` maps scanner world
coordinates of one session to that frame (rigid patient position, plus a small smooth
deformation for the second session). Because the mapping goes world -> anatomy, every grid is
labelled exactly at its own voxel centres; no label is ever resampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.spatial import cKDTree

from umdbench.organs import CANONICAL_ORGANS

from .physics import TISSUE_IDS

__all__ = [
    "PAINT_ORDER",
    "Ellipsoid",
    "Pose",
    "SubjectAnatomy",
    "Tube",
    "Union",
    "Warp",
    "grid_world_points",
    "sample_pose",
    "sample_subject",
    "tissue_on_grid",
]

Point = tuple[float, float, float]

#: Template ellipsoids (centre, semi-axes) in canonical mm; lung is a union of two.
_ELLIPSOIDS: dict[str, tuple[Point, Point]] = {
    "liver": ((40.0, 5.0, -85.0), (50.0, 55.0, 42.0)),
    "kidney_left": ((-50.0, -42.0, -140.0), (20.0, 18.0, 40.0)),
    "kidney_right": ((50.0, -42.0, -150.0), (20.0, 18.0, 40.0)),
    "spleen": ((-65.0, -25.0, -78.0), (20.0, 26.0, 33.0)),
    "heart": ((-15.0, 20.0, -15.0), (40.0, 33.0, 38.0)),
    "brain": ((0.0, 5.0, 165.0), (58.0, 72.0, 58.0)),
    "urinary_bladder": ((0.0, 30.0, -205.0), (28.0, 22.0, 24.0)),
    "stomach": ((-45.0, 20.0, -85.0), (28.0, 25.0, 35.0)),
}
_LUNGS: tuple[tuple[Point, Point], ...] = (
    ((48.0, -5.0, 5.0), (36.0, 48.0, 60.0)),
    ((-48.0, -5.0, 5.0), (36.0, 48.0, 60.0)),
)
#: Template tubes (control points, radius) in canonical mm.
_TUBES: dict[str, tuple[tuple[Point, ...], float]] = {
    "aorta": (
        ((-5, 15, 15), (-5, 10, 45), (-12, -5, 62), (-18, -25, 48), (-16, -28, 10),
         (-14, -28, -60), (-10, -28, -120), (-6, -28, -185)),
        9.0,
    ),
    "esophagus": (
        ((3, -12, 95), (3, -20, 55), (2, -22, 0), (-10, -12, -45), (-28, 5, -65)),
        7.5,
    ),
    "pancreas": (((20, -6, -130), (0, -8, -118), (-25, -9, -108), (-48, -14, -102)), 9.0),
    "colon": (
        ((55, 10, -195), (62, 15, -165), (58, 25, -135), (20, 45, -140), (-20, 45, -140),
         (-60, 28, -135), (-68, 12, -165), (-62, 5, -200), (-30, 0, -218), (0, -20, -222)),
        13.0,
    ),
}  # fmt: skip
_SPINE: tuple[tuple[Point, ...], float] = (
    ((0, -50, -230), (0, -55, -100), (0, -52, 40), (0, -38, 110), (0, -30, 125)),
    13.0,
)
_TORSO_Z, _TORSO_RADII, _TORSO_FAT_MM = (-235.0, 75.0), np.array([100.0, 75.0]), 12.0
_NECK_Z, _NECK_CENTRE, _NECK_RADII, _NECK_FAT_MM = (
    (60.0, 125.0),
    (0.0, -10.0),
    np.array([42.0, 45.0]),
    6.0,
)

#: Overlaps resolve by painting in this order: a later organ wins its voxels.
PAINT_ORDER: tuple[str, ...] = (
    "lung", "liver", "colon", "stomach", "spleen", "heart", "kidney_left", "kidney_right",
    "pancreas", "aorta", "esophagus", "urinary_bladder", "brain",
)  # fmt: skip


@dataclass(frozen=True)
class Warp:
    """A smooth displacement field: a sum of plane sine waves (mm in, mm out)."""

    amplitudes: np.ndarray  # (K, 3): displacement vector of each wave
    wavevectors: np.ndarray  # (K, 3): 2 pi / wavelength along the wave's direction
    phases: np.ndarray  # (K,)

    @staticmethod
    def random(
        rng: np.random.Generator,
        amplitude_mm: float,
        wavelength_mm: tuple[float, float],
        k: int = 3,
    ) -> Warp:
        """``k`` waves in random directions; the total displacement stays below amplitude_mm."""
        directions = rng.normal(size=(k, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        wavelengths = rng.uniform(*wavelength_mm, size=(k, 1))
        vectors = rng.normal(size=(k, 3))
        vectors *= amplitude_mm / (k * np.linalg.norm(vectors, axis=1, keepdims=True))
        return Warp(vectors, 2.0 * np.pi * directions / wavelengths, rng.uniform(0, 2 * np.pi, k))

    def __call__(self, points: np.ndarray) -> np.ndarray:
        waves = np.sin(points @ self.wavevectors.T + self.phases)  # (N, K)
        return waves @ self.amplitudes


@dataclass(frozen=True)
class Ellipsoid:
    """Points p with |(p + warp(p) - centre) / radii| <= 1."""

    centre: np.ndarray
    radii: np.ndarray
    warp: Warp

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        margin = self.radii + float(np.abs(self.warp.amplitudes).sum()) + 1.0
        return self.centre - margin, self.centre + margin

    def contains(self, points: np.ndarray) -> np.ndarray:
        q = (points + self.warp(points) - self.centre) / self.radii
        return np.einsum("ij,ij->i", q, q) <= 1.0


@dataclass(frozen=True)
class Tube:
    """Points within ``radius`` of a smooth curve (a spline through control points)."""

    samples: np.ndarray  # (M, 3) dense points on the curve, <= 1 mm apart
    radius: float
    warp: Warp

    @staticmethod
    def through(control: np.ndarray, radius: float, warp: Warp) -> Tube:
        """Sample a cubic spline through ``control`` (chord-length parameter) every ~0.5 mm."""
        chord = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(control, axis=0), axis=1))])
        spline = CubicSpline(chord, control, axis=0, bc_type="natural")
        return Tube(spline(np.linspace(0.0, chord[-1], int(chord[-1] * 2) + 2)), radius, warp)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        margin = self.radius + float(np.abs(self.warp.amplitudes).sum()) + 1.0
        return self.samples.min(axis=0) - margin, self.samples.max(axis=0) + margin

    def contains(self, points: np.ndarray) -> np.ndarray:
        distance, _ = cKDTree(self.samples).query(
            points + self.warp(points), distance_upper_bound=self.radius
        )
        return distance <= self.radius


@dataclass(frozen=True)
class Union:
    """An organ made of several parts (the two lungs)."""

    parts: tuple[Ellipsoid | Tube, ...]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lows, highs = zip(*(part.bounds() for part in self.parts), strict=True)
        return np.min(lows, axis=0), np.max(highs, axis=0)

    def contains(self, points: np.ndarray) -> np.ndarray:
        inside = np.zeros(len(points), dtype=bool)
        for part in self.parts:
            inside |= part.contains(points)
        return inside


Shape = Ellipsoid | Tube | Union


@dataclass(frozen=True)
class SubjectAnatomy:
    """One subject: global scale, the 13 organ shapes and the skeleton, in canonical mm."""

    scale: float
    organs: dict[str, Shape]
    spine: Tube
    skull: tuple[np.ndarray, np.ndarray]  # brain centre and semi-axes, skull shell around

    def tissue(self, points: np.ndarray) -> np.ndarray:
        """Tissue id (uint8) at canonical points (N, 3)."""
        tissue = _body_tissue(points, self.skull)
        _paint(tissue, points, self.spine, TISSUE_IDS["bone"], _vertebrae(points))
        for organ in PAINT_ORDER:
            _paint(tissue, points, self.organs[organ], TISSUE_IDS[organ])
        return tissue


def _inside_box(points: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return np.all((points >= low) & (points <= high), axis=1)


def _paint(
    tissue: np.ndarray,
    points: np.ndarray,
    shape: Shape,
    value: int,
    where: np.ndarray | None = None,
) -> None:
    """Set ``tissue`` to ``value`` inside ``shape``, testing only points in its bounding box."""
    candidates = _inside_box(points, *shape.bounds())
    if where is not None:
        candidates &= where
    index = np.flatnonzero(candidates)
    if index.size:
        tissue[index[shape.contains(points[index])]] = value


def _vertebrae(points: np.ndarray) -> np.ndarray:
    """Bone in 19 mm vertebral bodies separated by 5 mm discs."""
    return np.mod(points[:, 2] + 230.0, 24.0) < 19.0


def _elliptic(
    points: np.ndarray, centre: Sequence[float] | np.ndarray, radii: Sequence[float] | np.ndarray
) -> np.ndarray:
    q = (points[:, : len(radii)] - np.asarray(centre)) / np.asarray(radii)
    return np.einsum("ij,ij->i", q, q) <= 1.0


def _in_slab(points: np.ndarray, z_range: tuple[float, float]) -> np.ndarray:
    return (points[:, 2] >= z_range[0]) & (points[:, 2] <= z_range[1])


def _trunk(points: np.ndarray, shrink_mm: float, neck_shrink_mm: float) -> np.ndarray:
    """Torso and neck as elliptic cylinders, shrunk by a wall thickness for the inner part."""
    torso = _in_slab(points, _TORSO_Z) & _elliptic(points, (0.0, 0.0), _TORSO_RADII - shrink_mm)
    neck = _in_slab(points, _NECK_Z) & _elliptic(points, _NECK_CENTRE, _NECK_RADII - neck_shrink_mm)
    return torso | neck


def _body_tissue(points: np.ndarray, skull: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Air, subcutaneous fat, soft tissue (muscle) and the skull, before organs."""
    brain_c, brain_r = skull
    body = _trunk(points, 0.0, 0.0) | _elliptic(points, brain_c, brain_r + 16.0)
    inner = _trunk(points, _TORSO_FAT_MM, _NECK_FAT_MM) | _elliptic(points, brain_c, brain_r + 12.0)
    tissue = np.zeros(len(points), dtype=np.uint8)
    tissue[body] = TISSUE_IDS["fat"]
    tissue[inner] = TISSUE_IDS["soft_tissue"]
    shell = _elliptic(points, brain_c, brain_r + 9.0) & ~_elliptic(points, brain_c, brain_r + 2.0)
    tissue[shell] = TISSUE_IDS["bone"]
    return tissue


def _organ_warp(rng: np.random.Generator, size_mm: float, cap_mm: float = 5.0) -> Warp:
    """Shape perturbation of an organ: a few mm, wavelengths of two to four organ sizes."""
    return Warp.random(rng, min(cap_mm, 0.12 * size_mm), (2.0 * size_mm, 4.0 * size_mm))


def _sample_ellipsoid(
    rng: np.random.Generator, centre: Point, radii: Point, cap_mm: float = 5.0
) -> Ellipsoid:
    scale = rng.uniform(0.9, 1.1) * rng.uniform(0.96, 1.04, 3)
    offset = np.clip(rng.normal(0.0, 3.0, 3), -6.0, 6.0)
    warp = _organ_warp(rng, float(min(radii)), cap_mm)
    return Ellipsoid(np.asarray(centre) + offset, np.asarray(radii) * scale, warp)


def _sample_tube(rng: np.random.Generator, control: Sequence[Point], radius: float) -> Tube:
    points = np.asarray(control, dtype=np.float64)
    centre = points.mean(axis=0)
    scale = rng.uniform(0.9, 1.1)
    offset = np.clip(rng.normal(0.0, 3.0, 3), -6.0, 6.0)
    jitter = np.clip(rng.normal(0.0, 2.0, points.shape), -4.0, 4.0)
    moved = centre + scale * (points - centre) + offset + jitter
    thickness = radius * (1.0 + 0.5 * (scale - 1.0))
    return Tube.through(moved, thickness, _organ_warp(rng, 2.0 * radius))


def sample_subject(rng: np.random.Generator) -> SubjectAnatomy:
    """Draw one subject: global scale ±8 %, per-organ scale ±10 %, offsets, shape noise."""
    scale = float(rng.uniform(0.92, 1.08))
    brain = _sample_ellipsoid(rng, *_ELLIPSOIDS["brain"], cap_mm=2.0)  # stays inside its skull
    organs: dict[str, Shape] = {"brain": brain}
    for organ in CANONICAL_ORGANS:
        if organ == "lung":
            organs[organ] = Union(tuple(_sample_ellipsoid(rng, c, r) for c, r in _LUNGS))
        elif organ in _TUBES:
            organs[organ] = _sample_tube(rng, *_TUBES[organ])
        elif organ != "brain":
            organs[organ] = _sample_ellipsoid(rng, *_ELLIPSOIDS[organ])
    no_warp = Warp(np.zeros((1, 3)), np.zeros((1, 3)), np.zeros(1))
    spine = Tube.through(np.asarray(_SPINE[0], dtype=np.float64), _SPINE[1], no_warp)
    return SubjectAnatomy(scale, organs, spine, (brain.centre, brain.radii))


@dataclass(frozen=True)
class Pose:
    """Where the patient lies in the scanner, defined by the map from world to anatomy:
    ``b = R^T (w - t)``, ``b -= deformation(b)`` (second session only), ``canonical = b / scale``.
    Defining the map in this direction lets any grid be labelled exactly at its voxel centres.
    """

    rotation: np.ndarray
    translation: np.ndarray
    scale: float
    deformation: Warp | None = None

    def to_canonical(self, world: np.ndarray) -> np.ndarray:
        body = (world - self.translation) @ self.rotation  # R^T (w - t), row vectors
        if self.deformation is not None:
            body = body - self.deformation(body)
        return body / self.scale


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    """Rotation matrix from angles about x, y, z (degrees)."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def sample_pose(rng: np.random.Generator, scale: float, moved: bool) -> Pose:
    """The first session: near the FOV centre. ``moved``: another day, 10-20 mm and a few degrees
    away (mostly along the table and about the long axis), with a smooth deformation of a few mm."""
    angles = rng.uniform(-1.0, 1.0, 3) * np.array([0.5, 0.5, 1.0])
    shift = rng.uniform(-3.0, 3.0, 3)
    if not moved:
        return Pose(_rotation(angles), shift, scale)
    angles = angles + rng.choice([-1.0, 1.0], 3) * rng.uniform(1.0, 2.0, 3) * np.array(
        [0.7, 0.7, 2.0]
    )
    table = rng.choice([-1.0, 1.0]) * rng.uniform(10.0, 15.0)
    shift = shift + np.array([rng.uniform(-4, 4), rng.uniform(-4, 4), table])
    return Pose(_rotation(angles), shift, scale, Warp.random(rng, 4.0, (250.0, 450.0)))


def grid_world_points(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """World coordinates (N, 3) of every voxel centre, in C order of the array."""
    index = np.indices(shape, dtype=np.float64).reshape(3, -1)
    return (affine[:3, :3] @ index + affine[:3, 3:4]).T


def tissue_on_grid(
    subject: SubjectAnatomy, pose: Pose, affine: np.ndarray, shape: tuple[int, int, int]
) -> np.ndarray:
    """The tissue-id map (uint8) of ``subject`` in ``pose``, evaluated on one grid."""
    canonical = pose.to_canonical(grid_world_points(np.asarray(affine, dtype=np.float64), shape))
    return subject.tissue(canonical).reshape(shape)
