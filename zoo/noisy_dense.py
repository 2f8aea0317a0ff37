"""Dense layer with noise on its pre-activation (Xiao et al. 2020, section 2; Qin and Vucinic 2018, section 2)."""
from __future__ import annotations

import keras
import tensorflow as tf

from zoo.noisy_base import BatchNormMixin, NoisyLayer


@keras.saving.register_keras_serializable(package="glrzoo")
class NoisyDense(BatchNormMixin, NoisyLayer):
    """``y = phi(noise(BN?(x W + b)))`` for ``x`` of shape ``[batch, in]``; output ``[batch, units]``.

    Args:
        units: output width.
        use_bias: add ``b`` (ignored with ``batchnorm``, whose ``beta`` plays that role).
        batchnorm: batch-normalize the pre-activation before the noise.
        kernel_initializer: Keras initializer name or object.
        **kwargs: noise and activation arguments of :class:`zoo.noisy_base.NoisyLayer`.

    Example:
        >>> layer = NoisyDense(50, activation="sigmoid", noise="additive", train_stddev=0.5)
    """

    def __init__(self, units: int, use_bias: bool = True, batchnorm: bool = False,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.use_bias = bool(use_bias) and not batchnorm
        self.batchnorm_enabled = bool(batchnorm)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units),
                                      initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros") if self.use_bias else None
        if self.batchnorm_enabled:
            self.build_batchnorm(self.units)
        self.build_noise()

    def product(self, x, kernel):
        return tf.matmul(x, kernel)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def glr_gradients(self, record, g, replications):
        gz = self.reduce_rows(record, g, replications)
        grads = {}
        if self.batchnorm_enabled:
            grads, gz = self.batchnorm_gradients(gz, record.inputs)
        grads[id(self.kernel)] = tf.matmul(record.inputs["x"], gz, transpose_a=True)
        if self.bias is not None:
            grads[id(self.bias)] = tf.reduce_sum(gz, 0)
        return grads

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, use_bias=self.use_bias, batchnorm=self.batchnorm_enabled,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config
