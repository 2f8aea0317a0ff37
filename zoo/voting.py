"""Noisy inference with voting: K noisy forward passes, predict the most frequent class."""
from __future__ import annotations

import keras
import tensorflow as tf

from zoo.memory import rows_per_chunk
from zoo.noise_context import noise_override


def vote_counts(model: keras.Model, images: tf.Tensor, votes, stddev=None, max_rows: int | None = None) -> tf.Tensor:
    """Class vote counts ``[N, classes]`` (int32) from ``votes`` noisy passes over ``images`` ``[N, ...]``.

    Each pass runs the model in inference mode (batch-norm moving statistics, no dropout) with
    noise of stddev ``stddev`` in every noisy layer (``None``: each layer's own ``infer_stddev``).
    Votes are batched: ``k`` copies of the batch go through the model at once, with ``k`` chosen
    so that ``k * N <= max_rows`` (memory bound); a ``tf.while_loop`` runs the ``ceil(votes / k)``
    chunks. Works eagerly and inside ``tf.function``/SavedModel signatures.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    votes = tf.cast(votes, tf.int32)
    n = tf.shape(images)[0]
    classes = model.output_shape[-1]
    max_rows = max_rows or rows_per_chunk(model)
    k = tf.clip_by_value(max_rows // tf.maximum(n, 1), 1, votes)
    reps = tf.concat([[k], tf.ones([tf.rank(images) - 1], tf.int32)], 0)
    tiled = tf.tile(images, reps)  # vote-major: row v * N + i is vote v of example i

    def body(done, counts):
        if stddev is None:
            logits = model(tiled, training=False)
        else:
            with noise_override(stddev):
                logits = model(tiled, training=False)
        pred = tf.reshape(tf.argmax(logits, -1, output_type=tf.int32), [k, n])
        valid = tf.cast(tf.range(k) < votes - done, tf.int32)[:, None, None]
        counts += tf.reduce_sum(tf.one_hot(pred, classes, dtype=tf.int32) * valid, axis=0)
        return done + k, counts

    _, counts = tf.while_loop(lambda done, c: done < votes, body,
                              (tf.constant(0), tf.zeros([n, classes], tf.int32)))
    return counts


def vote_predict(model: keras.Model, images, votes, stddev=None, max_rows: int | None = None) -> tf.Tensor:
    """Majority class ``[N]`` (ties go to the lower class index)."""
    return tf.argmax(vote_counts(model, images, votes, stddev, max_rows), -1, output_type=tf.int32)
