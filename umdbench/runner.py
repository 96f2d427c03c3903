"""Run one case: every subject's scan of one arm through one model, scored for one organ.

The runner owns the work between the case matrix and the verdict: loading scans (through the
scan loader), loading models once per process (in a host process, :mod:`umdbench.isolation`),
predicting once per (model, scan[, prompt]), timing, metrics per subject, journalling every
record as it is made, and turning every failure into a record that names the subject, the file
and what to do, so that one bad scan or one crashing model never loses the rest of the run.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from umdbench import __version__
from umdbench.cases import Case
from umdbench.cohort import Cohort, Scan, ScanLoader
from umdbench.inference import InferenceRequest, describe_error
from umdbench.isolation import (
    DEFAULT_TIMEOUT_S,
    ChildHost,
    Host,
    HostFailure,
    InProcessHost,
    LoadFailed,
    ModelCallError,
    ModelHandle,
    ModelSpec,
    load_model,
)
from umdbench.journal import JournalWriter
from umdbench.metrics import organ_metrics
from umdbench.models.base import ModelUnavailable, PromptKind
from umdbench.policy import LOWER_IS_BETTER, Threshold
from umdbench.prediction_cache import CachedPrediction, PredictionCache, prediction_key
from umdbench.prompts import case_seed, organ_text
from umdbench.protocols import protocol_unsupported
from umdbench.provenance import file_identity, model_code_version
from umdbench.registry import ModelRegistry
from umdbench.targets import target_parts
from umdbench.volume import Volume

__all__ = ["CaseOutcome", "CaseRunner", "ModelSkipped", "scans_of_case",
           "score_records"]


class ModelSkipped(Exception):
    """The case cannot run here (missing package, weights, CUDA): a skip, never a pass."""


@dataclass
class CaseOutcome:
    """Per-subject records of one case and the verdict against its threshold.

    ``error`` is a case-level error (the model failed to load, a resume was refused); subjects'
    errors are in their records and counted in ``n_errors``. Either makes the case an error,
    never a pass or a plain failure: a figure over the subjects that did run is not the case's.
    """

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
    error: str | None = None
    isolation: str | None = None

    @property
    def is_error(self) -> bool:
        return self.error is not None or self.n_errors > 0

    @property
    def passed(self) -> bool:
        return not self.is_error and self.n_valid > 0 and self.threshold.passes(self.value)

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
            "error": self.error,
            "weights_id": self.weights_id,
            "isolation": self.isolation,
            "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
        }

    def error_message(self) -> str:
        """What an erroring case says: the errors first, then what the other subjects gave."""
        if self.error is not None:
            return f"{self.case.id}: {self.error}"
        scored = self.n_valid
        lines = [
            f"{self.case.id}: error: {self.n_errors} of {self.n_errors + scored} subject(s) could"
            " not be scored, so the case has no verdict"
        ]
        lines.extend(self.messages)
        if scored:
            lines.append(
                f"the other {scored} subject(s) gave mean {self.threshold.metric}"
                f" {self.value:.3f} ({self.threshold.describe()} required, {self.threshold.source})"
            )
        return "\n".join(lines)

    def failure_message(self, worst: int = 3) -> str:
        """What a failing case says: the figure, the bar, the worst subjects."""
        if self.is_error:
            return self.error_message()
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



def scans_of_case(cohort: Cohort, case: Case) -> list[Scan]:
    """Every scan a case runs on: its arm's scans whose label map has the organ."""
    return [s for s in cohort.scans_of(case.modality) if case.organ in s.label_map]


def score_records(outcome: CaseOutcome) -> None:
    """The case's figure from its records: the mean over subjects with a finite or infinite
    value (NaN, undefined, is left out; inf, e.g. HD95 of an empty prediction, counts and
    fails), and the counts of empty references and errors. ``math.fsum`` makes the mean
    independent of the records' order, so a case merged from subject shards equals the
    unsharded case exactly."""
    metric = outcome.threshold.metric
    values = [
        float(r[metric])
        for r in outcome.records
        if r.get("status") == "ok"
        and isinstance(r.get(metric), (int, float))
        and not math.isnan(r[metric])
    ]
    outcome.n_valid = len(values)
    outcome.n_empty_reference = sum(r.get("status") == "empty_reference" for r in outcome.records)
    outcome.n_errors = sum(r.get("status") == "error" for r in outcome.records)
    outcome.value = _mean(values)


def _mean(values: list[float]) -> float:
    if not values:
        return float("nan")
    if any(math.isinf(v) for v in values):
        return float(np.mean(values))  # fsum of +inf and -inf raises; the mean is then nan
    return math.fsum(values) / len(values)


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
    """Evaluates cases for one process (one xdist worker, or the whole run with ``-n 0``).

    ``isolation="process"`` runs models in a host process (a crash costs one subject; hangs end
    after ``timeout`` seconds); ``"none"`` runs them here. ``journal`` receives every record as
    it is made; ``resumed`` holds an interrupted run's records by (case id, scan key).
    """

    def __init__(
        self,
        cohort: Cohort,
        registry: ModelRegistry,
        device: str,
        predictions: PredictionCache,
        loader: ScanLoader | None = None,
        *,
        isolation: str = "process",
        timeout: float | None = DEFAULT_TIMEOUT_S,
        journal: JournalWriter | None = None,
        resumed: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
        amp: str = "none",
        subjects: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.cohort = cohort
        self.registry = registry
        self.device = device
        self.predictions = predictions
        self.loader = loader or ScanLoader()
        self.isolation = isolation
        self.timeout = timeout
        self.amp = amp  # --umd-amp: the hosts' autocast; part of every prediction key
        self.journal = journal
        self.resumed = resumed or {}
        self.subjects = subjects
        self._volumes = _VolumeLRU()
        self._models: dict[str, ModelHandle | Exception] = {}
        self._hosts: dict[str, Host] = {}

    # -- models ---------------------------------------------------------------------------
    def model(self, name: str) -> ModelHandle:
        """The loaded model, built once per process; one that cannot run raises ModelSkipped,
        one whose loading failed raises :class:`LoadFailed` (every case of it is an error)."""
        if name not in self._models:
            self._models[name] = self._load_model(name)
        model = self._models[name]
        if isinstance(model, ModelUnavailable):
            raise ModelSkipped(f"{name}: {model}")
        if isinstance(model, Exception):
            raise model
        return model

    def _load_model(self, name: str) -> ModelHandle | Exception:
        cls = self.registry.get(name)
        host = self._host_for(cls)
        status, value = load_model(cls, host)
        if status == "ok":
            return ModelHandle(cls, host, str(value))
        if status == "unavailable":
            return ModelUnavailable(value)
        return LoadFailed(value)

    def _host_for(self, cls: type) -> Host:
        """The worker's host process, or in-process for ``none`` and unimportable classes."""
        where = "process" if self.isolation == "process" and ModelSpec.of(cls) else "none"
        if where not in self._hosts:
            self._hosts[where] = (
                ChildHost(self.device, self.timeout, amp=self.amp)
                if where == "process"
                else InProcessHost(self.device, amp=self.amp)
            )
        return self._hosts[where]

    def close(self) -> None:
        """Stop the host processes and close the journal (end of the session)."""
        for host in self._hosts.values():
            host.close()
        if self.journal is not None:
            self.journal.close()

    # -- one case -------------------------------------------------------------------------
    def run_case(self, case: Case, threshold: Threshold) -> CaseOutcome:
        """Every subject of the case's arm; a model that cannot run gives a skipped outcome."""
        try:
            model = self.model(case.model)
            unsupported = protocol_unsupported(model.cls, case.organ, case.protocol)
            unsupported = unsupported or model.unsupported(case.organ, case.protocol)
        except ModelSkipped as reason:
            return CaseOutcome(case, threshold, records=[], skip_reason=str(reason))
        except (LoadFailed, HostFailure, ModelCallError) as error:
            return CaseOutcome(case, threshold, records=[], error=str(error))
        if unsupported:
            return CaseOutcome(
                case, threshold, records=[], skip_reason=f"{model.name}: {unsupported}"
            )
        outcome = CaseOutcome(
            case, threshold, records=[], weights_id=model.weights_id, isolation=model.isolation
        )
        code = model_code_version(model.cls)
        outcome.error = self._resume_refusal(case, model, code)
        if outcome.error is not None:
            return outcome
        key = prediction_key(
            "case",
            case.id,
            model.weights_id,
            code,
            __version__,
            f"amp={self.amp}",
            self.cohort.name,
            *self._case_files(case),
        )
        records, origin = self.predictions.get_or_make_records(
            key, lambda: self._records(model, case, code)
        )
        outcome.records = [dict(r) for r in records]
        for record in outcome.records:
            if origin is not None and not record.get("cached_from"):
                record["cached_from"] = origin
        outcome.messages = [
            f"error: {r['error']}" for r in outcome.records if r["status"] == "error"
        ]
        score_records(outcome)
        if outcome.n_valid == 0 and outcome.n_errors == 0:
            outcome.skip_reason = (
                f"no {case.modality} scan has a non-empty {case.organ} reference"
                f" ({outcome.n_empty_reference} empty): nothing to score"
            )
        return outcome

    def _case_scans(self, case: Case) -> list[Scan]:
        """The scans of the case's arm labelled with its organ; on a subject shard, only its
        subjects' (``subjects``: model -> subjects this shard runs it on)."""
        scans = scans_of_case(self.cohort, case)
        if self.subjects is None:
            return scans
        mine = self.subjects.get(case.model, frozenset())
        return [scan for scan in scans if str(scan.subject) in mine]

    def _case_files(self, case: Case) -> list[str]:
        """Every image and labels file of the case, with its identity: a repaired scan or
        relabelled organ is a new key."""
        return [
            f"{path}={file_identity(path)}"
            for scan in self._case_scans(case)
            for path in (scan.image, scan.labels)
        ]

    def _resume_refusal(self, case: Case, model: ModelHandle, code: str) -> str | None:
        """Why journalled records of this case may not be reused, or None."""
        for scan in self._case_scans(case):
            old = self.resumed.get((case.id, scan.key))
            if old is None:
                continue
            for what, was, now in (
                ("weights", old.get("weights_id"), model.weights_id),
                ("code", old.get("code_version"), code),
            ):
                if was != now:
                    return (
                        f"--umd-resume refused: the {what} of model {model.name} changed since"
                        f" the interrupted run ({was} then, {now} now); its records would mix"
                        " two models. Run without --umd-resume to start afresh"
                    )
        return None

    def _records(self, model: ModelHandle, case: Case, code: str) -> list[dict[str, Any]]:
        """One record per subject of the case's arm that has the organ in its label map; each
        journalled as soon as it exists, or taken from the journal of a resumed run."""
        records = []
        for scan in self._case_scans(case):
            old = self.resumed.get((case.id, scan.key))
            if old is not None:
                records.append({**old, "resumed": True})
                continue
            record = self._evaluate_subject(model, case, scan)
            record["code_version"] = code
            if self.journal is not None:
                self.journal.append(record)
            records.append(record)
        return records

    def _base_record(self, case: Case, scan: Scan, model: ModelHandle) -> dict[str, Any]:
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
            "weights_id": model.weights_id,
            "prompt": None,
            "error": None,
        }

    def _evaluate_subject(self, model: ModelHandle, case: Case, scan: Scan) -> dict[str, Any]:
        record = self._base_record(case, scan, model)
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
            mask = self._organ_mask(model, case.organ, prediction.labels)
        except (HostFailure, ModelCallError) as error:
            record.update(status="error", error=str(error))
            return record
        except Exception as error:  # the suite's own side of the call
            where = f"model {model.name} on {scan.key} ({scan.image})"
            record.update(status="error", error=describe_error(where, error))
            return record
        metrics_device = self.device if self.device.startswith("cuda") else "cpu"
        record.update(organ_metrics(mask, reference, image.spacing, device=metrics_device))
        record.update(
            status="ok",
            inference_seconds=prediction.seconds,
            prediction_reused=reused,
            device=prediction.device,
            **prediction.extra,
        )
        origin = self.predictions.origin(prediction)
        if origin is not None:
            record["cached_from"] = origin
        return record

    @staticmethod
    def _organ_mask(model: ModelHandle, organ: str, labels: np.ndarray) -> np.ndarray:
        if model.prompt_kind is PromptKind.NONE:
            return labels == model.output_value(organ)
        return labels > 0

    def _predict(
        self, model: ModelHandle, case: Case, scan: Scan, image: Volume, reference: np.ndarray
    ) -> tuple[CachedPrediction, bool]:
        image_key = [str(scan.image), file_identity(scan.image)]
        common = [
            model.name, model.weights_id, model_code_version(model.cls), __version__,
            f"amp={self.amp}",  # autocast changes what is computed
        ]  # fmt: skip
        request = InferenceRequest(image, case.modality, scan.key, str(scan.image))
        if model.prompt_kind is PromptKind.NONE:
            key = prediction_key(*common, scan.key, *image_key)
        else:
            request.seed = case_seed(model.name, scan.key, case.organ, case.protocol or "")
            request.reference, request.organ, request.protocol = (
                reference,
                case.organ,
                case.protocol,
            )
            labels_key = [
                str(scan.labels),
                file_identity(scan.labels),
                repr(scan.label_map[case.organ]),
                repr((organ_text(case.organ), target_parts(case.organ))),  # what is prompted
            ]
            key = prediction_key(
                *common,
                scan.key,
                *image_key,
                *labels_key,
                case.organ,
                str(case.protocol),
                str(request.seed),
            )

        def make() -> CachedPrediction:
            result = model.infer(request)
            extra = dict(result.extra)
            if result.settings:
                extra["inference"] = result.settings
            if result.timing:
                extra["timing"] = result.timing  # the record's ``timing`` (umdbench.timing)
            return CachedPrediction(result.labels, result.seconds, result.device, extra)

        return self.predictions.get_or_make(key, make)
