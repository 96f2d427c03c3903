"""The study's organ and modality names. Targets in general (organs, lesions, a user's own)
live in :mod:`umdbench.targets`; this module keeps the study's fixed vocabulary."""

from __future__ import annotations

__all__ = [
    "CANONICAL_ORGANS",
    "MODALITIES",
    "PAIRED_COMPARISONS",
    "check_comparison",
    "check_modality",
    "check_organ",
]

#: The study's 13 paired target organs (UMD, Zhang et al. 2026), in report order.
CANONICAL_ORGANS: tuple[str, ...] = (
    "liver",
    "kidney_left",
    "kidney_right",
    "spleen",
    "heart",
    "aorta",
    "lung",
    "brain",
    "colon",
    "urinary_bladder",
    "pancreas",
    "esophagus",
    "stomach",
)

#: The four arms of a subject: two sessions (PET/CT and PET/MRI), two images each.
MODALITIES: tuple[str, ...] = ("CT", "PET_CT", "MRI", "PET_MRI")

#: The intra-subject comparisons the study makes: same anatomy, other physics. A cohort may
#: declare its own (``Cohort.comparisons``), e.g. CT~PET_CT, CT~MRI, PET_CT~MRI.
PAIRED_COMPARISONS: tuple[tuple[str, str], ...] = (
    ("CT", "PET_CT"),
    ("MRI", "PET_MRI"),
    ("CT", "MRI"),
    ("PET_CT", "PET_MRI"),
)


def check_modality(name: str) -> str:
    """Return ``name`` if it is a known arm; the error lists the arms."""
    if name not in MODALITIES:
        raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {name!r}")
    return name


def check_organ(name: str, known: tuple[str, ...] | None = None) -> str:
    """Return ``name`` if it is a known target (``known``: the targets of
    :mod:`umdbench.targets`); the error suggests the closest names."""
    if known is None:
        from umdbench.targets import check_target

        return check_target(name)
    if name in known:
        return name
    import difflib

    close = difflib.get_close_matches(name, known, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(f"organ must be one of {', '.join(known)}, got {name!r}{hint}")


def check_comparison(arm_a: str, arm_b: str) -> tuple[str, str]:
    """A paired comparison of two distinct arms, each known, written in arm order (as
    policy rules and gap ids name it: ``CT~PET_CT``, never ``PET_CT~CT``)."""
    check_modality(arm_a)
    check_modality(arm_b)
    if arm_a == arm_b:
        raise ValueError(f"a paired comparison needs two different arms, got {arm_a}~{arm_b}")
    if MODALITIES.index(arm_a) > MODALITIES.index(arm_b):
        raise ValueError(f"write the comparison in arm order, {arm_b}~{arm_a}, not {arm_a}~{arm_b}")
    return arm_a, arm_b
