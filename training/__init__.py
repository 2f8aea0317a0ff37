"""Training: gradient estimators behind one interface and the trainer that plugs them into ``fit``."""
import os

# Quiet TensorFlow's C++ start-up banner unless the user chose a log level.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from training.estimators import Estimate, bp
from training.trainer import Trainer

__all__ = ["Estimate", "Trainer", "bp"]
