"""The built-in paired synthetic cohort: one anatomy per subject, seen by CT, PET/CT, MRI, PET/MRI.

Each subject is drawn from a seed (:mod:`umd_fixtures.anatomy`) and imaged in two sessions: the
PET/CT session (CT, RAS 3 x 3 x 3.5 mm; PET, RAS 4 mm) and, as on another day, the PET/MRI
session (patient shifted 10-15 mm along the table, rotated a few degrees, deformed by a few mm;
MRI, LPS 3.5 x 3.5 x 4 mm; PET, LPS 4 mm). Every arm's labels are evaluated exactly on its own
grid. Files are written once as NIfTI into a cache folder and read back through nibabel, as real
data would be; concurrent pytest-xdist workers share one copy (file lock, temp folder, rename).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from umdbench.cohort import Cohort, Scan
from umdbench.organs import CANONICAL_ORGANS, MODALITIES, check_modality
from umdbench.volume import Volume, save_volume

from .anatomy import Pose, SubjectAnatomy, sample_pose, sample_subject, tissue_on_grid
from .physics import TISSUE_IDS, render_ct, render_mri, render_pet

__all__ = [
    "FOV_MM",
    "GENERATOR_VERSION",
    "GRIDS",
    "LABEL_VALUES",
    "SESSIONS",
    "GridSpec",
    "build_synthetic_cohort",
    "default_cache_dir",
    "generate_subject",
    "grid_geometry",
    "subject_ids",
    "subject_seeds",
]

#: Bump when the generator's output changes, so stale caches are never reused.
GENERATOR_VERSION = "synthetic-v1"

#: Field of view (x, y, z) in mm, centred on the world origin: head top to pelvis.
FOV_MM: tuple[float, float, float] = (260.0, 200.0, 560.0)

#: Label value of each organ in every label file: 1..13 in canonical order.
LABEL_VALUES: dict[str, int] = {organ: index + 1 for index, organ in enumerate(CANONICAL_ORGANS)}

#: The session each arm belongs to.
SESSIONS: dict[str, str] = {"CT": "PETCT", "PET_CT": "PETCT", "MRI": "PETMRI", "PET_MRI": "PETMRI"}


@dataclass(frozen=True)
class GridSpec:
    """Voxel size (mm) and orientation (``RAS`` or ``LPS``) of one arm's grid."""

    spacing: tuple[float, float, float]
    orientation: str


GRIDS: dict[str, GridSpec] = {
    "CT": GridSpec((3.0, 3.0, 3.5), "RAS"),
    "PET_CT": GridSpec((4.0, 4.0, 4.0), "RAS"),
    "MRI": GridSpec((3.5, 3.5, 4.0), "LPS"),
    "PET_MRI": GridSpec((4.0, 4.0, 4.0), "LPS"),
}


def grid_geometry(spec: GridSpec) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and shape of a grid covering :data:`FOV_MM`, centred on the world origin."""
    shape = tuple(round(f / s) for f, s in zip(FOV_MM, spec.spacing, strict=True))
    signs = {"RAS": (1.0, 1.0, 1.0), "LPS": (-1.0, -1.0, 1.0)}[spec.orientation]
    affine = np.eye(4)
    for axis in range(3):
        step = signs[axis] * spec.spacing[axis]
        affine[axis, axis] = step
        affine[axis, 3] = -step * (shape[axis] - 1) / 2.0
    return affine, (shape[0], shape[1], shape[2])


def subject_seeds(n: int, seed: int) -> tuple[int, ...]:
    """Seeds of the subjects of cohort ``seed``: distinct across cohort seeds (SeedSequence)."""
    _check_count(n, seed)
    return tuple(
        int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0])
        for index in range(n)
    )


def subject_ids(n: int, seed: int) -> tuple[str, ...]:
    """Subject ids encode the cohort seed, so cohorts of two seeds never share a subject."""
    _check_count(n, seed)
    return tuple(f"s{seed}-{index:03d}" for index in range(n))


def _check_count(n: int, seed: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n_subjects must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _labels_from_tissue(tissue: np.ndarray) -> np.ndarray:
    lookup = np.zeros(256, dtype=np.uint8)
    for organ, value in LABEL_VALUES.items():
        lookup[TISSUE_IDS[organ]] = value
    return lookup[tissue]


def _arm_tissue(
    subject: SubjectAnatomy, poses: dict[str, Pose], modality: str
) -> tuple[Volume, np.ndarray]:
    affine, shape = grid_geometry(GRIDS[modality])
    tissue = tissue_on_grid(subject, poses[SESSIONS[modality]], affine, shape)
    return Volume(tissue, affine), _labels_from_tissue(tissue)


def generate_subject(subject_seed: int) -> dict[str, tuple[Volume, Volume]]:
    """All four arms of one subject: ``{modality: (image, labels)}``, labels on the image grid."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(subject_seed).spawn(7)]
    subject = sample_subject(streams[0])
    poses = {
        "PETCT": sample_pose(streams[1], subject.scale, moved=False),
        "PETMRI": sample_pose(streams[2], subject.scale, moved=True),
    }
    arms: dict[str, tuple[Volume, Volume]] = {}
    for anatomical, pet, render_rng, pet_rng in (
        ("CT", "PET_CT", streams[3], streams[5]),
        ("MRI", "PET_MRI", streams[4], streams[6]),
    ):
        tissue, labels = _arm_tissue(subject, poses, anatomical)
        if anatomical == "CT":
            image = render_ct(tissue.array, render_rng)
        else:
            image = render_mri(tissue.array, tissue.affine, render_rng)
        arms[anatomical] = (tissue.with_array(image), tissue.with_array(labels))
        pet_grid, pet_labels = _arm_tissue(subject, poses, pet)
        suv = render_pet(tissue, pet_grid.affine, pet_grid.shape, pet_rng)
        arms[pet] = (pet_grid.with_array(suv), pet_grid.with_array(pet_labels))
    return arms


def default_cache_dir() -> Path:
    """``$UMD_CACHE_DIR`` when set, else ``~/.cache/umdbench`` (read at call time)."""
    configured = os.environ.get("UMD_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "umdbench"


def _folder_name(n_subjects: int, seed: int) -> str:
    return f"{GENERATOR_VERSION}-seed{seed}-n{n_subjects}"


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock: one process generates, the others wait, then reuse."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_subject(folder: Path, subject: str, arms: dict[str, tuple[Volume, Volume]]) -> dict:
    entries: dict[str, dict[str, str]] = {}
    for modality, (image, labels) in arms.items():
        image_path, labels_path = (
            f"{subject}/{modality}.nii.gz",
            f"{subject}/{modality}_labels.nii.gz",
        )
        save_volume(image, folder / image_path)
        save_volume(labels, folder / labels_path)
        entries[modality] = {
            "image": image_path,
            "labels": labels_path,
            "session": SESSIONS[modality],
        }
    return entries


def _provenance(n_subjects: int, seed: int) -> dict[str, Any]:
    ids, seeds = subject_ids(n_subjects, seed), subject_seeds(n_subjects, seed)
    return {
        "generator": "umdbench.umd_fixtures.synthetic",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "n_subjects": n_subjects,
        "subject_seeds": dict(zip(ids, seeds, strict=True)),
        "fov_mm": list(FOV_MM),
        "grids": {
            m: {"spacing_mm": list(g.spacing), "orientation": g.orientation}
            for m, g in GRIDS.items()
        },
        "label_values": LABEL_VALUES,
        "tissue_ids": TISSUE_IDS,
    }


def _generate(folder: Path, n_subjects: int, seed: int) -> None:
    """Write every subject into ``folder``; ``cohort.json`` last marks it complete."""
    folder.mkdir(parents=True)
    provenance = _provenance(n_subjects, seed)
    scans = {
        subject: _write_subject(folder, subject, generate_subject(subject_seed))
        for subject, subject_seed in provenance["subject_seeds"].items()
    }
    text = json.dumps({**provenance, "scans": scans}, indent=1, sort_keys=True)
    (folder / "cohort.json").write_text(text + "\n")


def _ensure_generated(root: Path, n_subjects: int, seed: int) -> Path:
    folder = root / _folder_name(n_subjects, seed)
    if (folder / "cohort.json").is_file():
        return folder
    with _locked(root / f".{folder.name}.lock"):
        if (folder / "cohort.json").is_file():
            return folder  # another process made it while we waited
        if folder.exists():
            raise FileExistsError(
                f"cache folder {folder} exists but has no cohort.json (an interrupted copy?);"
                " delete it and run again"
            )
        for stale in root.glob(f".{folder.name}.tmp-*"):
            shutil.rmtree(stale)  # left by a process that died while holding the lock
        staging = root / f".{folder.name}.tmp-{os.getpid()}"
        _generate(staging, n_subjects, seed)
        os.rename(staging, folder)
    return folder


def _read_cohort(folder: Path, modalities: Sequence[str]) -> Cohort:
    index_path = folder / "cohort.json"
    try:
        index = json.loads(index_path.read_text())
        scans_index = index.pop("scans")
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(
            f"cannot read {index_path}: {error}; delete {folder} and run again"
        ) from error
    by_value = sorted(index["label_values"].items(), key=lambda item: item[1])
    label_map = {organ: (value,) for organ, value in by_value}  # canonical order, as json sorts
    scans = []
    for subject, arms in scans_index.items():
        for modality in modalities:
            entry = arms[modality]
            scan = Scan(
                subject,
                entry["session"],
                modality,
                folder / entry["image"],
                folder / entry["labels"],
                label_map,
            )
            for path in (scan.image, scan.labels):
                if not path.is_file():
                    raise FileNotFoundError(
                        f"synthetic cohort file missing: {path}; delete {folder} and run again"
                    )
            scans.append(scan)
    name = f"synthetic-seed{index['seed']}-n{index['n_subjects']}"
    return Cohort(name, tuple(scans), {**index, "cache_folder": str(folder)})


def build_synthetic_cohort(
    n_subjects: int = 8,
    seed: int = 0,
    cache_dir: Path | None = None,
    modalities: Sequence[str] = MODALITIES,
) -> Cohort:
    """The paired synthetic cohort, generated once into ``cache_dir`` and read back from NIfTI.

    All four arms are always generated (PET is rendered from its partner's tissue map);
    ``modalities`` only selects the scans returned.
    """
    _check_count(n_subjects, seed)
    if isinstance(modalities, str) or not modalities:
        raise ValueError(
            f"modalities must be a non-empty sequence of arm names, got {modalities!r}"
        )
    chosen = tuple(check_modality(m) for m in modalities)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = _ensure_generated(root, int(n_subjects), int(seed))
    return _read_cohort(folder, chosen)


def main(argv: Sequence[str] | None = None) -> int:
    """Generate (or find) a cohort and print where it is and how long it took."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--n-subjects", type=int, default=8, metavar="N")
    parser.add_argument("--seed", type=int, default=0, metavar="SEED")
    parser.add_argument("--cache-dir", type=Path, default=None, metavar="DIR")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    cohort = build_synthetic_cohort(args.n_subjects, args.seed, args.cache_dir)
    elapsed = time.perf_counter() - start
    where = cohort.provenance["cache_folder"]
    print(f"{cohort.name}: {len(cohort.scans)} scans in {where} ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
