"""Which device a worker computes on, and how many CPU threads it may use.

GPU pinning happens in ``pytest_configure`` of each xdist worker, before anything touches CUDA:
worker ``gwK`` gets the K-th visible GPU (modulo their number), within an outer
``CUDA_VISIBLE_DEVICES`` when one is set.
"""

from __future__ import annotations

import os
import shutil
import subprocess

__all__ = ["pin_worker_gpu", "resolve_device", "visible_gpu_ids", "worker_index"]


def visible_gpu_ids() -> list[str]:
    """GPU ids visible to this process, found without initialising CUDA."""
    outer = os.environ.get("CUDA_VISIBLE_DEVICES")
    if outer is not None:
        return [part.strip() for part in outer.split(",") if part.strip() and part.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU ")]


def worker_index(worker_id: str | None) -> int | None:
    """``gw3`` -> 3; None outside xdist."""
    if not worker_id or not worker_id.startswith("gw"):
        return None
    return int(worker_id[2:])


def pin_worker_gpu(worker_id: str | None) -> str | None:
    """Restrict this worker to one GPU; returns the id chosen, or None when nothing was pinned."""
    index = worker_index(worker_id)
    gpus = visible_gpu_ids()
    if index is None or not gpus:
        return None
    chosen = gpus[index % len(gpus)]
    os.environ["CUDA_VISIBLE_DEVICES"] = chosen
    return chosen


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; explicit values are checked."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu" or requested.startswith("cuda"):
        return requested
    raise ValueError(f"--umd-device must be auto, cpu, cuda or cuda:N, got {requested!r}")
