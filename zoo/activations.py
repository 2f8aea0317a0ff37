"""Activations, including the discontinuous ones that only forward-only training can train.

An activation is named by a short spec string so that it serializes as plain config:

======================  ==================================================  ==============
spec                    function                                            derivative
======================  ==================================================  ==============
``"linear"``            ``v``                                               1
``"relu"``              ``max(v, 0)``                                       step
``"sigmoid"``           ``1 / (1 + exp(-v))``                               smooth
``"sigmoid:a"``         ``1 / (1 + exp(-a v))`` (slope ``a``)               smooth
``"threshold"``         ``1[v > 0]`` (Heaviside step)                       0 a.e.
``"sign"``              ``sign(v)`` in {-1, 0, 1}                           0 a.e.
``"staircase:k"``       ``floor(k * clip(v, 0, 1)) / k`` (k-level quantizer)  0 a.e.
``"tanh:a"``            ``tanh(a v)``                                       smooth
``"ramp"``              ``clip(v, 0, 1)``                                   0 or 1
======================  ==================================================  ==============

The step-like functions have zero gradient almost everywhere: backprop cannot train them and
gradient attacks on them see "blank" gradients (gradient masking, not robustness).
"""
from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf

from zoo.errors import UserInputError


@keras.saving.register_keras_serializable(package="glrzoo")
def threshold(v):
    """Heaviside step ``1[v > 0]``; same shape and dtype as ``v``."""
    return tf.cast(v > 0, v.dtype)


@keras.saving.register_keras_serializable(package="glrzoo")
def sign(v):
    """``sign(v)``, values in {-1, 0, 1}."""
    return tf.sign(v)


def sigmoid_slope(a: float) -> Callable:
    """Sigmoid with slope ``a``: ``1 / (1 + exp(-a v))``."""
    a = float(a)

    def f(v):
        return tf.sigmoid(a * v)

    return f


def staircase(levels: int) -> Callable:
    """Uniform quantizer of ``clip(v, 0, 1)`` to ``levels`` steps: ``floor(k v) / k``."""
    k = float(levels)

    def f(v):
        return tf.floor(tf.clip_by_value(v, 0.0, 1.0 - 1e-7) * k) / k

    return f


def tanh_slope(a: float) -> Callable:
    """``tanh(a v)``: a smooth stand-in for ``sign`` (slope ``a`` at 0)."""
    a = float(a)

    def f(v):
        return tf.tanh(a * v)

    return f


_SIMPLE = {
    "linear": lambda v: v,
    "ramp": lambda v: tf.clip_by_value(v, 0.0, 1.0),
    "tanh": tf.tanh,
    "relu": tf.nn.relu,
    "sigmoid": tf.sigmoid,
    "threshold": threshold,
    "step": threshold,
    "sign": sign,
}
_PARAMETRIC = {"sigmoid": sigmoid_slope, "tanh": tanh_slope, "staircase": staircase}
SMOOTH = ("linear", "relu", "sigmoid", "tanh", "ramp")
NAMES = ("linear", "relu", "sigmoid", "sigmoid:A", "tanh", "tanh:A", "ramp", "threshold", "sign", "staircase:K")


def get(spec: str | None) -> Callable:
    """Return the function named by ``spec`` (see the module table); ``None`` means linear."""
    if spec is None:
        return _SIMPLE["linear"]
    if not isinstance(spec, str):
        raise UserInputError(f"activation must be a spec string such as 'relu' or 'sigmoid:4', got {spec!r}")
    name, _, arg = spec.partition(":")
    if arg:
        if name not in _PARAMETRIC:
            raise UserInputError(f"activation {name!r} takes no parameter; choose one of {', '.join(NAMES)}")
        try:
            value = float(arg) if name in ("sigmoid", "tanh") else int(arg)
        except ValueError:
            raise UserInputError(f"bad parameter in activation {spec!r}; e.g. 'sigmoid:4' or 'staircase:8'") from None
        if value <= 0:
            raise UserInputError(f"activation parameter must be positive in {spec!r}")
        return _PARAMETRIC[name](value)
    if name == "staircase":
        return staircase(4)
    if name not in _SIMPLE:
        raise UserInputError(f"unknown activation {spec!r}; choose one of {', '.join(NAMES)}")
    return _SIMPLE[name]


def is_step_like(spec: str | None) -> bool:
    """True for activations whose derivative is zero almost everywhere."""
    return (spec or "linear").partition(":")[0] in ("threshold", "step", "sign", "staircase")


def smooth_surrogate(spec: str | None, slope: float = 10.0) -> str | None:
    """A differentiable stand-in for a step-like activation, for smoothed-gradient attacks.

    ``threshold -> sigmoid:slope``, ``sign -> tanh:slope/2`` (both tend to the step as the slope
    grows), ``staircase -> ramp`` (the straight-through estimator's identity on [0, 1]). Smooth
    specs are returned unchanged.
    """
    name = (spec or "linear").partition(":")[0]
    if name in ("threshold", "step"):
        return f"sigmoid:{slope:g}"
    if name == "sign":
        return f"tanh:{slope / 2:g}"
    if name == "staircase":
        return "ramp"
    return spec
