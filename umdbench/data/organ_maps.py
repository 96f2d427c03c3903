"""Dataset label names -> the canonical organs, and TotalSegmentator's label maps as data.

A dataset names its labels its own way (``Liver``, ``left kidney``, five lung lobes). Names are
normalised (lower case, any run of other characters -> ``_``), then looked up in
:data:`SYNONYMS`; several names of one organ merge (the lobes make ``lung``). Left and right stay
apart where the canon keeps them (``kidney_left``/``kidney_right``); a dataset that labels only
``kidney`` (both sides in one value) gives no kidney organ, rather than a wrong one.

Per dataset, ``overrides`` replaces the synonym list of an organ (``{"liver": ["liver",
"liver_tumour"]}`` counts the tumour as liver).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from umdbench.organs import check_organ

__all__ = [
    "BUILTIN_LABEL_MAPS",
    "SYNONYMS",
    "TOTALSEG_TOTAL",
    "TOTALSEG_TOTAL_MR",
    "canonical_label_map",
    "normalise_name",
    "parse_label_names",
    "target_label_names",
]


def _vertebrae() -> list[str]:
    cervical = [f"vertebrae_C{i}" for i in range(7, 0, -1)]
    thoracic = [f"vertebrae_T{i}" for i in range(12, 0, -1)]
    lumbar = [f"vertebrae_L{i}" for i in range(5, 0, -1)]
    return ["sacrum", "vertebrae_S1", *lumbar, *thoracic, *cervical]


def _paired(*names: str) -> list[str]:
    return [f"{name}_{side}" for name in names for side in ("left", "right")]


_TOTAL_NAMES: list[str] = [
    "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
    "adrenal_gland_right", "adrenal_gland_left",
    "lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right",
    "lung_middle_lobe_right", "lung_lower_lobe_right",
    "esophagus", "trachea", "thyroid_gland", "small_bowel", "duodenum", "colon",
    "urinary_bladder", "prostate", "kidney_cyst_left", "kidney_cyst_right",
    *_vertebrae(),
    "heart", "aorta", "pulmonary_vein", "brachiocephalic_trunk",
    "subclavian_artery_right", "subclavian_artery_left",
    "common_carotid_artery_right", "common_carotid_artery_left",
    "brachiocephalic_vein_left", "brachiocephalic_vein_right", "atrial_appendage_left",
    "superior_vena_cava", "inferior_vena_cava", "portal_vein_and_splenic_vein",
    *_paired("iliac_artery", "iliac_vena", "humerus", "scapula", "clavicula", "femur", "hip"),
    "spinal_cord",
    *_paired("gluteus_maximus", "gluteus_medius", "gluteus_minimus", "autochthon", "iliopsoas"),
    "brain", "skull",
    *[f"rib_left_{i}" for i in range(1, 13)],
    *[f"rib_right_{i}" for i in range(1, 13)],
    "sternum", "costal_cartilages",
]  # fmt: skip

_TOTAL_MR_NAMES: list[str] = [
    "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
    "adrenal_gland_right", "adrenal_gland_left", "lung_left", "lung_right", "esophagus",
    "small_bowel", "duodenum", "colon", "urinary_bladder", "prostate", "sacrum", "vertebrae",
    "intervertebral_discs", "spinal_cord", "heart", "aorta", "inferior_vena_cava",
    "portal_vein_and_splenic_vein",
    *_paired("iliac_artery", "iliac_vena", "humerus", "scapula", "clavicula", "femur", "hip",
             "gluteus_maximus", "gluteus_medius", "gluteus_minimus", "autochthon", "iliopsoas"),
    "brain",
]  # fmt: skip

#: TotalSegmentator ``total`` task (CT, v2): label id -> structure name.
TOTALSEG_TOTAL: dict[int, str] = dict(enumerate(_TOTAL_NAMES, start=1))
#: TotalSegmentator ``total_mr`` task (MR, v2): label id -> structure name.
TOTALSEG_TOTAL_MR: dict[int, str] = dict(enumerate(_TOTAL_MR_NAMES, start=1))

#: Label maps a manifest can name instead of spelling them out.
BUILTIN_LABEL_MAPS: dict[str, dict[int, str]] = {
    "totalsegmentator:total": TOTALSEG_TOTAL,
    "totalsegmentator:total_mr": TOTALSEG_TOTAL_MR,
}

_HEART_PARTS = (
    "heart_myocardium", "heart_atrium_left", "heart_atrium_right",
    "heart_ventricle_left", "heart_ventricle_right",
)  # fmt: skip
_LUNG_PARTS = (
    "lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right",
    "lung_middle_lobe_right", "lung_lower_lobe_right", "lung_left", "lung_right",
)  # fmt: skip

#: Canonical organ -> normalised dataset names that make it (all of them merge).
SYNONYMS: dict[str, frozenset[str]] = {
    "liver": frozenset({"liver"}),
    "kidney_left": frozenset({"kidney_left", "left_kidney", "kidney_l", "l_kidney", "lkidney"}),
    "kidney_right": frozenset(
        {"kidney_right", "right_kidney", "kidney_r", "r_kidney", "rkidney"}
    ),
    "spleen": frozenset({"spleen"}),
    "heart": frozenset({"heart", *_HEART_PARTS}),
    "aorta": frozenset({"aorta"}),
    "lung": frozenset({"lung", "lungs", *_LUNG_PARTS}),
    "brain": frozenset({"brain"}),
    "colon": frozenset({"colon", "large_bowel", "large_intestine"}),
    "urinary_bladder": frozenset({"urinary_bladder", "bladder"}),
    "pancreas": frozenset({"pancreas"}),
    "esophagus": frozenset({"esophagus", "oesophagus"}),
    "stomach": frozenset({"stomach"}),
}


def normalise_name(name: str) -> str:
    """``"Left Kidney"`` -> ``left_kidney``: lower case, other characters as one ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def parse_label_names(raw: Mapping[str, object], where: str) -> dict[int, str]:
    """Read a label map given either way round: ``{"1": "liver"}`` (id -> name, as
    TotalSegmentator) or ``{"liver": 1}`` / ``{"kidney": [1, 2]}`` (name -> ids, as nnU-Net and
    the Decathlon); a list of ids makes one value per id."""
    names: dict[int, str] = {}
    for key, value in raw.items():
        pairs = _label_pairs(str(key), value, where)
        for label_id, name in pairs:
            if label_id == 0:
                continue  # background
            if label_id < 0:
                raise ValueError(f"{where}: label ids must be >= 0, got {label_id} for {name!r}")
            names[label_id] = name
    return names


def _label_pairs(key: str, value: object, where: str) -> list[tuple[int, str]]:
    if key.strip().isdigit():
        if not isinstance(value, str):
            raise ValueError(f"{where}: label {key} must map to a name (str), got {value!r}")
        return [(int(key), value)]
    ids = value if isinstance(value, (list, tuple)) else [value]
    try:
        return [(int(str(i)), key) for i in ids]
    except ValueError as error:
        raise ValueError(
            f"{where}: label {key!r} must map to an integer id or a list of ids, got {value!r}"
        ) from error


def canonical_label_map(
    names: Mapping[int, str],
    overrides: Mapping[str, Sequence[str]] | None = None,
    organs: Sequence[str] | None = None,
    where: str = "label map",
) -> dict[str, tuple[int, ...]]:
    """Target -> the label ids that make it; targets the map lacks are left out. ``organs``:
    the targets to look for (every known target: :func:`umdbench.targets.known_targets`)."""
    if organs is None:
        from umdbench.targets import known_targets

        organs = known_targets()
    overrides = dict(overrides or {})
    for organ in overrides:
        check_organ(organ, tuple(organs))
    by_name: dict[str, list[int]] = {}
    for label_id, name in names.items():
        by_name.setdefault(normalise_name(name), []).append(int(label_id))
    result: dict[str, tuple[int, ...]] = {}
    owner: dict[int, str] = {}
    for organ in organs:
        wanted = overrides.get(organ)
        keys = {normalise_name(n) for n in wanted} if wanted is not None else target_label_names(organ)
        ids = sorted({i for key in keys for i in by_name.get(key, [])})
        for label_id in ids:
            if label_id in owner:
                raise ValueError(
                    f"{where}: label {label_id} ({names[label_id]!r}) would make both"
                    f" {owner[label_id]!r} and {organ!r}; fix the organ overrides"
                )
            owner[label_id] = organ
        if ids:
            result[organ] = tuple(ids)
    return result


def target_label_names(organ: str) -> frozenset[str]:
    """The normalised dataset names of a target (``tumor``: gtv, lesion, ...; a user's own)."""
    if organ in SYNONYMS:
        return SYNONYMS[organ]
    from umdbench.targets import get_target, known_targets

    if organ not in known_targets():
        return frozenset({normalise_name(organ)})
    return frozenset(normalise_name(n) for n in get_target(organ).label_names)
