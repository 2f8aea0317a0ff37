"""Multi-layer perceptrons: Xiao et al. 2020's GLR 784-50-10 net and the 784-100-50-10 ReLU substitute."""
from __future__ import annotations

import keras

from zoo.models.common import NoiseArgs
from zoo.noisy_dense import NoisyDense
from zoo.registry import register_model


def _mlp(input_shape, num_classes, *, hidden=(50,), activation="sigmoid",
         noise="additive", train_stddev=0.0, infer_stddev=0.0, seed=0, name="mlp") -> keras.Model:
    """Flatten -> [NoisyDense(h, activation)] * len(hidden) -> NoisyDense(num_classes) (logits).

    Args:
        input_shape: shape of one example, e.g. ``(28, 28, 1)``; it is flattened.
        num_classes: number of outputs.
        hidden: widths of the hidden layers.
        activation: hidden activation spec (``"sigmoid"``, ``"threshold"``, ``"relu"``, ...).
        noise, train_stddev, infer_stddev, seed: see :class:`zoo.noisy_base.NoisyLayer`.

    Reference: Xiao, Peng, Hong, Ke and Yang 2020, "Training Artificial Neural Networks
    by Generalized Likelihood Ratio Method", section 3 (784-50-10, the authors' repository GLR_ADV).
    """
    na = NoiseArgs(noise, train_stddev, infer_stddev, seed)
    inputs = keras.Input(shape=input_shape, name="images")
    x = keras.layers.Flatten(name="flatten")(inputs)
    for i, width in enumerate(hidden):
        x = NoisyDense(width, activation=activation, name=f"dense_{i + 1}", **na.layer(i))(x)
    outputs = NoisyDense(num_classes, name="logits", **na.layer(len(hidden)))(x)
    return keras.Model(inputs, outputs, name=name)


def mlp(input_shape, num_classes, *, hidden=(50,), activation="sigmoid", noise="additive",
        train_stddev=0.0, infer_stddev=0.0, seed=0, name="mlp") -> keras.Model:
    return _mlp(input_shape, num_classes, hidden=tuple(hidden), activation=activation, noise=noise,
                train_stddev=train_stddev, infer_stddev=infer_stddev, seed=seed, name=name)


mlp.__doc__ = _mlp.__doc__
register_model("mlp", "MLP with configurable hidden sizes (default one sigmoid layer of 50)")(mlp)
register_model("glr_mlp", "Xiao et al. 2020's GLR MLP: 784-50-10, sigmoid (set activation='threshold' for the step net)",
               hidden=(50,), activation="sigmoid", name="glr_mlp")(mlp)
register_model("substitute_mlp", "784-100-50-10 ReLU MLP, the backprop substitute that makes transfer attacks",
               hidden=(100, 50), activation="relu", name="substitute_mlp")(mlp)
register_model("test_mlp", "tiny MLP (16 hidden) for fast tests", hidden=(16,), name="test_mlp")(mlp)
