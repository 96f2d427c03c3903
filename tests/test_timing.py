"""Timings and memory per inference (umdbench.timing), ``--umd-amp``, and the ``-n 0`` mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from umdbench import timing
from umdbench.cases import Case
from umdbench.cohort import Cohort
from umdbench.inference import InferenceRequest
from umdbench.isolation import ChildHost, InProcessHost, ModelSpec, load_model
from umdbench.models.base import SegmentationModel
from umdbench.policy import Threshold
from umdbench.prediction_cache import PredictionCache
from umdbench.prompts import Prompt
from umdbench.runner import CaseRunner
from umdbench.session import FINGERPRINT_OPTIONS, UmdOptions
from umdbench.volume import Volume

REPO = Path(__file__).resolve().parents[1]
BAR = Threshold("dice", 0.5, "test bar")


class AmpProbe(SegmentationModel):
    """Labels liver brightness 1; remembers the autocast state ``predict`` ran under."""

    name = "amp-probe"
    organs = ("liver", "spleen")
    label_ids: ClassVar = {"liver": 1, "spleen": 2}
    calls = 0

    def __init__(self) -> None:
        self.seen: dict[str, object] = {}

    def load(self, device: str) -> None: ...

    def predict(self, image: Volume, modality: str, prompt: Prompt | None) -> np.ndarray:
        type(self).calls += 1
        self.seen = {
            "autocast": torch.is_autocast_enabled("cpu"),
            "dtype": str(torch.get_autocast_dtype("cpu")),
        }
        return ((image.array > 50) & (image.array < 150)).astype(np.int16)

    def inference_settings(self) -> dict[str, object]:
        return dict(self.seen)


class OtherProbe(AmpProbe):
    name = "other-probe"


class Registry:
    def __init__(self, *classes: type[SegmentationModel]) -> None:
        self.classes = {cls.name: cls for cls in classes}

    def get(self, name: str) -> type[SegmentationModel]:
        return self.classes[name]


def _request(cohort: Cohort, index: int = 0) -> InferenceRequest:
    scan = cohort.scans_of("CT")[index]
    return InferenceRequest(scan.load_image(), "CT", scan.key, str(scan.image))


# -- the figures of one call, on the CPU --------------------------------------------------------
#: Measured in a fresh process: a long-lived one (an xdist worker after the metric tests) may
#: hand a 200 MB block pages that are already resident, which no RSS figure can see (seen in CI).
RSS_PROBE = """
import json, numpy as np
from umdbench import timing
size = 200 * 1024 * 1024
def allocate():
    block = np.ones(size // 8)  # written, so resident
    return float(block[-1])
result, big = timing.measure(allocate, "cpu")
_, small = timing.measure(lambda: None, "cpu")
print(json.dumps({"result": result, "big": big, "small": small, "size": size}))
"""


def test_cpu_figures_wall_time_and_the_peak_rss_of_the_call() -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    probe = subprocess.run([sys.executable, "-c", RSS_PROBE], capture_output=True, text=True,
                           timeout=120, env=environment, check=True)
    out = json.loads(probe.stdout.strip().splitlines()[-1])
    figures, small, size = out["big"], out["small"], out["size"]
    assert out["result"] == 1.0
    assert figures["wall_s"] > 0 and figures["warmup"] is False and figures["amp"] == "none"
    assert figures["device"] == "cpu" and figures["device_name"]
    assert "cuda_event_s" not in figures and "peak_gpu_bytes" not in figures
    assert figures["peak_rss_source"] == "VmHWM"  # Linux lets a process reset its own mark
    grown = figures["peak_rss_bytes"] - figures["rss_before_bytes"]
    assert grown >= 0.9 * size, grown
    # reset per call: the 200 MB peak is gone
    assert small["peak_rss_bytes"] - small["rss_before_bytes"] < 0.5 * size


def test_peak_rss_falls_back_to_ru_maxrss_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timing, "_CLEAR_REFS", "/nonexistent/clear_refs")
    _, figures = timing.measure(lambda: None, "cpu")
    assert figures["peak_rss_source"] == "ru_maxrss"
    assert figures["peak_rss_bytes"] >= (figures["rss_before_bytes"] or 0) > 0


# -- the CUDA branch, torch.cuda mocked ---------------------------------------------------------
class FakeEvent:
    log: ClassVar[list[str]] = []

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing
        self.recorded = False

    def record(self, stream: Any = None) -> None:
        self.recorded = True
        FakeEvent.log.append(f"record {stream}")

    def elapsed_time(self, other: FakeEvent) -> float:
        assert self.recorded and other.recorded
        return 12.5  # milliseconds


def _mock_cuda(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls = FakeEvent.log = []
    cuda = torch.cuda

    def logged(name: str, value: Any = None) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(f"{name} {args[0] if args else ''}".strip())
            return value

        return call

    monkeypatch.setattr(cuda, "synchronize", logged("synchronize"))
    monkeypatch.setattr(cuda, "reset_peak_memory_stats", logged("reset_peak_memory_stats"))
    monkeypatch.setattr(cuda, "memory_allocated", logged("memory_allocated", 1_000))
    monkeypatch.setattr(cuda, "max_memory_allocated", logged("max_memory_allocated", 5_000_000))
    monkeypatch.setattr(cuda, "max_memory_reserved", logged("max_memory_reserved", 8_000_000))
    monkeypatch.setattr(cuda, "current_stream", logged("current_stream", "stream0"))
    monkeypatch.setattr(cuda, "get_device_name", logged("get_device_name", "NVIDIA H200"))
    monkeypatch.setattr(cuda, "Event", FakeEvent)
    return calls


def test_cuda_figures_events_peak_memory_reset_per_call_and_the_card(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _mock_cuda(monkeypatch)

    def work() -> str:
        calls.append("work")
        return "labels"

    result, figures = timing.measure(work, "cuda:0", warmup=True)
    assert result == "labels"
    assert figures["cuda_event_s"] == pytest.approx(0.0125)
    assert (
        figures["peak_gpu_bytes"] == 5_000_000 and figures["peak_gpu_reserved_bytes"] == 8_000_000
    )
    assert figures["gpu_bytes_before"] == 1_000
    assert figures["device"] == "cuda:0" and figures["device_name"] == "NVIDIA H200"
    assert figures["warmup"] is True and figures["wall_s"] > 0 and "peak_rss_bytes" in figures
    order = [c.split()[0] for c in calls]
    work_at = order.index("work")
    # synchronised and reset before; events around the call; synchronised, then the peak read
    assert order.index("synchronize") < order.index("reset_peak_memory_stats") < work_at
    assert calls[work_at - 1] == "record stream0" and calls[work_at + 1] == "record stream0"
    assert order[work_at + 2] == "synchronize"
    assert work_at + 2 < order.index("max_memory_allocated")
    assert "synchronize cuda:0" in calls
    json.dumps(figures)


def test_cuda_amp_runs_under_cuda_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    _mock_cuda(monkeypatch)
    entered: list[tuple[str, torch.dtype]] = []

    class FakeAutocast:
        def __init__(self, device_type: str, dtype: torch.dtype) -> None:
            entered.append((device_type, dtype))

        def __enter__(self) -> None: ...

        def __exit__(self, *exc: object) -> None: ...

    monkeypatch.setattr(torch, "autocast", FakeAutocast)
    _, figures = timing.measure(lambda: None, "cuda:1", amp="fp16")
    assert entered == [("cuda", torch.float16)] and figures["amp"] == "fp16"


# -- warm-up: the first call of each model in a host ---------------------------------------------
def test_warmup_is_the_first_call_of_each_model_in_a_host(tiny_cohort: Cohort) -> None:
    host = InProcessHost("cpu")
    for cls in (AmpProbe, OtherProbe):
        assert load_model(cls, host)[0] == "ok"
    request = _request(tiny_cohort)
    flags = []
    for name in ("amp-probe", "amp-probe", "other-probe", "amp-probe", "other-probe"):
        status, result = host.request("infer", (name, request), "where")
        assert status == "ok"
        flags.append(result.timing["warmup"])
        assert result.seconds == result.timing["wall_s"] > 0
    assert flags == [True, False, True, False, False]
    host.close()  # a fresh host (e.g. after a crash) warms up again
    assert load_model(AmpProbe, host)[0] == "ok"
    assert host.request("infer", ("amp-probe", request), "where")[1].timing["warmup"] is True


# -- --umd-amp ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("amp", "autocast", "dtype"), [("none", False, None), ("bf16", True, "torch.bfloat16")]
)
def test_amp_wraps_predict_in_autocast(
    tiny_cohort: Cohort, amp: str, autocast: bool, dtype: str | None
) -> None:
    host = InProcessHost("cpu", amp=amp)
    assert load_model(AmpProbe, host)[0] == "ok"
    status, result = host.request("infer", ("amp-probe", _request(tiny_cohort)), "where")
    assert status == "ok", result
    assert result.settings["autocast"] is autocast and result.timing["amp"] == amp
    if dtype is not None:
        assert result.settings["dtype"] == dtype
    assert not torch.is_autocast_enabled("cpu")  # left as it was


def test_amp_reaches_the_child_host_process(tiny_cohort: Cohort) -> None:
    assert ModelSpec.of(AmpProbe) is not None
    host = ChildHost("cpu", timeout=120, amp="bf16")
    try:
        assert load_model(AmpProbe, host)[0] == "ok"
        status, result = host.request("infer", ("amp-probe", _request(tiny_cohort)), "where")
        assert status == "ok", result
        assert result.settings == {"autocast": True, "dtype": "torch.bfloat16"}
        assert result.timing["amp"] == "bf16" and result.timing["warmup"] is True
        second = host.request("infer", ("amp-probe", _request(tiny_cohort, 1)), "where")[1]
        assert second.timing["warmup"] is False
    finally:
        host.close()


def test_check_amp_refuses_fp16_on_cpu_and_unknown_modes() -> None:
    timing.check_amp("bf16", "cpu")
    timing.check_amp("fp16", "cuda:0")
    with pytest.raises(ValueError, match=r"fp16 autocast needs a CUDA device.*use bf16"):
        timing.check_amp("fp16", "cpu")
    with pytest.raises(ValueError, match="none, bf16, fp16"):
        timing.check_amp("fp32", "cpu")


def test_fp16_on_cpu_is_a_usage_error() -> None:
    with pytest.raises(pytest.UsageError, match="--umd-amp fp16: fp16 autocast needs a CUDA"):
        UmdOptions(device="cpu", amp="fp16").validate()
    UmdOptions(device="cpu", amp="bf16").validate()
    assert "amp" in FINGERPRINT_OPTIONS  # a resumed run must not mix precisions
    assert UmdOptions(amp="bf16").recorded()["amp"] == "bf16"  # run.options


def test_fp16_on_cpu_on_the_command_line(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--umd-amp", "fp16", "--umd-device", "cpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--umd-amp fp16: fp16 autocast needs a CUDA device*"])
    result = pytester.runpytest("--umd-amp", "fp32")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--umd-amp*invalid choice*fp32*"])


# -- records --------------------------------------------------------------------------------------
def test_records_carry_timing_and_amp_is_part_of_the_prediction_key(
    tiny_cohort: Cohort, tmp_path: Path
) -> None:
    def run(amp: str) -> list[dict[str, Any]]:
        runner = CaseRunner(
            tiny_cohort, Registry(AmpProbe), "cpu", PredictionCache(tmp_path / "p"),  # type: ignore[arg-type]
            isolation="none", amp=amp,
        )  # fmt: skip
        liver = runner.run_case(Case("amp-probe", "CT", "liver"), BAR)
        spleen = runner.run_case(Case("amp-probe", "CT", "spleen"), BAR)
        runner.close()
        return liver.records + spleen.records

    AmpProbe.calls = 0
    plain = run("none")
    assert AmpProbe.calls == 2  # two CT scans, the spleen case reuses the liver case's passes
    for record in plain:
        assert record["timing"]["wall_s"] == record["inference_seconds"]
        assert record["timing"]["amp"] == "none" and record["timing"]["device"] == "cpu"
    fresh = [r for r in plain if not r["prediction_reused"]]
    assert [r["timing"]["warmup"] for r in fresh] == [True, False]
    mixed = run("bf16")  # the same folder: a bf16 run does not reuse the fp32 predictions
    assert AmpProbe.calls == 4
    assert {r["timing"]["amp"] for r in mixed} == {"bf16"}
    assert all(r["inference"]["autocast"] is True for r in mixed)


@pytest.mark.slow
def test_a_small_audit_records_timing_and_the_amp_option(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    command = [
        sys.executable, "-m", "pytest", str(REPO / "benchmarks" / "test_segmentation.py"),
        "-p", "no:cacheprovider", "-q", "-n", "0", "--umd-results", str(results),
        "--umd-no-report", "--umd-subjects", "2", "--umd-models", "classical-otsu",
        "--umd-organs", "liver,spleen", "--umd-modalities", "CT", "--umd-amp", "bf16",
    ]  # fmt: skip
    process = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert process.returncode in (0, 1), process.stdout[-3000:] + process.stderr[-3000:]
    document = json.loads(results.read_text())
    assert document["run"]["options"]["amp"] == "bf16"
    ok = [r for r in document["records"] if r["status"] == "ok"]
    assert ok
    for record in ok:
        figures = record["timing"]
        assert figures["wall_s"] == record["inference_seconds"] > 0
        assert figures["amp"] == "bf16" and figures["device_name"]
        assert figures["peak_rss_bytes"] > 0 and figures["peak_rss_source"] == "VmHWM"
    fresh = [r for r in ok if not r["prediction_reused"]]
    assert sum(r["timing"]["warmup"] for r in fresh) == 1  # one host, one model: one warm-up


def _document(*cases: tuple[str, list[tuple[float, bool]]]) -> dict[str, Any]:
    records = [
        {"case_id": case, "subject": f"s{i}", "status": "ok", "dice": 0.9,
         "inference_seconds": seconds, "prediction_reused": False,
         "timing": {"wall_s": seconds, "warmup": warmup}}
        for case, calls in cases
        for i, (seconds, warmup) in enumerate(calls)
    ]  # fmt: skip
    return {"cases": [{"case_id": c, "outcome": "passed"} for c, _ in cases], "records": records}


def test_compare_leaves_warmup_calls_out_of_steady_state_time() -> None:
    from umdbench.report.compare import compare_documents

    old = _document(("m-CT-liver", [(30.0, True), (2.0, False)]), ("m-MRI-liver", [(3.0, True)]))
    # the warm-up moved (another worker, a cold cache): no change; a case with nothing but its
    # warm-up call still counts that call
    new = _document(("m-CT-liver", [(5.0, True), (2.0, False)]), ("m-MRI-liver", [(9.0, True)]))
    changes = compare_documents(old, new)
    assert [(c.case_id, c.quantity, c.old, c.new) for c in changes] == [
        ("m-MRI-liver", "time_s", 3.0, 9.0)
    ]


# -- the -n 0 timing mode ---------------------------------------------------------------------------
def _timing_mode(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "pytest", str(REPO / "benchmarks" / "timing"), "-p",
        "no:cacheprovider", "-q", "-n", "0", "--umd-subjects", "2", "--umd-models",
        "classical-otsu", "--umd-results", str(tmp_path / "results.json"), *args,
    ]  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    # an xdist worker's variables would switch pytest-benchmark off in the child
    environment.update(UMD_TIMING_ROUNDS="2", UMD_TIMING_WARMUP="1")
    return subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=600, env=environment
    )


@pytest.mark.slow
def test_timing_mode_benchmarks_each_model_with_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    process = _timing_mode(tmp_path, f"--benchmark-json={out}")
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    (bench,) = json.loads(out.read_text())["benchmarks"]
    assert bench["name"] == "test_inference_timing[classical-otsu]"
    assert bench["group"] == "inference classical-otsu" and bench["stats"]["rounds"] == 2
    info = bench["extra_info"]
    assert info["device"] == "cpu" and info["amp"] == "none" and info["device_name"]
    assert info["first_call_was_warmup"] is True and info["warmup_wall_s"] > 0
    assert info["peak_rss_bytes"] > 0 and info["organ"] and info["protocol"] == "box"
    machine = json.loads(out.read_text())["machine_info"]["umdbench"]
    assert machine["device"] == "cpu" and machine["amp"] == "none"
    assert not (tmp_path / "results.json").exists()  # no audit ran: no results file


@pytest.mark.slow
def test_timing_mode_skips_where_pytest_benchmark_is_off(tmp_path: Path) -> None:
    process = _timing_mode(tmp_path, "--benchmark-disable", "-rs")
    assert process.returncode == 0, process.stdout[-3000:]
    assert "1 skipped" in process.stdout and "needs -n 0" in process.stdout
