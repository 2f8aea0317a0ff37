"""Gaussian noise read from a shared table at random offsets: cheap noise for noisy voting.

Drawing a fresh Gaussian for every activation of every vote is what makes noisy voting expensive
on a CPU: TensorFlow's Philox normal for ``cnn6``'s 75,000 activations per example costs more than
the network's arithmetic. Salimans, Ho, Chen, Sidor and Sutskever (2017, "Evolution Strategies as a
Scalable Alternative to Reinforcement Learning", section 2.1) draw one large block of Gaussian noise
once and give each perturbation a random offset into it. :func:`table_normal` does the same per row:

* ``table`` is ``T ~ N(0, 1)^M`` (:func:`draw_table`; ``M`` from :func:`table_size`: room for 1,024
  rows of the widest layer, at most :data:`TABLE_SIZE`, 16 MiB), drawn once per voting call from
  the first noisy layer's seed;
* a layer's noise ``[rows, *feature_shape]`` gives each row one contiguous run of the table,
  ``F = prod(feature_shape)`` values starting at a random offset (a multiple of the block ``B``,
  the trailing feature dimensions after the first: one image row of a conv map, or a whole dense
  row; the run wraps around the end of the table).

What stays exact and what does not:

* every row's noise is ``F`` *distinct* table entries, so marginally it is exactly i.i.d. N(0, 1),
  as the noise model says; the votes of one example keep exactly the vote distribution of
  independent noise;
* two rows (two votes, or two examples) read overlapping runs with probability about
  ``2 F / M`` (a ``cnn6`` conv layer: 1.2%), and then share values at *shifted* positions; the
  same run (the same noise on the same units) has probability ``B / M`` (0.02%). That weak
  dependence between votes is the price of the speed; ``noise_source="exact"`` in
  :func:`zoo.voting.vote_counts` draws independent noise instead.

Reading the table is a gather of contiguous blocks (a memory copy): no random-number arithmetic per
activation, and, compiled with XLA, it fuses into the multiply that applies it.
"""
from __future__ import annotations

import math

import tensorflow as tf

TABLE_SIZE = 1 << 22  # 4 Mi floats, 16 MiB: drawn in about 50 ms on one CPU core
MIN_BLOCKS_PER_ROW = 8  # the table must hold at least this many rows' worth of noise, else exact draws


MIN_TABLE_SIZE = 1 << 16  # 256 KiB
ROWS_PER_TABLE = 1024  # a table holds this many rows of the widest layer's noise, up to TABLE_SIZE


def table_size(widest: int | None) -> int:
    """Table length for a model whose widest noisy layer has ``widest`` values per example: room for
    :data:`ROWS_PER_TABLE` such rows (overlap probability of two rows about ``2 / 1024``), a power of
    two between :data:`MIN_TABLE_SIZE` and :data:`TABLE_SIZE` (``None``: the largest). A small
    model gets a small table, so drawing it does not cost more than the noise it replaces."""
    if not widest:
        return TABLE_SIZE
    return int(min(TABLE_SIZE, max(MIN_TABLE_SIZE, 1 << math.ceil(math.log2(ROWS_PER_TABLE * widest)))))


def draw_table(seed: tf.Tensor, size: int = TABLE_SIZE, dtype=tf.float32) -> tf.Tensor:
    """The table: ``size`` i.i.d. N(0, 1) values ``[size]`` from stateless seed ``seed`` (``[2]`` int)."""
    return tf.random.stateless_normal([size], seed, dtype=dtype)


def block_size(feature_shape: tuple) -> int:
    """Values per table block for noise of ``[rows, *feature_shape]``: the trailing dims after the
    first (``W * C`` of an ``[H, W, C]`` map), or all of them for a vector."""
    dims = [int(d) for d in feature_shape]
    return int(math.prod(dims[1:])) if len(dims) > 1 else int(dims[0])


def fits(table_size: int, feature_shape: tuple) -> bool:
    """True when the table holds at least :data:`MIN_BLOCKS_PER_ROW` rows' worth of noise."""
    if any(d is None for d in feature_shape):
        return False
    return table_size >= MIN_BLOCKS_PER_ROW * int(math.prod(int(d) for d in feature_shape))


def table_normal(table: tf.Tensor, rows: tf.Tensor, feature_shape: tuple, seed: tf.Tensor) -> tf.Tensor:
    """Standard-normal noise ``[rows, *feature_shape]`` read from ``table`` at random offsets.

    Args:
        table: ``[M]`` i.i.d. N(0, 1) (:func:`draw_table`).
        rows: number of rows (scalar int tensor).
        feature_shape: static shape of one row's noise, e.g. ``(28, 28, 32)``; must :func:`fit`.
        seed: stateless seed ``[2]`` (int64) of the offsets.

    Row ``r`` holds ``table[(o_r * B + j) mod (K * B)]`` for ``j < F``, with ``o_r`` uniform over the
    ``K = M // B`` blocks (``B`` = :func:`block_size`).
    """
    b = block_size(feature_shape)
    per_row = int(math.prod(int(d) for d in feature_shape)) // b
    blocks = int(table.shape[0]) // b
    offsets = tf.random.stateless_uniform(tf.reshape(rows, [1]), seed, 0, blocks, dtype=tf.int32)
    index = (offsets[:, None] + tf.range(per_row, dtype=tf.int32)[None, :]) % blocks  # [rows, per_row]
    grid = tf.reshape(table[:blocks * b], [blocks, b])
    return tf.reshape(tf.gather(grid, index), tf.concat([tf.reshape(rows, [1]), list(feature_shape)], 0))


__all__ = ["TABLE_SIZE", "block_size", "draw_table", "fits", "table_normal", "table_size"]
