"""LSTM with noise on every gate's pre-activation at every step (Xiao et al. 2020, section 2; Qin and Vucinic 2018, section 2)."""
from __future__ import annotations

import keras
import tensorflow as tf

from zoo.noise_context import LocalRecord, NoiseRecord, current_local_recorder, current_recorder, repeat_rows, replica_slice
from zoo.noisy_base import NoisyLayer


@keras.saving.register_keras_serializable(package="glrzoo")
class NoisyLSTM(NoisyLayer):
    """LSTM over ``x`` of shape ``[batch, T, D]``, returning the last hidden state ``[batch, units]``.

    At step ``t`` the four gate pre-activations (input, forget, cell, output; ``[batch, 4 units]``)
    are ``z_t = x_t W_x + h_{t-1} W_h + b`` and the noise is added to ``z_t``::

        i, f, o = sigmoid(v_i), sigmoid(v_f), sigmoid(v_o);  g = tanh(v_c)
        c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)

    The input projection ``x_t W_x`` of all steps is one matrix multiply, done before the scan.
    The likelihood-ratio gradients sum over steps: ``dW_x = sum_t x_t^T g_t``,
    ``dW_h = sum_t h_{t-1}^T g_t``, ``db = sum_t g_t``.

    Args:
        units: hidden width.
        **kwargs: noise arguments of :class:`zoo.noisy_base.NoisyLayer` (``activation`` is unused).
    """

    table_noise = False  # draws the noise of all steps at once, not through add_noise

    def __init__(self, units: int, **kwargs):
        kwargs.pop("activation", None)
        super().__init__(activation=None, **kwargs)
        self.units = int(units)

    def build(self, input_shape):
        d, u = input_shape[-1], self.units
        self.kernel = self.add_weight(name="kernel", shape=(d, 4 * u), initializer="glorot_uniform")
        self.recurrent_kernel = self.add_weight(name="recurrent_kernel", shape=(u, 4 * u), initializer="orthogonal")
        self.bias = self.add_weight(
            name="bias", shape=(4 * u,),
            initializer=keras.initializers.Constant([0.0] * u + [1.0] * u + [0.0] * 2 * u))  # forget bias 1
        self.build_noise()

    @staticmethod
    def cell(v, c):
        """One LSTM update from gate pre-activations ``v`` (``[..., 4u]``) and cell state ``c``
        (``[..., u]``); returns ``(h, c_new)``."""
        i, f, g, o = tf.split(v, 4, axis=-1)
        c_new = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        return tf.sigmoid(o) * tf.tanh(c_new), c_new

    def _clean_recorded(self, x, xz, local):
        """Clean scan that records every step's gate pre-activation and previous state."""
        rows = tf.shape(xz)[0]
        h0 = tf.zeros([rows, self.units], xz.dtype)

        def step(carry, xz_t):
            h, c, _ = carry
            z = xz_t + tf.matmul(h, self.recurrent_kernel)
            h_new, c_new = self.cell(z, c)
            return h_new, c_new, z

        z0 = tf.zeros_like(xz[:, 0])
        hs, cs, zs = tf.scan(step, tf.transpose(xz, [1, 0, 2]), initializer=(h0, h0, z0))  # time-major
        to_batch = lambda t: tf.transpose(t, [1, 0, 2])  # noqa: E731
        h_prev = to_batch(tf.concat([h0[None], hs[:-1]], axis=0))
        c_prev = to_batch(tf.concat([h0[None], cs[:-1]], axis=0))
        local.append(LocalRecord(self, {"x": x, "h_prev": h_prev, "c_prev": c_prev}, to_batch(zs)))
        return hs[-1]

    def call(self, x, training=None):
        u = self.units
        xz = tf.einsum("btd,dg->btg", x, self.kernel) + self.bias  # [rows, T, 4u]
        local = current_local_recorder()
        if local is not None:
            return self._clean_recorded(x, xz, local)
        rec = current_recorder()
        record = None
        if rec is not None:
            r = rec.replications
            here = not rec.replicated
            batch = tf.shape(xz)[0] if here else tf.shape(xz)[0] // r
            if here:
                xz = repeat_rows(xz, r)
                rec.replicated = True
            sigma = rec.sigma_for(self)
            noise = sigma * rec.sample(tuple(xz.shape[1:]), batch, self.next_seed())
            gate = rec.gate()
            if gate is not None:
                noise = noise * gate
            record = NoiseRecord(self, {"x": x}, noise, here, sigma)
            rec.records.append(record)
            mode, s = "additive", tf.constant(1.0)
        else:
            s = self.active_stddev(training, xz.dtype)
            seed = self.next_seed()
            noise = replica_slice(lambda rows: tf.random.stateless_normal(
                tf.concat([[rows], tf.shape(xz)[1:]], 0), seed, dtype=xz.dtype), tf.shape(xz)[0])
            mode = self.noise

        rows = tf.shape(xz)[0]
        h0 = tf.zeros([rows, u], xz.dtype)
        wh = self.recurrent_kernel

        def step(carry, inputs):
            h, c = carry
            xz_t, n_t = inputs
            z = xz_t + tf.matmul(h, wh)
            v = z + s * n_t if mode == "additive" else z * (1.0 + s * n_t)
            return self.cell(v, c)

        time_major = (tf.transpose(xz, [1, 0, 2]), tf.transpose(noise, [1, 0, 2]))
        hs, _ = tf.scan(step, time_major, initializer=(h0, h0))  # [T, rows, u]
        if record is not None:
            h_prev = tf.concat([h0[None], hs[:-1]], axis=0)
            record.inputs["h_prev"] = tf.transpose(h_prev, [1, 0, 2])
        return hs[-1]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def internal_floats_per_example(self) -> int:
        """Values one example keeps during a pass: per step the input projection, noise, gate
        pre-activations and their gradients' buffers (``~4 * 4 units``) and states (``~3 units``)."""
        steps, features = self.input.shape[1], self.input.shape[2]
        return int(steps * (16 * self.units + 3 * self.units + features))

    def glr_gradients(self, record, g, replications):
        gx = self.reduce_rows(record, g, replications)
        return {
            id(self.kernel): tf.einsum("btd,btg->dg", record.inputs["x"], gx),
            id(self.recurrent_kernel): tf.einsum("btu,btg->ug", record.inputs["h_prev"], g),
            id(self.bias): tf.reduce_sum(g, [0, 1]),
        }

    def get_config(self):
        config = super().get_config()
        config.pop("activation", None)
        config.update(units=self.units)
        return config
