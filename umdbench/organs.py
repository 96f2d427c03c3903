"""Canonical organ and modality names: the one vocabulary every cohort, model and report uses."""

from __future__ import annotations

__all__ = [
    "CANONICAL_ORGANS",
    "MODALITIES",
    "MULTIPART_ORGANS",
    "PAIRED_COMPARISONS",
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

#: Organs that are several disjoint structures under one canonical name, and their parts, named
#: by side (world x of the part's centroid; RAS+: larger x is the subject's right). A promptable
#: model prompts each part on its own and the masks are merged, as SAM-Med3D's evaluation
#: prompts each ground-truth label id on its own (one click on one lung cannot segment the
#: other). How parts are found: ``umdbench.prompts.organ_parts``.
MULTIPART_ORGANS: dict[str, tuple[str, ...]] = {"lung": ("right", "left")}

#: The four arms of a subject: two sessions (PET/CT and PET/MRI), two images each.
MODALITIES: tuple[str, ...] = ("CT", "PET_CT", "MRI", "PET_MRI")

#: The intra-subject comparisons the study makes: same anatomy, other physics.
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


def check_organ(name: str, known: tuple[str, ...] = CANONICAL_ORGANS) -> str:
    """Return ``name`` if it is a known organ; the error suggests the closest names."""
    if name in known:
        return name
    import difflib

    close = difflib.get_close_matches(name, known, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(f"organ must be one of the canonical organs, got {name!r}{hint}")
