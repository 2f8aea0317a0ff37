"""Gradient sources behind one interface.

An estimator is a frozen object called as ``estimator(model, x, y, step) -> Estimate``: it runs
the model on a batch (``x``: ``[N, ...]``, ``y``: ``[N]`` labels) in training mode and returns
gradients aligned with ``model.trainable_variables``. The trainer hands them to
``optimizer.apply``; nothing else in the training loop depends on where they came from.
Factories are registered by name (:mod:`training.registry`): :func:`bp` here, ``glr`` in
:mod:`training.glr`, ``bang`` in :mod:`training.bang`.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Protocol

import keras
import tensorflow as tf

from training.losses import DIFFERENTIABLE, get_loss
from training.registry import register_estimator
from zoo.errors import UserInputError


class Estimate(NamedTuple):
    """What an estimator returns for one batch.

    Attributes:
        grads: list aligned with ``model.trainable_variables`` (same shapes).
        loss: scalar mean training loss of the batch.
        logits: ``[N, classes]`` outputs used for the training accuracy.
        logs: extra scalars to show in the progress bar (e.g. a relative standard error).
    """

    grads: list
    loss: tf.Tensor
    logits: tf.Tensor
    logs: dict


class GradientEstimator(Protocol):
    loss: str
    log_names: tuple  # names of the scalars in Estimate.logs (the trainer shows their running means)

    def __call__(self, model: keras.Model, x: tf.Tensor, y: tf.Tensor, step: tf.Tensor) -> Estimate: ...

    def config(self) -> dict: ...


@dataclasses.dataclass(frozen=True)
class Backprop:
    """Exact gradient of the mean loss of one (possibly noisy) forward pass, by backprop.

    With ``train_stddev > 0`` in the model's noisy layers this is noise-injected training
    (Qin and Vucinic 2018, "Noisy Computations during Inference: Harmful or Helpful?",
    section 3).
    """

    loss: str = "ce"
    log_names = ()

    def __post_init__(self):
        get_loss(self.loss)
        if self.loss not in DIFFERENTIABLE:
            raise UserInputError(f"loss {self.loss!r} has zero gradient almost everywhere; train it with --method glr")

    def __call__(self, model, x, y, step):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(get_loss(self.loss)(logits, y))
        grads = tape.gradient(loss, model.trainable_variables)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, model.trainable_variables)]
        return Estimate(grads, loss, logits, {})

    def config(self) -> dict:
        return {"method": "bp", **dataclasses.asdict(self)}


@register_estimator("bp")
def bp(*, loss: str = "ce") -> Backprop:
    """Backprop: the exact gradient of the mean loss (``"ce"`` or ``"hinge"``) of one noisy pass."""
    return Backprop(loss=loss)
