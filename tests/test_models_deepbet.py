"""deepbet with its real weights on the SPM12 templates: a real MRI-vs-PET gap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from umdbench.metrics import dice
from umdbench.models.deepbet import DeepBet
from umdbench.volume import Volume, load_volume

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples" / "spm12"

pytest.importorskip("deepbet", reason="deepbet is not installed: pip install deepbet")


@pytest.fixture(scope="module")
def model() -> DeepBet:
    bet = DeepBet()
    bet.check_available("cpu")
    bet.load("cpu")
    return bet


def test_weights_are_hashed(model: DeepBet) -> None:
    assert len(model.weights_id()) == 16 and model.weights_id() != "none"
    assert DeepBet.metadata()["tier"] == "real-weights"


@pytest.mark.samples
@pytest.mark.slow
def test_t1_beats_pet_on_the_spm12_templates(model: DeepBet, brain: np.ndarray) -> None:
    scores = {}
    for arm, file in (("MRI", "T1.nii"), ("PET_MRI", "PET.nii")):
        image = load_volume(SAMPLES / file, dtype=np.float32)
        labels = model.predict(image, arm, None)
        assert labels.shape == image.shape and set(np.unique(labels)) <= {0, 1}
        scores[arm] = dice(labels == 1, brain)
    assert scores["MRI"] > 0.93  # measured 0.964
    assert 0.5 < scores["PET_MRI"] < scores["MRI"] - 0.03  # measured 0.902


@pytest.mark.samples
@pytest.mark.slow
def test_output_follows_a_flipped_grid(model: DeepBet, brain: np.ndarray) -> None:
    """The same T1 stored flipped (RAS instead of LAS) gives the same brain, flipped."""
    image = load_volume(SAMPLES / "T1.nii", dtype=np.float32)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = image.shape[0] - 1
    flipped = Volume(image.array[::-1].copy(), image.affine @ flip)
    assert flipped.orientation != image.orientation
    a = model.predict(image, "MRI", None)
    b = model.predict(flipped, "MRI", None)[::-1]
    assert dice(a == 1, b == 1) > 0.99
