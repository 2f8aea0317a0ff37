"""Trace-time contexts that change what the noisy layers do, without rebuilding a model.

Two seams live here:

* :func:`noise_override` replaces every noisy layer's standard deviation with one value (a
  Python float or a scalar tensor). The exported ``noisy_vote`` signature uses it so that the
  stddev is an *input* of the served function rather than state shared between requests.
* :func:`record_noise` turns a forward pass into a likelihood-ratio (GLR) pass: every noisy
  layer draws *estimator* noise ``e`` (Gaussian or Laplace, additive, on the pre-activation
  ``v = W x + b + e``), the first noisy layer replicates the batch ``R`` times, and each layer
  appends a :class:`NoiseRecord` holding its input and the noise it drew. An estimator then
  needs nothing but these records and the per-row loss.

Both are read when a layer's ``call`` is traced, so they work inside ``tf.function`` and
``model.fit`` as long as the ``with`` block encloses the traced call.
"""
from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import Any, Iterator, Mapping

import tensorflow as tf

from zoo.errors import UserInputError

_STATE = threading.local()


def _stack(name: str) -> list:
    if not hasattr(_STATE, name):
        setattr(_STATE, name, [])
    return getattr(_STATE, name)


@contextlib.contextmanager
def _pushed(name: str, item: Any) -> Iterator[Any]:
    """Push ``item`` on this thread's stack ``name`` for the block; yields ``item``."""
    stack = _stack(name)
    stack.append(item)
    try:
        yield item
    finally:
        stack.pop()


def _top(name: str) -> Any | None:
    stack = _stack(name)
    return stack[-1] if stack else None


# --------------------------------------------------------------------------- override
@contextlib.contextmanager
def noise_override(stddev: Any) -> Iterator[None]:
    """Use ``stddev`` for every noisy layer called inside the block (training or not).

    Args:
        stddev: float or scalar float tensor, >= 0. For additive noise it is the noise
            standard deviation in the units of the pre-activation; for multiplicative noise
            it is the relative stddev (``sigma = 1`` is 0 dB SNR).
    """
    with _pushed("override", stddev):
        yield


def current_override() -> Any | None:
    return _top("override")


@contextlib.contextmanager
def noise_table(tables: Mapping[int, Any]) -> Iterator[None]:
    """Inference noise of the noisy layers called inside the block is read from their scaled table
    in ``tables`` (``{id(layer): [M]}``: ``1 + s T`` for multiplicative noise, ``s T`` for additive,
    ``T`` i.i.d. N(0, 1), ``s`` the layer's stddev in force) at random offsets instead of drawn
    afresh (:mod:`zoo.noise_table`); layers without a table, or whose rows do not fit it, draw as
    usual. Used by noisy voting; training noise is never tabled."""
    with _pushed("table", tables):
        yield


def current_noise_table() -> Mapping[int, Any] | None:
    return _top("table")


@contextlib.contextmanager
def folded_batchnorm() -> Iterator[None]:
    """Inside the block, a noisy layer called in inference mode folds its batch norm (moving
    statistics) into its kernel and bias: ``BN(x K) = x (K a) + (beta - mean a)`` with
    ``a = gamma / sqrt(var + eps)``, the usual inference rewrite (e.g. TensorFlow Lite's). One
    convolution and a bias add replace the convolution and four element-wise passes; the values
    are the same up to float rounding. Used by noisy voting, whose passes all run inside it (the
    part before the first noise included), so its counts do not depend on how votes are split."""
    with _pushed("fold_bn", True):
        yield


def folding_batchnorm() -> bool:
    return bool(_top("fold_bn"))


# --------------------------------------------------------------------------- GLR recording
@dataclasses.dataclass
class NoiseRecord:
    """What one noisy layer saw and drew during a recorded forward pass.

    Attributes:
        layer: the noisy layer.
        inputs: dict of tensors the layer needs for its local derivative (for a dense layer
            ``{"x": [rows, in]}``); ``rows`` is ``N`` if ``replicated_here`` else ``N * R``.
        noise: the estimator noise ``e`` added to the pre-activation, ``[N * R, ...]``.
        replicated_here: True when this layer received the un-replicated batch and tiled its
            pre-activation ``R`` times (so its input-side work was done once, not ``R`` times).
        sigma: the noise scale used (Gaussian stddev or Laplace scale ``b``).
    """

    layer: Any
    inputs: dict
    noise: tf.Tensor
    replicated_here: bool
    sigma: float


class NoiseRecorder:
    """Collects :class:`NoiseRecord` s from one forward pass (see :func:`record_noise`).

    Args:
        replications: ``R``, noise draws per example. Rows are example-major: row
            ``n * R + r`` is replication ``r`` of example ``n``.
        distribution: ``"gaussian"`` (score ``e / sigma^2``) or ``"laplace"`` (score
            ``sign(e) / b``).
        sigma: default noise scale for every layer.
        layer_sigma: optional per-layer-name scale overriding ``sigma``.
        antithetic: draw ``R / 2`` noises and use ``(e, -e)`` pairs (``R`` must be even).
        qmc: randomized quasi-Monte Carlo along the replication axis (see ``sample``).
        shared: every example of the batch gets the same ``R`` noises (replication ``r`` of every
            example uses one draw): ``R x units`` random numbers per layer instead of
            ``N x R x units``. Each example's noise keeps its exact density, so every term of the
            estimate keeps its mean (unbiased); only the correlation across examples, hence the
            variance, changes (Salimans et al. 2017 share noise across workers the same way).
        active_layer: optional scalar int tensor; when given, only the noisy layer whose
            position (in call order) equals it draws noise (layer-wise injection).
    """

    def __init__(
        self,
        replications: int = 1,
        distribution: str = "gaussian",
        sigma: float = 1.0,
        layer_sigma: Mapping[str, float] | None = None,
        antithetic: bool = False,
        qmc: bool = False,
        active_layer: Any = None,
        shared: bool = False,
    ):
        if distribution not in ("gaussian", "laplace"):
            raise UserInputError(f"unknown estimator noise {distribution!r}; use 'gaussian' or 'laplace'")
        if antithetic and replications % 2:
            raise UserInputError(f"antithetic pairs need an even number of replications, got {replications}")
        self.replications = int(replications)
        self.distribution = distribution
        self.sigma = float(sigma)
        self.layer_sigma = dict(layer_sigma or {})
        self.antithetic = antithetic
        self.qmc = qmc
        self.shared = shared
        self.active_layer = active_layer
        self.records: list[NoiseRecord] = []
        self.replicated = False

    def sigma_for(self, layer) -> float:
        return float(self.layer_sigma.get(layer.name, self.sigma))

    def gate(self) -> tf.Tensor | None:
        """1.0 if the layer about to record is the active one (layer-wise mode), else 0.0."""
        if self.active_layer is None:
            return None
        return tf.cast(tf.equal(self.active_layer, len(self.records)), tf.float32)

    def sample(self, per_example_shape, batch, seed) -> tf.Tensor:
        """Estimator noise of shape ``[batch * R, *per_example_shape]`` with unit scale.

        ``seed`` is a stateless seed ``[2]``. Antithetic: replications ``r`` and ``r + R/2`` are
        negatives. QMC: for every coordinate the ``R`` draws are ``F^-1((pi(r) + u_r) / R)`` with
        ``pi`` a random permutation and ``u_r`` uniform: one draw in each of ``R`` equal-probability
        strata (randomized stratified / Latin-hypercube sampling along the replications, the
        one-dimensional form of scrambled Sobol points). Every draw is still marginally exact,
        so the estimator stays unbiased; replications of one example become dependent.
        """
        return replica_slice(lambda rows: self._sample_rows(per_example_shape, rows, seed), batch * self.replications)

    def _sample_rows(self, per_example_shape, rows, seed) -> tf.Tensor:
        R = self.replications
        batch = rows // R
        draws = R // 2 if self.antithetic else R
        shape = tf.concat([[1 if self.shared else batch, draws], tf.constant(per_example_shape, tf.int32)], 0)
        if self.qmc:
            u = tf.random.stateless_uniform(shape, seed)
            seed2 = tf.random.experimental.stateless_fold_in(seed, 7)
            keys = tf.random.stateless_uniform(shape, seed2)
            strata = tf.cast(tf.argsort(keys, axis=1), tf.float32)
            u = (strata + u) / float(draws)
            u = tf.clip_by_value(u, 1e-7, 1.0 - 1e-7)
            if self.distribution == "gaussian":
                e = tf.math.ndtri(u)
            else:
                c = u - 0.5
                e = -tf.sign(c) * tf.math.log1p(-2.0 * tf.abs(c))
        elif self.distribution == "gaussian":
            e = tf.random.stateless_normal(shape, seed)
        else:
            c = tf.random.stateless_uniform(shape, seed, minval=-0.5, maxval=0.5)
            c = tf.clip_by_value(c, -0.5 + 1e-7, 0.5 - 1e-7)
            e = -tf.sign(c) * tf.math.log1p(-2.0 * tf.abs(c))
        if self.antithetic:
            e = tf.concat([e, -e], axis=1)
        if self.shared:  # [1, R, ...] -> [batch, R, ...]: the same R noises for every example
            e = tf.broadcast_to(e, tf.concat([[batch], tf.shape(e)[1:]], 0))
        return tf.reshape(e, tf.concat([[batch * R], tf.constant(per_example_shape, tf.int32)], 0))

    def score(self, record: NoiseRecord) -> tf.Tensor:
        """d log p(e) / d e with the sign flipped so that d/dtheta E[L] = E[L * dv/dtheta * score]."""
        if self.distribution == "gaussian":
            return record.noise / (record.sigma**2)
        return tf.sign(record.noise) / record.sigma


@contextlib.contextmanager
def record_noise(**kwargs) -> Iterator[NoiseRecorder]:
    """Record the noisy layers of a forward pass for a likelihood-ratio estimator.

    Example:
        >>> with record_noise(replications=10, sigma=1.0) as rec:
        ...     logits = model(x, training=True)       # [N * 10, classes]
        >>> [r.layer.name for r in rec.records]
    """
    with _pushed("recorder", NoiseRecorder(**kwargs)) as rec:
        yield rec


def current_recorder() -> NoiseRecorder | None:
    return _top("recorder")


def replica_slice(draw, rows) -> tf.Tensor:
    """``draw(rows)`` on one device; under a ``tf.distribute`` replica context with ``k`` replicas,
    ``draw(k * rows)`` sliced to this replica's rows, so each example gets the same noise as in a
    single-device run (exact when the global batch splits evenly across replicas)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return draw(rows)
    k, rid = ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group
    return draw(rows * k)[rid * rows:(rid + 1) * rows]


def repeat_rows(t: tf.Tensor, r: int) -> tf.Tensor:
    """``[N, ...] -> [N * r, ...]`` with each row repeated ``r`` times consecutively."""
    return t if r == 1 else tf.repeat(t, r, axis=0)


def sum_replications(t: tf.Tensor, r: int) -> tf.Tensor:
    """``[N * r, ...] -> [N, ...]``: sum of each example's ``r`` consecutive rows."""
    if r == 1:
        return t
    shape = tf.shape(t)
    return tf.reduce_sum(tf.reshape(t, tf.concat([[-1, r], shape[1:]], 0)), axis=1)


# --------------------------------------------------------------------------- local GLR (clean pass)
@dataclasses.dataclass
class LocalRecord:
    """One noisy layer's clean pre-activation and local-derivative inputs (see :func:`record_local`).

    Attributes:
        layer: the noisy layer.
        inputs: tensors the layer's ``glr_gradients`` needs (``{"x": ...}``, batch-norm ``x_hat``
            and ``bn_scale``; for an LSTM also the clean ``h_prev`` and ``c_prev`` of every step).
        preactivation: the clean pre-activation ``z`` (``[N, ...]``; LSTM: ``[N, T, 4 units]``),
            batch statistics held constant.
    """

    layer: Any
    inputs: dict
    preactivation: tf.Tensor


@contextlib.contextmanager
def record_local() -> Iterator[list]:
    """Run a *clean* forward pass and collect a :class:`LocalRecord` from every noisy layer.

    Inside the block noisy layers add no noise at all (neither training noise nor estimator
    noise): every layer receives the clean output of the layer below, which is the input that a
    block-local objective treats as given. A local likelihood-ratio estimator
    (:mod:`training.glr_local`) then perturbs each recorded pre-activation by itself.
    """
    with _pushed("local", []) as records:
        yield records


def current_local_recorder() -> list | None:
    return _top("local")


# --------------------------------------------------------------------------- layer outputs (BANG)
@dataclasses.dataclass
class OutputRecord:
    """A noisy layer's noisy pre-activation ``v`` and output ``y = phi(v)`` from one forward pass."""

    layer: Any
    preactivation: tf.Tensor
    output: tf.Tensor


@contextlib.contextmanager
def record_outputs() -> Iterator[list]:
    """Collect an :class:`OutputRecord` from every dense/conv noisy layer called inside the block.

    Per-layer rescaling estimators (BANG) differentiate the loss with respect to these tensors.
    """
    with _pushed("outputs", []) as records:
        yield records


def current_output_recorder() -> list | None:
    return _top("outputs")
