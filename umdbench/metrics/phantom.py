"""A synthetic whole-body label pair (reference, prediction) for speed benchmarks.

13 organs as lumpy ellipsoids of realistic volume on a 512 x 512 x 300 grid of 0.8 x 0.8 x 2 mm;
the prediction moves each boundary by smooth noise of a few mm, shifts it by up to 2 voxels
and adds a small false-positive blob to some organs, so that surface figures are not trivial.
Fixed seed: the same pair every run.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["ORGANS", "SPACING", "whole_body_pair"]

SPACING = (0.8, 0.8, 2.0)
# name: (label, centre mm (x, y, z), semi-axes mm); volumes ~ liver 1.6 L ... esophagus 0.05 L
ORGANS: dict[str, tuple[int, tuple[float, float, float], tuple[float, float, float]]] = {
    "brain": (1, (205, 200, 540), (70, 85, 60)),
    "lung": (2, (205, 200, 370), (130, 80, 100)),
    "heart": (3, (225, 180, 330), (60, 50, 55)),
    "esophagus": (4, (205, 230, 360), (10, 10, 110)),
    "aorta": (5, (190, 215, 270), (12, 12, 170)),
    "liver": (6, (140, 190, 240), (85, 70, 65)),
    "spleen": (7, (290, 230, 240), (45, 30, 35)),
    "stomach": (8, (260, 170, 250), (50, 35, 40)),
    "pancreas": (9, (220, 220, 215), (70, 15, 15)),
    "kidney_right": (10, (130, 250, 200), (28, 25, 50)),
    "kidney_left": (11, (280, 250, 200), (28, 25, 50)),
    "colon": (12, (205, 170, 150), (90, 50, 40)),
    "urinary_bladder": (13, (205, 170, 80), (40, 35, 35)),
}


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    coarse = rng.standard_normal(tuple(max(2, n // 12) for n in shape))
    zoom = [n / c for n, c in zip(shape, coarse.shape, strict=True)]
    return ndimage.zoom(coarse, zoom, order=1)[tuple(slice(0, n) for n in shape)]


def _paint(
    labels: np.ndarray,
    label: int,
    centre: np.ndarray,
    axes: np.ndarray,
    noise: np.ndarray,
    lo: np.ndarray,
) -> None:
    shape = noise.shape
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    q = sum(
        ((g + o) * s - c) ** 2 / a**2
        for g, o, s, c, a in zip(grid, lo, SPACING, centre, axes, strict=True)
    )
    inside = np.sqrt(q) - 1.0 + noise < 0
    region = labels[tuple(slice(o, o + n) for o, n in zip(lo, shape, strict=True))]
    region[inside] = label


def whole_body_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(reference, prediction) uint8 label maps of shape (512, 512, 300)."""
    rng = np.random.default_rng(seed)
    shape = np.array([512, 512, 300])
    ref, pred = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    spacing = np.array(SPACING)
    for label, centre, axes in ORGANS.values():
        c, a = np.array(centre, float), np.array(axes, float)
        lo = np.maximum(((c - 1.3 * a) / spacing).astype(int), 0)
        hi = np.minimum(((c + 1.3 * a) / spacing).astype(int) + 1, shape)
        base = 0.08 * _smooth_noise(rng, tuple(hi - lo))
        _paint(ref, label, c, a, base, lo)
        extra = 0.05 * _smooth_noise(rng, tuple(hi - lo))
        shift = rng.integers(-2, 3, 3) * spacing
        _paint(pred, label, c + shift, a, base + extra, lo)
        if rng.random() < 0.5:  # a small false positive a few cm away
            blob = c + rng.uniform(-1.2, 1.2, 3) * a
            lo_b = np.clip((blob / spacing).astype(int), 0, shape - 8)
            pred[lo_b[0] : lo_b[0] + 6, lo_b[1] : lo_b[1] + 6, lo_b[2] : lo_b[2] + 3] = label
    return ref, pred
