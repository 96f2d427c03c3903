"""The audit: one case per model x modality x organ [x prompt protocol].

A case runs its model on every subject's scan of one arm, scores one organ per subject, and
asserts the mean against the policy's threshold. A failing case is a finding about the model,
not a bug in the suite: its message names the figure, the bar, its source and the worst subjects.
A case that could not be run on every subject is an *error* (pytest's ERROR, at setup), never
a pass or a failure: its message starts with the errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from umdbench.cases import Case
from umdbench.controller import CASE_PROPERTY, RECORDS_PROPERTY
from umdbench.session import UmdSession

if TYPE_CHECKING:
    from umdbench.runner import CaseOutcome


@pytest.fixture
def umd_outcome(umd_case: Case, umd_session: UmdSession, record_property: Any) -> CaseOutcome:
    """The case run and recorded. A case some subject of which could not be scored (or whose
    model could not be loaded) is an error here, in setup: it has no verdict to assert."""
    outcome = umd_session.run_case(umd_case)
    record_property(CASE_PROPERTY, outcome.summary())
    record_property(RECORDS_PROPERTY, outcome.records)
    if outcome.is_error:
        pytest.fail(outcome.error_message(), pytrace=False)
    return outcome


def test_segmentation(umd_outcome: CaseOutcome) -> None:
    if umd_outcome.skip_reason:
        pytest.skip(umd_outcome.skip_reason)
    if not umd_outcome.passed:
        pytest.fail(umd_outcome.failure_message(), pytrace=False)
