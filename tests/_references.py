"""Independent references the metric tests compare against (DeepMind's surface-distance)."""

from __future__ import annotations

import warnings

import numpy as np
import surface_distance.metrics as sd_metrics


def deepmind(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    """The reference figures, straight from DeepMind's package."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sd = sd_metrics.compute_surface_distances(ref.astype(bool), pred.astype(bool), spacing)
    area_r, area_p = sd["surfel_areas_gt"].sum(), sd["surfel_areas_pred"].sum()
    mean_r, mean_p = sd_metrics.compute_average_surface_distance(sd)
    return {
        "nsd_1mm": sd_metrics.compute_surface_dice_at_tolerance(sd, 1.0),
        "nsd_2mm": sd_metrics.compute_surface_dice_at_tolerance(sd, 2.0),
        "hd95": sd_metrics.compute_robust_hausdorff(sd, 95),
        "hd": sd_metrics.compute_robust_hausdorff(sd, 100),
        "assd": (mean_r * area_r + mean_p * area_p) / (area_r + area_p),
    }
