"""xdist scheduling that keeps the cases of one (model, modality) on one worker.

pytest-xdist's ``loadgroup`` scatters groups under pytest 9.2 (pytest-xdist issue 1386), and
``loadscope`` would put every parametrized case of ``test_segmentation`` on one worker. This
scheduler is ``loadscope`` with a scope read from the case id: a model's cases on one arm
share the scan predictions, so they go together; other tests keep xdist's usual scope.
"""

from __future__ import annotations

from typing import Any

from xdist.scheduler import LoadScopeScheduling

from umdbench.cases import schedule_group

__all__ = ["CaseGroupScheduling"]


class CaseGroupScheduling(LoadScopeScheduling):
    """``--dist load``/``loadscope`` with ``test_segmentation`` cases grouped by model and arm."""

    def __init__(self, config: Any, log: Any = None) -> None:
        super().__init__(config, log)
        self._per_test = config.getoption("dist") == "load"

    def _split_scope(self, nodeid: str) -> str:
        group = schedule_group(nodeid)
        if group is not None:
            return f"umd::{group}"
        if self._per_test:
            return nodeid
        return str(super()._split_scope(nodeid))
