"""The audit: one case per model x modality x organ [x prompt protocol].

A case runs its model on every subject's scan of one arm, scores one organ per subject, and
asserts the mean against the policy's threshold. A failing case is a finding about the model,
not a bug in the suite: its message names the figure, the bar, its source and the worst subjects.
"""

from __future__ import annotations

from typing import Any

import pytest

from umdbench.cases import Case
from umdbench.controller import CASE_PROPERTY, RECORDS_PROPERTY
from umdbench.session import UmdSession


def test_segmentation(umd_case: Case, umd_session: UmdSession, record_property: Any) -> None:
    outcome = umd_session.run_case(umd_case)
    record_property(CASE_PROPERTY, outcome.summary())
    record_property(RECORDS_PROPERTY, outcome.records)
    if outcome.skip_reason:
        pytest.skip(outcome.skip_reason)
    if not outcome.passed:
        pytest.fail(outcome.failure_message(), pytrace=False)
