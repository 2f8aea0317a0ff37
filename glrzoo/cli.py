"""``glrzoo``: one console script with subcommands; a thin layer over the library.

Every flag maps to one library argument. The choices of ``--method``, ``--attacks``,
``--suite`` and ``--corruptions``, and the estimator flags, come from the registries
(:mod:`training.registry`, :mod:`evaluation.attacks`, :mod:`evaluation.suites`,
:mod:`evaluation.corruptions`), so a newly registered one shows up here with no edit.

Errors: a :class:`zoo.errors.UserInputError` (bad input) prints one line ``glrzoo: error: ...``
naming the problem and the fix, and exits with code 2; a diverged training run prints one line and
exits with 1; anything else is a bug and keeps its traceback (exit code 1).
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Sequence

import tensorflow as tf

from evaluation.attacks import get_attack, list_attacks
from evaluation.harness import evaluate
from evaluation.options import NoSettings, add_flags, given, numbers
from evaluation.report import write_report
from evaluation.suites import SuiteSettings, get_suite, list_suites, settings_classes
from glrzoo import pretrained_build
from glrzoo.demo import run_demo
from glrzoo.tuning import OBJECTIVES, ZooHyperModel, methods, tune
from training import adversarial_settings
from training.adversarial_settings import ADVERSARIAL_DEFAULTS, TRADES_DEFAULTS
from training.batchnorm import recalibrate_export
from training.config import train_flags
from training.flags import finite, json_object, non_negative, positive, positive_int
from training.recipes import RECIPE_FIELDS, RECIPES, fill_settings, generic_defaults
from training.registry import get_estimator, list_estimators
from training.run import TrainConfig, TrainingDiverged, portable_argv, sweep, train
from training.transforms import TRANSFORMS, list_transforms
from zoo import leaderboard, pretrained, pretrained_docs
from zoo.data import available, load_dataset
from zoo.errors import UserInputError
from zoo.export import MAX_STDDEV, output_kind, read_metadata, update_metadata
from zoo.pretrained import model_path
from zoo.registry import get_entry, list_models
from zoo.serving import write_models_config

RECIPE_NOTE = "the recipe's, else "  # flags a training recipe may fill (training.recipes)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's help ends with its default (``--help`` shows them all), unless the help already
    says it or the argument is required."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.required or "default" in text.lower() or action.default is argparse.SUPPRESS:
            return text
        if action.default is None and (action.option_strings or action.nargs in ("?", "*")):
            return text + " (default: none)"
        return super()._get_help_string(action)


class RawEpilogHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """:class:`HelpFormatter` that prints the description and epilog line by line, as written."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose ``--help`` uses :class:`HelpFormatter` (the subcommands' too)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def _recipe_help(text: str, generic) -> str:
    return f"{text} (default: {RECIPE_NOTE}{generic})"


def add_train_flags(p: argparse.ArgumentParser) -> None:
    """Training flags. Those a recipe may set (:data:`training.recipes.RECIPE_FIELDS`) default to
    ``None`` ("not given"); :func:`_train_config` fills them from the recipe of (model, data set,
    method), then from the generic defaults, which their help shows."""
    g = generic_defaults()
    p.add_argument("--model", required=True, help="registered model name ('glrzoo models')")
    p.add_argument("--dataset", default="digits", help="data set name ('glrzoo datasets')")
    p.add_argument("--method", default="bp", choices=list_estimators(), help="gradient estimator")
    p.add_argument("--no-recipe", action="store_true",
                   help="ignore the recipe of (--model, --dataset, --method) and use the generic values for unset flags")
    for field, flag, default in train_flags():  # declared once, in training/config.py
        kwargs = {"type": flag.type, "metavar": flag.metavar}
        if flag.choices is not None:
            kwargs["choices"] = list(flag.choices() if callable(flag.choices) else flag.choices)
        if flag.switch:
            kwargs = {"action": argparse.BooleanOptionalAction}
        shown = flag.shown_default if flag.shown_default is not None else default
        text = flag.help() if callable(flag.help) else flag.help
        if field in RECIPE_FIELDS:
            help_text = _recipe_help(text, g[field] if flag.shown_default is None else shown)
        else:
            help_text = f"{text} (default: {shown})"
        p.add_argument(flag.flag, dest=field, default=None if field in RECIPE_FIELDS else default, help=help_text,
                       **{k: v for k, v in kwargs.items() if v is not None})
    p.add_argument("--strategy", choices=["none", "mirrored", "multiworker"], default="none",
                   help="tf.distribute strategy: all local devices, or the cluster described by TF_CONFIG")
    for name in list_transforms():  # registered batch transforms (training.transforms), plugins' included
        flag = TRANSFORMS.entry(name).flag
        if flag is None:  # declared by a TrainConfig field (above)
            continue
        p.add_argument(flag.flag, dest=f"transform:{name}", type=flag.type, metavar=flag.metavar, default=None,
                       help=f"{flag.help} (default: off)")
    add_estimator_flags(p)
    a = ADVERSARIAL_DEFAULTS
    g = p.add_argument_group("adversarial training (--adversarial pgd, fgsm_rs or trades)")
    g.add_argument("--adversarial", choices=list(adversarial_settings.KINDS), default=None,
                   help="pgd: half of each batch becomes PGD examples (Madry et al. 2018); fgsm_rs: fast "
                        "adversarial training, every example replaced by one FGSM step of 1.25 eps from a random "
                        "start (Wong, Rice and Kolter 2020), stopped when PGD accuracy on 512 training examples "
                        "collapses; trades: backprop of CE + beta * KL(f(x) || f(x')), x' from PGD on the KL "
                        "(Zhang et al. 2019) (default: the recipe's, else off)")
    g.add_argument("--adv-eps", type=non_negative, default=None,
                   help=_recipe_help("L-inf radius in pixel units [0, 1]", a["eps"]))
    g.add_argument("--adv-step", type=positive, default=None, help=_recipe_help("PGD step", a["step"]))
    g.add_argument("--adv-iters", type=positive_int, default=None, help=_recipe_help("PGD iterations", a["iterations"]))
    g.add_argument("--adv-no-random-start", action="store_true", help="start PGD at the clean input, not a random point")
    g.add_argument("--adv-ramp-epochs", type=non_negative, default=None,
                   help=_recipe_help("epochs over which eps and the step grow linearly from 0 (an eps ramp)", 0))
    g.add_argument("--trades-beta", type=non_negative, default=None,
                   help=_recipe_help("weight of the KL term of --adversarial trades", TRADES_DEFAULTS["beta"]))


def _factory_default(name: str, kwarg: str):
    param = inspect.signature(get_estimator(name).factory).parameters.get(kwarg)
    return param.default if param is not None and param.default is not inspect.Parameter.empty else None


def add_estimator_flags(p: argparse.ArgumentParser) -> None:
    """One argument group per registered estimator with options; a flag shared by two is added once.
    A switch also gets its ``--no-`` form (to turn off what a recipe turned on)."""
    seen = set()
    owners: dict[str, list[str]] = {}
    for name in list_estimators():
        for o in get_estimator(name).options:
            owners.setdefault(o.flag, []).append(name)
    for name in list_estimators():
        entry = get_estimator(name)
        fresh = [o for o in entry.options if o.flag not in seen]
        if not fresh:
            continue
        g = p.add_argument_group(f"{name} (--method {name})", entry.description)
        for o in fresh:
            seen.add(o.flag)
            defaults = {m: _factory_default(m, o.kwarg) for m in owners[o.flag]}
            shown = (str(next(iter(defaults.values()))) if len(set(map(repr, defaults.values()))) == 1
                     else "; ".join(f"{m}: {v}" for m, v in defaults.items()))
            text = _recipe_help(o.help or f"the {o.kwarg} option of --method {' or '.join(owners[o.flag])}", shown)
            if o.switch:
                g.add_argument(o.flag, action=argparse.BooleanOptionalAction, default=None, help=text)
            else:
                g.add_argument(o.flag, type=o.type, choices=o.choices, default=None, help=text)


def add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="folder holding mnist/, fashion-mnist/, mnist-stroke-sequences/ "
                                                    "(default: $GLRZOO_DATA_DIR)")
    p.add_argument("--download", action="store_true", help="allow tensorflow-datasets to download missing data")


def recipes_epilog() -> str:
    """``glrzoo train --help``'s list of the recipe rows (:data:`training.recipes.RECIPES`): for each
    (model, data set, method), the flags its row fills when they are not given, and the adversarial
    flags a row marked ``on_request`` fills when ``--adversarial KIND`` is given."""
    lines = ["recipes (what unset flags default to for these --model, --dataset and --method; --no-recipe "
             "ignores them):"]
    for (model, dataset, method), row in RECIPES.items():
        settings = {k: v for k, v in row.items() if k != "adversarial"}
        adversarial = dict(row.get("adversarial") or {})
        on_request = adversarial.pop("on_request", False)
        if adversarial and not on_request:
            settings["adversarial"] = adversarial
        line = f"  {model} {dataset} {method}: {shlex.join(pretrained_build.settings_flags(method, settings))}"
        if on_request:
            kind, *rest = adversarial_settings.to_flags(adversarial)[1:]
            line += f"; with --adversarial {kind}: {shlex.join(rest)}"
        lines.append(line)
    return "\n".join(lines)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one model and export it", epilog=recipes_epilog(),
                       formatter_class=RawEpilogHelpFormatter)
    add_train_flags(p)
    add_data_flags(p)
    p.add_argument("--out", required=True, help="export directory (TF Serving layout + model.keras + metadata.json)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last finished epoch")
    p.add_argument("--allow-recipe-change", action="store_true",
                   help="with --resume: continue with a changed --lr, --epochs or estimator option (recorded)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing export (only once the new one is complete)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress output")


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="train one model per training noise stddev (noise-injection sweep)")
    add_train_flags(p)
    add_data_flags(p)
    p.add_argument("--train-stddevs", required=True, help="comma-separated list, e.g. 0,0.2,0.5,1.0")
    p.add_argument("--out", required=True, help="folder; each model goes to OUT/train_stddev_<s>")
    p.add_argument("--resume", action="store_true", help="skip finished models, continue the unfinished one")
    p.add_argument("--allow-recipe-change", action="store_true",
                   help="with --resume: continue with a changed --lr, --epochs or estimator option (recorded)")
    p.add_argument("--overwrite", action="store_true", help="replace existing exports (each once its new one is complete)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress output")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="attack, corrupt and vote on exported models; write report.json/md")
    p.add_argument("models", nargs="+", help="exported model directories")
    p.add_argument("--dataset", default="digits", help="data set to evaluate on ('glrzoo datasets')")
    p.add_argument("--allow-dataset-mismatch", action="store_true",
                   help="evaluate models on a data set other than the one they were trained on")
    add_data_flags(p)
    p.add_argument("--suite", default="clean,transfer,gradfree,corruption,voting",
                   help=f"comma-separated: {','.join(list_suites())}")
    p.add_argument("--infer-stddev", type=non_negative, default=None,
                   help="turn inference noise of this stddev on in every evaluated model (sources stay clean)")
    p.add_argument("--n", type=positive_int, default=500, help="test examples")
    p.add_argument("--out", required=True, help="report directory")
    _add_settings_flags(p)


def _add_settings_flags(p: argparse.ArgumentParser) -> None:
    """The flags of every evaluation setting, derived from their declarations
    (:mod:`evaluation.options`): the shared ones, then one group per suite and per attack that has
    settings (plugins' included)."""
    add_flags(p.add_argument_group("shared by the suites"), SuiteSettings)
    parts = [(f"{n} suite", get_suite(n).settings) for n in list_suites()]
    parts += [(f"{n} attack", get_attack(n).settings) for n in list_attacks()]
    for title, cls in parts:
        if cls is not NoSettings:
            about = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("``", "")
            add_flags(p.add_argument_group(title, about), cls)


def _add_tune(sub) -> None:
    p = sub.add_parser("tune", help="keras-tuner search over a training recipe; exports the best model")
    p.add_argument("--model", required=True, help="registered model name ('glrzoo models')")
    p.add_argument("--method", default="bp", choices=methods(),
                   help="a registered estimator, or adv (backprop + PGD adversarial training)")
    p.add_argument("--objective", default="val_robust",
                   help="val_accuracy, val_noisy_vote, val_transfer or val_robust (mean of the three)")
    p.add_argument("--max-trials", type=positive_int, default=10, help="trials of the search")
    p.add_argument("--dataset", default="digits", help="data set name ('glrzoo datasets')")
    add_data_flags(p)
    p.add_argument("--epochs", type=positive_int, default=3, help="epochs per trial and for the final model")
    p.add_argument("--batch-size", type=positive_int, default=128, help="examples per optimizer step")
    p.add_argument("--activation", default=None, help="hidden activation (default: the model's own)")
    p.add_argument("--model-args", type=json_object, default={}, help="JSON object of builder overrides")
    p.add_argument("--train-limit", type=positive_int, default=None,
                   help="use only the first N training examples (default: all)")
    p.add_argument("--validation", type=finite, default=0.2, help="share of the training split used for objectives")
    p.add_argument("--objective-stddev", type=non_negative, default=0.5, help="inference noise of val_noisy_vote")
    p.add_argument("--objective-votes", type=positive_int, default=10, help="votes of val_noisy_vote")
    p.add_argument("--objective-eps", type=non_negative, default=0.1, help="FGSM eps of val_transfer")
    p.add_argument("--seed", type=int, default=0, help="seed of the search and of every trial")
    p.add_argument("--init-from", default=None, metavar="EXPORT",
                   help="every trial (and the final model) starts from the weights of this export folder or "
                        "pretrained name, e.g. mnist/cnn6_bp (same --model and --model-args)")
    p.add_argument("--out", required=True, help="export directory of the best model; the search state goes to OUT.tuning/")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export and search state")


def _add_recalibrate_bn(sub) -> None:
    p = sub.add_parser("recalibrate-bn", help="recompute an export's batch-norm statistics on training data "
                                              "under a chosen inference noise; export the result")
    p.add_argument("export", help="exported model directory")
    p.add_argument("--dataset", default=None, help="data set to read (default: the one the export was trained on)")
    add_data_flags(p)
    p.add_argument("--stddev", type=non_negative, default=0.0,
                   help="inference noise stddev the statistics are collected under (0: noise-free inference)")
    p.add_argument("--examples", type=positive_int, default=20000, help="first N training examples to pass")
    p.add_argument("--batch-size", type=positive_int, default=500, help="examples per pass")
    p.add_argument("--out", required=True, help="export directory for the recalibrated model")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export at --out")


def _add_pretrained(sub) -> None:
    p = sub.add_parser("pretrained", help="list, show, verify or document the pretrained models")
    p.add_argument("action", nargs="?", default="list", choices=["list", "show", "verify", "readme", "index"],
                   help="list the installed models; show or verify NAME (downloaded into the cache from "
                        "$GLRZOO_PRETRAINED_URL if not installed); readme: regenerate README.md, the leaderboard "
                        "(LEADERBOARD.md, leaderboard/model_info/) and index.json of the folder; index: regenerate "
                        "index.json only")
    p.add_argument("name", nargs="?", help="model name for show/verify, e.g. mnist/glr_threshold_ce (default: none)")
    p.add_argument("--root", default=None, help="pretrained folder (default: $GLRZOO_PRETRAINED_DIR, else the "
                                                "installed models, else the repository's saved_models/)")


def _add_serve_config(sub) -> None:
    p = sub.add_parser("serve-config", help="write a TF Serving models.config for every export under a folder")
    p.add_argument("root", help="folder holding exports (e.g. saved_models)")
    p.add_argument("--out", default=None, help="file to write (default: ROOT/models.config)")
    p.add_argument("--base", default=None, help="base_path prefix as the server sees it, e.g. /models in the container")
    p.add_argument("--policy", default="latest", choices=["latest", "all", "specific"], help="model_version_policy")


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="train, export, evaluate and report on the bundled digits (a few minutes)")
    p.add_argument("--out", default="demo_out", help="directory for the exported models and the report")
    p.add_argument("--quick", action="store_true", help="fewer epochs and votes (for smoke tests)")


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern of the names to list")


def _add_datasets(sub) -> None:
    p = sub.add_parser("datasets", help="list the data sets and where they load from")
    add_data_flags(p)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="glrzoo", description="Robust, brain-like neural networks: "
                                     "likelihood-ratio training, noisy inference with voting, BANG, evaluation.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_train(sub)
    _add_sweep(sub)
    _add_evaluate(sub)
    _add_tune(sub)
    _add_recalibrate_bn(sub)
    _add_pretrained(sub)
    _add_serve_config(sub)
    _add_demo(sub)
    _add_models(sub)
    _add_datasets(sub)
    return parser


def _method_args(args) -> dict:
    """The estimator flags that were given, as keyword arguments of the chosen estimator; a flag of
    another estimator is refused, naming the methods it belongs to."""
    mine = {o.dest: o.kwarg for o in get_estimator(args.method).options}
    owners: dict[str, list[str]] = {}
    for name in list_estimators():
        for o in get_estimator(name).options:
            owners.setdefault(o.dest, []).append(name)
    foreign = [dest for dest in owners if dest not in mine and getattr(args, dest, None) is not None]
    if foreign:
        flags = ", ".join("--" + dest.replace("_", "-") for dest in foreign)
        where = " or ".join(dict.fromkeys(m for dest in foreign for m in owners[dest]))
        raise UserInputError(f"{flags} only apply to --method {where}")
    return {kwarg: getattr(args, dest) for dest, kwarg in mine.items() if getattr(args, dest, None) is not None}


def _adversarial(args) -> dict | None:
    """The adversarial-training settings the user gave (:func:`training.adversarial_settings.from_flags`)."""
    return adversarial_settings.from_flags(args.adversarial, eps=args.adv_eps, step=args.adv_step,
                                           iterations=args.adv_iters, no_random_start=args.adv_no_random_start,
                                           ramp_epochs=args.adv_ramp_epochs, beta=args.trades_beta)


def _train_config(args) -> TrainConfig:
    """Flags -> :class:`TrainConfig`: what the user gave, else the recipe of (model, data set, method)
    (:mod:`training.recipes`, unless --no-recipe), else the generic default; the recipe is recorded."""
    given = {field: getattr(args, field, None) for field in RECIPE_FIELDS if field not in ("method_args", "adversarial")}
    given.update(method_args=_method_args(args), adversarial=_adversarial(args))
    settings, applied = fill_settings(args.model, args.dataset, args.method, given, use_recipe=not args.no_recipe)
    return TrainConfig(
        model=args.model, dataset=args.dataset, method=args.method, out=args.out, **settings, seed=args.seed,
        data_dir=args.data_dir, download=args.download, train_limit=args.train_limit, test_limit=args.test_limit,
        resume=args.resume, overwrite=args.overwrite, verbose=0 if args.quiet else 2,
        allow_recipe_change=args.allow_recipe_change, recipe_defaults=applied,
        transforms={n: getattr(args, f"transform:{n}") for n in list_transforms()  # only those with their own flag
                    if getattr(args, f"transform:{n}", None) is not None})


def _strategy(args) -> tf.distribute.Strategy | None:
    if args.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if args.strategy == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UserInputError("--strategy multiworker needs the TF_CONFIG environment variable (see README)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return None


def _names(flag: str, text: str, allowed) -> list[str]:
    chosen = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in chosen if v not in allowed]
    if bad:
        raise UserInputError(f"{flag}: unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
    return chosen


def cmd_train(args, argv) -> int:
    meta = train(_train_config(args), argv=list(argv), strategy=_strategy(args))
    print(f"test accuracy {meta['metrics']['test_accuracy']:.4f}; exported to {args.out}")
    return 0


def cmd_sweep(args, argv) -> int:
    try:
        stddevs = numbers(low=0)(args.train_stddevs)
    except UserInputError as e:
        raise UserInputError(f"--train-stddevs: {e}") from None
    for meta in sweep(_train_config(args), stddevs, argv=list(argv)):
        print(f"train_stddev {meta['training']['train_stddev']:g}: test accuracy {meta['metrics']['test_accuracy']:.4f}")
    return 0


def _note(message: str) -> None:
    print(f"glrzoo: {message}", file=sys.stderr)


def cmd_evaluate(args) -> int:
    suites = _names("--suite", args.suite, list_suites())
    if not suites:
        raise UserInputError(f"--suite names no suite; choose one or more of {', '.join(list_suites())}")
    settings = given(settings_classes(), args)  # the flags set on the command line, parsed
    if args.infer_stddev is not None and args.infer_stddev > MAX_STDDEV:
        raise UserInputError(f"--infer-stddev must be <= {MAX_STDDEV}, got {args.infer_stddev}")
    # folders or pretrained names (which one was used goes to stderr); harness.evaluate verifies them
    args.models = [str(model_path(m, log=_note, verify=False)) for m in args.models]
    data = load_dataset(args.dataset, args.data_dir, args.download)
    x, y = data.x_test[:args.n], data.y_test[:args.n]
    result = evaluate(args.models, x, y, suites=suites, out=args.out, dataset=data.name,
                      allow_dataset_mismatch=args.allow_dataset_mismatch, infer_stddev=args.infer_stddev, **settings)
    print(f"report: {write_report(result, args.out)}")
    return 0


def cmd_recalibrate_bn(args, argv) -> int:
    args.export = str(model_path(args.export, log=_note))
    dataset = args.dataset or read_metadata(args.export)["dataset"]["name"]
    data = load_dataset(dataset, args.data_dir, args.download)
    meta = recalibrate_export(args.export, args.out, data, stddev=args.stddev, examples=args.examples,
                              batch_size=args.batch_size, overwrite=args.overwrite,
                              command=" ".join(["glrzoo", *portable_argv(argv)]))
    m = meta["metrics"]
    before = m.get("test_accuracy_before_recalibration")
    print(f"{meta['batchnorm_statistics']['layers']} batch norms recomputed at stddev {args.stddev:g}; noise-free "
          f"test accuracy {m['test_accuracy']:.4f}" + (f" (was {before:.4f})" if before is not None else "")
          + f"; exported to {args.out}")
    return 0


def cmd_models(args) -> int:
    names = list_models(args.pattern)
    if not names:
        raise UserInputError(f"no model matches {args.pattern!r}; run 'glrzoo models' for all")
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {get_entry(name).description}")
    return 0


def cmd_datasets(args) -> int:
    if args.data_dir:
        os.environ["GLRZOO_DATA_DIR"] = args.data_dir
    for row in available():
        print(f"{row['name']:<14} {'yes' if row['available'] else 'no ':<4} {row['source']}")
    return 0


def cmd_tune(args, argv) -> int:
    if args.objective not in OBJECTIVES:
        raise UserInputError(f"unknown --objective {args.objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if not 0 < args.validation < 1:
        raise UserInputError(f"--validation must be in (0, 1), got {args.validation}")
    out = Path(args.out)
    if output_kind(out) == "export" and not args.overwrite:  # a file or a folder of other things: refused
        raise UserInputError(f"{out} already holds an export; pass --overwrite or choose another --out")
    data = load_dataset(args.dataset, args.data_dir, args.download).subset(args.train_limit, None)
    base = TrainConfig(model=args.model, dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
                       activation=args.activation, model_args=args.model_args, seed=args.seed, verbose=0,
                       init_from=args.init_from)
    hm = ZooHyperModel(args.model, args.method, data, base, validation=args.validation,
                       objective_stddev=args.objective_stddev, objective_votes=args.objective_votes,
                       objective_eps=args.objective_eps, seed=args.seed)
    tuner, best = tune(hm, args.objective, args.max_trials, directory=str(out) + ".tuning", overwrite=args.overwrite,
                       seed=args.seed)
    trial = tuner.oracle.get_best_trials(1)[0]
    print(f"best trial {trial.trial_id}: {args.objective} {trial.score:.4f} with {trial.hyperparameters.values}")
    meta = train(dataclasses.replace(best, out=str(out), overwrite=True), data=data, argv=list(argv))
    update_metadata(out, tuning={"objective": args.objective, "score": trial.score, "trials": len(tuner.oracle.trials),
                                 "best_hyperparameters": trial.hyperparameters.values,
                                 "search_dir": str(out) + ".tuning"})
    print(f"test accuracy {meta['metrics']['test_accuracy']:.4f}; exported to {out}")
    return 0


def cmd_pretrained(args) -> int:
    if args.action == "list":
        names = pretrained.list_pretrained(args.root)
        if not names:
            raise UserInputError(f"no pretrained models under {args.root or pretrained.pretrained_root()}")
        for name in names:
            meta = pretrained.describe(name, args.root)
            try:
                line = (f"{name:<28} {meta['architecture']['name']:<12} {meta['dataset']['name']:<14} "
                        f"clean {100 * float(meta['metrics']['test_accuracy']):.2f}%")
            except (KeyError, TypeError, ValueError) as e:
                raise UserInputError(f"{name}: metadata.json lacks a valid {e} entry; re-export the model "
                                     "or restore its metadata.json") from None
            print(line)
        return 0
    if args.action in ("readme", "index"):
        written = []
        if args.action == "readme":  # the README and, beside it, the leaderboard
            readme = pretrained_docs.write_readme(args.root)
            written += [readme, readme.parent / leaderboard.LEADERBOARD, readme.parent / leaderboard.FOLDER]
        written.append(pretrained.write_index(args.root))
        print(f"wrote {', '.join(map(str, written))}")
        return 0
    if not args.name:
        raise UserInputError(f"'glrzoo pretrained {args.action}' needs a NAME; 'glrzoo pretrained list' shows them")
    if args.action == "verify":
        pretrained.load_pretrained(args.name, args.root)
        print(f"{args.name}: every file matches its sha256")
        return 0
    meta = pretrained.describe(args.name, args.root)
    meta.pop("files", None)
    print(json.dumps(meta, indent=2, sort_keys=True))
    return 0


def cmd_serve_config(args) -> int:
    if not Path(args.root).is_dir() and pretrained.is_model_name(args.root):  # the config serves that one model
        args.root = str(model_path(args.root, log=_note))
    out = Path(args.out) if args.out else Path(args.root) / "models.config"
    path = write_models_config(args.root, out, base=args.base, policy=args.policy)
    print(f"wrote {path}; start the server with:\n  tensorflow_model_server --port=8500 --rest_api_port=8501 "
          f"--model_config_file={path.resolve()}")
    return 0


def cmd_demo(args) -> int:
    run_demo(args.out, quick=args.quick)
    return 0


COMMANDS = {  # name -> (function, whether it takes argv: train, sweep and tune record it in the metadata)
    "train": (cmd_train, True), "sweep": (cmd_sweep, True), "evaluate": (cmd_evaluate, False),
    "models": (cmd_models, False), "datasets": (cmd_datasets, False), "demo": (cmd_demo, False),
    "tune": (cmd_tune, True), "pretrained": (cmd_pretrained, False), "serve-config": (cmd_serve_config, False),
    "recalibrate-bn": (cmd_recalibrate_bn, True),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed one usage line and the error
        return int(e.code or 0)
    command, takes_argv = COMMANDS[args.command]
    try:
        return command(args, argv) if takes_argv else command(args)
    except UserInputError as e:
        print(f"glrzoo: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:  # not a bug and not bad input: one line naming the step and the fix
        print(f"glrzoo: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
