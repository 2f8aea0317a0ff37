"""Per-example losses ``L(logits, y) -> [N]``, including ones with no useful derivative.

``logits`` is ``[N, classes]`` (float), ``y`` is ``[N]`` integer labels. The GLR estimator
only evaluates these, never differentiates them, so the 0-1 loss and the hinge train too.
"""
from __future__ import annotations

from typing import Callable

import tensorflow as tf

from zoo.errors import UserInputError


def cross_entropy(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Softmax cross-entropy ``-log softmax(logits)[y]`` in nats."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32), logits=logits)


def zero_one(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """0-1 loss ``1[argmax(logits) != y]`` (its derivative is zero almost everywhere)."""
    return tf.cast(tf.not_equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(y, tf.int32)), logits.dtype)


def logit_margin(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """``logit_y - max_{k != y} logit_k`` per example ``[N]``: negative once misclassified (the
    margin the hinge penalises and SPSA minimises)."""
    y = tf.cast(y, tf.int32)
    true = tf.gather(logits, y, batch_dims=1)
    other = tf.reduce_max(logits - 1e9 * tf.one_hot(y, tf.shape(logits)[-1], dtype=logits.dtype), -1)
    return true - other


def hinge(logits: tf.Tensor, y: tf.Tensor, margin: float = 1.0) -> tf.Tensor:
    """Crammer-Singer multi-class hinge ``max(0, margin - (logit_y - max_{k != y} logit_k))``."""
    return tf.nn.relu(margin - logit_margin(logits, y))


LOSSES: dict[str, Callable] = {"ce": cross_entropy, "zero_one": zero_one, "hinge": hinge}
DIFFERENTIABLE = ("ce", "hinge")


def get_loss(name: str) -> Callable:
    if name not in LOSSES:
        raise UserInputError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]
