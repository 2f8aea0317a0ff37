"""Declared evaluation settings (evaluation.options): each suite and attack owns its settings, the
CLI's flags are derived from them, and a flat ``evaluate(**settings)`` reaches each owner."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from evaluation import attacks, suites
from evaluation.certify import CertifySettings
from evaluation.options import add_flags, given, integer, make, option, reals
from evaluation.suites import SuiteSettings, VotingSettings, WhiteboxSettings, configure, plan
from zoo.errors import UserInputError


@pytest.fixture
def scratch(monkeypatch):
    monkeypatch.setattr(attacks, "ATTACKS", attacks.ATTACKS.copy())
    monkeypatch.setattr(suites, "SUITES", suites.SUITES.copy())


def test_flat_settings_reach_their_owners():
    p = plan(["voting", "certify", "clean"], eps_list=[0.2], stddevs=[0.5, 1], certify_n=200, spsa_samples=8)
    assert [s.name for s in p.suites] == ["clean", "voting", "certify"]  # registry order, not the order asked
    assert p.shared.eps_list == (0.2,) and p.shared.steps == SuiteSettings().steps
    assert p.of("voting") == VotingSettings(stddevs=(0.5, 1.0))
    assert p.of("certify").certify_n == 200 and p.of("certify").certify_sigmas == (0.25,)
    assert p.attacks["spsa"].spsa_samples == 8 and p.of("whitebox") is None
    record = p.record()
    assert record["certify_n"] == 200 and record["stddevs"] == (0.5, 1.0) and "apgd_steps" not in record


def test_configured_suite_and_flat_values_merge():
    p = plan([configure("certify", certify_sigmas=(0.5,)), "clean"], certify_n=300)
    assert p.of("certify") == CertifySettings(certify_sigmas=(0.5,), certify_n=300)


@pytest.mark.parametrize("given_settings, needle", [
    (dict(stddevs=(-1.0,)), "stddevs (--stddevs): each value must be a finite number in [0, 10], got -1"),
    (dict(votes=0), "votes (--predict-votes): must be an integer in [1, 10000], got 0"),
    (dict(certify_alpha=1.0), "certify_alpha (--certify-alpha): must be a number in (0, 1)"),
    (dict(whitebox_attacks=("fgsm", "deepfool")), "unknown deepfool; choose from fgsm"),
    (dict(step_size=0.0), "step_size (--step-size): must be a finite number > 0"),
    (dict(abstain_alpha=1.5), "abstain_alpha (--abstain-alpha): must be a number in [0, 1)"),
])
def test_bad_values_are_one_line_naming_the_setting_and_its_flag(given_settings, needle):
    with pytest.raises(UserInputError) as info:
        plan(["clean", "voting", "certify", "whitebox"], **given_settings)
    assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_an_unknown_setting_is_a_type_error():
    with pytest.raises(TypeError, match="unknown evaluation setting 'sigmas'"):
        plan(["clean"], sigmas=(0.5,))


def test_a_new_suite_may_not_reuse_a_setting_name(scratch):
    @dataclasses.dataclass(frozen=True)
    class Clash:
        stddevs: tuple = option((1.0,), "clashes with the voting grid", **reals(0))

    suites.register_suite("clash", settings=Clash)(lambda ctx, s: None)
    with pytest.raises(ValueError, match=r"settings \['stddevs'\] are already declared"):
        plan(["clean"])


def test_flags_are_derived_and_unset_flags_keep_the_defaults():
    parser = argparse.ArgumentParser()
    add_flags(parser, WhiteboxSettings)
    add_flags(parser, VotingSettings)
    args = parser.parse_args(["--attacks", "pgd,fgsm", "--votes", "1,3", "--reference-attack", ""])
    values = given([WhiteboxSettings, VotingSettings], args)
    assert values == {"whitebox_attacks": ("pgd", "fgsm"), "votes_list": (1, 3), "reference_attack": None}
    assert make(VotingSettings, **{k: v for k, v in values.items() if k == "votes_list"}).stddevs == \
        VotingSettings().stddevs
    with pytest.raises(UserInputError, match=r"^--grid-votes: each value must be an integer in \[1, 10000\], got 0$"):
        given([VotingSettings], parser.parse_args(["--votes", "1,0"]))
    assert "(default: 1,5,10,20)" in parser.format_help()


def test_an_attack_receives_its_own_settings(scratch):
    import numpy as np

    @dataclasses.dataclass(frozen=True)
    class ShiftSettings:
        shift_scale: int = option(2, "multiples of eps", **integer(0))

    @attacks.register_attack("shift", settings=ShiftSettings)
    def shift(fn, x, y, s):
        return x + s.eps * s.own.shift_scale

    x = np.zeros((2, 3), np.float32)
    assert attacks.attack("shift", lambda v: v, x, [0, 1], 0.1).numpy().max() == pytest.approx(0.2)
    assert attacks.attack("shift", lambda v: v, x, [0, 1], 0.1, shift_scale=3).numpy().max() == pytest.approx(0.3)
    assert plan(["clean"], shift_scale=5).attacks["shift"] == ShiftSettings(5)
    with pytest.raises(TypeError):
        attacks.attack("fgsm", lambda v: v, x, [0, 1], 0.1, shift_scale=3)  # not fgsm's setting
