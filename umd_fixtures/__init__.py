"""Built-in data for the suite: the paired synthetic cohort and the physics that renders it."""

from __future__ import annotations

from .physics import TISSUE_IDS, render_ct, render_mri, render_pet
from .synthetic import GENERATOR_VERSION, build_synthetic_cohort, subject_ids, subject_seeds

__all__ = [
    "GENERATOR_VERSION",
    "TISSUE_IDS",
    "build_synthetic_cohort",
    "render_ct",
    "render_mri",
    "render_pet",
    "subject_ids",
    "subject_seeds",
]
