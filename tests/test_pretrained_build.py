"""The pretrained builder (glrzoo.pretrained_build): every recipe's recorded command trains what the
builder trains, and a tiny recipe goes through train -> evaluate -> README on digits."""
import dataclasses
import shlex

import pytest

import glrzoo.pretrained_build as pb
from glrzoo.cli import _train_config, build_parser
from glrzoo.pretrained_build import PRETRAINED_RECIPES, Recipe, recipe_command, recipe_config, train_flags
from training.substitute import train_substitute
from zoo.errors import UserInputError
from zoo.export import read_metadata


def _parsed(command: str):
    """The TrainConfig ``glrzoo train`` builds from the shell command ``command``."""
    argv = shlex.split(command)
    assert argv[:2] == ["glrzoo", "train"], argv
    return _train_config(build_parser().parse_args(argv[1:]))


@pytest.mark.parametrize("name", list(PRETRAINED_RECIPES))
def test_recorded_command_trains_what_the_builder_trains(name):
    """Run from the repository root, the recorded command builds the builder's TrainConfig exactly
    (recipe-filled settings and their record included)."""
    expected = recipe_config(PRETRAINED_RECIPES[name], f"saved_models/{name}")
    assert dataclasses.asdict(_parsed(recipe_command(name))) == dataclasses.asdict(expected)


def test_flags_say_switches_off_and_pgd_without_random_start():
    recipe = Recipe("mlp", "digits", "glr", {"method_args": {"baseline": False, "sigma": 0.5}, "model_args": {},
                                             "adversarial": {"eps": 0.1, "random_start": False}})
    flags = train_flags(recipe)
    assert "--no-baseline" in flags and flags[flags.index("--sigma") + 1] == "0.5"
    assert "--adv-no-random-start" in flags
    config = _parsed(shlex.join(["glrzoo", "train", *flags, "--out", "x"]))
    assert config.method_args == {**recipe_config(recipe).method_args, "baseline": False, "sigma": 0.5}
    assert config.adversarial == recipe_config(recipe).adversarial and config.adversarial["random_start"] is False
    with pytest.raises(UserInputError, match="no option 'beta'"):
        train_flags(Recipe("mlp", "digits", "glr", {"method_args": {"beta": 1.0}}))
    with pytest.raises(UserInputError, match="not a recipe setting"):
        train_flags(Recipe("mlp", "digits", "bp", {"out": "x"}))


def test_flags_of_a_fast_adversarial_recipe_are_fgsm_rs_and_parse_back_to_it():
    recipe = Recipe("madry_cnn", "mnist", "bp", {"adversarial": {"eps": 0.2, "step": 0.25, "iterations": 1,
                                                                 "random_start": True, "fraction": 1.0}})
    flags = train_flags(recipe)
    assert flags[flags.index("--adversarial") + 1] == "fgsm_rs" and "--adv-step" not in flags  # 1.25 eps
    config = _parsed(shlex.join(["glrzoo", "train", *flags, "--out", "x"]))
    assert config.adversarial == recipe_config(recipe).adversarial
    assert config.adversarial == {"eps": 0.2, "step": 0.25, "iterations": 1, "random_start": True, "fraction": 1.0}
    with pytest.raises(UserInputError, match="fgsm_rs"):
        train_flags(Recipe("madry_cnn", "mnist", "bp", {"adversarial": {"iterations": 3, "fraction": 1.0}}))


def test_make_pretrained_is_a_thin_script_with_substitute(monkeypatch):
    from conftest import REPO

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import make_pretrained

    # bench_glr_pairs imports these
    assert make_pretrained.PRETRAINED_RECIPES is PRETRAINED_RECIPES and callable(make_pretrained.substitute)


TINY = Recipe("test_mlp", "digits", "bp", {"epochs": 1, "batch_size": 64, "infer_stddev": 0.3})


@pytest.mark.large  # slow here (5-20 s); .ci/run runs it
def test_tiny_recipe_is_trained_with_its_command_recorded_and_not_retrained(tmp_path, monkeypatch):
    name = "digits/tiny_mlp"
    monkeypatch.setitem(PRETRAINED_RECIPES, name, TINY)
    root = tmp_path / "saved_models"
    evaluated, lines = [], []
    monkeypatch.setattr(pb, "evaluate_export", lambda name, *a: evaluated.append(name) or {"headline": {}})
    pb.build(root, [name], work=tmp_path / "work", log=lines.append)
    meta = read_metadata(root / name)
    assert meta["command"] == recipe_command(name) and lines[0] == meta["command"]
    assert meta["training"]["recipe"] == _parsed(meta["command"]).recipe() == recipe_config(TINY).recipe()
    assert meta["training"]["epochs"] == 1 and meta["training"]["infer_stddev"] == 0.3
    assert evaluated == [name] and (root / "README.md").is_file() and (root / "index.json").is_file()
    # an export that exists is evaluated again, not retrained (unless retrain=True)
    monkeypatch.setattr(pb, "train_recipe", lambda *a, **k: pytest.fail("retrained an existing export"))
    pb.build(root, [name], work=tmp_path / "work", log=lambda _: None)
    assert evaluated == [name, name]


@pytest.mark.large  # 10-20 s: the evaluation harness (transfer, corruptions, voting) on 20 points
def test_tiny_recipe_is_trained_evaluated_and_documented(digits, tmp_path, monkeypatch):
    name = "digits/tiny_mlp"
    monkeypatch.setitem(PRETRAINED_RECIPES, name, TINY)
    root, work = tmp_path / "saved_models", tmp_path / "work"
    train_substitute(digits, epochs=1, out=work / "substitute_digits")  # made beforehand: substitute_export reuses it
    readme, index = pb.build(root, [name], n=20, work=work, log=lambda _: None)
    ev = read_metadata(root / name)["evaluation"]
    assert ev["n"] == 20 and ev["command"] == f"python benchmarks/make_pretrained.py --only {name}"
    assert {"transfer FGSM 0.1", "transfer PGD 0.3", "corruptions mA", "s=1.0, 1 vote", "s=1.0, 20 votes"} <= set(
        ev["headline"]), ev["headline"]
    assert all(0 <= v <= 1 for v in ev["headline"].values())
    assert readme.is_file() and index.is_file() and "tiny_mlp" in readme.read_text()
