"""Paired gaps: the same subjects and organ, one model, two arms (CT~PET_CT, MRI~PET_MRI, ...).

With anatomy held constant and only the imaging physics changed, a general-purpose model should
score alike on both arms. A failing gap is the study's "generalization illusion", measured.
"""

from __future__ import annotations

from typing import Any

import pytest

from umdbench.cases import GapCase
from umdbench.controller import GAP_PROPERTY
from umdbench.gaps import evaluate_gap
from umdbench.session import UmdSession


def test_modality_gap(umd_gap: GapCase, umd_session: UmdSession, record_property: Any) -> None:
    outcome = evaluate_gap(umd_session, umd_gap, seed=umd_session.options.seed)
    record_property(GAP_PROPERTY, outcome.summary())
    if outcome.skip_reason:
        pytest.skip(outcome.skip_reason)
    if not outcome.passed:
        pytest.fail(outcome.failure_message(), pytrace=False)
