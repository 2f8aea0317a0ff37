"""Input pipelines whose order is a pure function of (seed, epoch), so a resumed run sees the same batches."""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def epoch_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, start_epoch: int,
                  epochs: int) -> tuple[tf.data.Dataset, int]:
    """Batches for epochs ``start_epoch .. epochs - 1``, shuffled per epoch with seed ``(seed, epoch)``.

    Returns the dataset and the number of steps per epoch (the last partial batch is kept).
    Use with ``fit(..., initial_epoch=start_epoch, epochs=epochs, steps_per_epoch=steps)``.
    """
    n = len(x)
    steps = -(-n // batch_size)
    xs, ys = tf.constant(x), tf.constant(y)

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    ds = tf.data.Dataset.range(start_epoch, max(epochs, start_epoch)).flat_map(one_epoch)
    ds = ds.map(lambda idx: (tf.gather(xs, idx), tf.gather(ys, idx)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(2), steps
