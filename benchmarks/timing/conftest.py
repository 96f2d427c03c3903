"""The timing mode's machine: pytest-benchmark's ``machine_info`` names the OS, Python and CPU;
add the card (or CPU model), the device and ``--umd-amp``, so that comparing against a file
saved on another card, or with another AMP, says so."""

from __future__ import annotations

from typing import Any

import pytest


def pytest_benchmark_update_machine_info(
    config: pytest.Config, machine_info: dict[str, Any]
) -> None:
    import torch

    from umdbench.devices import resolve_device
    from umdbench.plugin import session_of
    from umdbench.timing import device_name

    options = session_of(config).options
    device = resolve_device(options.device)
    machine_info["umdbench"] = {
        "device": device,
        "device_name": device_name(device),
        "amp": options.amp,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.startswith("cuda") else None,
    }
