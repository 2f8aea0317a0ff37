"""Noisy inference with voting: K noisy forward passes, predict the most frequent class.

Voting at its compute floor. ``K`` votes need ``K`` noisy passes, but not ``K`` copies of the work
that comes before the first noise: that part of the network (the noise-free layers in front of the
first noisy layer, and that layer's own matrix product, bias or batch norm) is the same for every
vote, so :func:`vote_counts` computes it once per example and replicates only its output; noise
and everything after it run once per vote. For a model whose first noisy layer is a
:class:`zoo.noisy_dense.NoisyDense` or :class:`zoo.noisy_conv2d.NoisyConv2D` the split is exact:
the same rows, the same seeds and so the same noise as ``K`` full passes. Eager calls run one
compiled graph per model and input shape.

Cheap noise. On a CPU, drawing a fresh Gaussian for every activation of every vote costs more than
the arithmetic of a pass (``cnn6``: 75,000 activations per example). Called eagerly, voting reads
the noise from one table drawn per call at random offsets (:mod:`zoo.noise_table`, after Salimans
et al. 2017) and compiles the per-vote part with XLA, which fuses the table reads, the noise and
the activations into single passes over memory (not for DenseNet-style concatenations, which run
faster on TensorFlow's own kernels). Every pass folds batch norm into the kernels (inference
statistics are constants). ``benchmarks/bench_voting.py`` prints the ratio to one plain pass.
"""
from __future__ import annotations

import contextlib
import dataclasses
import numbers
import weakref
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from zoo.errors import UserInputError
from zoo.memory import rows_per_chunk
from zoo.noise_context import folded_batchnorm, noise_override

VOTES_CAP = 10_000  # the majority of 10,000 votes is already known to about +-1% of the vote share


def check_votes(votes):
    """``votes`` as an int in ``[1, VOTES_CAP]`` (a symbolic tensor passes through as int32).

    Refuses zero, negative, fractional, boolean and huge counts with :class:`UserInputError`
    naming the fix.
    """
    if tf.is_tensor(votes) and not tf.executing_eagerly():
        return tf.cast(votes, tf.int32)  # traced (e.g. a SavedModel signature): checked in-graph by the caller
    if tf.is_tensor(votes) or isinstance(votes, np.ndarray):
        votes = np.asarray(votes).item() if np.size(votes) == 1 else votes
    if isinstance(votes, (bool, np.bool_)):
        raise UserInputError(f"votes must be a whole number of noisy passes, got {votes!r}; pass e.g. votes=20")
    if not isinstance(votes, numbers.Integral):
        if isinstance(votes, numbers.Real) and float(votes).is_integer():
            votes = int(votes)
        else:
            raise UserInputError(f"votes must be a whole number of noisy passes, got {votes!r}; pass e.g. votes=20")
    votes = int(votes)
    if votes < 1:
        raise UserInputError(f"votes must be >= 1 (each vote is one noisy pass), got {votes}; pass votes=1 for a "
                             "single noisy pass or e.g. votes=20 for a majority vote")
    if votes > VOTES_CAP:
        raise UserInputError(f"votes={votes:,} is above the cap of {VOTES_CAP:,} noisy passes per example; pass "
                             f"votes <= {VOTES_CAP:,} (more votes change the majority's share by well under 1%)")
    return votes


def _check_stddev(stddev):
    if stddev is None or tf.is_tensor(stddev):
        return stddev
    if not (isinstance(stddev, numbers.Real) and np.isfinite(stddev) and stddev >= 0):
        raise UserInputError(f"stddev must be a finite number >= 0 (or None for each layer's own), got {stddev!r}")
    return float(stddev)


# --------------------------------------------------------------------------- the split at the first noise
@dataclasses.dataclass
class _Split:
    """``model(x) == rest(layer.activate(layer.add_noise(base(x))))``, ``base`` free of noise.

    ``base`` runs once per example; ``head`` (noise and everything after) once per vote.
    """
    base: Callable[[tf.Tensor], tf.Tensor]
    head: Callable[[tf.Tensor], tf.Tensor]
    exact: bool  # True when base includes the first noisy layer's own matrix product


def _build_split(model: keras.Model) -> _Split | None:
    """The split of ``model`` at its first noisy layer, or ``None`` (no noisy layer, or a graph the
    split cannot express, e.g. a branch around the first noisy layer)."""
    from zoo.noise import noisy_layers
    from zoo.noisy_conv2d import NoisyConv2D
    from zoo.noisy_dense import NoisyDense

    layers = noisy_layers(model)
    if not layers or not isinstance(model, keras.Model):
        return None
    first = layers[0]
    try:
        prefix = keras.Model(model.inputs, first.input)
        if any(layer in layers for layer in prefix.layers):
            return None
        rest = None if first.output is model.outputs[0] else keras.Model(first.output, model.outputs[0])
    except Exception:  # not a functional chain through the first noisy layer
        return None

    def after(v):
        return v if rest is None else rest(v, training=False)

    if type(first) in (NoisyDense, NoisyConv2D):
        return _Split(base=lambda x: first.preactivation(prefix(x, training=False), False)[0],
                      head=lambda z: after(first.activate(first.add_noise(z, False, {"x": None}))), exact=True)
    return _Split(base=lambda x: prefix(x, training=False), head=lambda h: after(first(h, training=False)), exact=False)


_SPLITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _split(model) -> _Split | None:
    try:
        if model not in _SPLITS:
            _SPLITS[model] = _build_split(model)
        return _SPLITS[model]
    except TypeError:  # not weakly referenceable
        return _build_split(model)


NOISE_SOURCES = ("table", "exact")


def _tabled(model) -> bool:
    """True when every noisy layer draws through ``add_noise`` (so all its noise can come from a table)."""
    from zoo.noise import noisy_layers

    layers = noisy_layers(model)
    return bool(layers) and all(layer.table_noise for layer in layers)


def _widest(model) -> int | None:
    """Values per example of the widest noisy layer that reads the table (``None`` if unknown)."""
    from zoo.noise import noisy_layers

    try:
        sizes = [int(np.prod(layer.output.shape[1:])) for layer in noisy_layers(model) if layer.table_noise]
    except (AttributeError, TypeError, ValueError):  # a layer never called symbolically, or unknown dims
        return None
    return max(sizes) if sizes else None


def _count_loop(model, images, votes, stddev, chunk: int, reuse_prefix: bool, source: str = "exact",
                jit: bool = False) -> tf.Tensor:
    """Counts ``[N, classes]``: examples in blocks of ``max(1, chunk // votes)``; per block the base
    (the part before the first noise) once, then its ``votes * block`` rows, at most ``chunk`` per
    pass; row ``r`` of a block is vote ``r // block`` of its example ``r % block``.

    ``source="table"``: one noise table (:mod:`zoo.noise_table`) is drawn per call from the first
    noisy layer's seed and scaled once per layer (``1 + s T`` or ``s T``; one per noise kind under an
    override), and the layers read their noise from it. ``jit``: the per-vote part is
    compiled with XLA (one program per chunk shape), which fuses the table reads, the noise, batch
    norm and the activations into single passes over memory.
    """
    from zoo.noise import noisy_layers
    from zoo.noise_context import noise_table
    from zoo.noise_table import draw_table, table_size

    split = _split(model) if reuse_prefix else None
    base = split.base if split is not None else (lambda x: x)
    owners, tables = [], []  # layer ids, and the scaled table each reads (one per kind under an override)
    if source == "table":
        raw = draw_table(noisy_layers(model)[0].next_seed(), table_size(_widest(model)))
        shared_by_kind = {}
        with noise_override(stddev) if stddev is not None else contextlib.nullcontext():
            for layer in noisy_layers(model):
                if not layer.table_noise:
                    continue
                key = layer.noise if stddev is not None else id(layer)
                if key not in shared_by_kind:
                    shared_by_kind[key] = len(tables)
                    tables.append(layer.scaled_table(raw))
                owners.append((id(layer), shared_by_kind[key]))

    def head(shared, local, tables, stddev):
        rows = tf.gather(shared, local)  # inside the compiled part: XLA fuses the copy with the noise
        with contextlib.ExitStack() as stack:
            if tables:
                stack.enter_context(noise_table({owner: tables[i] for owner, i in owners}))
            if stddev is not None:
                stack.enter_context(noise_override(stddev))
            logits = split.head(rows) if split is not None else model(rows, training=False)
        return tf.argmax(logits, -1, output_type=tf.int32)

    if jit:
        head = tf.function(head, jit_compile=True, reduce_retracing=True)

    n = tf.shape(images)[0]
    classes = model.output_shape[-1]
    chunk_t = tf.constant(chunk, tf.int32)
    block = tf.maximum(1, chunk_t // votes)

    def outer(e0, counts):
        e1 = tf.minimum(e0 + block, n)
        size = e1 - e0
        shared = base(images[e0:e1])
        total = votes * size

        def inner(start, counts):
            local = tf.range(start, tf.minimum(start + chunk_t, total)) % size
            pred = head(shared, local, tables, stddev)
            return start + chunk_t, tf.tensor_scatter_nd_add(counts, tf.stack([e0 + local, pred], 1),
                                                             tf.ones_like(pred))

        _, counts = tf.while_loop(lambda start, c: start < total, inner, (tf.constant(0), counts))
        return e1, counts

    with folded_batchnorm():  # every pass, the shared part included, folds batch norm the same way
        _, counts = tf.while_loop(lambda e, c: e < n, outer, (tf.constant(0), tf.zeros([n, classes], tf.int32)))
    return counts


def _compiled(model, shape: tuple, chunk: int, with_stddev: bool, reuse_prefix: bool, source: str = "exact",
              jit: bool = False):
    """One traced graph per (model, input shape, chunk, stddev given or not, split, noise source, XLA)."""
    key = (shape, chunk, with_stddev, reuse_prefix, source, jit)
    try:
        cache = _COMPILED.setdefault(model, {})
    except TypeError:
        cache = {}
    if key not in cache:
        spec = [tf.TensorSpec([None, *shape], tf.float32), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float32)]

        def run(images, votes, stddev):
            return _count_loop(model, images, votes, stddev if with_stddev else None, chunk, reuse_prefix, source, jit)

        cache[key] = tf.function(run, input_signature=spec)
    return cache[key]


_NO_XLA: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # models whose per-vote part XLA refused


def _concatenates(model) -> bool:
    """True for a model with a ``Concatenate`` layer (DenseNet). Its per-vote part runs faster
    without XLA: XLA's CPU convolutions over the growing concatenated maps are slower than
    TensorFlow's oneDNN kernels, and there is little left for XLA's fusion once batch norm is folded
    (``benchmarks/bench_voting.py``: DenseNet 22.9x one plain pass with XLA, 20.3x without)."""
    return any(isinstance(layer, keras.layers.Concatenate) for layer in getattr(model, "layers", ()))


def _noise_free(model, stddev) -> bool:
    """True when no noisy layer will draw noise (eagerly known): every vote is the same pass."""
    from zoo.noise import noisy_layers

    if tf.is_tensor(stddev):
        return False
    if stddev is not None:
        return stddev == 0
    return all(float(layer.infer_stddev.numpy()) == 0 for layer in noisy_layers(model))


def vote_counts(model: keras.Model, images: tf.Tensor, votes, stddev=None, max_rows: int | None = None,
                reuse_prefix: bool = True, noise_source: str | None = None, jit: bool | None = None) -> tf.Tensor:
    """Class vote counts ``[N, classes]`` (int32) from ``votes`` noisy passes over ``images`` ``[N, ...]``.

    Each pass runs the model in inference mode (batch-norm moving statistics, no dropout) with
    noise of stddev ``stddev`` in every noisy layer (``None``: each layer's own ``infer_stddev``).
    The part of the network before the first noise is computed once per example and replicated
    (``reuse_prefix=False`` runs full passes instead; the counts are the same); the ``votes * N``
    rows go through a ``tf.while_loop`` ``max_rows`` at a time (the memory bound), however large
    ``N`` or ``votes``. A model whose noise is off votes once and multiplies. Works eagerly (one
    compiled graph per model and input shape) and inside ``tf.function``/SavedModel signatures.

    Args:
        votes: noisy passes per example, an integer in ``[1, VOTES_CAP]`` (10,000); anything else
            raises :class:`zoo.errors.UserInputError`.
        stddev: inference noise override (finite, >= 0) or ``None``.
        max_rows: rows per forward pass (default :func:`zoo.memory.rows_per_chunk`).
        noise_source: ``"table"``: each vote reads its Gaussian noise from one table drawn per call,
            at random offsets (Salimans et al. 2017; :mod:`zoo.noise_table` says what stays exact:
            every row's noise is exactly i.i.d. N(0, 1), rows overlap with small probability);
            ``"exact"``: independent draws for every activation of every vote. Default: ``"table"``
            when called eagerly on a model whose noisy layers all draw through ``add_noise`` (not
            the LSTM), else ``"exact"`` (inside a ``tf.function``, e.g. the exported signature).
        jit: compile the per-vote part with XLA. Default: with the table, when called eagerly,
            except for models with concatenations (DenseNet), which run faster on TensorFlow's own
            kernels; if XLA refuses the model, the call falls back to the plain graph (and
            remembers). The counts are the same either way.

    Every pass folds batch norm into its layer's kernel (:func:`zoo.noise_context.folded_batchnorm`),
    the usual inference rewrite: the same outputs up to float rounding, one convolution and a bias
    add instead of a convolution and four element-wise passes.
    """
    votes = check_votes(votes)
    stddev = _check_stddev(stddev)
    if noise_source is not None and noise_source not in NOISE_SOURCES:
        raise UserInputError(f"noise_source must be one of {', '.join(NOISE_SOURCES)}, got {noise_source!r}")
    images = tf.convert_to_tensor(images, tf.float32)
    chunk = int(max_rows or rows_per_chunk(model))
    if chunk < 1:
        raise UserInputError(f"max_rows must be >= 1, got {max_rows}")
    eager = tf.executing_eagerly()
    source = noise_source or ("table" if eager and _tabled(model) else "exact")
    if not eager:
        return _count_loop(model, images, votes, stddev, chunk, reuse_prefix, source, bool(jit))
    if _noise_free(model, stddev):  # deterministic: every vote is the same pass
        one = _compiled(model, tuple(images.shape[1:]), chunk, stddev is not None, reuse_prefix)(
            images, tf.constant(1, tf.int32), tf.constant(0.0 if stddev is None else stddev, tf.float32))
        return one * votes
    if stddev is None and source == "table":  # one scaled table for all layers when they agree
        from zoo.noise import noisy_layers
        own = {float(layer.infer_stddev.numpy()) for layer in noisy_layers(model)}
        if len(own) == 1:
            stddev = own.pop()
    if jit is None:
        try:
            jit = source == "table" and model not in _NO_XLA and not _concatenates(model)
        except TypeError:
            jit = False
    args = (images, tf.constant(votes, tf.int32), tf.constant(0.0 if stddev is None else stddev, tf.float32))
    shape = tuple(images.shape[1:])
    if jit:
        try:
            return _compiled(model, shape, chunk, stddev is not None, reuse_prefix, source, True)(*args)
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.InternalError):
            with contextlib.suppress(TypeError):  # XLA could not compile this model: the plain graph
                _NO_XLA[model] = True             # does the same work
    return _compiled(model, shape, chunk, stddev is not None, reuse_prefix, source, False)(*args)


def vote_predict(model: keras.Model, images, votes, stddev=None, max_rows: int | None = None) -> tf.Tensor:
    """Majority class ``[N]`` (ties go to the lower class index); ``votes`` in ``[1, VOTES_CAP]``."""
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
