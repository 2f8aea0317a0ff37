"""Training: gradient estimators behind one interface and the trainer that plugs them into ``fit``."""
from training.estimators import Estimate, bp
from training.trainer import Trainer

__all__ = ["Estimate", "Trainer", "bp"]
