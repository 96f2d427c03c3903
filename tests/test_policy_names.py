"""Policy names: a rule naming a model, organ, metric, modality or comparison that does not
exist is an error naming the file, the table and its number, not a rule that never applies."""

from __future__ import annotations

from pathlib import Path

import pytest

from umdbench.metrics.engine import DEFAULT_TOLERANCES, empty_figures
from umdbench.policy import KNOWN_METRICS, Policy, load_policy
from umdbench.targets import known_targets

MODELS = ("unet-ct", "unet-mri", "sam-med3d", "totalsegmentator")


def _policy(tmp_path: Path, text: str) -> tuple[Path, Policy]:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path, load_policy(path)


def _check(policy: Policy) -> None:
    policy.check_names(MODELS, known_targets(), KNOWN_METRICS)


def test_known_metrics_are_the_engines_figures() -> None:
    assert set(KNOWN_METRICS) == set(empty_figures(0, 0, DEFAULT_TOLERANCES))


def test_default_policy_and_good_names_pass(tmp_path: Path) -> None:
    _check(load_policy())
    _, policy = _policy(
        tmp_path,
        '[[rule]]\nmodel = "sam-*"\norgan = "kidney_*"\nmin = 0.5\n'
        '[[rule]]\nmodel = "unet-ct"\nmetric = "hd95"\nmin = 9\n'
        '[[gap]]\norgan = "liver"\ncomparison = "CT~*"\nmax_gap = 0.2\n',
    )
    _check(policy)


def test_unknown_organ_names_file_table_number_and_close_match(tmp_path: Path) -> None:
    path, policy = _policy(
        tmp_path, '[[rule]]\norgan = "liver"\nmin = 0.5\n[[rule]]\norgan = "livr"\nmin = 0.5\n'
    )
    with pytest.raises(ValueError) as info:
        _check(policy)
    assert str(info.value) == (
        f'{path} [[rule]] #2: organ = "livr" is not a known organ (did you mean liver?)'
    )


def test_unknown_model_lists_close_matches(tmp_path: Path) -> None:
    _, policy = _policy(tmp_path, '[[rule]]\nmodel = "unet_ct"\nmin = 0.5\n')
    with pytest.raises(
        ValueError, match=r'#1: model = "unet_ct" is not a known model \(did you mean unet-ct'
    ):
        _check(policy)


def test_pattern_matching_nothing_is_an_error(tmp_path: Path) -> None:
    path, policy = _policy(tmp_path, '[[gap]]\nmodel = "segvol-*"\nmax_gap = 0.1\n')
    with pytest.raises(ValueError) as info:
        _check(policy)
    message = str(info.value)
    assert message.startswith(f'{path} [[gap]] #1: model = "segvol-*" matches no known model')
    assert "sam-med3d" in message and "\n" not in message


def test_metric_the_run_does_not_compute(tmp_path: Path) -> None:
    _, policy = _policy(tmp_path, '[[rule]]\nmetric = "nsd_2mm"\nmin = 0.5\n')
    with pytest.raises(ValueError, match=r'#1: metric = "nsd_2mm" is not a metric this run computes \(did you mean nsd_1mm\?\)'):  # fmt: skip
        policy.check_names(MODELS, known_targets(), ["dice", "nsd_1mm"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[rule]]\nmodality = "PET"\nmin = 0.5\n', r'\[\[rule\]\] #1: modality = "PET" is not a known modality \(did you mean PET_CT'),
        ('[[rule]]\nmodality = "X*"\nmin = 0.5\n', r'modality = "X\*" matches no known modality'),
        ('[[gap]]\ncomparison = "CT-PET_CT"\nmax_gap = 0.1\n', r'\[\[gap\]\] #1: comparison = "CT-PET_CT" is not a known comparison \(did you mean CT~PET_CT'),
        ('[[rule]]\ntreshold = 0.5\nmin = 0.5\n', r"\[\[rule\]\] #1: unknown key 'treshold'; allowed: metric, min, modality, model, organ, source"),
        ('[[rule]]\nmin = 0.5\norgann = "liver"\n', r"unknown key 'organn' \(did you mean organ\?\)"),
        ('[[rule]]\nmetric = "dise"\nmin = 0.5\n', r"#1: metric must be one of .* got 'dise' \(did you mean dice\?\)"),
        ('[[rule]]\norgan = 5\nmin = 0.5\n', r"#1: organ must be a string, got 5"),
        ('[rule]\nmin = 0.5\n', r"write \[\[rule\]\], not \[rule\]"),
        ('gap = 3\n', r"`gap` must be an array of tables"),
    ],
)  # fmt: skip
def test_fixed_vocabularies_and_keys_are_checked_on_reading(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        load_policy(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
