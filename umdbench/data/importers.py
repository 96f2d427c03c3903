"""Importers: the layouts people have, turned into manifest entries (then a cohort).

- ``nnunet``: nnU-Net v2 raw (``dataset.json`` with ``channel_names``/``labels``/``file_ending``;
  ``imagesTr/<case>_<XXXX><ending>``, ``labelsTr/<case><ending>``); each channel is an arm by
  its name (CT -> CT, PET -> PET_CT or PET_MRI, T1/T2/MR... -> MRI).
- ``msd``: Medical Segmentation Decathlon (``dataset.json`` with ``modality``, ``labels`` and a
  ``training`` list of ``{"image", "label"}``); single-modality tasks.
- ``totalseg``: TotalSegmentator folders, ``<subject>/ct.nii.gz`` (or ``mri.nii.gz``) and one
  mask per structure in ``<subject>/segmentations/<name>.nii.gz``; the masks of canonical organs
  are merged once into one label file under the cache folder.
- ``autopet``: ``<patient>/<study>/CTres.nii.gz, SUV.nii.gz, SEG.nii.gz`` (CT arm and PET_CT
  arm); autoPET's own SEG holds lesions, so an organ label map (``labels.json``) is required.
- ``umd``: the convention we expect for the UMD data (docs/datasets.md).
- ``manifest``: a folder holding ``manifest.csv``/``manifest.json`` (a flat folder with a CSV).

Every importer also reads an optional ``umd_organs.json`` at the dataset root (organ ->
dataset names) to override the synonyms, and refuses an image or label file that resolves
(symlinks followed) outside the dataset root unless called with ``allow_outside_root=True``
(:mod:`umdbench.data.confine`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from umdbench.cohort import Cohort
from umdbench.data.confine import check_entries_inside, check_inside
from umdbench.data.geometry import read_nifti, save_nifti_atomic
from umdbench.data.ibsi_sts import import_ibsi_sts, looks_like_ibsi_sts
from umdbench.data.manifest import (
    LabelMap,
    ManifestEntry,
    cohort_from_entries,
    read_manifest,
)
from umdbench.data.organ_maps import (
    normalise_name,
    parse_label_names,
    target_label_names,
)

__all__ = [
    "IMPORTERS",
    "arm_of_channel",
    "detect_importer",
    "import_autopet",
    "import_manifest",
    "import_msd",
    "import_nnunet",
    "import_totalseg",
    "import_umd",
]


class Importer(Protocol):
    """``(root, cache_dir, allow_outside_root=False) -> Cohort``; derived files go to
    ``cache_dir/derived``."""

    def __call__(
        self, root: Path, cache_dir: Path, *, allow_outside_root: bool = False
    ) -> Cohort: ...


_MR_NAMES = {"mr", "mri", "t1", "t1w", "t2", "t2w", "flair", "dixon", "adc", "dwi", "water"}
MANIFEST_NAMES = ("manifest.csv", "manifest.json", "umd_manifest.csv", "umd_manifest.json")


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); fix or regenerate it") from error


def _overrides(root: Path) -> dict[str, list[str]]:
    path = root / "umd_organs.json"
    return dict(_read_json(path, "organ overrides")) if path.is_file() else {}


def _cohort(
    root: Path,
    importer: str,
    entries: list[ManifestEntry],
    confine: Sequence[Path] | None,
    **extra: Any,
) -> Cohort:
    """The cohort of an importer's entries, each checked to lie under ``confine`` (None: not
    checked) and told where it came from, for messages."""
    entries = [_with_origin(e, f"{root} ({importer}) scan {e.subject}/{e.arm}") for e in entries]
    if confine is not None:
        check_entries_inside(entries, confine)
    provenance = {"source": str(root), "importer": importer, **extra}
    return cohort_from_entries(root.name, entries, root, provenance, overrides=_overrides(root))


def _with_origin(entry: ManifestEntry, origin: str) -> ManifestEntry:
    return entry if entry.origin else dataclasses.replace(entry, origin=origin)


def _roots(root: Path, cache_dir: Path, allow_outside_root: bool) -> tuple[Path, ...] | None:
    """Where an importer's files may lie: the dataset root and the cache's derived files."""
    return None if allow_outside_root else (root, Path(cache_dir) / "derived")


def arm_of_channel(name: str, channel_names: Sequence[str]) -> str:
    """The arm a channel name means; PET goes with the session's other channel (CT or MR)."""
    norm = normalise_name(name)
    others = {normalise_name(n) for n in channel_names} - {norm}
    if norm in ("ct", "cect", "ncct", "ctres"):
        return "CT"
    if norm.startswith("pet") or norm in ("suv", "pt"):
        has_mr = any(o in _MR_NAMES or o.startswith(("t1", "t2")) for o in others)
        return "PET_MRI" if has_mr and "ct" not in others else "PET_CT"
    if norm in _MR_NAMES or norm.startswith(("t1", "t2", "mr")):
        return "MRI"
    raise ValueError(
        f"channel name {name!r} does not tell the arm; name channels CT, PET, MRI/T1/T2 in"
        " dataset.json, or write a manifest"
    )


def import_nnunet(root: Path, cache_dir: Path, *, allow_outside_root: bool = False) -> Cohort:
    """nnU-Net v2 raw dataset folder -> cohort (one subject per case)."""
    meta = _read_json(root / "dataset.json", "nnU-Net dataset.json")
    for key in ("channel_names", "labels"):
        if key not in meta:
            raise ValueError(f"{root}/dataset.json lacks {key!r}: is it an nnU-Net v2 dataset?")
    ending = meta.get("file_ending", ".nii.gz")
    if ending not in (".nii.gz", ".nii"):
        raise ValueError(f"file_ending must be .nii.gz or .nii, got {ending!r} in {root}")
    label_map = LabelMap(parse_label_names(meta["labels"], str(root / "dataset.json")), {})
    channels = {int(k): str(v) for k, v in meta["channel_names"].items()}
    arms: dict[str, int] = {}
    for index, channel in sorted(channels.items()):
        arms.setdefault(arm_of_channel(channel, list(channels.values())), index)
    ignored = sorted(set(channels) - set(arms.values()))
    cases = sorted(p.name[: -len(ending)] for p in (root / "labelsTr").glob(f"*{ending}"))
    if not cases:
        raise ValueError(f"no label files *{ending} in {root / 'labelsTr'}; nothing to audit")
    entries = [
        ManifestEntry(
            case, _session(arm), arm, root / "imagesTr" / f"{case}_{index:04d}{ending}",
            root / "labelsTr" / f"{case}{ending}", label_map,
        )
        for case in cases
        for arm, index in arms.items()
    ]
    return _cohort(
        root, "nnunet", entries, _roots(root, cache_dir, allow_outside_root),
        ignored_channels=[channels[i] for i in ignored],
    )  # fmt: skip


def _session(arm: str) -> str:
    return "petmri" if arm in ("MRI", "PET_MRI") else "petct"


def import_msd(root: Path, cache_dir: Path, *, allow_outside_root: bool = False) -> Cohort:
    """Medical Segmentation Decathlon task folder -> cohort (single-modality tasks)."""
    meta = _read_json(root / "dataset.json", "Decathlon dataset.json")
    modality = meta.get("modality", {})
    if not isinstance(meta.get("training"), list) or not modality:
        raise ValueError(f"{root}/dataset.json lacks `training` or `modality`: not Decathlon")
    if len(modality) != 1:
        raise ValueError(
            f"{root}: multi-modality Decathlon tasks ({modality}) store 4D images; convert the task"
            " with nnUNetv2_convert_MSD_dataset and use nnunet:<folder>"
        )
    name = str(next(iter(modality.values())))
    arm = arm_of_channel(name, [name])
    label_map = LabelMap(parse_label_names(meta["labels"], str(root / "dataset.json")), {})
    entries = []
    for index, item in enumerate(meta["training"]):
        where = f"{root / 'dataset.json'} training[{index}]"
        image, label = _msd_pair(item, root, where)
        if image.name.startswith("._"):
            continue  # macOS resource forks shipped in some Decathlon tars
        case = image.name.removesuffix(".gz").removesuffix(".nii")
        entries.append(
            ManifestEntry(case, _session(arm), arm, image, label, label_map, origin=where)
        )
    return _cohort(root, "msd", entries, _roots(root, cache_dir, allow_outside_root))


def _msd_pair(item: Any, root: Path, where: str) -> tuple[Path, Path]:
    paths = [item.get(k) if isinstance(item, dict) else None for k in ("image", "label")]
    if not all(isinstance(p, str) for p in paths):
        raise ValueError(f'{where} must be {{"image": path, "label": path}}, got {item!r}')
    return root / item["image"], root / item["label"]


def _canonical_mask_names() -> set[str]:
    from umdbench.targets import known_targets

    return {name for target in known_targets() for name in target_label_names(target)}


def import_totalseg(root: Path, cache_dir: Path, *, allow_outside_root: bool = False) -> Cohort:
    """TotalSegmentator-style subject folders -> cohort; masks merged into one label file."""
    subjects = sorted(p for p in root.iterdir() if (p / "segmentations").is_dir())
    if not subjects:
        raise ValueError(f"no <subject>/segmentations/ in {root}: not a TotalSegmentator layout")
    overrides = _overrides(root)
    wanted = _canonical_mask_names() | {normalise_name(n) for v in overrides.values() for n in v}
    roots = _roots(root, cache_dir, allow_outside_root)
    entries = [_totalseg_entry(folder, cache_dir, wanted, roots) for folder in subjects]
    return _cohort(root, "totalseg", entries, roots)


def _totalseg_entry(
    folder: Path, cache_dir: Path, wanted: set[str], roots: Sequence[Path] | None
) -> ManifestEntry:
    image, arm = folder / "ct.nii.gz", "CT"
    if not image.is_file() and (folder / "mri.nii.gz").is_file():
        image, arm = folder / "mri.nii.gz", "MRI"
    masks = sorted(
        p for p in (folder / "segmentations").glob("*.nii.gz")
        if normalise_name(p.name.removesuffix(".nii.gz")) in wanted
    )  # fmt: skip
    if roots is not None:  # checked before the masks are read and merged
        for mask in masks:
            check_inside(mask, roots, f"{folder.parent} (totalseg) scan {folder.name}", "mask")
    names = {i: p.name.removesuffix(".nii.gz") for i, p in enumerate(masks, start=1)}
    label_map = LabelMap(names, {})
    try:
        labels = _merge_masks(masks, cache_dir / "derived" / "totalseg")
    except (OSError, ValueError, EOFError) as error:
        labels = folder / "segmentations"
        return ManifestEntry(folder.name, _session(arm), arm, image, labels, label_map,
                             import_error=f"cannot merge its masks: {error}")  # fmt: skip
    return ManifestEntry(folder.name, _session(arm), arm, image, labels, label_map)


def _merge_masks(masks: list[Path], out_dir: Path) -> Path:
    """One label file (value i = i-th mask), written once per set of mask files."""
    if not masks:
        raise ValueError("no mask of a canonical organ in segmentations/")
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in masks]
    key = hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:24]
    out = out_dir / f"{key}.nii.gz"
    if out.is_file():
        return out
    first, affine = read_nifti(masks[0])
    merged = np.zeros(first.shape, dtype=np.uint8)
    for value, path in enumerate(masks, start=1):
        mask, mask_affine = read_nifti(path)
        if mask.shape != merged.shape or not np.allclose(mask_affine, affine, atol=1e-3):
            raise ValueError(f"mask {path} is on another grid than {masks[0]}")
        merged[mask > 0] = value
    save_nifti_atomic(merged, affine, out)
    return out


def _organ_label_file(root: Path, importer: str, hint: str) -> LabelMap:
    for name in ("labels.json", "umd_labels.json"):
        if (root / name).is_file():
            raw = _read_json(root / name, "label map")
            labels = raw.get("labels", raw) if isinstance(raw, dict) else raw
            organs = raw.get("organs", {}) if isinstance(raw, dict) and "labels" in raw else {}
            return LabelMap(parse_label_names(labels, str(root / name)), organs)
    raise FileNotFoundError(
        f"{root} has no labels.json: {hint} Write labels.json ({{\"1\": \"liver\", ...}} or"
        " \"totalsegmentator:total\" ids) at the dataset root, or use a manifest"
    )


def import_autopet(
    root: Path,
    cache_dir: Path,
    ct_file: str = "CTres.nii.gz",
    *,
    allow_outside_root: bool = False,
) -> Cohort:
    """autoPET-style ``<patient>/<study>/`` folders -> CT and PET_CT arms."""
    label_map = _organ_label_file(
        root, "autopet", "autoPET's own SEG.nii.gz holds lesions, not organs: {\"1\": \"tumor\"}"
        " audits them as the tumor target; an organ audit needs organ labels on the PET grid"
        " (e.g. TotalSegmentator run on CTres) and their map."
    )  # fmt: skip
    studies = sorted(p.parent for p in root.glob("*/*/SEG.nii.gz"))
    if not studies:
        raise ValueError(f"no <patient>/<study>/SEG.nii.gz under {root}: not an autoPET layout")
    per_patient: dict[str, int] = {}
    for study in studies:
        per_patient[study.parent.name] = per_patient.get(study.parent.name, 0) + 1
    entries = []
    for study in studies:
        patient = study.parent.name
        subject = patient if per_patient[patient] == 1 else f"{patient}_{study.name}"
        pet = study / "SUV.nii.gz" if (study / "SUV.nii.gz").is_file() else study / "PET.nii.gz"
        seg = study / "SEG.nii.gz"
        entries.append(ManifestEntry(subject, study.name, "CT", study / ct_file, seg, label_map,
                                     labels_grid_may_differ=ct_file != "CTres.nii.gz"))
        entries.append(ManifestEntry(subject, study.name, "PET_CT", pet, seg, label_map))
    return _cohort(root, "autopet", entries, _roots(root, cache_dir, allow_outside_root))


#: UMD convention: <subject>/<session>/<file> with these sessions and files.
UMD_SESSIONS: dict[str, dict[str, str]] = {
    "petct": {"CT": "CT.nii.gz", "PET_CT": "PET.nii.gz"},
    "petmri": {"MRI": "MRI.nii.gz", "PET_MRI": "PET.nii.gz"},
}
UMD_ANATOMICAL = {"petct": "CT", "petmri": "MRI"}


def import_umd(root: Path, cache_dir: Path, *, allow_outside_root: bool = False) -> Cohort:
    """The UMD convention (docs/datasets.md): per session, labels on the anatomical image's
    grid; the PET of that session uses them, resampled to its coarser grid."""
    label_map = _organ_label_file(root, "umd", "the UMD convention keeps the organ map there.")
    entries = []
    for subject in sorted(p for p in root.iterdir() if p.is_dir()):
        for session, files in UMD_SESSIONS.items():
            folder = subject / session
            if not folder.is_dir():
                continue
            labels = folder / "labels.nii.gz"
            for arm, name in files.items():
                may_differ = arm != UMD_ANATOMICAL[session]
                entries.append(ManifestEntry(subject.name, session, arm, folder / name, labels,
                                             label_map, labels_grid_may_differ=may_differ))
    if not entries:
        raise ValueError(f"no <subject>/petct or <subject>/petmri folders under {root}")
    return _cohort(root, "umd", entries, _roots(root, cache_dir, allow_outside_root))


def import_manifest(root: Path, cache_dir: Path, *, allow_outside_root: bool = False) -> Cohort:
    """A manifest file, or a folder holding one (``manifest.csv``/``.json``, or one ``*.csv``);
    its rows' files must lie under the manifest's folder unless ``allow_outside_root``."""
    path = root if root.is_file() else _find_manifest(root)
    entries, extra = read_manifest(path)
    if not allow_outside_root:
        check_entries_inside(entries, (path.parent,))
    provenance = {"source": str(path), "importer": "manifest"}
    name = str(extra.get("name") or path.parent.name)
    return cohort_from_entries(
        name, entries, path.parent, provenance, named_maps=extra.get("label_maps"),
        overrides=extra.get("organs"), comparisons=extra.get("comparisons"),
    )  # fmt: skip


def _find_manifest(root: Path) -> Path:
    for name in MANIFEST_NAMES:
        if (root / name).is_file():
            return root / name
    csvs = sorted(root.glob("*.csv"))
    if len(csvs) == 1:
        return csvs[0]
    raise ValueError(f"{root}: no manifest.csv/manifest.json (found {len(csvs)} CSV files)")


IMPORTERS: dict[str, Importer] = {
    "manifest": import_manifest,
    "nnunet": import_nnunet,
    "msd": import_msd,
    "totalseg": import_totalseg,
    "autopet": import_autopet,
    "umd": import_umd,
    "ibsi-sts": import_ibsi_sts,
}


def detect_importer(root: Path) -> str:
    """The importer whose layout ``root`` has; the error lists what was looked for."""
    if any((root / name).is_file() for name in MANIFEST_NAMES):
        return "manifest"
    if (root / "dataset.json").is_file():
        meta = _read_json(root / "dataset.json", "dataset.json")
        return "nnunet" if "channel_names" in meta else "msd" if "training" in meta else "?"
    children = [p for p in root.iterdir() if p.is_dir()]
    if any((p / "segmentations").is_dir() for p in children):
        return "totalseg"
    if next(root.glob("*/*/SEG.nii.gz"), None) is not None:
        return "autopet"
    if any((p / s).is_dir() for p in children for s in UMD_SESSIONS):
        return "umd"
    if looks_like_ibsi_sts(root):
        return "ibsi-sts"
    if len(list(root.glob("*.csv"))) == 1:
        return "manifest"
    raise ValueError(
        f"cannot tell the layout of {root}: expected manifest.csv, dataset.json (nnU-Net or"
        " Decathlon), <subject>/segmentations/, <patient>/<study>/SEG.nii.gz,"
        " <subject>/petct|petmri/ or <patient>/CT_image.nii.gz + MR_T1_image.nii.gz (ibsi-sts); name it as importer:path, e.g. nnunet:" + str(root)
    )


def import_dataset(
    root: Path, cache_dir: Path, importer: str | None = None, *, allow_outside_root: bool = False
) -> Cohort:
    """Open ``root`` with ``importer`` (detected when None); files outside the root are refused
    unless ``allow_outside_root``."""
    name = importer or detect_importer(root)
    if name not in IMPORTERS:
        raise ValueError(f"importer must be one of {', '.join(IMPORTERS)}, got {name!r}")
    return IMPORTERS[name](root, cache_dir, allow_outside_root=allow_outside_root)


