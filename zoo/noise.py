"""Inspect and change the noise of a built (or trained, or compiled) model in place."""
from __future__ import annotations

import math
import numbers

import keras

from zoo.errors import UserInputError
from zoo.noisy_base import NoisyLayer


def noisy_layers(model: keras.Model) -> list[NoisyLayer]:
    """Every :class:`NoisyLayer` of ``model`` (nested models included), in call order."""
    return [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, NoisyLayer)]


def batchnorm_layers(model: keras.Model) -> list[NoisyLayer]:
    """The noisy layers of ``model`` that normalize their pre-activation with batch norm, in call order."""
    return [layer for layer in noisy_layers(model) if layer.batchnorm_enabled]


def set_noise(model: keras.Model, *, train_stddev: float | None = None,
              infer_stddev: float | None = None) -> None:
    """Assign new noise stddevs to every noisy layer of ``model`` (no rebuild, no retrace needed).

    Args:
        train_stddev: stddev used with ``training=True``; ``None`` leaves it.
        infer_stddev: stddev used at inference; ``None`` leaves it.
    """
    for label, value in (("train_stddev", train_stddev), ("infer_stddev", infer_stddev)):
        if value is not None and not (isinstance(value, numbers.Real) and 0 <= value < math.inf):
            raise UserInputError(f"{label} must be a finite number >= 0, got {value!r}")
    for layer in noisy_layers(model):
        if train_stddev is not None:
            layer.train_stddev.assign(float(train_stddev))
        if infer_stddev is not None:
            layer.infer_stddev.assign(float(infer_stddev))


def restart_noise(model: keras.Model, stream: int) -> None:
    """Put every noisy layer's generator at the start of stream ``stream`` (its counter; the layer's
    own seed stays), so what follows draws the same noise whatever ran before: an evaluation row
    computed after a resume equals the uninterrupted run's. ``stream``: an integer in [0, 2^62)."""
    for layer in noisy_layers(model):
        seed = int(layer.rng_state.numpy()[0])
        layer.rng_state.assign([seed, int(stream) << 20])  # 2^20 draws per stream before the next one


def noise_settings(model: keras.Model) -> dict:
    """``{"noise": kind, "train_stddev": s, "infer_stddev": s}`` of the first noisy layer."""
    layers = noisy_layers(model)
    if not layers:
        return {"noise": None, "train_stddev": 0.0, "infer_stddev": 0.0}
    first = layers[0]
    return {"noise": first.noise, "train_stddev": float(first.train_stddev.numpy()),
            "infer_stddev": float(first.infer_stddev.numpy())}
