"""Which models a run audits: those that can run here by default, the rest listed once.

A model without its weights used to put one skip per case into the default matrix (2,293 of
3,021 tests); it now leaves the matrix with one line naming the fix, and comes back, as skips,
when the user names it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from umdbench.controller import not_run_lines
from umdbench.report.findings import model_reason
from umdbench.results import merge_results
from umdbench.session import SYNTHETIC_LEFT_OUT, UmdOptions, UmdSession

VENDOR = '''
from umdbench.models.base import ModelUnavailable, SegmentationModel

class _Vendor(SegmentationModel):
    organs = ("liver",)
    label_ids = {"liver": 1}
    def load(self, device): pass
    def predict(self, image, modality, prompt): raise AssertionError("not run in these tests")

class Missing(_Vendor):
    name = "vendor-missing"
    def check_available(self, device):
        raise ModelUnavailable("vendor-missing needs its weights at /opt/vendor/w.pt: copy them")

class Broken(_Vendor):
    name = "vendor-broken"
    def check_available(self, device):
        raise RuntimeError("a bug in the probe, not a missing file")

class Fine(_Vendor):
    name = "vendor-fine"
'''
SPECS = ["vendor_probe:Missing", "vendor_probe:Broken", "vendor_probe:Fine"]


@pytest.fixture
def vendor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "vendor_probe.py").write_text(VENDOR)
    monkeypatch.syspath_prepend(str(tmp_path))


def _session(**options: object) -> UmdSession:
    return UmdSession(UmdOptions(device="cpu", extra_models=SPECS, **options), is_controller=True)


def test_by_default_a_model_that_cannot_run_is_listed_not_collected(vendor: None) -> None:
    session = _session()
    names, left_out = session.model_names(), session.models_not_run()
    assert "vendor-fine" in names and "classical-otsu" in names
    assert "vendor-missing" not in names
    assert left_out["vendor-missing"] == (
        "vendor-missing needs its weights at /opt/vendor/w.pt: copy them")
    # a probe that fails for another reason keeps the model: its load reports the traceback
    assert "vendor-broken" in names and "vendor-broken" not in left_out
    assert left_out["deepbet"] == SYNTHETIC_LEFT_OUT  # brain extraction: not on synthetic heads
    assert set(names).isdisjoint(left_out)


@pytest.mark.parametrize("models", [["vendor-*"], ["all"], ["vendor-missing", "vendor-fine"]])
def test_a_named_model_stays_in_the_matrix_to_skip_with_its_reason(
    vendor: None, models: list[str]
) -> None:
    session = _session(models=models)
    assert "vendor-missing" in session.model_names()
    assert "vendor-missing" not in session.models_not_run()


def test_all_means_every_registered_model(vendor: None) -> None:
    every = _session(models=["all"])
    default = _session()
    assert set(every.model_names()) == set(default.model_names()) | {
        m for m, why in default.models_not_run().items() if why != SYNTHETIC_LEFT_OUT}


def test_shards_split_before_availability_so_machines_agree(vendor: None) -> None:
    whole = _session()
    parts = [_session(shard=(k, 2)) for k in (1, 2)]
    assert sorted(parts[0].model_names() + parts[1].model_names()) == sorted(whole.model_names())
    unavailable = {m for m, why in whole.models_not_run().items() if why != SYNTHETIC_LEFT_OUT}
    per_shard = [{m for m, why in p.models_not_run().items() if why != SYNTHETIC_LEFT_OUT}
                 for p in parts]
    assert per_shard[0] | per_shard[1] == unavailable  # a model may span both subject shards


def test_merged_shards_list_a_model_no_shard_ran() -> None:
    def shard(cases: list[str], not_run: list[str]) -> dict:
        return {"run": {"models_not_run": [{"model": m, "reason": f"{m} why"} for m in not_run]},
                "models": {m: {} for m in cases}, "records": [],
                "cases": [{"case_id": f"{m}-CT-liver", "model": m} for m in cases]}

    merged = merge_results([shard(["a"], ["b", "c"]), shard(["c"], ["d"])])
    assert [item["model"] for item in merged["run"]["models_not_run"]] == ["b", "d"]


def test_the_terminal_names_each_model_once_with_its_fix() -> None:
    lines = not_run_lines([
        {"model": "vista3d", "reason": "vista3d needs its weights: pass --umd-weights DIR"},
        {"model": "voxtell", "reason": "no text embeddings at /w/voxtell.npz" + " x" * 200},
    ])
    assert lines[0].startswith("umdbench: 2 model(s) not run here")
    assert lines[1] == "  vista3d needs its weights: pass --umd-weights DIR"
    assert lines[2].startswith("  voxtell: no text embeddings at /w/voxtell.npz")
    assert len(lines[2]) <= 242 and lines[2].endswith("…")
    assert not_run_lines([]) == []
    assert model_reason("seg", "seg: gone") == "seg: gone" == model_reason("seg", "gone")
