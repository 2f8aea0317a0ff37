"""Gradients for models whose own gradient is zero almost everywhere (threshold, sign, staircase).

Two ways to attack a step-activation net with gradients that carry information:

* :func:`smoothed_model`: the same network and weights with each step replaced by a smooth
  stand-in (:func:`zoo.activations.smooth_surrogate`, e.g. ``threshold -> sigmoid:10``). Attacks
  take gradients on the stand-in and are scored on the real model (BPDA, Athalye et al. 2018).
* :func:`lr_input_gradient`: the likelihood-ratio gradient with respect to the input, i.e. the GLR
  estimator applied to a Gaussian noise layer on the input, ``x' = x + e``, ``e ~ N(0, s^2 I)``::

      grad_x E[L(x + e)] = E[(L(x + e) - b) e] / s^2

  with antithetic pairs ``(e, -e)`` and the pair-mean baseline ``b``. Forward passes only, so it
  works whatever the activation; all ``2 * samples`` draws per example go through one batched call.
"""
from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from zoo import activations


def has_step_activations(model: keras.Model) -> bool:
    """True if any layer of ``model`` uses a step-like activation (zero gradient a.e.)."""
    return any(activations.is_step_like(getattr(layer, "activation", None))
               for layer in model.layers if isinstance(getattr(layer, "activation", None), str))


def smoothed_model(model: keras.Model, slope: float = 10.0) -> keras.Model:
    """A copy of ``model`` with every step-like activation replaced by its smooth surrogate.

    The copy shares no variables with ``model`` but starts from the same weights (noise state
    included), so its noise-free outputs approach the original's as ``slope`` grows.
    """
    def clone(layer):
        config = layer.get_config()
        spec = config.get("activation")
        if isinstance(spec, str) and activations.is_step_like(spec):
            config["activation"] = activations.smooth_surrogate(spec, slope)
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def lr_input_gradient(fn: Callable, x: tf.Tensor, y: tf.Tensor, sigma: float = 0.05, samples: int = 32,
                      seed: int = 0) -> tf.Tensor:
    """Likelihood-ratio estimate of ``d CE(fn(x), y) / dx`` (shape of ``x``), forward passes only.

    Args:
        fn: images ``[N, ...]`` -> logits ``[N, classes]``.
        sigma: stddev of the input noise, pixel units; the estimate is of the gradient of the
            loss smoothed at that scale.
        samples: antithetic pairs per example (``2 * samples`` forward rows per example).
    """
    x = tf.convert_to_tensor(x, tf.float32)
    n = tf.shape(x)[0]
    shape = x.shape[1:]
    e = sigma * tf.random.stateless_normal([samples, n, *shape], seed=[seed, 7])
    probe = tf.concat([x[None] + e, x[None] - e], 0)
    labels = tf.tile(tf.cast(y, tf.int32), [2 * samples])
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=fn(tf.reshape(probe, [-1, *shape])))
    loss = tf.reshape(loss, [2, samples, n])
    # antithetic pair (e, -e): (L+ - L-) / 2 is L minus the pair-mean baseline, times e
    weight = (loss[0] - loss[1]) / 2.0
    weight = tf.reshape(weight, [samples, n] + [1] * len(shape))
    return tf.reduce_mean(weight * e, axis=0) / sigma**2


def lr_pgd(fn: Callable, x, y, eps: float, steps: int = 20, step_size: float | None = None, sigma: float = 0.05,
           samples: int = 32, seed: int = 0) -> tf.Tensor:
    """L-inf PGD driven by :func:`lr_input_gradient` (random start; signed steps; projection)."""
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.int64)
    step_size = step_size if step_size is not None else 2.5 * eps / max(steps, 1)
    rng = np.random.default_rng(seed)
    adv = tf.clip_by_value(x + tf.constant(rng.uniform(-eps, eps, x.shape), tf.float32), 0.0, 1.0)

    @tf.function
    def step(adv, t):
        g = lr_input_gradient(fn, adv, y, sigma, samples, seed=seed * 1000 + t)
        adv = adv + step_size * tf.sign(g)
        return tf.clip_by_value(tf.clip_by_value(adv, x - eps, x + eps), 0.0, 1.0)

    for t in range(steps):
        adv = step(adv, tf.constant(t))
    return adv
