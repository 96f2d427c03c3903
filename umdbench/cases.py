"""The case matrix: model x modality x organ [x prompt protocol], and case ids.

A case id reads ``<model>-<MODALITY>-<organ>[-<protocol>]`` (``unet-ct-PET_CT-liver``,
``sam-med3d-turbo-PET_CT-liver-1click``). Organ names use underscores and modalities are a fixed
set, so the id parses back unambiguously even though model names contain hyphens; the xdist
scheduler relies on that, since it sees only node ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from umdbench.organs import MODALITIES

if TYPE_CHECKING:
    from umdbench.models.base import SegmentationModel

__all__ = ["Case", "GapCase", "build_cases", "parse_case_id", "schedule_group"]

_CASE_ID = re.compile(
    r"^(?P<model>.+?)-(?P<modality>" + "|".join(sorted(MODALITIES, key=len, reverse=True)) + r")"
    r"-(?P<organ>[a-z0-9_]+)(?:-(?P<protocol>[A-Za-z0-9.-]+))?$"
)


@dataclass(frozen=True, order=True)
class Case:
    """One parametrized benchmark case."""

    model: str
    modality: str
    organ: str
    protocol: str | None = None

    @property
    def id(self) -> str:
        base = f"{self.model}-{self.modality}-{self.organ}"
        return base if self.protocol is None else f"{base}-{self.protocol}"

    @property
    def group(self) -> str:
        """Cases that share one worker, so a scan's prediction is made once and reused."""
        return f"{self.model}-{self.modality}"


def parse_case_id(case_id: str) -> Case:
    """The inverse of :attr:`Case.id`."""
    match = _CASE_ID.match(case_id)
    if match is None:
        raise ValueError(
            f"case id must read <model>-<MODALITY>-<organ>[-<protocol>], got {case_id!r}"
        )
    return Case(match["model"], match["modality"], match["organ"], match["protocol"])


def schedule_group(nodeid: str) -> str | None:
    """The scheduling group of a ``test_segmentation[...]`` node id, None for other tests."""
    name, sep, param = nodeid.partition("[")
    if not sep or not name.endswith("test_segmentation"):
        return None
    try:
        return parse_case_id(param.rstrip("]")).group
    except ValueError:
        return None


def build_cases(
    models: Iterable[type[SegmentationModel]], arms: Mapping[str, Sequence[str]]
) -> list[Case]:
    """Every (model, modality, target, protocol) to run.

    ``arms`` maps each modality to the targets labelled in it. A target the model does not run
    (``SegmentationModel.runs``: automatic models their own organs, promptable models every
    target), or the arm does not label, makes no case; promptable models get one case per
    protocol.
    """
    cases = []
    for model in models:
        for modality, organs in arms.items():
            for organ in organs:
                if not model.runs(organ):
                    continue
                for protocol in model.protocols or (None,):
                    cases.append(Case(model.name, modality, organ, protocol))
    return cases


@dataclass(frozen=True)
class GapCase:
    """A paired comparison of one model and organ between two arms of the same subjects."""

    model: str
    organ: str
    arm_a: str
    arm_b: str
    protocol: str | None = None

    @property
    def comparison(self) -> str:
        return f"{self.arm_a}~{self.arm_b}"

    @property
    def id(self) -> str:
        base = f"{self.model}-{self.organ}-{self.comparison}"
        return base if self.protocol is None else f"{base}-{self.protocol}"

    def case(self, arm: str) -> Case:
        return Case(self.model, arm, self.organ, self.protocol)
