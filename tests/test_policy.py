from __future__ import annotations

from pathlib import Path

import pytest

from umdbench.policy import load_policy


def test_default_policy_gives_every_canonical_organ_a_sourced_threshold() -> None:
    from umdbench.organs import CANONICAL_ORGANS

    policy = load_policy()
    for organ in CANONICAL_ORGANS:
        threshold = policy.threshold("any-model", "PET_CT", organ)
        assert 0.5 <= threshold.min <= 0.95
        assert threshold.source  # every bar says where it comes from


def test_most_specific_rule_wins_and_later_rules_break_ties(tmp_path: Path) -> None:
    extra = tmp_path / "policy.toml"
    extra.write_text(
        '[[rule]]\nmodel = "unet-*"\nmin = 0.5\nsource = "family"\n'
        '[[rule]]\nmodel = "unet-ct"\nmodality = "PET_CT"\nmin = 0.2\nsource = "pet"\n'
        '[[rule]]\norgan = "liver"\nmin = 0.6\nsource = "user liver"\n'
    )
    policy = load_policy(extra)
    assert policy.threshold("unet-ct", "PET_CT", "liver").source == "pet"  # 2 fields beat 1
    assert policy.threshold("unet-ct", "CT", "liver").source == "user liver"  # later tie wins
    assert policy.threshold("unet-ct", "CT", "spleen").min == 0.5  # the user's file beats defaults
    assert (
        policy.threshold("other", "CT", "aorta").min
        == load_policy().threshold("x", "CT", "aorta").min
    )


def test_rules_within_one_file_prefer_the_more_specific(tmp_path: Path) -> None:
    extra = tmp_path / "policy.toml"
    extra.write_text(
        '[[rule]]\norgan = "liver"\nmodality = "CT"\nmin = 0.9\nsource = "narrow"\n'
        '[[rule]]\norgan = "liver"\nmin = 0.4\nsource = "broad, later"\n'
    )
    assert load_policy(extra).threshold("m", "CT", "liver").source == "narrow"


def test_lower_is_better_metrics_are_maxima(tmp_path: Path) -> None:
    extra = tmp_path / "policy.toml"
    extra.write_text('[[rule]]\nmetric = "hd95"\nmin = 10\nsource = "mm"\n')
    threshold = load_policy(extra).threshold("m", "CT", "liver")
    assert threshold.passes(5.0) and not threshold.passes(12.0)
    assert "<=" in threshold.describe()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[rule]]\nmin = "high"\n', "`min` must be a number"),
        ('[[rule]]\nmetric = "dise"\nmin = 0.5\n', "metric must be one of"),
        ('[[rule]]\nmin = 0.5\nmodel_name = "x"\n', "unknown key"),
        ("[rules]\n", "unknown table"),
        ("[[rule]\n", "not valid TOML"),
    ],
)
def test_bad_policy_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_policy(path)


def test_missing_policy_file_is_named() -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.toml"):
        load_policy("nowhere.toml")


def test_gap_rules_resolve() -> None:
    gap = load_policy().gap("unet-ct", "liver", "CT~PET_CT")
    assert gap is not None and gap.max_gap > 0 and gap.metric == "dice"
