"""A fabricated results document with a built-in CT -> PET gap, for tests and demos.

Nothing here is a measurement: the figures are drawn from a seeded generator so that the report,
the paired statistics, shards, baselines and run comparison can be tested end to end without a
GPU or a cohort. The document follows the schema of :mod:`umdbench.results` exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from umdbench.organs import MODALITIES

__all__ = ["SYNTHETIC_MODELS", "synthetic_results"]

#: name -> (prompt protocol or None, mean Dice per arm, literature Dice per arm).
SYNTHETIC_MODELS: Mapping[str, tuple[str | None, Mapping[str, float], Mapping[str, float]]] = {
    "unet-ct": (None, {"CT": 0.90, "PET_CT": 0.55, "MRI": 0.70, "PET_MRI": 0.45}, {"CT": 0.93}),
    "sam-med3d-turbo": (
        "1click",
        {"CT": 0.80, "PET_CT": 0.62, "MRI": 0.78, "PET_MRI": 0.50},
        {"CT": 0.79, "MRI": 0.754},
    ),
    "segvol": ("box", {"CT": 0.86, "PET_CT": 0.84, "MRI": 0.83, "PET_MRI": 0.80}, {"CT": 0.793}),
}
_ORGANS = ("liver", "spleen", "kidney_left", "aorta")
_THRESHOLD = 0.80
_NOT_RUN_REASON = ("sam-med3d needs its weights at <weights dir>/sam-med3d/sam_med3d.pth: pass"
                   " --umd-weights DIR or set UMD_WEIGHTS")


def _case_id(model: str, modality: str, organ: str, protocol: str | None) -> str:
    base = f"{model}-{modality}-{organ}"
    return base if protocol is None else f"{base}-{protocol}"


def _record(rng: np.random.Generator, case: Mapping[str, Any], subject: str, mean: float) -> dict:
    dice = float(np.clip(mean + rng.normal(0, 0.05), 0.0, 1.0))
    n_ref = int(rng.integers(2_000, 20_000))
    tp = round(dice * n_ref)
    fp = fn = n_ref - tp
    return {
        **{k: case[k] for k in ("case_id", "model", "modality", "organ", "protocol")},
        "subject": subject,
        "session": "petct" if case["modality"] in ("CT", "PET_CT") else "petmri",
        "scan": f"{subject}_{case['modality']}",
        "image": f"{subject}/{case['modality']}.nii.gz",
        "labels": f"{subject}/{case['modality']}_labels.nii.gz",
        "status": "ok",
        "dice": dice,
        "nsd_2mm": float(np.clip(dice + 0.05 + rng.normal(0, 0.03), 0, 1)),
        "nsd_1mm": float(np.clip(dice - 0.05 + rng.normal(0, 0.03), 0, 1)),
        "hd95": float(max(0.5, 40 * (1 - dice) + rng.normal(0, 1))),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "n_ref": n_ref,
        "n_pred": tp + fp,
        "spacing": [1.5, 1.5, 1.5],
        "inference_seconds": float(0.2 + rng.gamma(2.0, 0.05)),
        "prediction_reused": case["protocol"] is None and case["organ"] != _ORGANS[0],
        "device": "cpu",
        "prompt": None if case["protocol"] is None else {"kind": case["protocol"], "seed": 0},
        "error": None,
    }


def _spoil(records: list[dict[str, Any]], rng: np.random.Generator) -> None:
    """Real runs have empty references and errors: put one of each in."""
    empty, broken = rng.choice(len(records), size=2, replace=False)
    records[empty].update(status="empty_reference", dice=None, n_ref=0, nsd_2mm=None,
                          nsd_1mm=None, hd95=None)
    records[broken].update(status="error", dice=None, error="RuntimeError: synthetic failure",
                           nsd_2mm=None, nsd_1mm=None, hd95=None)


def _case(case_id: str, parts: tuple[str, str, str, str | None], recs: list[dict]) -> dict:
    model, modality, organ, protocol = parts
    valid = [r["dice"] for r in recs if r["status"] == "ok"]
    value = float(np.mean(valid)) if valid else math.nan
    return {
        "case_id": case_id, "model": model, "modality": modality, "organ": organ,
        "protocol": protocol, "outcome": "passed" if value >= _THRESHOLD else "failed",
        "metric": "dice", "threshold": _THRESHOLD, "rule": f"mean dice >= {_THRESHOLD:g}",
        "value": value, "n_valid": len(valid),
        "n_empty_reference": sum(r["status"] == "empty_reference" for r in recs),
        "n_errors": sum(r["status"] == "error" for r in recs),
        "message": "" if value >= _THRESHOLD else f"mean dice {value:.3f} < {_THRESHOLD:g}",
        "worker": "gw0", "duration_s": float(sum(r["inference_seconds"] for r in recs)),
    }


def _model_meta(name: str, protocol: str | None, literature: Mapping[str, float]) -> dict:
    return {
        "name": name, "class": f"synthetic.{name}", "prompt_kind": "none" if protocol is None
        else "points", "protocols": [] if protocol is None else [protocol],
        "organs": list(_ORGANS), "modalities_claimed": list(literature), "tier": "random-weights",
        "literature": {arm: {"dice": d, "citation": f"{name} paper (synthetic)"}
                       for arm, d in literature.items()},
        "weights_id": "synthetic", "origin": "umdbench.report.synthetic",
    }


def synthetic_results(
    seed: int = 0,
    n_subjects: int = 8,
    models: Sequence[str] | None = None,
    organs: Sequence[str] = _ORGANS,
    skipped_model: bool = True,
) -> dict[str, Any]:
    """A results document: models x 4 arms x organs x subjects, PET arms worse than CT/MRI.

    With ``skipped_model`` one extra model appears whose cases were all skipped (unavailable),
    as a run that named it on a machine without its weights would record, and one more is
    listed as left out of the matrix (``run.models_not_run``), as a default run records it.
    """
    rng = np.random.default_rng(seed)
    names = list(models) if models is not None else list(SYNTHETIC_MODELS)
    subjects = [f"sub-{i:03d}" for i in range(1, n_subjects + 1)]
    cases, records, meta = [], [], {}
    for name in names:
        protocol, means, literature = SYNTHETIC_MODELS[name]
        meta[name] = _model_meta(name, protocol, literature)
        for modality in MODALITIES:
            for organ in organs:
                case_id = _case_id(name, modality, organ, protocol)
                stub = {"case_id": case_id, "model": name, "modality": modality,
                        "organ": organ, "protocol": protocol}
                bias = 0.03 * organs.index(organ)
                recs = [_record(rng, stub, s, means[modality] - bias) for s in subjects]
                if organ == organs[-1] and modality == "PET_MRI":
                    _spoil(recs, rng)
                records.extend(recs)
                cases.append(_case(case_id, (name, modality, organ, protocol), recs))
    if skipped_model:
        cases.extend(_skipped_cases("vista3d", organs))
        meta["vista3d"] = _model_meta("vista3d", None, {"CT": 0.711})
    run = {
        "options": {"umd_seed": seed, "synthetic": True},
        "environment": {"python": "3.11", "device": "cpu"},
        "cohort": {"name": "synthetic", "provenance": "umdbench.report.synthetic (fabricated)",
                   "subjects": subjects, "modalities": list(MODALITIES), "organs": list(organs)},
        "policy": {"path": "default", "rules": []},
        "models_not_run": [{"model": "sam-med3d", "reason": _NOT_RUN_REASON}] if skipped_model
        else [],
    }
    return {"schema_version": 1, "created": "2026-01-01T00:00:00+00:00",
            "umdbench_version": "0.1.0", "run": run, "models": meta,
            "cases": sorted(cases, key=lambda c: c["case_id"]),
            "records": sorted(records, key=lambda r: (r["case_id"], r["subject"]))}


def _skipped_cases(name: str, organs: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for modality in MODALITIES:
        for organ in organs:
            out.append({
                "case_id": _case_id(name, modality, organ, None), "model": name,
                "modality": modality, "organ": organ, "protocol": None, "outcome": "skipped",
                "metric": "dice", "threshold": _THRESHOLD, "rule": f"mean dice >= {_THRESHOLD:g}",
                "value": None, "n_valid": 0, "n_empty_reference": 0, "n_errors": 0,
                "message": "ModelUnavailable: weights not found under UMD_WEIGHTS/vista3d",
                "worker": "gw1", "duration_s": 0.0,
            })
    return out
