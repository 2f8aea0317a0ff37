"""Batch transforms that rewrite a training batch before the estimator sees it.

Madry et al. (2018) PGD adversarial training: each minibatch is half natural, half PGD examples
made against the current model. The attack runs inside the compiled training step, so it composes
with any estimator (backprop, BANG, noise-injected training).
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf

from training.losses import cross_entropy
from zoo.errors import UserInputError


def pgd_linf(model, x: tf.Tensor, y: tf.Tensor, eps: float, step: float, iterations: int, random_start: bool,
             seed: tf.Tensor, clip: tuple[float, float] = (0.0, 1.0)) -> tf.Tensor:
    """L-infinity PGD (Madry et al. 2018): ``x_{k+1} = Proj_{B(x, eps)}(x_k + step * sign(grad_x CE))``.

    Args:
        model: maps ``x`` (``[N, ...]``, pixels in ``clip``) to logits; run in inference mode.
        eps, step: radius and step size, in pixel units.
        iterations: number of steps.
        random_start: start at a uniform point of the eps-ball.
        seed: stateless seed ``[2]`` for the random start.
    Returns:
        adversarial ``x`` of the same shape, inside the ball and ``clip``.
    """
    lo, hi = clip
    x_adv = x
    if random_start:
        x_adv = x + tf.random.stateless_uniform(tf.shape(x), seed, -eps, eps)
        x_adv = tf.clip_by_value(x_adv, lo, hi)
    for _ in range(iterations):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            loss = tf.reduce_sum(cross_entropy(model(x_adv, training=False), y))
        grad = tape.gradient(loss, x_adv)
        x_adv = x_adv + step * tf.sign(grad)
        x_adv = tf.clip_by_value(tf.clip_by_value(x_adv, x - eps, x + eps), lo, hi)
    return tf.stop_gradient(x_adv)


@dataclasses.dataclass(frozen=True)
class PGDTraining:
    """Replace a fraction of each batch by PGD examples (``fraction=0.5``: half natural, half adversarial)."""

    eps: float = 0.3
    step: float = 0.01
    iterations: int = 40
    random_start: bool = True
    fraction: float = 0.5
    seed: int = 0

    def __post_init__(self):
        if not self.eps > 0 or not self.step > 0 or self.iterations < 1 or not 0 < self.fraction <= 1:
            raise UserInputError("PGD training needs eps > 0, step > 0, iterations >= 1 and 0 < fraction <= 1")

    def __call__(self, model, x, y, step):
        n = tf.shape(x)[0]
        k = tf.cast(tf.math.ceil(tf.cast(n, tf.float32) * self.fraction), tf.int32)
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
        adv = pgd_linf(model, x[n - k:], y[n - k:], self.eps, self.step, self.iterations, self.random_start, seed)
        return tf.concat([x[:n - k], adv], axis=0), y

    def config(self) -> dict:
        return {"transform": "pgd", **dataclasses.asdict(self)}


def pgd_training(eps: float = 0.3, step: float = 0.01, iterations: int = 40, random_start: bool = True,
                 fraction: float = 0.5, seed: int = 0) -> PGDTraining:
    """Madry-style PGD adversarial training transform; MNIST default eps 0.3, step 0.01, 40 steps."""
    return PGDTraining(eps, step, iterations, random_start, fraction, seed)
