"""2-D convolution with noise on its pre-activation (Xiao et al. 2020, section 2; Qin and Vucinic 2018, section 2)."""
from __future__ import annotations

import keras
import tensorflow as tf

from zoo.noisy_base import BatchNormMixin, NoisyLayer


@keras.saving.register_keras_serializable(package="glrzoo")
class NoisyConv2D(BatchNormMixin, NoisyLayer):
    """``y = phi(noise(BN?(conv(x, K) + b)))``; ``x`` is ``[batch, H, W, C]`` (channels last).

    Args:
        filters: output channels.
        kernel_size: int or (kh, kw).
        strides: int or (sh, sw).
        padding: ``"same"`` or ``"valid"``.
        use_bias, batchnorm, kernel_initializer: as in :class:`zoo.noisy_dense.NoisyDense`.
        **kwargs: noise and activation arguments of :class:`zoo.noisy_base.NoisyLayer`.

    The likelihood-ratio gradient of the kernel sums ``patch(x) * g`` over every output position;
    that sum is the filter-gradient correlation op ``Conv2DBackpropFilter`` (a primitive op,
    not automatic differentiation).
    """

    def __init__(self, filters: int, kernel_size=3, strides=1, padding: str = "same",
                 use_bias: bool = True, batchnorm: bool = False,
                 kernel_initializer="he_normal", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.strides = (strides, strides) if isinstance(strides, int) else tuple(strides)
        if padding.lower() not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        self.padding = padding.lower()
        self.use_bias = bool(use_bias) and not batchnorm
        self.batchnorm_enabled = bool(batchnorm)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        shape = self.kernel_size + (input_shape[-1], self.filters)
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") if self.use_bias else None
        if self.batchnorm_enabled:
            self.build_batchnorm(self.filters)
        self.build_noise()

    def product(self, x, kernel):
        return tf.nn.conv2d(x, kernel, strides=(1,) + self.strides + (1,), padding=self.padding.upper())

    def compute_output_shape(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        out = []
        for size, k, s in ((h, self.kernel_size[0], self.strides[0]), (w, self.kernel_size[1], self.strides[1])):
            if size is None:
                out.append(None)
            elif self.padding == "same":
                out.append(-(-size // s))
            else:
                out.append((size - k) // s + 1)
        return (input_shape[0], out[0], out[1], self.filters)

    def glr_gradients(self, record, g, replications):
        gz = self.reduce_rows(record, g, replications)
        grads = {}
        if self.batchnorm_enabled:
            grads, gz = self.batchnorm_gradients(gz, record.inputs)
        grads[id(self.kernel)] = tf.raw_ops.Conv2DBackpropFilter(
            input=record.inputs["x"], filter_sizes=tf.shape(self.kernel), out_backprop=gz,
            strides=(1,) + self.strides + (1,), padding=self.padding.upper())
        if self.bias is not None:
            grads[id(self.bias)] = tf.reduce_sum(gz, [0, 1, 2])
        return grads

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
                      padding=self.padding, use_bias=self.use_bias, batchnorm=self.batchnorm_enabled,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config
