"""LSTM classifier for sequences (pen strokes) or images read row by row."""
from __future__ import annotations

import keras

from zoo.errors import UserInputError
from zoo.models.common import NoiseArgs
from zoo.noisy_dense import NoisyDense
from zoo.noisy_lstm import NoisyLSTM
from zoo.registry import register_model


def lstm(input_shape, num_classes, *, units=128, noise="additive", train_stddev=0.0, infer_stddev=0.0,
         seed=0, name="lstm") -> keras.Model:
    """NoisyLSTM(units) over the sequence, then NoisyDense(num_classes) on the last hidden state.

    Args:
        input_shape: ``(T, D)`` for sequences (pen strokes: ``(117, 4)``), or an image shape
            ``(H, W, C)``, read as ``H`` steps of ``W * C`` features.
        units: hidden width (lost from the paper; 128 by default).

    Reference: the LSTM on MNIST pen-stroke sequences of Qin and Vucinic 2018,
    "Noisy Computations during Inference: Harmful or Helpful?", section 3.
    """
    na = NoiseArgs(noise, train_stddev, infer_stddev, seed)
    inputs = keras.Input(shape=input_shape, name="images" if len(input_shape) == 3 else "sequences")
    x = inputs
    if len(input_shape) == 3:
        x = keras.layers.Reshape((input_shape[0], input_shape[1] * input_shape[2]), name="rows_as_steps")(x)
    elif len(input_shape) != 2:
        raise UserInputError(f"lstm needs a (T, D) sequence or (H, W, C) image input shape, got {input_shape}")
    x = NoisyLSTM(units, name="lstm", **na.layer(0))(x)
    outputs = NoisyDense(num_classes, name="logits", **na.layer(1))(x)
    return keras.Model(inputs, outputs, name=name)


register_model("lstm", "LSTM (Hochreiter and Schmidhuber 1997; 128 units) with noise on every gate at every step, "
               "then a noisy output layer")(lstm)
register_model("test_lstm", "tiny LSTM (8 units) for fast tests", units=8, name="test_lstm")(lstm)
