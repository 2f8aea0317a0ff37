"""Registries: a new estimator, attack or suite is one decorated function, and the CLI, the tuner,
the harness and the report pick it up with no other edit."""
import json

import keras_tuner as kt
import numpy as np
import pytest

import training.registry as estimators
from evaluation import attacks, suites
from glrzoo.cli import _method_args, build_parser, main
from glrzoo.tuning import ZooHyperModel, methods
from training import Option, create_estimator, list_estimators, register_estimator
from training.estimators import Backprop
from training.run import TrainConfig
from zoo.errors import UserInputError


@pytest.fixture
def scratch_registries(monkeypatch):
    """Registrations made by a test end with it."""
    monkeypatch.setattr(estimators, "ESTIMATORS", estimators.ESTIMATORS.copy())
    monkeypatch.setattr(attacks, "ATTACKS", attacks.ATTACKS.copy())
    monkeypatch.setattr(suites, "SUITES", suites.SUITES.copy())


def test_builtin_names():
    assert set(list_estimators()) >= {"bp", "glr", "glr_local", "bang"}
    assert set(attacks.list_attacks()) == {"fgsm", "bim", "pgd", "mim", "cw_l2", "spsa", "lbfgs", "hotcold", "lr_pgd",
                                           "apgd_ce", "apgd_dlr", "autoattack"}
    assert attacks.list_attacks(kind="minimal") == ["cw_l2", "hotcold"]
    assert attacks.list_attacks(gradient="none") == ["spsa"] and attacks.list_attacks(gradient="surrogate") == ["lr_pgd"]
    assert suites.list_suites() == ["clean", "whitebox", "transfer", "gradfree", "corruption", "voting", "distortion",
                                    "certify"]


def test_estimator_factories_are_keyword_only_and_validated():
    with pytest.raises(TypeError):
        create_estimator("bp", "ce")  # noqa -- positional arguments are refused
    assert create_estimator("bp", loss="hinge") == Backprop(loss="hinge")
    with pytest.raises(UserInputError, match="takes no option"):
        create_estimator("bp", sigma=1.0)
    with pytest.raises(UserInputError, match="sigma must be > 0"):  # the factory's ValueError, as bad input
        create_estimator("glr", sigma=-1.0)
    with pytest.raises(UserInputError, match="unknown --method 'magic'; choose one of"):
        create_estimator("magic")


def test_new_estimator_reaches_cli_flags_and_tuner(scratch_registries, digits):
    @register_estimator("halfbp", options=(Option("--half-scale", "scale", float, help="gradient scale"),),
                        search_space=lambda hp: {"scale": hp.Float("half_scale", 0.1, 1.0)})
    def halfbp(*, loss: str = "ce", scale: float = 0.5):
        """Backprop scaled by a constant (a test estimator)."""
        return Backprop(loss=loss)

    parser = build_parser()
    args = parser.parse_args(["train", "--model", "test_mlp", "--method", "halfbp", "--half-scale", "0.3",
                              "--out", "x"])
    assert _method_args(args) == {"scale": 0.3}
    args = parser.parse_args(["train", "--model", "test_mlp", "--half-scale", "0.3", "--out", "x"])
    with pytest.raises(UserInputError, match="--half-scale only apply to --method halfbp"):
        _method_args(args)
    assert "halfbp" in methods()
    hp = kt.HyperParameters()
    config = ZooHyperModel("mlp", "halfbp", digits, TrainConfig(model="mlp", epochs=1, verbose=0)).config(hp)
    assert config.method == "halfbp" and set(config.method_args) == {"scale"} and "half_scale" in hp.values


def test_shared_flag_is_added_once_and_routed_to_the_chosen_method(scratch_registries):
    @register_estimator("glr_twin", options=(Option("--sigma", "sigma", float),))
    def glr_twin(*, loss: str = "ce", sigma: float = 1.0):
        """Same --sigma flag as glr."""
        return Backprop(loss=loss)

    parser = build_parser()  # argparse would raise on a duplicated --sigma
    assert _method_args(parser.parse_args(["train", "--model", "m", "--method", "glr_twin", "--sigma", "2",
                                           "--out", "x"])) == {"sigma": 2.0}
    assert _method_args(parser.parse_args(["train", "--model", "m", "--method", "glr", "--sigma", "2",
                                           "--out", "x"])) == {"sigma": 2.0}


def test_new_attack_and_suite_are_cli_choices(scratch_registries, tmp_path, capsys):
    @attacks.register_attack("noop")
    def noop(fn, x, y, settings):
        """Returns the input (a test attack)."""
        return x

    @suites.register_suite("count", note="How many test points (a test suite).")
    def count(ctx, _):
        for name in ctx.models:
            ctx.add({"key": f"{name}|count", "model": name, "suite": "count", "n": len(ctx.y), "accuracy": 1.0})

    assert "noop" in attacks.list_attacks() and suites.get_suite("count").note.startswith("How many")
    x = np.zeros((2, 3), np.float32)
    assert attacks.attack("noop", lambda v: v, x, [0, 1], 0.1).numpy().tolist() == x.tolist()
    export = tmp_path / "m"
    assert main(["train", "--model", "test_mlp", "--epochs", "1", "--quiet", "--out", str(export)]) == 0
    assert main(["evaluate", str(export), "--attacks", "noop", "--suite", "clean,whitebox,count", "--eps", "0.1",
                 "--n", "30", "--out", str(tmp_path / "r")]) == 0  # the new attack and suite run end to end
    rows = json.loads((tmp_path / "r" / "report.json").read_text())["rows"]
    clean = next(r for r in rows if r["suite"] == "clean")
    noop_row = next(r for r in rows if r["suite"] == "whitebox" and r["attack"] == "noop")
    assert noop_row["accuracy"] == clean["accuracy"]  # it changed nothing
    assert next(r for r in rows if r["suite"] == "count")["n"] == 30
    assert "How many test points" in (tmp_path / "r" / "report.md").read_text()
    assert main(["evaluate", str(export), "--attacks", "noop,deepfool", "--suite", "count", "--out",
                 str(tmp_path / "r2")]) == 2
    assert "unknown deepfool" in capsys.readouterr().err
