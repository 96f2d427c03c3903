"""How long one inference call took, and how much memory it needed, on the device it ran on.

:func:`measure` runs one call (one subject's inference, in the model's host process) and returns
its result with a dict of JSON-ready figures, the ``timing`` of a results record:

- ``wall_s``: wall seconds, the device synchronised before and after (what ``inference_seconds``
  has always been);
- ``warmup``: whether this was the host's first call of that model (CUDA context, cuDNN
  autotuning, numba and torch.compile caches, first-touch allocations): keep it apart from the
  steady state;
- ``amp``: ``none``, ``bf16`` or ``fp16``, the ``torch.autocast`` the call ran under
  (``--umd-amp``);
- ``device`` and ``device_name``: the card's name (``torch.cuda.get_device_name``) or the CPU's
  model name;
- on CUDA: ``cuda_event_s`` (CUDA-event elapsed time on the current stream), ``peak_gpu_bytes``
  (``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``: this call's peak),
  ``peak_gpu_reserved_bytes`` (the caching allocator's reserved peak) and ``gpu_bytes_before``;
- everywhere: ``peak_rss_bytes`` and ``rss_before_bytes``, the process's resident set.
  ``peak_rss_source`` says what the peak is: ``VmHWM`` (Linux: the high-water mark reset before
  the call by writing ``5`` to ``/proc/self/clear_refs``, so this call's peak) or ``ru_maxrss``
  (where that is not permitted: the process's peak since it started, an upper bound).
"""

from __future__ import annotations

import contextlib
import functools
import platform
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = [
    "AMP_MODES",
    "amp_context",
    "check_amp",
    "cpu_name",
    "device_name",
    "measure",
]

T = TypeVar("T")

#: ``--umd-amp`` values -> the ``torch`` dtype name autocast runs in (None: no autocast).
AMP_MODES: dict[str, str | None] = {"none": None, "bf16": "bfloat16", "fp16": "float16"}

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


def check_amp(amp: str, device: str) -> None:
    """Refuse an unknown mode, or fp16 on the CPU (CPU autocast is meant for bfloat16)."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
    if amp == "fp16" and not _is_cuda(device):
        raise ValueError(
            f"fp16 autocast needs a CUDA device, and this run computes on {device}: use bf16"
            " on the CPU, or --umd-device cuda"
        )


@contextlib.contextmanager
def amp_context(amp: str, device: str) -> Iterator[None]:
    """``torch.autocast(device_type, dtype)`` for ``bf16`` / ``fp16``; nothing for ``none``."""
    check_amp(amp, device)
    dtype_name = AMP_MODES[amp]
    if dtype_name is None:
        yield
        return
    import torch

    with torch.autocast(device_type=device.split(":")[0], dtype=getattr(torch, dtype_name)):
        yield


def measure(
    work: Callable[[], T], device: str, *, warmup: bool = False, amp: str = "none"
) -> tuple[T, dict[str, Any]]:
    """Run ``work`` (under ``amp``'s autocast) and return its result and figures (see above)."""
    if _is_cuda(device):
        return _measure_cuda(work, device, warmup, amp)
    rss = _RssProbe()
    start = time.perf_counter()
    with amp_context(amp, device):
        result = work()
    figures = _common(time.perf_counter() - start, warmup, amp, device, cpu_name())
    figures.update(rss.figures())
    return result, figures


def _common(wall: float, warmup: bool, amp: str, device: str, name: str) -> dict[str, Any]:
    """The figures every inference gets, on any device."""
    return {"wall_s": wall, "warmup": bool(warmup), "amp": amp, "device": device,
            "device_name": name}


def _measure_cuda(
    work: Callable[[], T], device: str, warmup: bool, amp: str
) -> tuple[T, dict[str, Any]]:
    import torch

    cuda = torch.cuda
    target = torch.device(device)
    cuda.synchronize(target)
    cuda.reset_peak_memory_stats(target)
    before = int(cuda.memory_allocated(target))
    stream = cuda.current_stream(target)
    begin, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
    rss = _RssProbe()
    start = time.perf_counter()
    begin.record(stream)
    with amp_context(amp, device):
        result = work()
    end.record(stream)
    cuda.synchronize(target)
    figures = _common(time.perf_counter() - start, warmup, amp, device, device_name(device))
    figures.update({
        "cuda_event_s": float(begin.elapsed_time(end)) / 1000.0,
        "peak_gpu_bytes": int(cuda.max_memory_allocated(target)),
        "peak_gpu_reserved_bytes": int(cuda.max_memory_reserved(target)),
        "gpu_bytes_before": before,
    })
    figures.update(rss.figures())
    return result, figures


def device_name(device: str) -> str:
    """The card's name on CUDA (``NVIDIA H200``), else the CPU's model name."""
    if not _is_cuda(device):
        return cpu_name()
    import torch

    return str(torch.cuda.get_device_name(torch.device(device)))


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.partition(":")[2].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def _is_cuda(device: str) -> bool:
    return device.startswith("cuda")


class _RssProbe:
    """The process's resident set before a call, and its peak during it: VmHWM, reset before
    the call where Linux allows it, and VmRSS sampled every few milliseconds while the call
    runs. The kernel folds its per-CPU RSS counters into VmHWM lazily, so a peak freed before
    the call returns can be missing from VmHWM (seen in CI: a 200 MB block left it unchanged);
    the sampler catches any peak that lasts longer than its interval."""

    INTERVAL_S = 0.005

    def __init__(self) -> None:
        self.source = "VmHWM" if _reset_high_water_mark() else "ru_maxrss"
        self.before = _status_bytes("VmRSS")
        self._sampled = self.before or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="umdbench-rss", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.INTERVAL_S):
            self._sampled = max(self._sampled, _status_bytes("VmRSS") or 0)

    def figures(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        peak = _status_bytes("VmHWM") if self.source == "VmHWM" else None
        if peak is None:
            self.source = "ru_maxrss"
            # the kernel updates ru_maxrss lazily: it can lag the resident set of this moment
            peak = max(_ru_maxrss_bytes(), _status_bytes("VmRSS") or 0)
        return {
            "peak_rss_bytes": max(peak, self._sampled),
            "rss_before_bytes": self.before,
            "peak_rss_source": self.source,
            "rss_sampled_every_s": self.INTERVAL_S,
        }


def _reset_high_water_mark() -> bool:
    """Linux: ``5`` into ``/proc/self/clear_refs`` resets VmHWM to the current RSS."""
    try:
        with open(_CLEAR_REFS, "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def _status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes; None where there is none."""
    try:
        with open(_STATUS) as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _ru_maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS: bytes; Linux: kB
