"""DenseNet (Huang et al. 2017) with a noisy conv-BN unit, as Qin and Vucinic 2018 (noisy inference) used on CIFAR-10."""
from __future__ import annotations

import keras

from zoo.errors import UserInputError
from zoo.models.common import Counter, NoiseArgs
from zoo.noisy_conv2d import NoisyConv2D
from zoo.noisy_dense import NoisyDense
from zoo.registry import register_model


def apply_dense_block(x, num_layers: int, growth_rate: int, na: NoiseArgs, counter: Counter,
                      activation: str, name: str):
    """``num_layers`` times: ``x = concat([x, NoisyConv3x3-BN-noise-act(x)])`` (adds ``growth_rate`` channels)."""
    for j in range(num_layers):
        i = counter()
        y = NoisyConv2D(growth_rate, 3, batchnorm=True, activation=activation,
                        name=f"{name}_conv_{j + 1}", **na.layer(i))(x)
        x = keras.layers.Concatenate(name=f"{name}_concat_{j + 1}")([x, y])
    return x


def apply_transition(x, na: NoiseArgs, counter: Counter, activation: str, name: str):
    """1x1 NoisyConv-BN-noise-act keeping the channel count, then 2x2 average pooling."""
    channels = x.shape[-1]
    x = NoisyConv2D(channels, 1, batchnorm=True, activation=activation, name=f"{name}_conv",
                    **na.layer(counter()))(x)
    return keras.layers.AveragePooling2D(2, name=f"{name}_pool")(x)


def densenet(input_shape, num_classes, *, depth=40, growth_rate=12, initial_filters=16, activation="relu",
             noise="additive", train_stddev=0.0, infer_stddev=0.0, seed=0, classifier_grid=1,
             name="densenet") -> keras.Model:
    """DenseNet of ``depth`` layers: 3 dense blocks of ``(depth - 4) / 3`` layers each.

    Each unit is conv-BN-noise-activation (noise right after every matrix multiply, as the
    noisy-inference paper, Qin and Vucinic 2018, requires) instead of the original BN-ReLU-conv order. DenseNet-40 with
    growth 12 (the default) has about 1M parameters. Input ``[H, W, C]``, output logits.

    ``classifier_grid`` (``k``): the classifier reads the final ``[H, W, C]`` map averaged over
    cells of ``ceil(H / k)`` pixels a side (a ``k x k`` grid when ``k`` divides evenly enough, e.g. 4
    on a 7 x 7 map; ``ceil(H / ceil(H / k))`` cells a side in general) instead of its global
    average (``k = 1``, the original). ``k = 4`` is the ``densenet_gridpool`` variant for local learning: its classifier
    reads the same pooled grid the local heads of :mod:`training.glr_local` train every layer to
    make linearly separable, where the global average discards the spatial layout they learn.

    Reference: Huang et al., "Densely Connected Convolutional Networks" (CVPR 2017);
    the noisy-inference setting of Qin and Vucinic 2018, section 3 (DenseNet-40, growth 12, on CIFAR-10).
    """
    if (depth - 4) % 3 or depth < 7:
        raise UserInputError(f"DenseNet depth must be 3k + 4 with k >= 1 (e.g. 40, 100), got {depth}")
    if classifier_grid < 1:
        raise UserInputError(f"classifier_grid must be >= 1 (1: global average pooling), got {classifier_grid}")
    per_block = (depth - 4) // 3
    na = NoiseArgs(noise, train_stddev, infer_stddev, seed)
    counter = Counter()
    inputs = keras.Input(shape=input_shape, name="images")
    x = NoisyConv2D(initial_filters, 3, batchnorm=True, activation=activation, name="stem_conv",
                    **na.layer(0))(inputs)
    for b in range(3):
        x = apply_dense_block(x, per_block, growth_rate, na, counter, activation, name=f"block_{b + 1}")
        if b < 2 and x.shape[1] >= 2:
            x = apply_transition(x, na, counter, activation, name=f"transition_{b + 1}")
    if classifier_grid == 1:
        x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    else:
        cell = -(-int(x.shape[1]) // classifier_grid)  # ceil: a 7x7 map on a 4x4 grid has 2x2 cells
        x = keras.layers.AveragePooling2D(cell, padding="same", name="grid_pool")(x)
        x = keras.layers.Flatten(name="grid_features")(x)
    outputs = NoisyDense(num_classes, name="logits", **na.layer(counter()))(x)
    return keras.Model(inputs, outputs, name=name)


register_model("densenet", "DenseNet (Huang et al. 2017; depth 40, growth 12 by default; about 1M parameters)")(densenet)
register_model("densenet_gridpool", "DenseNet whose classifier reads a 4x4 grid of averages, not the global "
               "average (for local learning: glr_local, local_bp)", classifier_grid=4,
               name="densenet_gridpool")(densenet)
register_model("test_densenet", "tiny DenseNet (depth 7, growth 4) for fast tests",
               depth=7, growth_rate=4, initial_filters=4, name="test_densenet")(densenet)
