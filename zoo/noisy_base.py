"""Shared machinery of the noisy matrix-multiply layers (dense, conv, LSTM).

Every noisy layer computes a pre-activation ``z`` (a matrix multiply, optionally batch-
normalized), adds noise, then applies its activation::

    additive:        v = z + s * n           n ~ N(0, 1)
    multiplicative:  v = z * (1 + s * n)     (SNR = 1 / s^2; s = 1 is 0 dB)
    y = phi(v)

``s`` is ``train_stddev`` when called with ``training=True`` and ``infer_stddev`` otherwise.
Both are non-trainable variables, so they can be changed on a trained or compiled model
(:func:`set_noise`) and they are saved with the weights. The random state is a weight too
(``rng_state``: stateless seed ``[seed, counter]``), so noise is reproducible, survives a
checkpoint/resume, and is tracked by SavedModel exports (TF Serving's loader needs that).

Inside :func:`zoo.noise_context.record_noise` the layer instead adds the *estimator's*
additive noise and records what a likelihood-ratio estimator needs (see ``glr_gradients``).
"""
from __future__ import annotations

import math
import numbers
import random

import keras
import tensorflow as tf

from zoo import activations, noise_table
from zoo.errors import UserInputError
from zoo.noise_context import (
    LocalRecord,
    NoiseRecord,
    OutputRecord,
    current_local_recorder,
    current_noise_table,
    current_output_recorder,
    current_override,
    current_recorder,
    folding_batchnorm,
    repeat_rows,
    replica_slice,
    sum_replications,
)

NOISE_KINDS = ("additive", "multiplicative")


class NoisyLayer(keras.layers.Layer):
    """Base class; subclasses implement ``call`` and ``glr_gradients``.

    Args:
        activation: activation spec string (see :mod:`zoo.activations`), applied after noise.
        noise: ``"additive"`` or ``"multiplicative"``.
        train_stddev: noise stddev in training mode (>= 0).
        infer_stddev: noise stddev at inference (>= 0); 0 gives a conventional net.
        seed: integer seed of the layer's noise stream; ``None`` draws one from Python's
            ``random`` (seeded by ``keras.utils.set_random_seed``).
    """

    # True when every noise draw goes through ``add_noise`` (and so can be read from a noise table
    # during voting, :mod:`zoo.noise_table`); a layer that draws its own noise sets it False.
    table_noise = True

    def __init__(
        self,
        activation: str | None = None,
        noise: str = "additive",
        train_stddev: float = 0.0,
        infer_stddev: float = 0.0,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if noise not in NOISE_KINDS:
            raise UserInputError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
        for label, value in (("train_stddev", train_stddev), ("infer_stddev", infer_stddev)):
            if not (isinstance(value, numbers.Real) and 0 <= value < math.inf):
                raise UserInputError(f"{label} must be a finite number >= 0, got {value!r}")
        activations.get(activation)  # validate early
        self.activation = activation
        self.noise = noise
        self._init_train_stddev = float(train_stddev)
        self._init_infer_stddev = float(infer_stddev)
        self.seed = int(seed) if seed is not None else random.randint(0, 2**31 - 1)
        self._phi = activations.get(activation)

    # ----------------------------------------------------------------- state
    def build_noise(self) -> None:
        self.train_stddev = self.add_weight(
            name="train_stddev", shape=(), trainable=False,
            initializer=keras.initializers.Constant(self._init_train_stddev))
        self.infer_stddev = self.add_weight(
            name="infer_stddev", shape=(), trainable=False,
            initializer=keras.initializers.Constant(self._init_infer_stddev))
        self.rng_state = self.add_weight(
            name="rng_state", shape=(2,), dtype="int64", trainable=False,
            initializer=keras.initializers.Constant([self.seed, 0]),
            aggregation="only_first_replica")

    def next_seed(self) -> tf.Tensor:
        """A fresh stateless seed ``[2]`` (int64); advances the layer's counter.

        Under a ``tf.distribute`` strategy every replica gets the same seed; noise is then drawn
        for the global batch and each replica keeps its own rows (:func:`replica_slice`), so a
        distributed run draws the same noise per example as a single-device run.
        """
        seed = tf.identity(tf.convert_to_tensor(self.rng_state))
        self.rng_state.assign_add(tf.constant([0, 1], tf.int64))
        return seed

    # ----------------------------------------------------------------- noise
    def add_noise(self, z: tf.Tensor, training, record_inputs: dict) -> tf.Tensor:
        """Return the noisy pre-activation ``v`` for ``z`` (``[rows, ...]``).

        In GLR mode the output may have ``R`` times more rows than ``z``; inside
        :func:`zoo.noise_context.record_local` it is ``z`` itself (clean pass, recorded).
        """
        local = current_local_recorder()
        if local is not None:
            local.append(LocalRecord(self, record_inputs, z))
            return z
        rec = current_recorder()
        if rec is not None:
            return self._add_estimator_noise(z, rec, record_inputs)
        seed = self.next_seed()
        table = self.voting_table(training, z)
        if table is not None:  # voting: the scaled table (1 + s T or s T) read at random offsets
            n = tf.cast(noise_table.table_normal(table, tf.shape(z)[0], tuple(z.shape[1:]), seed), z.dtype)
            return z + n if self.noise == "additive" else z * n
        s = self.active_stddev(training, z.dtype)

        def noisy():
            n = replica_slice(lambda rows: tf.random.stateless_normal(
                tf.concat([[rows], tf.shape(z)[1:]], 0), seed, dtype=z.dtype), tf.shape(z)[0])
            return z + s * n if self.noise == "additive" else z * (1.0 + s * n)

        return tf.cond(s > 0, noisy, lambda: tf.identity(z))

    def voting_table(self, training, z: tf.Tensor):
        """This layer's scaled noise table in force for an inference call (:func:`zoo.noise_context.
        noise_table`), or ``None`` (training, a GLR pass, no table, or rows that do not fit it)."""
        if training or current_recorder() is not None or current_local_recorder() is not None:
            return None
        tables = current_noise_table()
        table = tables.get(id(self)) if tables is not None else None
        if table is None or not noise_table.fits(int(table.shape[0]), tuple(z.shape[1:])):
            return None
        return table

    def scaled_table(self, table: tf.Tensor, training=False) -> tf.Tensor:
        """``1 + s * table`` (multiplicative) or ``s * table`` (additive), ``s`` this layer's stddev in
        force: the table :meth:`add_noise` reads during voting."""
        s = self.active_stddev(training, table.dtype)
        return s * table if self.noise == "additive" else 1.0 + s * table

    def active_stddev(self, training, dtype) -> tf.Tensor:
        """The stddev in force: a :func:`noise_override` if one is active, else train or infer stddev."""
        override = current_override()
        if override is not None:
            return tf.cast(override, dtype)
        return tf.convert_to_tensor(self.train_stddev if training else self.infer_stddev)

    def _add_estimator_noise(self, z, rec, record_inputs):
        r = rec.replications
        here = not rec.replicated
        if here:
            batch = tf.shape(z)[0]
            z = repeat_rows(z, r)
            rec.replicated = True
        else:
            batch = tf.shape(z)[0] // r
        sigma = rec.sigma_for(self)
        e = sigma * rec.sample(tuple(z.shape[1:]), batch, self.next_seed())
        gate = rec.gate()
        if gate is not None:
            e = e * gate
        rec.records.append(NoiseRecord(self, record_inputs, e, here, sigma))
        return z + e

    def activate(self, v: tf.Tensor) -> tf.Tensor:
        """``y = phi(v)``; also records ``(v, y)`` inside :func:`zoo.noise_context.record_outputs`."""
        y = self._phi(v)
        outputs = current_output_recorder()
        if outputs is not None:
            outputs.append(OutputRecord(self, v, y))
        return y

    # ----------------------------------------------------------------- GLR
    def glr_gradients(self, record: NoiseRecord, g: tf.Tensor, replications: int) -> dict:
        """Likelihood-ratio gradient of every trainable variable of this layer.

        Args:
            record: this layer's record from the forward pass.
            g: ``L * score(e)`` per noise coordinate, already divided by the number of samples,
                shape of ``record.noise`` (``[N * R, ...]``).
            replications: ``R``.

        Returns:
            ``{id(variable): gradient}`` for every trainable variable; the gradient of ``theta``
            is ``sum over rows and coordinates of g * d z / d theta`` (Xiao et al. 2020, section 2, eq. 5).
        """
        raise TypeError(f"{type(self).__name__} does not support likelihood-ratio training")

    @staticmethod
    def reduce_rows(record: NoiseRecord, g: tf.Tensor, replications: int) -> tf.Tensor:
        """Bring ``g`` onto the rows of the recorded input (sum over replications if tiled here)."""
        return sum_replications(g, replications) if record.replicated_here else g

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            activation=self.activation,
            noise=self.noise,
            train_stddev=float(self.train_stddev.numpy()) if self.built else self._init_train_stddev,
            infer_stddev=float(self.infer_stddev.numpy()) if self.built else self._init_infer_stddev,
            seed=self.seed,
        )
        return config


class BatchNormMixin:
    """Batch normalization of the pre-activation, folded into a noisy layer (noise comes after).

    ``z_bn = gamma * (z - mean) / sqrt(var + eps) + beta``; batch statistics in training,
    moving averages at inference. For GLR the batch statistics are treated as constants, so the
    local derivatives are ``x_hat`` (for gamma), 1 (for beta) and ``gamma / sqrt(var + eps)``
    times the input (for the kernel): Xiao et al. 2020, section 2, eq. 5.
    """

    bn_momentum = 0.9  # PyTorch-style; 0.99 leaves moving statistics unconverged after short runs
    bn_epsilon = 1e-3
    # True: normalize with the moving statistics in training too and never update them (set by
    # ``glrzoo train --freeze-bn-stats``; a training-time switch, not saved). Noise-injection
    # fine-tuning of a cleanly trained net keeps its clean statistics this way, as Qin and Vucinic
    # (2018, section 3) froze them for additive noise: noisy activations never enter the statistics,
    # so the net normalizes identically at inference stddev 0 and at the training stddev.
    bn_frozen = False

    def build_batchnorm(self, channels: int) -> None:
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")
        self.moving_mean = self.add_weight(name="moving_mean", shape=(channels,), initializer="zeros",
                                           trainable=False, aggregation="mean")
        self.moving_variance = self.add_weight(name="moving_variance", shape=(channels,),
                                               initializer="ones", trainable=False, aggregation="mean")

    def batchnorm(self, z: tf.Tensor, training) -> tuple[tf.Tensor, dict]:
        axes = list(range(len(z.shape) - 1))
        if training and not self.bn_frozen:
            mean, var = tf.nn.moments(z, axes)
            if current_recorder() is not None or current_local_recorder() is not None:
                # GLR treats batch statistics as constants
                mean, var = tf.stop_gradient(mean), tf.stop_gradient(var)
            m = self.bn_momentum
            self.moving_mean.assign(m * self.moving_mean + (1 - m) * mean)
            self.moving_variance.assign(m * self.moving_variance + (1 - m) * var)
        else:
            mean = tf.convert_to_tensor(self.moving_mean)
            var = tf.convert_to_tensor(self.moving_variance)
        inv = tf.math.rsqrt(var + self.bn_epsilon)
        x_hat = (z - mean) * inv
        return self.gamma * x_hat + self.beta, {"x_hat": x_hat, "bn_scale": self.gamma * inv}

    def product(self, x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        """The layer's matrix product of ``x`` with ``kernel`` (a subclass's matmul or convolution)."""
        raise NotImplementedError

    def preactivation(self, x: tf.Tensor, training) -> tuple[tf.Tensor, dict]:
        """``(z, record)``: the matrix product of ``x``, then bias or batch norm; ``record`` holds what
        a likelihood-ratio estimator needs (``x``, and batch norm's ``x_hat`` and scale).

        In inference mode inside :func:`zoo.noise_context.folded_batchnorm`, batch norm is folded
        into the kernel: ``z = x (K a) + (beta - mean a)``, ``a = gamma / sqrt(var + eps)``.
        """
        record = {"x": x}
        if self.batchnorm_enabled and not training and folding_batchnorm():
            scale = self.gamma * tf.math.rsqrt(self.moving_variance + self.bn_epsilon)
            z = self.product(x, self.kernel * scale)  # scale runs along the kernel's output axis
            return tf.nn.bias_add(z, self.beta - self.moving_mean * scale), record
        z = self.product(x, self.kernel)
        if self.bias is not None:
            z = z + self.bias
        if self.batchnorm_enabled:
            z, bn = self.batchnorm(z, training)
            record.update(bn)
        return z, record

    def call(self, x: tf.Tensor, training=None) -> tf.Tensor:
        """``y = phi(noise(bias or BN(product(x))))``."""
        z, record = self.preactivation(x, training)
        return self.activate(self.add_noise(z, training, record))

    def batchnorm_gradients(self, gz: tf.Tensor, inputs: dict) -> tuple[dict, tf.Tensor]:
        """Gradients of gamma and beta, and ``gz`` pulled back through the (frozen-stat) scale."""
        axes = list(range(len(gz.shape) - 1))
        grads = {
            id(self.gamma): tf.reduce_sum(gz * inputs["x_hat"], axes),
            id(self.beta): tf.reduce_sum(gz, axes),
        }
        return grads, gz * inputs["bn_scale"]
