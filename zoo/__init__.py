"""glrzoo's model zoo: noisy layers, activations, model families, data and export.

Example:
    >>> import zoo
    >>> model = zoo.create_model("cnn6", (28, 28, 1), 10, noise="multiplicative", train_stddev=1.0)
    >>> zoo.set_noise(model, infer_stddev=0.6)
"""
import os

# Quiet TensorFlow's C++ start-up banner unless the user chose a log level.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from zoo.noise import noise_settings, noisy_layers, set_noise
from zoo.noise_context import NoiseRecord, noise_override, record_noise
from zoo.noisy_base import NoisyLayer
from zoo.noisy_conv2d import NoisyConv2D
from zoo.noisy_dense import NoisyDense
from zoo.noisy_lstm import NoisyLSTM
from zoo.pretrained import describe as describe_pretrained
from zoo.pretrained import list_pretrained, load_pretrained
from zoo.registry import create_model, list_models, model_arguments, register_model

__version__ = "0.1.0"

__all__ = [
    "NoiseRecord", "NoisyConv2D", "NoisyDense", "NoisyLSTM", "NoisyLayer", "create_model", "describe_pretrained", "list_models",
    "list_pretrained", "load_pretrained",
    "model_arguments", "noise_override", "noise_settings", "noisy_layers", "record_noise", "register_model",
    "set_noise",
]
