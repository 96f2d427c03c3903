"""Targets beyond the 13 organs: the built-in ``tumor`` lesion and a user's own targets file.

Nothing in the suite may assume the study's organs: a manifest labelling a target the suite has
never heard of, named in ``--umd-targets``, is audited end to end (cases, policy, prompts in
the model host process, results), and only by the models the rule allows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from umdbench.data.organ_maps import canonical_label_map
from umdbench.policy import load_policy
from umdbench.prompts import organ_parts, organ_text
from umdbench.targets import (
    BUILTIN_TARGETS,
    check_target,
    get_target,
    known_targets,
    load_targets_file,
    target_parts,
)
from umdbench.volume import Volume, save_volume

REPO = Path(__file__).resolve().parents[1]

TARGETS_TOML = """
[targets.breast]
kind = "organ"
text = ["breast", "mamma"]
labels = ["Breast", "mammary gland"]
parts = ["right", "left"]

[targets.metastasis]
kind = "lesion"
"""


@pytest.fixture
def targets_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "targets.toml"
    path.write_text(TARGETS_TOML)
    monkeypatch.setenv("UMD_TARGETS", str(path))
    return path


def test_tumor_is_a_builtin_lesion_with_its_text_and_label_names() -> None:
    tumour = BUILTIN_TARGETS["tumor"]
    assert tumour.kind == "lesion" and "tumor" in known_targets()
    assert organ_text("tumor") == ("tumor", ("tumour", "lesion", "mass", "sarcoma"))
    ids = {1: "GTV_Mass", 2: "liver", 3: "Tumour"}
    assert canonical_label_map(ids) == {"liver": (2,), "tumor": (1, 3)}
    assert check_target("tumor") == "tumor"
    with pytest.raises(ValueError, match="did you mean tumor"):
        check_target("tumr")


def test_a_targets_file_adds_names_text_labels_and_parts(targets_file: Path) -> None:
    assert {"breast", "metastasis"} <= set(known_targets())
    assert get_target("metastasis").kind == "lesion"
    assert organ_text("breast") == ("breast", ("mamma",))
    assert organ_text("metastasis") == ("metastasis", ())
    assert canonical_label_map({4: "Mammary Gland", 5: "metastasis"}) == {
        "breast": (4,), "metastasis": (5,),
    }  # fmt: skip
    assert target_parts("breast") == ("right", "left")
    # two blobs: the part at larger world x is the subject's right (RAS+)
    mask = np.zeros((20, 6, 6), dtype=bool)
    mask[2:5, 2:4, 2:4] = mask[14:18, 2:4, 2:4] = True
    parts = organ_parts(mask, "breast", np.eye(4))
    assert [name for name, _ in parts] == ["right", "left"]
    assert parts[0][1][15, 3, 3] and parts[1][1][3, 3, 3]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[targets.Bad-Name]\n", "lower case letters"),
        ('[targets.x]\nkind = "organelle"\n', "kind must be one of"),
        ('[targets.x]\nsynonyms = ["a"]\n', "unknown key"),
        ('[targets.x]\ntext = "a"\n', "text must be a list"),
        ("[rule]\n", "expected \\[targets.NAME\\]"),
        ("[targets.x\n", "targets file"),
        ('[targets.liver]\ntext = ["hepar"]\n', "is a built-in target"),
    ],
)
def test_a_bad_targets_file_names_the_file_and_the_table(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        load_targets_file(path)
    assert str(path) in str(error.value)


def test_the_policy_knows_the_tumour_bar_and_a_users_target(targets_file: Path) -> None:
    policy = load_policy(None)
    tumour = policy.threshold("classical-otsu", "PET_CT", "tumor")
    assert tumour.min == 0.75 and "110338" in tumour.source
    policy.check_names(["classical-otsu"], known_targets(), ["dice"])
    assert policy.threshold("x", "CT", "breast").min == 0.80  # the default rule


def _two_breasts_dataset(root: Path) -> Path:
    """Two subjects, CT only: two separate blobs labelled 1 ("breast"), brighter than around."""
    root.mkdir(parents=True)
    rows = ["subject,session,arm,image,labels,label_map"]
    for index in range(2):
        labels = np.zeros((40, 24, 24), dtype=np.uint8)
        labels[4 + index : 14, 6:16, 6:16] = 1
        labels[24:34 - index, 6:16, 6:16] = 1
        image = np.where(labels > 0, 60.0, -80.0).astype(np.float32)
        image += np.random.default_rng(index).normal(0, 5, image.shape).astype(np.float32)
        affine = np.diag([1.5, 1.5, 2.0, 1.0])
        save_volume(Volume(image, affine), root / f"s{index}_ct.nii.gz")
        save_volume(Volume(labels, affine), root / f"s{index}_labels.nii.gz")
        rows.append(f"s{index},petct,CT,s{index}_ct.nii.gz,s{index}_labels.nii.gz,breast=1")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


def test_a_users_target_is_audited_end_to_end(tmp_path: Path) -> None:
    """``--umd-targets`` with a manifest labelling ``breast`` (two parts): the classical floor
    (promptable) runs it, prompting each part on its own in its host process; the CT UNet
    (automatic, its own organs) gets no case; a policy rule naming it is accepted and used."""
    targets = tmp_path / "targets.toml"
    targets.write_text(TARGETS_TOML)
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\norgan = "breast"\nmin = 0.5\nsource = "test bar"\n')
    manifest = _two_breasts_dataset(tmp_path / "data")
    results = tmp_path / "out" / "results.json"
    command = [
        sys.executable, "-m", "pytest", str(REPO / "benchmarks" / "test_segmentation.py"),
        "-n", "0", "-q", "-p", "no:cacheprovider", "--umd-dataset", str(manifest),
        "--umd-targets", str(targets), "--umd-policy", str(policy),
        "--umd-models", "classical-otsu,unet-ct", "--umd-organs", "breast",
        "--umd-results", str(results), "--umd-no-report",
    ]  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if k != "UMD_TARGETS"}
    process = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=600, env=environment
    )
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    document = json.loads(results.read_text())
    assert [c["case_id"] for c in document["cases"]] == ["classical-otsu-CT-breast-box"]
    case = document["cases"][0]
    assert case["outcome"] == "passed" and (case["threshold"], case["rule"]) == (0.5, "test bar")
    assert case["isolation"] == "child process"  # the parts were found in the host process
    for record in document["records"]:
        parts = [part["part"] for part in record["prompt"]["parts"]]
        assert parts == ["right", "left"] and record["dice"] > 0.5


def test_a_bad_targets_file_given_by_the_environment_alone_is_one_usage_error(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "targets.toml"
    bad.write_text('[targets.x]\nkind = "organelle"\n')
    command = [
        sys.executable, "-m", "pytest", str(REPO / "benchmarks" / "test_segmentation.py"),
        "-q", "-p", "no:cacheprovider", "--collect-only",
    ]  # fmt: skip
    environment = {**os.environ, "UMD_TARGETS": str(bad)}
    process = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=300, env=environment
    )
    assert process.returncode == 4
    assert f"ERROR: --umd-targets: targets file {bad} [targets.x]: " in process.stderr
    assert "kind must be one of" in process.stderr


def test_user_targets_are_part_of_the_resume_fingerprint(targets_file: Path) -> None:
    from umdbench.targets import user_target_definitions

    definitions = user_target_definitions()
    assert set(definitions) == {"breast", "metastasis"}
    assert definitions["breast"]["parts"] == ["right", "left"]


def test_an_unknown_target_in_the_options_is_one_usage_error(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "pytest", str(REPO / "benchmarks" / "test_segmentation.py"),
        "-q", "-p", "no:cacheprovider", "--collect-only", "--umd-organs", "tumour",
    ]  # fmt: skip
    process = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert process.returncode == 4
    assert "--umd-organs: target must be one of the known targets" in process.stderr
    assert "did you mean tumor" in process.stderr


def test_a_class_id_protocol_skips_a_target_the_model_has_no_class_for() -> None:
    """VISTA3D-like: class ids for organs only; its clicks still run on the tumour."""
    from umdbench.protocols import protocol_unsupported

    class ClassIds:
        label_ids: ClassVar[dict[str, int]] = {"liver": 1}

    assert protocol_unsupported(ClassIds, "liver", "classid") is None
    assert protocol_unsupported(ClassIds, "tumor", "1click") is None
    assert protocol_unsupported(ClassIds, "tumor", None) is None
    for protocol in ("classid", "classid-1click", "patchpoints"):
        reason = protocol_unsupported(ClassIds, "tumor", protocol)
        assert reason is not None and "label_ids have none for 'tumor'" in reason


def test_an_nnunet_folder_trained_on_tumours_declares_the_tumor_target() -> None:
    from umdbench.models.nnunet import label_ids_from_dataset_json

    assert label_ids_from_dataset_json({"labels": {"background": 0, "GTV": 1}}) == {"tumor": 1}
    both = {"labels": {"background": 0, "Lesion": 2, "liver": 1, "lung_upper_lobe_left": 3}}
    assert label_ids_from_dataset_json(both) == {"liver": 1, "tumor": 2}
    with pytest.raises(ValueError, match="both name the target 'tumor'"):
        label_ids_from_dataset_json({"labels": {"tumor": 1, "lesion": 2}})
