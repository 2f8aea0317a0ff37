"""The settings of one training run (:class:`TrainConfig`): every field maps to one flag of
``glrzoo train``; :mod:`training.recipes` fills the ones a user leaves unset."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from training import adversarial_settings
from training.adversarial_settings import FLAGS
from training.optim import OPTIMIZERS, SCHEDULES
from zoo.errors import UserInputError

NOT_RECIPE = ("out", "resume", "overwrite", "verbose", "data_dir", "download", "allow_recipe_change", "recipe_defaults")


@dataclasses.dataclass
class TrainConfig:
    """Everything ``glrzoo train`` needs; every field maps to one CLI flag."""

    model: str
    dataset: str = "digits"
    method: str = "bp"
    out: str | None = None
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"
    optimizer: str = "adam"
    weight_decay: float | None = None
    noise: str = "additive"
    train_stddev: float = 0.0
    infer_stddev: float = 0.0
    activation: str | None = None
    loss: str = "ce"
    seed: int = 0
    data_dir: str | None = None
    download: bool = False
    train_limit: int | None = None
    test_limit: int | None = None
    resume: bool = False
    overwrite: bool = False
    verbose: int = 2
    model_args: dict = dataclasses.field(default_factory=dict)
    method_args: dict = dataclasses.field(default_factory=dict)
    adversarial: dict | None = None  # e.g. {"eps": 0.3, "step": 0.01, "iterations": 40}: PGD training
    init_from: str | None = None  # export folder or pretrained name whose weights start the run (fine-tuning)
    freeze_bn_stats: bool = False  # batch norm uses (and keeps) its moving statistics while training
    input_noise: float = 0.0  # stddev of Gaussian noise added to every training input (Cohen et al. 2019)
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


    def recipe(self) -> dict:
        """The settings that decide the trained weights (not where they go or how loud): what
        ``--resume`` must match."""
        return json.loads(json.dumps({k: v for k, v in dataclasses.asdict(self).items() if k not in NOT_RECIPE},
                                     default=str))


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


__all__ = ["NOT_RECIPE", "TrainConfig"]
