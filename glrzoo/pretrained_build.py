"""Build the pretrained set: train a named recipe, evaluate the export, record the headline.

The workflow behind ``python benchmarks/make_pretrained.py`` (a thin script over this module):

1. :func:`train_recipe` trains one entry of :data:`PRETRAINED_RECIPES` through :class:`training.run.TrainConfig`
   and :func:`training.run.train` (no command line is parsed), exports it to ``<root>/<name>`` and
   records in its metadata the equivalent ``glrzoo train ...`` command (:func:`recipe_command`):
   run from the repository root it trains the same model, because :func:`recipe_config` fills
   unset settings exactly as ``glrzoo train`` does (the recipe of :mod:`training.recipes`, then
   :class:`TrainConfig`'s defaults).
2. :func:`evaluate_export` runs the evaluation harness on ``n`` test points (clean; transfer
   FGSM/PGD from a backprop substitute, :func:`substitute_export`, made once per data set and not
   shipped; the four corruptions; noisy voting) and writes a headline of those numbers into the
   export's ``metadata.json`` under ``evaluation``.
3. :func:`build` does both for a list of names, then regenerates ``<root>/README.md`` and
   ``index.json`` from the metadata (``glrzoo pretrained readme``).

A recipe is a :class:`Recipe`: model family, data set, gradient estimator and the
:data:`training.recipes.RECIPE_FIELDS` it sets (what ``glrzoo train`` flags would set). The five
784-50-10 MLPs of the GLR authors' MNIST and Fashion-MNIST tables (:data:`GLR_TABLE`) come from
``benchmarks/bench_glr_mnist.py table [--dataset fashion_mnist] --out saved_models/<data set>``; the
builder only evaluates them.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import shlex
import time
from pathlib import Path
from typing import Callable

from evaluation.harness import evaluate
from training import adversarial_settings
from training.recipes import RECIPE_FIELDS, fill_settings, get_recipe
from training.registry import get_estimator
from training.run import TrainConfig, train
from training.substitute import SUBSTITUTE_MODEL, train_substitute
from zoo.data import Dataset, load_dataset
from zoo.errors import UserInputError
from zoo.export import read_metadata, update_metadata
from zoo.pretrained import write_index
from zoo.pretrained_docs import write_readme


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How one pretrained model is trained: what ``glrzoo train --model M --dataset D --method X ...`` says.

    Attributes:
        model: registered model family (``glrzoo models``).
        dataset: data set name (``glrzoo datasets``).
        method: registered gradient estimator (``--method``).
        settings: the :data:`training.recipes.RECIPE_FIELDS` the recipe sets, as
            :class:`~training.run.TrainConfig` values (``lr=0.003``, ``model_args={...}``,
            ``method_args={"replications": 100}``, ``adversarial={"eps": 0.3, ...}``); the others
            come from the recipe row of (model, dataset, method), then the generic defaults.
        seed: ``--seed``.
    """

    model: str
    dataset: str
    method: str = "bp"
    settings: dict = dataclasses.field(default_factory=dict)
    seed: int = 0


def training_recipe(model: str, dataset: str, method: str) -> Recipe:
    """The pretrained model that is exactly ``training.recipes``'s row for ``(model, dataset, method)``,
    the defaults ``glrzoo train`` uses: one place to change it."""
    return Recipe(model, dataset, method, get_recipe(model, dataset, method))


SMALL_CNN = {"filters": [16, 16, 32, 32], "dense": 64}
DENSENET10 = {"depth": 10, "growth_rate": 12}
PRETRAINED_RECIPES: dict[str, Recipe] = {
    "digits/glr_threshold_mlp": Recipe("glr_mlp", "digits", "glr", dict(
        activation="threshold", method_args={"replications": 100, "baseline": True}, epochs=30, batch_size=32,
        lr=0.003)),
    "mnist/cnn6_noise1.0": Recipe("cnn6", "mnist", "bp", dict(  # the paper's 0 dB column (sweep in the README)
        noise="multiplicative", train_stddev=1.0, epochs=15, lr=0.001, lr_schedule="cosine")),
    "mnist/cnn6_noise0.2": Recipe("cnn6", "mnist", "bp", dict(  # the sweep's best clean column
        noise="multiplicative", train_stddev=0.2, epochs=6, lr=0.001, lr_schedule="cosine")),
    "mnist/cnn6_additive1.0": Recipe("cnn6", "mnist", "bp", dict(  # the paper's additive-noise row: frozen BN stats
        noise="additive", train_stddev=1.0, init_from="mnist/cnn6_bp", freeze_bn_stats=True, epochs=2, lr=0.001,
        lr_schedule="cosine")),
    "mnist/cnn6_pgd": Recipe("cnn6", "mnist", "bp", dict(  # the black-box defence's target
        noise="multiplicative", adversarial={"eps": 0.3, "step": 0.1, "iterations": 5, "fraction": 0.5}, epochs=3,
        batch_size=100, lr=0.001, lr_schedule="cosine", model_args=SMALL_CNN)),
    "mnist/lenet_bang": training_recipe("lenet", "mnist", "bang"),
    "mnist/madry_cnn_pgd": training_recipe("madry_cnn", "mnist", "bp"),
    "mnist_strokes/lstm": training_recipe("lstm", "mnist_strokes", "bp"),
    "mnist_strokes/lstm_noise1.0": Recipe("lstm", "mnist_strokes", "bp", dict(
        noise="multiplicative", train_stddev=1.0, epochs=12, lr=0.003, lr_schedule="cosine", model_args={"units": 64})),
    # GLR models of the GLR issue and their backprop twins (same architecture, data, epochs, schedule)
    "mnist/cnn6_bp": training_recipe("cnn6", "mnist", "bp"),
    "mnist/cnn6_glr_local": training_recipe("cnn6", "mnist", "glr_local"),
    "fashion_mnist/densenet_bp": training_recipe("densenet", "fashion_mnist", "bp"),
    "fashion_mnist/densenet_noise1.0": Recipe("densenet", "fashion_mnist", "bp", dict(
        noise="multiplicative", train_stddev=1.0, epochs=4, lr=0.001, lr_schedule="cosine", model_args=DENSENET10)),
    "fashion_mnist/densenet_glr_local": Recipe("densenet", "fashion_mnist", "glr_local", dict(
        epochs=4, lr=0.003, lr_schedule="cosine", model_args=DENSENET10)),
    # the grid read-out variant (its classifier reads a 4 x 4 grid of averages): local GLR with heads that read
    # the layer's input too and have a hidden layer; the converged linear probe puts its features above random ones
    "fashion_mnist/densenet_gridpool_glr_local": training_recipe("densenet_gridpool", "fashion_mnist", "glr_local"),
    "fashion_mnist/densenet_gridpool_bp": training_recipe("densenet_gridpool", "fashion_mnist", "bp"),
    # its random-features control: every layer below the output frozen at its initialisation, only the read-out
    # trained (1 epoch); what the GLR model's features are measured against (converged linear probe 89.60%)
    "fashion_mnist/densenet_gridpool_control": Recipe("densenet_gridpool", "fashion_mnist", "glr_local", dict(
        epochs=1, lr=0.003, lr_schedule="cosine", model_args=DENSENET10,
        method_args={"head_input": "concat", "sigma": 0.1, "head_hidden": 0, "top_only": True})),
    # robust MNIST models: TRADES (the row of training.recipes, asked for with --adversarial trades) and the base
    # classifiers of randomized smoothing (Gaussian input noise, Cohen et al. 2019), certified in the README
    "mnist/smallcnn_trades": Recipe("smallcnn", "mnist", "bp", dict(
        adversarial={"kind": "trades", "eps": 0.3, "step": 0.075, "iterations": 10, "beta": 6.0, "ramp_epochs": 2.0},
        epochs=30, lr=0.001, lr_schedule="cosine")),
    "fashion_mnist/smallcnn_trades": Recipe("smallcnn", "fashion_mnist", "bp", dict(
        adversarial={"kind": "trades", "eps": 0.1, "step": 0.025, "iterations": 10, "beta": 3.0, "ramp_epochs": 2.0},
        epochs=12, lr=0.001, lr_schedule="cosine", model_args={"dropout": 0})),
    "fashion_mnist/wong_cnn_pgd": Recipe("wong_cnn", "fashion_mnist", "bp", dict(  # the published PGD anchor
        adversarial={"eps": 0.1, "step": 0.005, "iterations": 40, "fraction": 0.5}, epochs=100, lr=0.001,
        lr_schedule="step")),
    "mnist/smallcnn_gauss0.25": Recipe("smallcnn", "mnist", "bp", dict(input_noise=0.25, epochs=10, lr=0.001,
                                                                       lr_schedule="cosine")),
    "mnist/smallcnn_gauss0.5": Recipe("smallcnn", "mnist", "bp", dict(input_noise=0.5, epochs=10, lr=0.001,
                                                                      lr_schedule="cosine")),
    "mnist/smallcnn_gauss1.0": Recipe("smallcnn", "mnist", "bp", dict(input_noise=1.0, epochs=15, lr=0.001,
                                                                      lr_schedule="cosine")),
    "mnist_strokes/lstm_glr_local": training_recipe("lstm", "mnist_strokes", "glr_local"),
}
GLR_TABLE_ROWS = ("bp_sigmoid_ce", "glr_sigmoid_ce", "glr_threshold_ce", "glr_sigmoid_01", "glr_threshold_01")
GLR_TABLE = tuple(f"{d}/{row}" for d in ("mnist", "fashion_mnist") for row in GLR_TABLE_ROWS)
COMMAND_ROOT = "saved_models"  # --out of the recorded commands, which run from the repository root


def _text(value) -> str:
    return value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)


def train_flags(recipe: Recipe) -> list[str]:
    """The ``glrzoo train`` flags that say what ``recipe`` says, e.g. ``["--model", "cnn6", ...,
    "--seed", "0"]`` (no ``--out``, ``--quiet`` or ``--overwrite``); its settings as :func:`settings_flags`
    says them. Parsed by the CLI they give :func:`recipe_config`'s settings (tests/test_pretrained_build.py).
    """
    return (["--model", recipe.model, "--dataset", recipe.dataset, "--method", recipe.method]
            + settings_flags(recipe.method, recipe.settings) + ["--seed", str(recipe.seed)])


def settings_flags(method: str, settings: dict) -> list[str]:
    """The ``glrzoo train`` flags that say ``settings`` (:data:`training.recipes.RECIPE_FIELDS` values,
    as in :attr:`Recipe.settings`) for ``--method method``, e.g. ``["--epochs", "6", "--lr", "0.001"]``.

    Estimator options become their registered flags (a switch: ``--flag`` or ``--no-flag``),
    ``adversarial`` becomes ``--adversarial pgd --adv-eps ...``, ``model_args`` one JSON object.
    """
    unknown = sorted(set(settings) - set(RECIPE_FIELDS))
    if unknown:
        raise UserInputError(f"not a recipe setting: {', '.join(unknown)}; choose from {', '.join(RECIPE_FIELDS)}")
    flags = []
    options = {o.kwarg: o for o in get_estimator(method).options}
    for field, value in settings.items():
        if field == "model_args":
            flags += ["--model-args", json.dumps(value)]
        elif field == "method_args":
            for kwarg, v in value.items():
                if kwarg not in options:
                    raise UserInputError(f"--method {method} has no option {kwarg!r}; "
                                         f"it has {', '.join(options) or 'none'}")
                o = options[kwarg]
                flags += [o.flag if v else "--no-" + o.flag[2:]] if o.switch else [o.flag, _text(v)]
        elif field == "adversarial":
            flags += adversarial_settings.to_flags(value)
        elif isinstance(value, bool):
            flags += ["--" + field.replace("_", "-") if value else "--no-" + field.replace("_", "-")]
        else:
            flags += ["--" + field.replace("_", "-"), _text(value)]
    return flags


def recipe_command(name: str, recipe: Recipe | None = None, command_root: str = COMMAND_ROOT) -> str:
    """The shell command (``shlex``-quoted) that trains ``name`` like :func:`train_recipe`:
    ``glrzoo train <train_flags> --quiet --overwrite --out <command_root>/<name>``."""
    recipe = recipe or PRETRAINED_RECIPES[name]
    return shlex.join(["glrzoo", "train", *train_flags(recipe), "--quiet", "--overwrite", "--out",
                       f"{command_root}/{name}"])


def recipe_config(recipe: Recipe, out: str | Path | None = None, data_dir: str | None = None) -> TrainConfig:
    """The :class:`TrainConfig` ``glrzoo train`` builds from :func:`train_flags` ``--quiet --overwrite``:
    the recipe's settings, the rest from :func:`training.recipes.fill_settings` (recorded in
    ``recipe_defaults``); ``out`` is the export folder (replaced if it holds an export)."""
    train_flags(recipe)  # refuses settings the command line could not say
    settings, applied = fill_settings(recipe.model, recipe.dataset, recipe.method, copy.deepcopy(recipe.settings))
    return TrainConfig(model=recipe.model, dataset=recipe.dataset, method=recipe.method,
                       out=str(out) if out is not None else None, **settings, seed=recipe.seed, data_dir=data_dir,
                       overwrite=True, verbose=0, recipe_defaults=applied)


def train_recipe(name: str, root: str | Path, data: Dataset | None = None, data_dir: str | None = None,
                 recipes: dict[str, Recipe] | None = None, command_root: str = COMMAND_ROOT) -> dict:
    """Train recipe ``name`` and export it to ``<root>/<name>``; returns the metadata dict of
    :func:`training.run.train` (``metrics.test_accuracy`` in [0, 1], ``model`` the Keras model).

    Args:
        name: a key of ``recipes`` (default :data:`PRETRAINED_RECIPES`), e.g. ``"mnist/cnn6_bp"``.
        root: the pretrained folder (the repository's ``saved_models/``).
        data: the data set, if already loaded (else read from ``data_dir`` or ``$GLRZOO_DATA_DIR``).
        command_root: the folder the recorded command's ``--out`` names (run from the repository root).
    """
    recipes = PRETRAINED_RECIPES if recipes is None else recipes
    if name not in recipes:
        raise UserInputError(f"no recipe named {name!r}; choose from {', '.join(recipes)}")
    recipe = recipes[name]
    config = recipe_config(recipe, Path(root) / name, data_dir)
    return train(config, data=data, command=recipe_command(name, recipe, command_root))


def substitute_export(dataset: str, work: str | Path, data: Dataset | None = None, data_dir: str | None = None) -> Path:
    """The backprop substitute of ``dataset`` for transfer attacks, exported once to
    ``<work>/substitute_<dataset>`` (reused after): :func:`training.substitute.train_substitute`,
    5 epochs on MNIST, 30 on any other data set, Adam at 1e-3, batch 128, seed 0. Not shipped."""
    out = Path(work) / f"substitute_{dataset}"
    if not (out / "metadata.json").exists():
        epochs, lr = (5 if dataset == "mnist" else 30), 1e-3
        command = shlex.join(["glrzoo", "train", *train_flags(Recipe(SUBSTITUTE_MODEL, dataset, "bp", {
            "epochs": epochs, "lr": lr})), "--no-recipe", "--quiet", "--overwrite", "--out", str(out)])
        train_substitute(data if data is not None else load_dataset(dataset, data_dir), epochs=epochs, lr=lr, out=out,
                         reuse=False, command=command)
    return out


def headline(rows: list[dict], name: str) -> dict:
    """The few numbers the README table shows for model ``name`` (its folder name in the report
    rows): transfer FGSM at the smallest and PGD at the largest eps, the corruption mean (eq. 6)
    and noisy voting at s = 1.0 with 1 and 20 votes; accuracies in [0, 1], missing ones left out."""
    mine = [r for r in rows if r["model"] == name]

    def pick(suite, **kw):
        return next((r["accuracy"] for r in mine if r["suite"] == suite and all(r.get(k) == v for k, v in kw.items())),
                    None)
    out = {}
    for att, choose in (("fgsm", min), ("pgd", max)):
        eps = [r["eps"] for r in mine if r["suite"] == "transfer" and r["attack"] == att]
        if eps:
            e = choose(eps)
            out[f"transfer {att.upper()} {e:g}"] = pick("transfer", attack=att, eps=e)
    out.update({"corruptions mA": pick("corruption", corruption="mean (eq. 6)"),
                "s=1.0, 1 vote": pick("voting", stddev=1.0, votes=1),
                "s=1.0, 20 votes": pick("voting", stddev=1.0, votes=20)})
    return {k: v for k, v in out.items() if v is not None}


def evaluate_export(name: str, root: str | Path, n: int, work: str | Path, data_dir: str | None = None) -> dict:
    """Evaluate export ``<root>/<name>`` on the first ``n`` test points of its data set and write the
    summary into its metadata under ``evaluation``; returns that summary.

    Image data: clean, transfer FGSM/PGD (eps 0.13 and 0.3, 0.1 and 0.3 on digits; 20 steps) from
    :func:`substitute_export`, the corruptions, voting at s in (0, 0.5, 1) with 1 and 20 votes (2
    repeats); other data (strokes): clean and voting. The full report goes to
    ``<work>/reports/<name with / as __>``.
    """
    path = Path(root) / name
    meta = read_metadata(path)
    dataset = meta["dataset"]["name"]
    data = load_dataset(dataset, data_dir)
    x, y = data.x_test[:n], data.y_test[:n]
    images = len(data.input_shape) == 3
    suites = ("clean", "transfer", "corruption", "voting") if images else ("clean", "voting")
    report = Path(work) / "reports" / name.replace("/", "__")
    sources = [str(substitute_export(dataset, work, data))] if images else []
    result = evaluate([str(path)], x, y, suites=suites, sources=sources, out=report,
                      eps_list=(0.13, 0.3) if dataset != "digits" else (0.1, 0.3), steps=20,
                      stddevs=(0.0, 0.5, 1.0), votes_list=(1, 20), vote_repeats=2, log=lambda _: None)
    name_in_rows = path.name
    summary = {"n": len(y), "dataset": dataset, "suites": list(suites),
               "command": "python benchmarks/make_pretrained.py --only " + name,
               "transfer_source": "substitute_mlp (backprop, ReLU 784-100-50-10), FGSM/PGD L-inf",
               "voting": "noise of the model's kind (additive or multiplicative) at stddev s",
               "headline": headline(result["rows"], name_in_rows),
               "masking_flags": result["flags"].get(name_in_rows, [])}
    old = meta.get("evaluation") or {}
    for key in ("whitebox", "certified"):  # recorded by other measurements of the same export: kept
        if key in old:
            summary[key] = old[key]
    if "whitebox" in old:  # the white-box audit's suite and flags stay with its record
        summary["suites"] = sorted(set(summary["suites"]) | {"whitebox"})
        summary["masking_flags"] = sorted(set(summary["masking_flags"]) | set(old.get("masking_flags") or []))
    update_metadata(path, evaluation=summary)
    return summary


def build(root: str | Path, names: list[str] | None = None, *, retrain: bool = False, n: int = 1000,
          work: str | Path = "bench_out/pretrained", data_dir: str | None = None,
          log: Callable[[str], None] = print) -> tuple[Path, Path]:
    """(Re)build ``names`` (default: :data:`GLR_TABLE` and every recipe) in ``root``.

    A recipe is trained when ``retrain`` or when ``<root>/<name>`` holds no export; every name is
    then evaluated on ``n`` test points (:func:`evaluate_export`). Finally ``README.md`` and
    ``index.json`` of ``root`` are regenerated; returns their paths.
    """
    root = Path(root)
    for name in names or [*GLR_TABLE, *PRETRAINED_RECIPES]:
        t = time.time()
        if name in PRETRAINED_RECIPES and (retrain or not (root / name / "metadata.json").exists()):
            log(recipe_command(name))
            train_recipe(name, root, data_dir=data_dir)
        summary = evaluate_export(name, root, n, work, data_dir)
        log(f"{name}: {summary['headline']}")
        log(f"  {time.time() - t:.0f} s")
    return write_readme(root), write_index(root)


__all__ = ["GLR_TABLE", "PRETRAINED_RECIPES", "Recipe", "build", "evaluate_export", "headline", "recipe_command", "recipe_config",
           "substitute_export", "train_flags", "train_recipe"]


def certified_block(rows: list[dict], command: str) -> dict:
    """The ``evaluation.certified`` record of a model from its ``certify`` suite rows (Cohen, Rosenfeld
    and Kolter 2019): the smoothing stddev, the sampling settings, the points and the certified
    accuracy (with its 95% Wilson interval) at each L2 radius, and the command that measured them."""
    cert = sorted((r for r in rows if r.get("suite") == "certify"), key=lambda r: r["radius"])
    if not cert:
        raise UserInputError("no certify rows: run 'glrzoo evaluate ... --suite certify' first")
    first = cert[0]
    return {"norm": "L2", "sigma": first["sigma"], "n0": first["n0"], "n": first["samples"], "alpha": first["alpha"],
            "points": first["n"], "clean_smoothed_accuracy": first["clean_smoothed_accuracy"],
            "certified_accuracy": {f"{r['radius']:g}": r["accuracy"] for r in cert},
            "ci95": {f"{r['radius']:g}": r["ci95"] for r in cert}, "command": command}
