"""Run one case: every subject's scan of one arm through one model, scored for one organ.

The runner owns the work between the case matrix and the verdict: loading scans (through the
scan loader), loading models once per process, predicting once per (model, scan[, prompt]),
timing, metrics per subject, and turning every failure into a record that names the subject, the
file and what to do, so that one bad scan or one crashing model never loses the rest of the run.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from umdbench.cases import Case
from umdbench.cohort import Cohort, Scan, ScanLoader
from umdbench.metrics import organ_metrics
from umdbench.models.base import ModelUnavailable, PromptKind, SegmentationModel
from umdbench.policy import LOWER_IS_BETTER, Threshold
from umdbench.prediction_cache import CachedPrediction, PredictionCache, prediction_key
from umdbench.prompts import case_seed
from umdbench.protocols import run_prompted
from umdbench.registry import ModelRegistry
from umdbench.volume import Volume

__all__ = ["CaseOutcome", "CaseRunner", "ModelSkipped"]


class ModelSkipped(Exception):
    """The case cannot run here (missing package, weights, CUDA): a skip, never a pass."""


@dataclass
class CaseOutcome:
    """Per-subject records of one case and the verdict against its threshold."""

    case: Case
    threshold: Threshold
    records: list[dict[str, Any]]
    value: float = float("nan")
    n_valid: int = 0
    n_empty_reference: int = 0
    n_errors: int = 0
    messages: list[str] = field(default_factory=list)
    skip_reason: str | None = None
    weights_id: str | None = None

    @property
    def passed(self) -> bool:
        return self.n_errors == 0 and self.n_valid > 0 and self.threshold.passes(self.value)

    def summary(self) -> dict[str, Any]:
        """The case entry of the results file (the plugin adds outcome, worker, duration)."""
        return {
            "case_id": self.case.id,
            "model": self.case.model,
            "modality": self.case.modality,
            "organ": self.case.organ,
            "protocol": self.case.protocol,
            "metric": self.threshold.metric,
            "threshold": self.threshold.min,
            "rule": self.threshold.source,
            "value": self.value,
            "n_valid": self.n_valid,
            "n_empty_reference": self.n_empty_reference,
            "n_errors": self.n_errors,
            "weights_id": self.weights_id,
            "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
        }

    def failure_message(self, worst: int = 3) -> str:
        """What a failing case says: the figure, the bar, the worst subjects, the errors."""
        lines = [
            f"{self.case.id}: {self.threshold.describe()} required ({self.threshold.source}),"
            f" got {self.value:.3f} over {self.n_valid} subject(s)"
            + (
                f"; {self.n_empty_reference} with an empty reference left out"
                if self.n_empty_reference
                else ""
            )
        ]
        scored = [
            r for r in self.records if r["status"] == "ok" and _finite(r.get(self.threshold.metric))
        ]
        reverse = self.threshold.metric in LOWER_IS_BETTER
        scored.sort(key=lambda r: r[self.threshold.metric], reverse=reverse)
        if scored:
            shown = ", ".join(
                f"{r['subject']} {r[self.threshold.metric]:.3f}" for r in scored[:worst]
            )
            lines.append(f"worst subjects ({self.threshold.metric}): {shown}")
        lines.extend(self.messages)
        return "\n".join(lines)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


class _VolumeLRU:
    """The last few scans' image and labels, so the organ cases of one scan read them once."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._items: OrderedDict[str, tuple[Volume, Volume]] = OrderedDict()

    def get(self, scan: Scan, loader: ScanLoader) -> tuple[Volume, Volume]:
        if scan.key in self._items:
            self._items.move_to_end(scan.key)
            return self._items[scan.key]
        pair = (loader.image(scan), loader.labels(scan))
        self._items[scan.key] = pair
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return pair


class CaseRunner:
    """Evaluates cases for one process (one xdist worker, or the whole run with ``-n 0``)."""

    def __init__(
        self,
        cohort: Cohort,
        registry: ModelRegistry,
        device: str,
        predictions: PredictionCache,
        loader: ScanLoader | None = None,
    ) -> None:
        self.cohort = cohort
        self.registry = registry
        self.device = device
        self.predictions = predictions
        self.loader = loader or ScanLoader()
        self._volumes = _VolumeLRU()
        self._models: dict[str, SegmentationModel | Exception] = {}

    # -- models ---------------------------------------------------------------------------
    def model(self, name: str) -> SegmentationModel:
        """The loaded model, built once per process; a model that cannot run raises ModelSkipped."""
        if name not in self._models:
            self._models[name] = self._load_model(name)
        model = self._models[name]
        if isinstance(model, ModelUnavailable):
            raise ModelSkipped(f"{name}: {model}")
        if isinstance(model, Exception):
            raise RuntimeError(f"model {name} failed to load: {model}") from model
        return model

    def _load_model(self, name: str) -> SegmentationModel | Exception:
        cls = self.registry.get(name)
        try:
            model = cls()
            model.check_available(self.device)
            model.load(self.device)
        except ModelUnavailable as error:
            return error
        except Exception as error:
            return RuntimeError(f"{type(error).__name__}: {error}")
        return model

    # -- one case -------------------------------------------------------------------------
    def run_case(self, case: Case, threshold: Threshold) -> CaseOutcome:
        """Every subject of the case's arm; a model that cannot run gives a skipped outcome."""
        try:
            model = self.model(case.model)
        except ModelSkipped as reason:
            return CaseOutcome(case, threshold, records=[], skip_reason=str(reason))
        unsupported = model.unsupported(case.organ, case.protocol)
        if unsupported:
            return CaseOutcome(case, threshold, records=[], skip_reason=f"{model.name}: {unsupported}")
        outcome = CaseOutcome(case, threshold, records=[], weights_id=model.weights_id())
        key = prediction_key("case", case.id, outcome.weights_id or "", self.cohort.name)
        outcome.records = [
            dict(r)
            for r in self.predictions.get_or_make_records(key, lambda: self._records(model, case))
        ]
        outcome.messages = [
            f"error: {r['error']}" for r in outcome.records if r["status"] == "error"
        ]
        self._aggregate(outcome)
        if outcome.n_valid == 0 and outcome.n_errors == 0:
            outcome.skip_reason = (
                f"no {case.modality} scan has a non-empty {case.organ} reference"
                f" ({outcome.n_empty_reference} empty): nothing to score"
            )
        for record in outcome.records:
            record["weights_id"] = outcome.weights_id
        return outcome

    def _records(self, model: SegmentationModel, case: Case) -> list[dict[str, Any]]:
        """One record per subject of the case's arm that has the organ in its label map."""
        return [
            self._evaluate_subject(model, case, scan)
            for scan in self.cohort.scans_of(case.modality)
            if case.organ in scan.label_map
        ]

    def _aggregate(self, outcome: CaseOutcome) -> None:
        metric = outcome.threshold.metric
        # NaN (undefined) is left out; inf (e.g. HD95 of an empty prediction) counts, and fails.
        values = [
            r[metric]
            for r in outcome.records
            if r["status"] == "ok"
            and isinstance(r.get(metric), (int, float))
            and not math.isnan(r[metric])
        ]
        outcome.n_valid = len(values)
        outcome.n_empty_reference = sum(r["status"] == "empty_reference" for r in outcome.records)
        outcome.n_errors = sum(r["status"] == "error" for r in outcome.records)
        outcome.value = float(np.mean(values)) if values else float("nan")

    def _base_record(self, case: Case, scan: Scan) -> dict[str, Any]:
        return {
            "case_id": case.id,
            "model": case.model,
            "modality": case.modality,
            "organ": case.organ,
            "protocol": case.protocol,
            "subject": scan.subject,
            "session": scan.session,
            "scan": scan.key,
            "image": str(scan.image),
            "labels": str(scan.labels),
            "device": self.device,
            "prompt": None,
            "error": None,
        }

    def _evaluate_subject(self, model: SegmentationModel, case: Case, scan: Scan) -> dict[str, Any]:
        record = self._base_record(case, scan)
        try:
            image, labels = self._volumes.get(scan, self.loader)
            reference = scan.organ_mask(labels, case.organ)
        except Exception as error:
            record.update(
                status="error",
                error=f"{scan.key}: cannot load {scan.image} / {scan.labels}: {error}",
            )
            return record
        record["spacing"] = list(image.spacing)
        if not reference.any():
            record.update(status="empty_reference", dice=float("nan"), n_ref=0)
            return record
        try:
            prediction, reused = self._predict(model, case, scan, image, reference)
        except Exception as error:
            record.update(status="error", error=_describe_model_error(model, scan, error))
            return record
        mask = self._organ_mask(model, case.organ, prediction.labels)
        metrics_device = self.device if self.device.startswith("cuda") else "cpu"
        record.update(organ_metrics(mask, reference, image.spacing, device=metrics_device))
        record.update(
            status="ok",
            inference_seconds=prediction.seconds,
            prediction_reused=reused,
            device=prediction.device,
            **prediction.extra,
        )
        settings = model.inference_settings()
        if settings:
            record["inference"] = settings
        return record

    @staticmethod
    def _organ_mask(model: SegmentationModel, organ: str, labels: np.ndarray) -> np.ndarray:
        if model.prompt_kind is PromptKind.NONE:
            return labels == model.output_value(organ)
        return labels > 0

    def _predict(
        self, model: SegmentationModel, case: Case, scan: Scan, image: Volume, reference: np.ndarray
    ) -> tuple[CachedPrediction, bool]:
        if model.prompt_kind is PromptKind.NONE:
            key = prediction_key(model.name, model.weights_id(), scan.key, str(scan.image))

            def make() -> CachedPrediction:
                labels, seconds = self._timed(lambda: model.predict(image, case.modality, None))
                _check_grid(model, scan, image, labels)
                return CachedPrediction(
                    labels.astype(np.int16, copy=False), seconds, self.device, {}
                )

            return self.predictions.get_or_make(key, make)
        seed = case_seed(model.name, scan.key, case.organ, case.protocol or "")
        key = prediction_key(
            model.name,
            model.weights_id(),
            scan.key,
            str(scan.image),
            case.organ,
            str(case.protocol),
            str(seed),
        )

        def make_prompted() -> CachedPrediction:
            result, seconds = self._timed(
                lambda: run_prompted(
                    model, image, case.modality, reference, case.organ, case.protocol or "", seed
                )
            )
            _check_grid(model, scan, image, result.mask)
            return CachedPrediction(
                result.mask.astype(np.uint8), seconds, self.device, result.to_record()
            )

        return self.predictions.get_or_make(key, make_prompted)

    def _timed(self, work: Any) -> tuple[Any, float]:
        """Run ``work``; wall seconds with the device synchronised before and after."""
        _synchronize(self.device)
        start = time.perf_counter()
        result = work()
        _synchronize(self.device)
        return result, time.perf_counter() - start


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _check_grid(model: SegmentationModel, scan: Scan, image: Volume, labels: np.ndarray) -> None:
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"predict must return a numpy array, got {type(labels).__name__}")
    if labels.shape != image.shape:
        raise ValueError(
            f"returned a label map of shape {labels.shape}, but the image grid of {scan.image} is"
            f" {image.shape}: predict must map its output back to the scan's grid"
        )


def _describe_model_error(model: SegmentationModel, scan: Scan, error: BaseException) -> str:
    """One line that names the model, the scan, the file, the error and what to try."""
    where = f"model {model.name} on {scan.key} ({scan.image})"
    if _is_out_of_memory(error):
        return (
            f"{where}: out of memory ({error}); try fewer workers (-n), a smaller --umd-subjects,"
            " or --umd-device cpu"
        )
    frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    at = f" at {frame.filename}:{frame.lineno}" if frame else ""
    return f"{where} raised {type(error).__name__}: {error}{at}"


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    try:
        import torch

        return isinstance(error, torch.cuda.OutOfMemoryError)
    except (ImportError, AttributeError):  # pragma: no cover
        return False
