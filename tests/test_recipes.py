"""Recipes and defaults: every flag's --help shows its default, unset flags come from the recipe of
(model, data set, method) and the metadata says so, and (large) the digits recipes reach 90%."""
import argparse
import shlex

import pytest

from glrzoo.cli import _train_config, build_parser, main
from training.adversarial_settings import adversarial_kind, from_flags
from training.recipes import RECIPE_FIELDS, RECIPES, fill_settings, generic_defaults
from training.registry import get_estimator, list_estimators
from training.run import TrainConfig
from zoo.data import DATASETS
from zoo.export import read_metadata
from zoo.registry import list_models


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


COMMANDS = sorted(_subparsers(build_parser()))


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_every_flags_default_and_a_description(command, capsys):
    sub = _subparsers(build_parser())[command]
    formatter = sub.formatter_class(prog="glrzoo")
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"glrzoo {command} {name} has no help"
        if not action.required:
            assert "default" in formatter._get_help_string(action).lower(), f"glrzoo {command} {name} hides its default"
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "(default: " in out
    for action in sub._actions:
        for flag in action.option_strings:
            assert flag in out, (command, flag)


def test_recipe_rows_are_well_formed():
    assert RECIPES, "the table has rows"
    models, methods = set(list_models()), set(list_estimators())
    for (model, dataset, method), row in RECIPES.items():
        assert model in models and dataset in DATASETS and method in methods, (model, dataset, method)
        assert set(row) <= set(RECIPE_FIELDS), sorted(set(row) - set(RECIPE_FIELDS))
        kwargs = {o.kwarg for o in get_estimator(method).options}
        assert set(row.get("method_args", {})) <= kwargs, (method, row.get("method_args"))
    assert generic_defaults() == {f: getattr(TrainConfig(model="m"), f) for f in RECIPE_FIELDS}


def _config(*flags) -> TrainConfig:
    return _train_config(build_parser().parse_args(["train", *flags, "--out", "x"]))


def test_unset_flags_come_from_the_recipe_and_given_ones_win():
    c = _config("--model", "mlp", "--dataset", "digits", "--method", "bp")
    row = RECIPES[("mlp", "digits", "bp")]
    assert (c.epochs, c.batch_size, c.lr, c.model_args) == (row["epochs"], row["batch_size"], row["lr"], row["model_args"])
    assert c.recipe_defaults["name"] == "mlp/digits/bp" and c.recipe_defaults["filled"]["epochs"] == row["epochs"]
    assert (c.optimizer, c.noise, c.loss) == ("adam", "additive", "ce")  # not in the row: generic

    c = _config("--model", "mlp", "--dataset", "digits", "--epochs", "3", "--model-args", '{"hidden": [32]}')
    assert c.epochs == 3 and c.model_args == {"hidden": [32], "activation": row["model_args"]["activation"]}
    assert "epochs" not in c.recipe_defaults["filled"]
    assert c.recipe_defaults["filled"]["model_args"] == {"activation": row["model_args"]["activation"]}

    c = _config("--model", "mlp", "--dataset", "digits", "--method", "glr", "--no-baseline", "--sigma", "0.5")
    assert c.method_args == {"replications": 10, "baseline": False, "sigma": 0.5}

    generic = TrainConfig(model="mlp")
    for flags in (["--model", "mlp", "--dataset", "digits", "--no-recipe"], ["--model", "test_mlp"],
                  ["--model", "mlp", "--dataset", "mnist"]):
        c = _config(*flags)
        assert c.recipe_defaults is None
        assert (c.epochs, c.batch_size, c.lr, c.model_args, c.method_args) == \
            (generic.epochs, generic.batch_size, generic.lr, {}, {})


def _settings(config: TrainConfig) -> dict:
    return {f: getattr(config, f) for f in RECIPE_FIELDS}


def test_help_lists_every_recipe_row_with_flags_that_say_it(capsys):
    """``glrzoo train --help`` names every recipe row; its flags, given with --no-recipe, train with
    exactly the settings the row fills (its on-request adversarial flags too, after --adversarial)."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    lines = capsys.readouterr().out.split("recipes (", 1)[1].splitlines()[1:]
    listed = {}
    for line in lines:
        key, flags = line.strip().split(": ", 1)
        listed[tuple(key.split())] = flags
    assert set(listed) == set(RECIPES)
    for (model, dataset, method), text in listed.items():
        plain, _, on_request = text.partition("; with ")
        base = ["--model", model, "--dataset", dataset, "--method", method]
        assert _settings(_config(*base, *shlex.split(plain), "--no-recipe")) == _settings(_config(*base))
        if on_request:
            kind, flags = on_request.split(": ")
            asked = [*base, *kind.split()]
            assert _settings(_config(*asked, *shlex.split(plain), *shlex.split(flags), "--no-recipe")) == \
                _settings(_config(*asked))
    assert listed[("wong_cnn", "fashion_mnist", "bp")] == ("--epochs 100 --lr 0.001 --lr-schedule step; with "
                                                          "--adversarial pgd: --adv-eps 0.1 --adv-step 0.005 "
                                                          "--adv-iters 40")


def test_adversarial_settings_merge_key_by_key(monkeypatch):
    settings, applied = fill_settings("m", "d", "bp", {"adversarial": {"eps": 0.1}})
    assert settings["adversarial"] == {"eps": 0.1, "step": 0.01, "iterations": 40, "random_start": True, "fraction": 0.5}
    assert applied is None
    monkeypatch.setitem(RECIPES, ("m", "d", "bp"), {"adversarial": {"eps": 0.3, "iterations": 7}})
    settings, applied = fill_settings("m", "d", "bp", {})
    assert settings["adversarial"]["iterations"] == 7 and applied["filled"]["adversarial"] == {"eps": 0.3, "iterations": 7}
    settings, applied = fill_settings("m", "d", "bp", {"adversarial": {"eps": 0.1}})
    assert settings["adversarial"]["eps"] == 0.1 and applied["filled"]["adversarial"] == {"iterations": 7}


def test_asking_for_the_other_kind_of_adversarial_training_takes_none_of_the_rows_keys(monkeypatch):
    fast = {"eps": 0.3, "step": 0.375, "iterations": 1, "random_start": True, "fraction": 1.0}
    monkeypatch.setitem(RECIPES, ("m", "d", "bp"), {"adversarial": fast})
    assert fill_settings("m", "d", "bp", {})[0]["adversarial"] == fast
    # --adversarial pgd (fraction 0.5) on a fgsm_rs row: PGD's defaults, not the row's one step of 0.375
    settings, applied = fill_settings("m", "d", "bp", {"adversarial": {"eps": 0.2, "fraction": 0.5}})
    assert settings["adversarial"] == {"eps": 0.2, "step": 0.01, "iterations": 40, "random_start": True, "fraction": 0.5}
    assert "adversarial" not in applied["filled"]
    # --adversarial fgsm_rs --adv-eps 0.1 on the same row: the user's values, the row's kind
    mine = {"eps": 0.1, "step": 0.125, "iterations": 1, "random_start": True, "fraction": 1.0}
    assert fill_settings("m", "d", "bp", {"adversarial": mine})[0]["adversarial"] == mine


def test_the_applied_recipe_is_recorded_in_the_metadata(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(RECIPES, ("test_mlp", "digits", "bp"), {"epochs": 1, "batch_size": 64})
    out = tmp_path / "m"
    assert main(["train", "--model", "test_mlp", "--dataset", "digits", "--quiet", "--out", str(out)]) == 0
    meta = read_metadata(out)
    assert meta["training"]["recipe_defaults"] == {"name": "test_mlp/digits/bp", "filled": {"epochs": 1, "batch_size": 64}}
    assert meta["training"]["epochs"] == 1 and meta["training"]["batch_size"] == 64
    assert meta["dataset"] == {**meta["dataset"], "name": "digits", "source": "sklearn.datasets.load_digits", "files": {}}


@pytest.mark.large
@pytest.mark.parametrize("method", ["bp", "glr", "bang"])
def test_digits_recipes_reach_90_percent(method, tmp_path, capsys):
    """The one-line command reaches 90% on digits with the row's settings. Its wall time (under a
    minute, the issue's target) is measured and recorded beside the row in training/recipes.py, not
    asserted here: a timed test fails on a loaded machine for reasons that are not the code's."""
    out = tmp_path / method
    assert main(["train", "--model", "mlp", "--dataset", "digits", "--method", method, "--out", str(out), "--quiet"]) == 0
    meta = read_metadata(out)
    assert meta["training"]["recipe_defaults"]["name"] == f"mlp/digits/{method}"
    assert meta["metrics"]["test_accuracy"] >= 0.90, meta["metrics"]


VARIANT_FIELDS = ("noise", "train_stddev", "adversarial", "input_noise")
VARIANT_METHOD_ARGS = ("top_only",)  # estimator options that make a variant: a random-features control


def test_shipped_models_were_trained_by_their_recipe_rows():
    """A shipped model whose (model, dataset, method) has a row was trained with exactly that row, so
    ``glrzoo train --model M --dataset D --method X --out DIR`` reproduces its recipe."""
    from zoo.pretrained import list_pretrained, resolve

    checked = 0
    for name in list_pretrained():
        recipe = read_metadata(resolve(name))["training"].get("recipe")
        if not recipe or (recipe["model"], recipe["dataset"], recipe["method"]) not in RECIPES:
            continue
        row = RECIPES[(recipe["model"], recipe["dataset"], recipe["method"])]
        filled, _ = fill_settings(recipe["model"], recipe["dataset"], recipe["method"], {})
        generic = generic_defaults()  # a field recorded before it existed counts as its default
        if (any(recipe.get(f, generic[f]) != filled[f] for f in VARIANT_FIELDS if f not in row or f == "input_noise")
                or any((recipe.get("method_args") or {}).get(k) for k in VARIANT_METHOD_ARGS)):
            continue  # a noise-trained, adversarially trained or random-features variant: its own recipe, not the row's
        for field, value in row.items():
            if field == "adversarial" and value.get("on_request"):  # the row's settings when asked for
                asked, _ = fill_settings(recipe["model"], recipe["dataset"], recipe["method"],
                                         {"adversarial": from_flags(adversarial_kind(value))})  # --adversarial K
                assert recipe[field] == asked[field], (name, recipe[field], asked[field])
            elif field in ("model_args", "method_args", "adversarial"):  # merged key by key
                assert {k: recipe[field].get(k) for k in value} == value, (name, field)
            else:
                assert recipe[field] == value == filled[field], (name, field, recipe[field], value)
        checked += 1
    assert checked >= 4  # cnn6 (bp, glr_local), the stroke LSTM, the Fashion-MNIST DenseNet
