"""The settings of one training run (:class:`TrainConfig`): every field maps to one flag of
``glrzoo train``; :mod:`training.recipes` fills the ones a user leaves unset."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from training import adversarial_settings
from training.adversarial_settings import FLAGS
from training.flags import Flag, json_object, non_negative, positive, positive_int, registry_help, setting
from training.optim import OPTIMIZERS, SCHEDULES
from training.transforms import TRANSFORMS
from zoo.errors import UserInputError

NOT_RECIPE = ("out", "resume", "overwrite", "verbose", "data_dir", "download", "allow_recipe_change", "recipe_defaults")


@dataclasses.dataclass
class TrainConfig:
    """Everything ``glrzoo train`` needs. A field with a flag is declared once, here, with
    :func:`training.flags.setting` (default, help, flag, value type); the CLI builds its flags from
    these declarations and :data:`training.recipes.RECIPE_FIELDS` lists the fields a recipe may fill."""

    model: str
    dataset: str = "digits"
    method: str = "bp"
    out: str | None = None
    epochs: int = setting(10, flag=Flag("--epochs", "epochs to train", positive_int))
    batch_size: int = setting(128, flag=Flag("--batch-size", "examples per optimizer step", positive_int))
    lr: float = setting(1e-3, flag=Flag("--lr", "learning rate", positive))
    lr_schedule: str = setting("constant", flag=Flag(
        "--lr-schedule", lambda: registry_help("learning-rate schedule", SCHEDULES), choices=lambda: SCHEDULES.names()))
    optimizer: str = setting("adam", flag=Flag("--optimizer", "optimizer", choices=lambda: OPTIMIZERS.names()))
    weight_decay: float | None = setting(None, flag=Flag("--weight-decay", "decoupled weight decay of the optimizer",
                                                         non_negative, shown_default="none"))
    noise: str = setting("additive", flag=Flag("--noise", "kind of the noisy layers' noise",
                                               choices=("additive", "multiplicative")))
    train_stddev: float = setting(0.0, flag=Flag("--train-stddev", "noise stddev while training", non_negative))
    infer_stddev: float = setting(0.0, flag=Flag("--infer-stddev", "noise stddev at inference", non_negative))
    activation: str | None = setting(None, flag=Flag(
        "--activation", "hidden activation: relu, sigmoid, sigmoid:A, threshold, sign, staircase:K",
        shown_default="the model's own"))
    loss: str = setting("ce", flag=Flag("--loss", "training loss", choices=("ce", "zero_one", "hinge")))
    seed: int = setting(0, flag=Flag("--seed", "seed of the weights, batches and noise", int, recipe=False))
    data_dir: str | None = None
    download: bool = False
    train_limit: int | None = setting(None, flag=Flag("--train-limit", "use only the first N training examples",
                                                      positive_int, recipe=False, shown_default="all"))
    test_limit: int | None = setting(None, flag=Flag("--test-limit", "use only the first N test examples", positive_int,
                                                     recipe=False, shown_default="all"))
    resume: bool = False
    overwrite: bool = False
    verbose: int = 2
    model_args: dict = setting(default_factory=dict, flag=Flag(
        "--model-args", "JSON object of builder overrides, merged over the recipe's", json_object, shown_default="{}"))
    method_args: dict = setting(default_factory=dict, recipe=True)  # the estimator's options (their own flags)
    adversarial: dict | None = setting(None, recipe=True)  # training.adversarial_settings (the --adv-* flags)
    init_from: str | None = setting(None, flag=Flag(
        "--init-from", "start from the weights of this export folder or pretrained name (same --model and "
        "--model-args; noise settings stay this run's)", metavar="EXPORT", shown_default="random init"))
    freeze_bn_stats: bool = setting(False, flag=Flag(
        "--freeze-bn-stats", "batch norm normalizes with its moving statistics while training and never updates "
        "them (noise fine-tuning of a clean net: use with --init-from)", switch=True, shown_default="off"))
    input_noise: float = setting(0.0, flag=Flag(
        "--input-noise", "stddev of Gaussian noise added to every training input, in pixel units: the base "
        "classifier of randomized smoothing (Cohen et al. 2019; certify it with --suite certify --certify-sigmas "
        "SIGMA)", non_negative, metavar="SIGMA"))
    transforms: dict = setting(default_factory=dict)  # {name: value} of registered batch transforms (their own flags)
    allow_recipe_change: bool = False  # --resume with a changed lr, epochs or estimator option
    recipe_defaults: dict | None = None  # which row of training.recipes filled unset flags, and with what (recorded)

    def validate(self) -> None:
        for label, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size), ("--seed", self.seed),
                             ("--train-limit", self.train_limit), ("--test-limit", self.test_limit)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
                raise UserInputError(f"{label} must be an integer, got {value!r}")
        if not 0 <= self.seed < 2 ** 32:
            raise UserInputError(f"--seed must be an integer in [0, {2 ** 32 - 1}], got {self.seed}")
        if self.epochs < 1:
            raise UserInputError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UserInputError(f"--batch-size must be >= 1, got {self.batch_size}")
        for label, value in (("--train-limit", self.train_limit), ("--test-limit", self.test_limit)):
            if value is not None and value < 1:
                raise UserInputError(f"{label} must be >= 1, got {value}")
        numbers = [("--lr", self.lr), ("--train-stddev", self.train_stddev), ("--infer-stddev", self.infer_stddev),
                   ("--input-noise", self.input_noise)]
        if self.weight_decay is not None:
            numbers.append(("--weight-decay", self.weight_decay))
        numbers += [(FLAGS[k], v) for k, v in (self.adversarial or {}).items() if k in FLAGS]
        numbers += [(f"--{k.replace('_', '-')}", v) for k, v in self.method_args.items()
                    if isinstance(v, float)]
        for label, value in numbers:
            if not _finite(value):
                raise UserInputError(f"{label} must be a finite number, got {value!r}")
        if not self.lr > 0:
            raise UserInputError(f"--lr must be > 0, got {self.lr}")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise UserInputError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        SCHEDULES.entry(self.lr_schedule)  # unknown names: one line naming the choices
        OPTIMIZERS.entry(self.optimizer)
        for label, value in (("--train-stddev", self.train_stddev), ("--infer-stddev", self.infer_stddev),
                             ("--input-noise", self.input_noise)):
            if not value >= 0:
                raise UserInputError(f"{label} must be >= 0, got {value}")
        adversarial_settings.check(self.adversarial, self.method)
        for name in self.transforms:
            TRANSFORMS.entry(name)  # unknown names: one line naming the choices


    def recipe(self) -> dict:
        """The settings that decide the trained weights (not where they go or how loud): what
        ``--resume`` must match."""
        recipe = {k: v for k, v in dataclasses.asdict(self).items() if k not in NOT_RECIPE}
        if not recipe["transforms"]:  # no registered transform set: the record runs made before they existed have
            del recipe["transforms"]
        return json.loads(json.dumps(recipe, default=str))


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def train_flags() -> list[tuple[str, Flag, object]]:
    """``(field, flag, default)`` of every :class:`TrainConfig` field that has a flag, in field order."""
    out = []
    for f in dataclasses.fields(TrainConfig):
        flag = f.metadata.get("flag")
        if flag is not None:
            out.append((f.name, flag, f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default))
    return out


def recipe_fields() -> tuple[str, ...]:
    """The :class:`TrainConfig` fields a training recipe may fill, in field order."""
    return tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("recipe"))


__all__ = ["NOT_RECIPE", "TrainConfig", "recipe_fields", "train_flags"]
