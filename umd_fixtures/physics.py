"""Imaging physics of the synthetic arms: CT, MRI and PET rendered from a tissue-id map.

Everything here is a function of a *tissue-id map* (uint8 array of :data:`TISSUE_IDS`), not of
the synthetic anatomy, so the same code renders PET/MRI arms from a real CT label map once its
labels are mapped to tissue ids (:func:`organ_tissue_id`).

The contrasts follow textbook values (CT HU, T1-weighted ordering, FDG SUV); they are meant to
reproduce the study's situation (same anatomy, other physics), not a particular scanner.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from umdbench.organs import CANONICAL_ORGANS
from umdbench.volume import Volume

__all__ = [
    "CT_HU",
    "MRI_T1",
    "PET_FWHM_MM",
    "PET_SUV",
    "TISSUE_IDS",
    "organ_tissue_id",
    "render_ct",
    "render_mri",
    "render_pet",
    "tissue_from_ct",
    "tissue_lookup",
]

_BODY_TISSUES: tuple[str, ...] = ("air", "fat", "soft_tissue", "bone")

#: Tissue ids: body tissues first, then one id per canonical organ (organ i has id 4 + i).
TISSUE_IDS: dict[str, int] = {
    name: index for index, name in enumerate(_BODY_TISSUES + CANONICAL_ORGANS)
}

#: Mean CT attenuation per tissue (HU); kidneys vary per subject with the contrast phase.
CT_HU: dict[str, float] = {
    "air": -1000.0, "fat": -100.0, "soft_tissue": 50.0, "bone": 700.0,
    "liver": 60.0, "kidney_left": 90.0, "kidney_right": 90.0, "spleen": 50.0,
    "heart": 45.0, "aorta": 45.0, "lung": -820.0, "brain": 35.0, "colon": 25.0,
    "urinary_bladder": 10.0, "pancreas": 40.0, "esophagus": 35.0, "stomach": 20.0,
}  # fmt: skip

#: T1-like signal (0..1): fat bright, liver > spleen, fluid dark, lung/air/cortical bone dark.
MRI_T1: dict[str, float] = {
    "air": 0.0, "fat": 1.0, "soft_tissue": 0.42, "bone": 0.12,
    "liver": 0.72, "kidney_left": 0.55, "kidney_right": 0.55, "spleen": 0.50,
    "heart": 0.34, "aorta": 0.24, "lung": 0.05, "brain": 0.48, "colon": 0.36,
    "urinary_bladder": 0.10, "pancreas": 0.66, "esophagus": 0.40, "stomach": 0.28,
}  # fmt: skip

#: FDG uptake (SUV) per tissue; bone stands for marrow.
PET_SUV: dict[str, float] = {
    "air": 0.0, "fat": 0.3, "soft_tissue": 0.7, "bone": 1.2,
    "liver": 2.2, "kidney_left": 6.0, "kidney_right": 6.0, "spleen": 1.8,
    "heart": 5.0, "aorta": 1.6, "lung": 0.5, "brain": 9.0, "colon": 1.6,
    "urinary_bladder": 20.0, "pancreas": 1.5, "esophagus": 1.3, "stomach": 1.7,
}  # fmt: skip

#: Full width at half maximum of the PET point-spread function, in mm.
PET_FWHM_MM: float = 6.0

_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
_PET_COUNTS_PER_SUV = 40.0  # sets the Poisson noise level: ~11 % at SUV 2


def organ_tissue_id(organ: str) -> int:
    """Tissue id of a canonical organ; the error names the known organs."""
    if organ not in CANONICAL_ORGANS:
        raise ValueError(f"organ must be a canonical organ, got {organ!r}")
    return TISSUE_IDS[organ]


def tissue_from_ct(hu: np.ndarray, organs: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """A tissue-id map from a real CT: body tissues by HU threshold, then organ masks on top.

    Air below -500 HU (unlabelled lung counts as air), fat -500..-30, bone above 200, soft
    tissue otherwise. ``organs`` maps canonical organ names to boolean masks on the CT grid.
    """
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"hu must be a 3D array, got shape {hu.shape}")
    tissue = np.full(hu.shape, TISSUE_IDS["soft_tissue"], dtype=np.uint8)
    tissue[hu < -30] = TISSUE_IDS["fat"]
    tissue[hu < -500] = TISSUE_IDS["air"]
    tissue[hu > 200] = TISSUE_IDS["bone"]
    for organ, mask in (organs or {}).items():
        if np.shape(mask) != hu.shape:
            raise ValueError(
                f"mask of {organ!r} must have the CT's shape {hu.shape}, got {np.shape(mask)}"
            )
        tissue[np.asarray(mask, dtype=bool)] = organ_tissue_id(organ)
    return tissue


def tissue_lookup(values: Mapping[str, float]) -> np.ndarray:
    """A float64 table indexed by tissue id, so ``table[tissue]`` paints a whole map at once."""
    missing = sorted(set(TISSUE_IDS) - set(values))
    if missing:
        raise ValueError(f"values must name every tissue, missing {', '.join(missing)}")
    table = np.zeros(256, dtype=np.float64)
    for name, tissue_id in TISSUE_IDS.items():
        table[tissue_id] = values[name]
    return table


def _check_tissue(tissue: np.ndarray) -> np.ndarray:
    if not isinstance(tissue, np.ndarray) or tissue.ndim != 3:
        shape = getattr(tissue, "shape", type(tissue).__name__)
        raise ValueError(f"tissue must be a 3D array of tissue ids, got {shape}")
    if tissue.size and int(tissue.max()) >= len(TISSUE_IDS):
        raise ValueError(
            f"tissue must hold ids 0..{len(TISSUE_IDS) - 1} (see TISSUE_IDS),"
            f" got max {int(tissue.max())}"
        )
    return tissue.astype(np.uint8, copy=False)


def _smooth_noise(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance, spatially correlated noise: organ texture and air pockets."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    std = float(field.std())
    return field / std if std > 0 else field


def render_ct(tissue: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """CT in HU (int16): per-tissue attenuation, texture, a mild PSF and ~18 HU noise."""
    tissue = _check_tissue(tissue)
    values = dict(CT_HU)
    kidney = float(rng.uniform(35.0, 150.0))  # contrast phase differs between subjects
    values["kidney_left"] = values["kidney_right"] = kidney
    table = tissue_lookup(values) + rng.normal(0.0, 4.0, 256) * (np.arange(256) > 0)
    hu = table[tissue].astype(np.float32)
    hu += 6.0 * _smooth_noise(tissue.shape, 1.5, rng) * (tissue > 0)
    colon = tissue == TISSUE_IDS["colon"]
    pockets = colon & (_smooth_noise(tissue.shape, 1.2, rng) > 1.0)
    hu[pockets] = -900.0  # gas in the bowel brings the colon's mean near -100 HU
    hu = ndimage.gaussian_filter(hu, 0.5)
    hu += rng.normal(0.0, 18.0, tissue.shape).astype(np.float32)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def _bias_field(affine: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative field within ±20 %, a function of world position (mm)."""
    index = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = affine[:3, :3].astype(np.float32) @ index + affine[:3, 3:4].astype(np.float32)
    field = np.zeros(world.shape[1], dtype=np.float32)
    weights = rng.uniform(0.5, 1.0, 3)
    for weight in weights:
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        wavelength = rng.uniform(400.0, 900.0)
        phase = rng.uniform(0.0, 2.0 * np.pi)
        field += np.float32(weight) * np.sin(
            (2.0 * np.pi / wavelength) * (direction.astype(np.float32) @ world) + phase
        )
    return (1.0 + 0.2 * field / weights.sum()).reshape(shape)


def render_mri(tissue: np.ndarray, affine: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """T1-weighted MRI (float32, arbitrary units): tissue contrast, bias field, Rician noise."""
    tissue = _check_tissue(tissue)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
    table = tissue_lookup(MRI_T1) * (1.0 + rng.normal(0.0, 0.04, 256))
    signal = table[tissue].astype(np.float32)
    signal *= 1.0 + 0.04 * _smooth_noise(tissue.shape, 1.5, rng)
    signal = ndimage.gaussian_filter(signal, 0.6) * _bias_field(affine, tissue.shape, rng)
    sigma = np.float32(0.03)
    real = signal + sigma * rng.standard_normal(tissue.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(tissue.shape, dtype=np.float32)
    return (1000.0 * np.sqrt(real * real + imaginary * imaginary)).astype(np.float32)


def _resample_linear(
    source: Volume, target_affine: np.ndarray, target_shape: tuple[int, int, int]
) -> np.ndarray:
    """Trilinear sampling of ``source`` at the target grid's voxel centres (0 outside)."""
    to_source = np.linalg.inv(source.affine) @ target_affine
    return ndimage.affine_transform(
        source.array, to_source[:3, :3], to_source[:3, 3], output_shape=target_shape,
        order=1, mode="constant", cval=0.0,
    )  # fmt: skip


def render_pet(
    tissue: Volume,
    target_affine: np.ndarray,
    target_shape: tuple[int, int, int],
    rng: np.random.Generator,
) -> np.ndarray:
    """FDG PET in SUV (float32) on the target grid.

    Uptake per tissue (±15 % per subject) is painted on the tissue grid, blurred there by a
    Gaussian PSF of :data:`PET_FWHM_MM` (sigma converted per axis from mm to voxels), sampled on
    the (coarser) PET grid, and given Poisson counting noise, so noise grows as sqrt(signal).
    """
    labels = _check_tissue(tissue.array)
    target_affine = np.asarray(target_affine, dtype=np.float64)
    if target_affine.shape != (4, 4):
        raise ValueError(f"target_affine must be 4x4, got shape {target_affine.shape}")
    if len(target_shape) != 3 or min(target_shape) < 1:
        raise ValueError(f"target_shape must be three positive sizes, got {target_shape}")
    table = tissue_lookup(PET_SUV) * rng.uniform(0.85, 1.15, 256)
    activity = table[labels].astype(np.float32)
    activity *= 1.0 + 0.05 * _smooth_noise(labels.shape, 1.0, rng)
    sigma_vox = [PET_FWHM_MM * _FWHM_TO_SIGMA / s for s in tissue.spacing]
    blurred = ndimage.gaussian_filter(activity, sigma_vox)
    suv = np.clip(
        _resample_linear(tissue.with_array(blurred), target_affine, target_shape), 0, None
    )
    counts = rng.poisson(suv.astype(np.float64) * _PET_COUNTS_PER_SUV)
    return (counts / _PET_COUNTS_PER_SUV).astype(np.float32)
