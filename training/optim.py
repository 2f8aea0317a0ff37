"""Optimizers and learning-rate schedules by name (``--optimizer``, ``--lr-schedule``).

Each is one decorated factory in the registry of its kind (:class:`zoo.registry.Registry`); a new
one in any module of ``training`` becomes a choice of the flag with no other edit::

    @register_schedule("half", "lr / 10 at half of the run")
    def half(lr: float, total_steps: int):
        return keras.optimizers.schedules.PiecewiseConstantDecay([total_steps // 2], [lr, lr / 10])
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import keras

from zoo.registry import Registry

OPTIMIZERS = Registry("--optimizer", package="training", unknown="unknown --optimizer {name!r}; choose one of {choices}")
SCHEDULES = Registry("--lr-schedule", package="training",
                     unknown="unknown --lr-schedule {name!r}; choose one of {choices}")
INVERSE_GAMMA, INVERSE_POWER = 1e-4, 0.75  # Caffe's "inv" policy as in its LeNet solver (BANG's schedule)


@dataclasses.dataclass(frozen=True)
class Factory:
    name: str
    make: Callable
    description: str


def register_optimizer(name: str, description: str) -> Callable:
    """Decorator: ``make(lr, weight_decay) -> keras.optimizers.Optimizer`` becomes ``--optimizer name``."""
    return OPTIMIZERS.decorator(name, lambda make: Factory(name, make, description))


def register_schedule(name: str, description: str) -> Callable:
    """Decorator: ``make(lr, total_steps) -> float or LearningRateSchedule`` becomes ``--lr-schedule name``
    (``total_steps``: optimizer steps of the whole run)."""
    return SCHEDULES.decorator(name, lambda make: Factory(name, make, description))


@keras.saving.register_keras_serializable(package="glrzoo")
class InverseDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Caffe's ``inv`` learning-rate policy: ``lr * (1 + gamma * step) ** -power``, ``step`` counted in
    optimizer steps (gamma 1e-4, power 0.75 in Caffe's MNIST LeNet solver, which BANG trains with:
    Rozsa, Günther and Boult 2016, section 4)."""

    def __init__(self, lr: float, gamma: float = INVERSE_GAMMA, power: float = INVERSE_POWER):
        self.lr, self.gamma, self.power = float(lr), float(gamma), float(power)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        return self.lr * keras.ops.power(1.0 + self.gamma * step, -self.power)

    def get_config(self):
        return {"lr": self.lr, "gamma": self.gamma, "power": self.power}


@keras.saving.register_keras_serializable(package="glrzoo")
class TriangularCycle(keras.optimizers.schedules.LearningRateSchedule):
    """One triangular cycle over the run: the rate rises linearly from 0 to ``lr`` at half of
    ``total_steps`` optimizer steps and falls linearly back to 0 at the end (Smith 2017, "Cyclical
    learning rates", triangular policy with one cycle; the schedule of Wong, Rice and Kolter 2020,
    "Fast is better than free", for FGSM adversarial training)."""

    def __init__(self, lr: float, total_steps: int):
        self.lr, self.total_steps = float(lr), max(2, int(total_steps))

    def __call__(self, step):
        half = self.total_steps / 2.0
        t = keras.ops.cast(step, "float32")
        return self.lr * keras.ops.maximum(0.0, 1.0 - keras.ops.abs(t - half) / half)

    def get_config(self):
        return {"lr": self.lr, "total_steps": self.total_steps}


@register_schedule("constant", "the learning rate throughout")
def _constant(lr: float, total_steps: int):
    return lr


@register_schedule("cosine", "cosine decay from lr to 0 over the run (Loshchilov and Hutter 2017, SGDR, eq. 5 "
                             "without restarts)")
def _cosine(lr: float, total_steps: int):
    return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, total_steps))


@register_schedule("inverse", "Caffe's inverse decay lr * (1 + 1e-4 t)^-0.75, t in optimizer steps")
def _inverse(lr: float, total_steps: int):
    return InverseDecay(lr)


@register_schedule("cyclic", "linear 0 -> lr -> 0 over the run (Wong et al. 2020's fast adversarial training)")
def _cyclic(lr: float, total_steps: int):
    return TriangularCycle(lr, total_steps)


STEP_AT = 0.9  # fraction of the run after which the step schedule divides the rate by 10


@register_schedule("step", "lr, divided by 10 for the last tenth of the run (Croce, Andriushchenko and Hein 2019's "
                           "adversarial training)")
def _step(lr: float, total_steps: int):
    """Constant ``lr`` for the first 90% of ``total_steps`` optimizer steps, ``lr / 10`` after: the schedule
    of Croce, Andriushchenko and Hein (2019, "Provable robustness of ReLU networks via maximization of
    linear regions", their train.py), whose adversarially trained MNIST and Fashion-MNIST CNNs are anchors."""
    return keras.optimizers.schedules.PiecewiseConstantDecay([max(1, int(STEP_AT * total_steps)) - 1], [lr, lr / 10])


@register_optimizer("adam", "Adam (Kingma and Ba 2015)")
def _adam(lr, weight_decay=None):
    return keras.optimizers.Adam(lr, weight_decay=weight_decay)


@register_optimizer("sgd", "plain stochastic gradient descent")
def _sgd(lr, weight_decay=None):
    return keras.optimizers.SGD(lr, weight_decay=weight_decay)


@register_optimizer("adagrad", "Adagrad (Duchi, Hazan and Singer 2011)")
def _adagrad(lr, weight_decay=None):
    return keras.optimizers.Adagrad(lr, weight_decay=weight_decay)


@register_optimizer("momentum", "SGD with momentum 0.9")
def _momentum(lr, weight_decay=None):
    return keras.optimizers.SGD(lr, momentum=0.9, weight_decay=weight_decay)


def make_learning_rate(lr: float, schedule: str = "constant", total_steps: int = 1):
    """The learning rate or schedule that ``--lr-schedule schedule`` names, over ``total_steps`` optimizer steps."""
    return SCHEDULES.entry(schedule).make(lr, total_steps)


def make_optimizer(name: str, lr, weight_decay: float | None = None) -> keras.optimizers.Optimizer:
    """The optimizer that ``--optimizer name`` names, with learning rate (or schedule) ``lr``."""
    return OPTIMIZERS.entry(name).make(lr, weight_decay)


LR_SCHEDULES = tuple(SCHEDULES)  # the built-in names (the registry may grow; read SCHEDULES.names() for all)

__all__ = ["InverseDecay", "LR_SCHEDULES", "OPTIMIZERS", "SCHEDULES", "TriangularCycle", "make_learning_rate",
           "make_optimizer", "register_optimizer", "register_schedule"]
