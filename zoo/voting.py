"""Noisy inference with voting: K noisy forward passes, predict the most frequent class."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from zoo.memory import rows_per_chunk
from zoo.noise_context import noise_override


def vote_counts(model: keras.Model, images: tf.Tensor, votes, stddev=None, max_rows: int | None = None) -> tf.Tensor:
    """Class vote counts ``[N, classes]`` (int32) from ``votes`` noisy passes over ``images`` ``[N, ...]``.

    Each pass runs the model in inference mode (batch-norm moving statistics, no dropout) with
    noise of stddev ``stddev`` in every noisy layer (``None``: each layer's own ``infer_stddev``).
    The ``votes * N`` (vote, example) pairs are batched: row ``r`` is vote ``r // N`` of example
    ``r % N``, and a ``tf.while_loop`` feeds them through the model ``max_rows`` at a time (the
    memory bound), however large ``N`` or ``votes``. Works eagerly and inside
    ``tf.function``/SavedModel signatures.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    votes = tf.cast(votes, tf.int32)
    n = tf.shape(images)[0]
    classes = model.output_shape[-1]
    chunk = tf.constant(max_rows or rows_per_chunk(model), tf.int32)
    total = votes * n

    def body(start, counts):
        rows = tf.range(start, tf.minimum(start + chunk, total))
        example = rows % n
        batch = tf.gather(images, example)
        if stddev is None:
            logits = model(batch, training=False)
        else:
            with noise_override(stddev):
                logits = model(batch, training=False)
        pred = tf.argmax(logits, -1, output_type=tf.int32)
        counts = tf.tensor_scatter_nd_add(counts, tf.stack([example, pred], 1), tf.ones_like(pred))
        return start + chunk, counts

    _, counts = tf.while_loop(lambda start, c: start < total, body,
                              (tf.constant(0), tf.zeros([n, classes], tf.int32)))
    return counts


def vote_predict(model: keras.Model, images, votes, stddev=None, max_rows: int | None = None) -> tf.Tensor:
    """Majority class ``[N]`` (ties go to the lower class index)."""
    return tf.argmax(vote_counts(model, images, votes, stddev, max_rows), -1, output_type=tf.int32)


def smoothed_predict(counts, alpha: float = 0.05):
    """Randomized-smoothing style prediction from vote counts: abstain when unsure.

    Cohen et al. (2019) PREDICT: with ``n_a``, ``n_b`` the two largest counts of a row of
    ``counts`` (``[N, classes]``), return the top class if a two-sided binomial test of
    ``n_a`` against ``Binomial(n_a + n_b, 1/2)`` rejects at level ``alpha``, else ``-1`` (abstain).
    The probability of returning a class other than the smoothed classifier's is at most ``alpha``.
    Returns an int array ``[N]``.
    """
    from scipy import stats  # lazy: keeps scipy out of the serving/export import path

    counts = np.asarray(counts)
    top2 = np.sort(counts, axis=-1)[:, -2:]
    n_b, n_a = top2[:, 0], top2[:, 1]
    p = np.minimum(1.0, 2 * stats.binom.sf(n_a - 1, n_a + n_b, 0.5))
    pred = counts.argmax(-1)
    return np.where(p <= alpha, pred, -1)
