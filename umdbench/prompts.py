"""Prompts derived from ground truth with a seeded generator, recorded with every result.

A prompt lives in the scan's voxel space (the grid the ground truth is on); it also carries the
world coordinates so a model that resamples can map it, and a test can check it lands inside the
organ after that model's preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Prompt", "box_prompt", "case_seed"]


@dataclass(frozen=True)
class Prompt:
    """What a promptable model is given for one organ of one scan.

    ``box`` is ``(lo, hi)`` inclusive voxel indices; ``points`` is ``(N, 3)`` voxel indices with
    ``point_labels`` 1 (foreground) or 0 (background); ``text`` is an organ name.
    """

    protocol: str
    organ: str
    seed: int
    box: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    text: str | None = None
    oracle: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_record(self, affine: np.ndarray | None = None) -> dict[str, Any]:
        """A JSON-ready description, with world coordinates (mm) when the affine is given."""
        record: dict[str, Any] = {"protocol": self.protocol, "seed": self.seed}
        if self.box is not None:
            record["box_voxel"] = [list(self.box[0]), list(self.box[1])]
            if affine is not None:
                corners = np.array([self.box[0], self.box[1]], dtype=float)
                record["box_world"] = _to_world(corners, affine).round(2).tolist()
        if self.points is not None:
            record["points_voxel"] = np.asarray(self.points).tolist()
            record["point_labels"] = np.asarray(self.point_labels).tolist()
            if affine is not None:
                record["points_world"] = _to_world(self.points, affine).round(2).tolist()
        if self.text is not None:
            record["text"] = self.text
        if self.oracle:
            record["oracle"] = True
        record.update(self.extra)
        return record


def _to_world(voxels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    voxels = np.asarray(voxels, dtype=float)
    return voxels @ affine[:3, :3].T + affine[:3, 3]


def case_seed(*parts: str | int) -> int:
    """A stable 32-bit seed from names (model, scan, organ): the same on every machine and run."""
    import hashlib

    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def box_prompt(
    mask: np.ndarray, organ: str, seed: int, spacing: tuple[float, float, float], jitter_mm: float = 0.0
) -> Prompt:
    """The tight 3D bounding box of ``mask``, optionally grown by a seeded margin of up to
    ``jitter_mm`` per face (as interactive benchmarks jitter boxes)."""
    if not mask.any():
        raise ValueError(f"cannot make a box prompt for {organ!r}: the reference mask is empty")
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
    return Prompt(
        protocol=protocol,
        organ=organ,
        seed=seed,
        box=(tuple(int(v) for v in lo), tuple(int(v) for v in hi)),  # type: ignore[arg-type]
    )
