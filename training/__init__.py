"""Training: gradient estimators behind one interface and the trainer that plugs them into ``fit``.

Estimators are registered by name (:mod:`training.registry`); ``create_estimator("glr",
loss="zero_one", replications=100)`` builds one, ``list_estimators()`` lists them.
"""
import os

# Quiet TensorFlow's C++ start-up banner unless the user chose a log level.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from training.estimators import Estimate, bp  # noqa: E402
from training.registry import (  # noqa: E402
    Option,
    create_estimator,
    get_estimator,
    list_estimators,
    register_estimator,
)
from training.trainer import Trainer  # noqa: E402

__all__ = ["Estimate", "Option", "Trainer", "bp", "create_estimator", "get_estimator", "list_estimators",
           "register_estimator"]
