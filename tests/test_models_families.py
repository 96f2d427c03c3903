"""The adapters' shared wording for a checkpoint that ``torch.load(weights_only=True)`` refuses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from umdbench.models._families import load_state_dict, unsafe_checkpoint_message
from umdbench.models.base import ModelUnavailable


class TrainingArgs:
    """A custom object a training script might pickle beside the weights."""

    def __init__(self) -> None:
        self.lr = 0.01


def _checkpoint_with(tmp_path: Path, extra: object) -> Path:
    path = tmp_path / "ckpt.pth"
    torch.save({"model_state_dict": {"w": torch.zeros(2)}, "args": extra}, path)
    return path


def _assert_no_unsafe_advice(message: str) -> None:
    assert "weights_only=False" not in message and "`weights_only` set to `False`" not in message
    assert "trusted source" not in message and "file an issue" not in message


def test_refused_custom_object_names_the_file_and_never_suggests_unsafe_loading(
    tmp_path: Path,
) -> None:
    path = _checkpoint_with(tmp_path, TrainingArgs())
    with pytest.raises(ValueError) as info:
        load_state_dict(path, "model_state_dict")
    message = str(info.value)
    assert str(path) in message and "holds objects other than tensors" in message
    assert f"GLOBAL {__name__}.TrainingArgs was not an allowed global" in message  # torch's part
    assert "model.state_dict()" in message
    assert f"torch.serialization.add_safe_globals([{__name__}.TrainingArgs])" in message
    _assert_no_unsafe_advice(message)


def test_blocked_module_gets_no_allow_list_advice(tmp_path: Path) -> None:
    """A callable of a blocked module (os) cannot be allow-listed: only the re-save is offered."""
    path = _checkpoint_with(tmp_path, os.getcwd)
    with pytest.raises(ValueError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert str(path) in message and "getcwd" in message and "add_safe_globals" not in message
    _assert_no_unsafe_advice(message)


def test_message_also_strips_the_forced_weights_only_wording(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Under TORCH_FORCE_WEIGHTS_ONLY_LOAD (a package's own torch.load) torch words it otherwise."""
    path = _checkpoint_with(tmp_path, TrainingArgs())
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(Exception) as info:
        torch.load(path, weights_only=False)
    assert "`weights_only` set to `False`" in str(info.value)  # torch's own advice, stripped:
    message = unsafe_checkpoint_message(path, info.value)
    assert str(path) in message and "TrainingArgs" in message
    _assert_no_unsafe_advice(message)


def test_nnunet_checkpoint_refusal_uses_the_same_wording(tmp_path: Path) -> None:
    from umdbench.models.nnunet import load_checkpoint_safely

    path = _checkpoint_with(tmp_path, TrainingArgs())
    with pytest.raises(ModelUnavailable) as info:
        load_checkpoint_safely(path)
    message = str(info.value)
    assert str(path) in message and "network_weights" in message
    _assert_no_unsafe_advice(message)
