"""Gaussian data augmentation: train on ``x + delta``, ``delta ~ N(0, sigma^2 I)``, so that the
Gaussian-smoothed classifier of the trained net is accurate and certifiable (Cohen, Rosenfeld and
Kolter 2019, "Certified adversarial robustness via randomized smoothing", section 4: the base
classifier is trained with the noise level it is certified with; the noise is not clipped to the
pixel range, as their certificate assumes the exact Gaussian).

A batch transform (``(model, x, y, step) -> (x, y)``, see :class:`training.trainer.Trainer`), so it
composes with every estimator; the noise is drawn from a stateless generator seeded by
``(seed, step)``, so a resumed run draws what an uninterrupted one would.
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf

from training.transforms import register_transform
from zoo.errors import UserInputError


@dataclasses.dataclass(frozen=True)
class GaussianInputNoise:
    """Adds ``sigma * N(0, 1)`` (input units; pixels in [0, 1]) to every training input."""

    sigma: float
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.sigma < float("inf"):
            raise UserInputError(f"--input-noise must be a finite number > 0, got {self.sigma}")

    def __call__(self, model, x, y, step):
        seed = tf.stack([tf.constant(self.seed + 7919, tf.int64), tf.cast(step, tf.int64)])
        return x + self.sigma * tf.random.stateless_normal(tf.shape(x), seed, dtype=x.dtype), y

    def config(self) -> dict:
        return {"transform": "gaussian_input_noise", **dataclasses.asdict(self)}


@register_transform("input_noise", None)  # its flag is TrainConfig.input_noise's (--input-noise, a recipe field)
def input_noise(sigma: float, *, seed: int) -> GaussianInputNoise | None:
    """Gaussian input noise of stddev ``sigma`` (off at 0)."""
    return GaussianInputNoise(sigma, seed=seed) if sigma > 0 else None


__all__ = ["GaussianInputNoise", "input_noise"]
