"""glrzoo: robust, brain-like neural networks in Keras 3, and the application layer on top of them.

The packages form four floors; each imports only the ones below it:

* :mod:`zoo`: noisy layers, activations, model families by name, data, export, pretrained loading;
* :mod:`training`: gradient estimators by name (backprop, GLR, BANG), the trainer, ``train``;
* :mod:`evaluation`: attacks, corruptions and suites by name, the harness, reports;
* :mod:`glrzoo` (this package): the ``glrzoo`` console script, the demo and keras-tuner search.

This module re-exports the public API, so one import is enough::

    import glrzoo
    model = glrzoo.load_pretrained("mnist/glr_threshold_ce")
    net = glrzoo.create_model("glr_mlp", (28, 28, 1), 10, activation="threshold")
    trainer = glrzoo.Trainer(net, glrzoo.create_estimator("glr", loss="zero_one", replications=100))
"""
from evaluation.attacks import attack, get_attack, list_attacks, register_attack
from evaluation.corruptions import corrupt, get_corruption, list_corruptions, register_corruption
from evaluation.harness import evaluate, masking_flags
from evaluation.report import write_report
from evaluation.suites import SuiteContext, get_suite, list_suites, register_suite
from glrzoo.cli import main
from training import Trainer, bp, create_estimator, get_estimator, list_estimators, register_estimator
from training.run import TrainConfig, sweep, train
from zoo import (
    NoisyConv2D,
    NoisyDense,
    NoisyLayer,
    NoisyLSTM,
    __version__,
    create_model,
    describe_pretrained,
    list_models,
    list_pretrained,
    load_pretrained,
    model_arguments,
    noise_settings,
    register_model,
    set_noise,
)
from zoo.errors import UserInputError
from zoo.export import export_model, load_model
from zoo.voting import vote_predict

__all__ = [
    "NoisyConv2D", "NoisyDense", "NoisyLSTM", "NoisyLayer", "SuiteContext", "TrainConfig", "Trainer",
    "UserInputError", "__version__", "attack", "bp", "corrupt", "create_estimator", "create_model",
    "describe_pretrained", "evaluate", "export_model", "get_attack", "get_corruption", "get_estimator", "get_suite",
    "list_attacks", "list_corruptions", "list_estimators", "list_models", "list_pretrained", "list_suites",
    "load_model", "load_pretrained", "main", "masking_flags", "model_arguments", "noise_settings", "register_attack",
    "register_corruption", "register_estimator", "register_model", "register_suite", "set_noise", "sweep", "train",
    "vote_predict", "write_report",
]
