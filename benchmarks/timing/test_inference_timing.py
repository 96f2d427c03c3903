"""Inference time per model under pytest-benchmark: the ``-n 0`` timing mode.

One benchmark per model of the run's selection (``--umd-models``, ``--umd-skip-models``, the
default: every model that can run here), each timing that model's inference on one scan of the
cohort with ``benchmark.pedantic``: warm-up rounds first (the host's first call: CUDA context,
autotuning, caches; apart from the figures), then timed rounds, one call each. Save and
compare per model::

    pytest benchmarks/timing -n 0 --umd-models unet-ct --benchmark-save=nightly
    pytest benchmarks/timing -n 0 --umd-models unet-ct --benchmark-compare \\
        --benchmark-compare-fail=mean:10%

The call timed is what a model host serves (:func:`umdbench.inference.run_inference`: the device
synchronised before and after, the output checked, ``--umd-amp``'s autocast), run in this
process (no host process: its pickling would be timed too). Each benchmark's ``extra_info``
holds the card (or CPU), device, AMP, the peak memory over the timed rounds and the warm-up
call's own time; ``machine_info`` gets the card too (``conftest.py``), so a compare against
another card's file warns. Rounds: ``$UMD_TIMING_ROUNDS`` (default 5), warm-up rounds:
``$UMD_TIMING_WARMUP`` (default 1).

Under xdist pytest-benchmark is off, so in the main job (``pytest benchmarks -n 4``) these skip
before loading anything, as the speed benchmarks do; the audit records its own timings there
(each record's ``timing``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from umdbench.cohort import Cohort, Scan, ScanLoader
from umdbench.devices import resolve_device
from umdbench.inference import InferenceRequest, InferenceResult
from umdbench.isolation import InProcessHost, load_model
from umdbench.models.base import PromptKind, SegmentationModel
from umdbench.plugin import session_of
from umdbench.prompts import case_seed
from umdbench.protocols import protocol_unsupported
from umdbench.session import UmdSession

pytestmark = pytest.mark.speed  # run only when asked for (umdbench.plugin)

ROUNDS = int(os.environ.get("UMD_TIMING_ROUNDS", "5"))
WARMUP_ROUNDS = int(os.environ.get("UMD_TIMING_WARMUP", "1"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One parameter per model of the run's selection (as the audit selects them)."""
    if "timing_model" not in metafunc.fixturenames:
        return
    session = session_of(metafunc.config)
    try:
        names: list[Any] = list(session.model_names())
    except pytest.UsageError as error:  # raised once after collection, by the plugin
        session.usage_error = session.usage_error or error
        names = [pytest.param(None, marks=pytest.mark.skip(reason=str(error)), id="usage-error")]
    if not names:
        names = [pytest.param(None, marks=pytest.mark.skip(reason="no model selected"), id="none")]
    metafunc.parametrize("timing_model", names)


@pytest.fixture
def bench(benchmark: Any) -> Any:
    if benchmark.disabled:
        pytest.skip("inference timing needs -n 0 (pytest-benchmark is off under xdist)")
    return benchmark


def test_inference_timing(bench: Any, timing_model: str, umd_session: UmdSession) -> None:
    options = umd_session.options
    cohort = umd_session.cohort()
    if cohort is None:
        pytest.skip(umd_session.cohort_error or "no cohort")
    device = resolve_device(options.device)
    cls = umd_session.registry.get(timing_model)
    host = InProcessHost(device, amp=options.amp)
    try:
        status, value = load_model(cls, host)
        if status == "unavailable":
            pytest.skip(f"{timing_model}: {value}")
        if status != "ok":
            pytest.fail(str(value), pytrace=False)
        request = _request(cls, host, cohort, _loader(umd_session), options)
        where = request.where(timing_model)
        timings: list[dict[str, Any]] = []

        def infer() -> InferenceResult:
            answer, result = host.request("infer", (timing_model, request), where)
            if answer != "ok":
                pytest.fail(str(result), pytrace=False)
            timings.append(result.timing)
            return result

        bench.group = f"inference {timing_model}"
        bench.pedantic(infer, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS, iterations=1)
    finally:
        host.close()
    bench.extra_info.update(_extra_info(timings, WARMUP_ROUNDS, request, value, options.amp))


def _loader(session: UmdSession) -> ScanLoader:
    """The audit's own loader (cached, resampling), so the model gets the image it gets there."""
    from umdbench.session import _scan_loader

    return _scan_loader(session.options.cache)


def _arms(cls: type[SegmentationModel], cohort: Cohort, chosen: list[str] | None) -> list[str]:
    """The selected arms, those the model claims first."""
    arms = [arm for arm in cohort.modalities if chosen is None or arm in chosen]
    return sorted(arms, key=lambda arm: arm not in cls.modalities_claimed)


def _request(
    cls: type[SegmentationModel],
    host: InProcessHost,
    cohort: Cohort,
    loader: ScanLoader,
    options: Any,
) -> InferenceRequest:
    """One scan's request: the first scan of the model's first arm; for a promptable model,
    its first organ with a non-empty reference it runs, under its first protocol."""
    for arm in _arms(cls, cohort, options.modalities):
        for scan in cohort.scans_of(arm):
            image = loader.image(scan)
            request = InferenceRequest(image, arm, scan.key, str(scan.image))
            if cls.prompt_kind is PromptKind.NONE:
                return request
            if _prompt(cls, host, scan, loader, request, options.organs):
                return request
    pytest.skip(f"{cls.name}: no scan of the selected arms has a target it runs")


def _prompt(
    cls: type[SegmentationModel],
    host: InProcessHost,
    scan: Scan,
    loader: ScanLoader,
    request: InferenceRequest,
    organs: list[str] | None,
) -> bool:
    protocol = cls.protocols[0] if cls.protocols else None
    labels = loader.labels(scan)
    for organ in scan.label_map:
        if (organs is not None and organ not in organs) or not cls.runs(organ):
            continue
        if protocol_unsupported(cls, organ, protocol):
            continue
        status, reason = host.request("call", (cls.name, "unsupported", (organ, protocol)), "")
        if status != "ok" or reason:
            continue
        reference = scan.organ_mask(labels, organ)
        if not reference.any():
            continue
        request.reference, request.organ, request.protocol = reference, organ, protocol
        request.seed = case_seed(cls.name, scan.key, organ, protocol or "")
        return True
    return False


def _extra_info(
    timings: list[dict[str, Any]],
    warmup_rounds: int,
    request: InferenceRequest,
    weights_id: Any,
    amp: str,
) -> dict[str, Any]:
    """What a saved benchmark says beside its times: where it ran, on what, with what memory."""
    warm, steady = timings[:warmup_rounds], timings[warmup_rounds:] or timings
    last = steady[-1]
    info: dict[str, Any] = {
        "device": last["device"],
        "device_name": last["device_name"],
        "amp": amp,
        "scan": request.scan,
        "modality": request.modality,
        "shape": list(request.image.shape),
        "organ": request.organ,
        "protocol": request.protocol,
        "weights_id": str(weights_id),
        "rounds": len(steady),
        "warmup_rounds": len(warm),
        "warmup_wall_s": warm[0]["wall_s"] if warm else None,
        "first_call_was_warmup": bool(timings[0]["warmup"]),
        "peak_rss_bytes": max(t["peak_rss_bytes"] or 0 for t in steady),
        "peak_rss_source": last["peak_rss_source"],
    }
    if "peak_gpu_bytes" in last:
        info["peak_gpu_bytes"] = max(t["peak_gpu_bytes"] for t in steady)
        info["peak_gpu_reserved_bytes"] = max(t["peak_gpu_reserved_bytes"] for t in steady)
        info["cuda_event_s_mean"] = float(np.mean([t["cuda_event_s"] for t in steady]))
        if warm:
            info["warmup_cuda_event_s"] = warm[0]["cuda_event_s"]
    return info
