"""The built-in UNets' training script is deterministic, and the shipped weights load."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _train_module():  # scripts/ is not a package: load the file as the docs run it
    spec = importlib.util.spec_from_file_location("train_unet", REPO / "scripts" / "train_unet.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_training_twice_gives_the_same_weights(tmp_path: Path) -> None:
    train = _train_module()
    digests = []
    for run in ("a", "b"):
        args = train.parse_args(
            [
                "unet-ct",
                "--subjects",
                "1",
                "--seed",
                "1000",
                "--iterations",
                "3",
                "--out",
                str(tmp_path / run),
            ]
        )
        record = train.train(args)
        assert record["training_cohort"]["seed"] == 1000
        digests.append(
            hashlib.sha256((tmp_path / run / "unet-ct.safetensors").read_bytes()).hexdigest()
        )
    assert digests[0] == digests[1]


def test_training_and_evaluation_subjects_are_disjoint() -> None:
    import json

    from umdbench.umd_fixtures import subject_ids

    for name in ("unet-ct", "unet-multimodal"):
        record = json.loads((REPO / "models" / "weights" / f"{name}.json").read_text())
        trained = set(record["training_cohort"]["subjects"])
        assert trained and not trained & set(subject_ids(64, seed=0))  # the default audit seed


@pytest.mark.parametrize("name", ["unet-ct", "unet-multimodal"])
def test_shipped_weights_load_safely_and_match_their_record(name: str) -> None:
    import json

    from umdbench.models.unet import CohortUNet
    from umdbench.registry import ModelRegistry

    model = ModelRegistry(use_entry_points=False).get(name)()
    assert isinstance(model, CohortUNet)
    model.check_available("cpu")
    model.load("cpu")
    record = json.loads((REPO / "models" / "weights" / f"{name}.json").read_text())
    assert model.weights_id() == record["weights_sha256_16"]
    assert model.weights_path.stat().st_size < 5 * 1024 * 1024
