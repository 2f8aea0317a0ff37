"""Batch transforms that rewrite a training batch before the estimator sees it.

Madry et al. (2018) PGD adversarial training: each minibatch is half natural, half PGD examples
made against the current model. The attack runs inside the compiled training step, so it composes
with any estimator (backprop, BANG, noise-injected training).

TRADES (Zhang et al. 2019) changes the objective, not only the batch, so it is an estimator
(:class:`TradesBackprop`): the gradient of ``CE(f(x), y) + beta * KL(f(x) || f(x'))``.

Both take an eps ramp (``ramp_steps``): the radius grows linearly from 0 to ``eps`` over the first
optimizer steps, a curriculum that keeps large-radius training from stalling at the start
(Gowal et al. 2019 ramp eps for the same reason).
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import keras
import tensorflow as tf

from training.estimators import Estimate
from training.files import write_json
from training.losses import cross_entropy
from zoo.errors import UserInputError


def ramp(step: tf.Tensor, ramp_steps: int) -> tf.Tensor:
    """Fraction of the full radius at optimizer step ``step`` (0-based): ``min(1, (step + 1) / ramp_steps)``,
    1 throughout when ``ramp_steps`` is 0."""
    if ramp_steps <= 0:
        return tf.constant(1.0)
    return tf.minimum(1.0, tf.cast(step + 1, tf.float32) / float(ramp_steps))


def pgd_linf(model, x: tf.Tensor, y: tf.Tensor, eps, step, iterations: int, random_start: bool,
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
    ramp_steps: int = 0  # optimizer steps over which eps (and the step) grow linearly from 0

    def __post_init__(self):
        if not self.eps > 0 or not self.step > 0 or self.iterations < 1 or not 0 < self.fraction <= 1:
            raise UserInputError("PGD training needs eps > 0, step > 0, iterations >= 1 and 0 < fraction <= 1")
        if self.ramp_steps < 0:
            raise UserInputError(f"the eps ramp needs >= 0 steps, got {self.ramp_steps}")

    def __call__(self, model, x, y, step):
        n = tf.shape(x)[0]
        k = tf.cast(tf.math.ceil(tf.cast(n, tf.float32) * self.fraction), tf.int32)
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
        scale = ramp(step, self.ramp_steps)
        adv = pgd_linf(model, x[n - k:], y[n - k:], self.eps * scale, self.step * scale, self.iterations,
                       self.random_start, seed)
        return tf.concat([x[:n - k], adv], axis=0), y

    def config(self) -> dict:
        out = {"transform": "pgd", **dataclasses.asdict(self)}
        if not self.ramp_steps:
            out.pop("ramp_steps")  # as exports made before the ramp existed record it
        return out


def pgd_training(eps: float = 0.3, step: float = 0.01, iterations: int = 40, random_start: bool = True,
                 fraction: float = 0.5, seed: int = 0, ramp_steps: int = 0) -> PGDTraining:
    """Madry-style PGD adversarial training transform; MNIST default eps 0.3, step 0.01, 40 steps."""
    return PGDTraining(eps, step, iterations, random_start, fraction, seed, ramp_steps)


def kl_rows(p_logits: tf.Tensor, q_logits: tf.Tensor) -> tf.Tensor:
    """``KL(softmax(p) || softmax(q))`` per row, in nats: ``[N, classes]`` x 2 -> ``[N]``."""
    log_p, log_q = tf.nn.log_softmax(p_logits), tf.nn.log_softmax(q_logits)
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def trades_attack(model, x: tf.Tensor, eps, step, iterations: int, seed: tf.Tensor,
                  clip: tuple[float, float] = (0.0, 1.0)) -> tf.Tensor:
    """TRADES' inner maximisation: sign-gradient ascent on ``KL(f(x) || f(x'))`` inside the L-inf ball.

    Starts at ``x + 0.001 N(0, 1)`` (the KL's gradient is zero at ``x' = x``), takes ``iterations``
    steps of size ``step`` and projects onto ``B(x, eps)`` and ``clip`` (Zhang et al. 2019,
    Algorithm 1, and their code). The model runs in inference mode. ``x``: ``[N, ...]``.
    """
    lo, hi = clip
    target = tf.stop_gradient(model(x, training=False))
    x_adv = tf.clip_by_value(x + 0.001 * tf.random.stateless_normal(tf.shape(x), seed), lo, hi)
    for _ in range(iterations):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            loss = tf.reduce_sum(kl_rows(target, model(x_adv, training=False)))
        x_adv = x_adv + step * tf.sign(tape.gradient(loss, x_adv))
        x_adv = tf.clip_by_value(tf.clip_by_value(x_adv, x - eps, x + eps), lo, hi)
    return tf.stop_gradient(x_adv)


@dataclasses.dataclass(frozen=True)
class TradesBackprop:
    """TRADES (Zhang, Yu, Jiao, Xing, El Ghaoui and Jordan 2019, eq. 5): backprop of

        ``mean_i [ CE(f(x_i), y_i) + beta * KL(softmax f(x_i) || softmax f(x'_i)) ]``,

    ``x'`` from :func:`trades_attack` (``iterations`` steps of ``step`` inside the L-inf ball of
    radius ``eps``, pixels in [0, 1]). ``beta`` trades clean accuracy for robustness (their code:
    1 on MNIST, 6 on CIFAR-10). Both passes run in training mode in one call on ``[x; x']``.
    Logs ``kl``, the batch mean of the KL term (nats).
    """

    beta: float = 6.0
    eps: float = 0.3
    step: float = 0.01
    iterations: int = 40
    seed: int = 0
    ramp_steps: int = 0
    loss: str = "ce"
    log_names = ("kl",)

    def __post_init__(self):
        if not self.eps > 0 or not self.step > 0 or self.iterations < 1:
            raise UserInputError("TRADES needs eps > 0, step > 0 and iterations >= 1")
        if not (self.beta >= 0 and self.beta < float("inf")):
            raise UserInputError(f"--trades-beta must be a finite number >= 0, got {self.beta}")
        if self.ramp_steps < 0:
            raise UserInputError(f"the eps ramp needs >= 0 steps, got {self.ramp_steps}")
        if self.loss != "ce":
            raise UserInputError(f"--adversarial trades trains the cross-entropy; drop --loss {self.loss}")

    def __call__(self, model, x, y, step):
        scale = ramp(step, self.ramp_steps)
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
        x_adv = trades_attack(model, x, self.eps * scale, self.step * scale, self.iterations, seed)
        n = tf.shape(x)[0]
        with tf.GradientTape() as tape:
            logits_both = model(tf.concat([x, x_adv], axis=0), training=True)
            logits, logits_adv = logits_both[:n], logits_both[n:]
            kl = tf.reduce_mean(kl_rows(logits, logits_adv))
            loss = tf.reduce_mean(cross_entropy(logits, y)) + self.beta * kl
        grads = tape.gradient(loss, model.trainable_variables)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, model.trainable_variables)]
        return Estimate(grads, loss, logits, {"kl": kl})

    def config(self) -> dict:
        out = {"method": "bp", "objective": "trades", **dataclasses.asdict(self)}
        if not self.ramp_steps:
            out.pop("ramp_steps")
        return out


class OverfittingGuard(keras.callbacks.Callback):
    """Early stopping against catastrophic overfitting of fast adversarial training.

    Single-step adversarial training can suddenly learn to defeat its own one-step attack while
    multi-step PGD accuracy collapses to 0 within an epoch ("catastrophic overfitting"; Wong, Rice
    and Kolter 2020, "Fast is better than free", section 5.3). They detect it with PGD on a training
    minibatch and stop. Here, after every epoch, PGD-``steps`` (step ``2.5 eps / steps``, random
    start) accuracy on a fixed probe of training examples is logged as ``pgd_probe_accuracy``; when
    it falls more than ``drop`` below the best epoch so far, training stops and the best epoch's
    weights are put back. A run whose kept weights end below ``floor`` (a collapse with no robust
    epoch to fall back on, or too small a fall to stop at: seen here with Wong et al.'s own MNIST
    recipe in two of three seeds) finishes, but the guard says so on stderr, with the fix, and its
    record marks it ``not_robust``.

    Args:
        model: the network being trained (not the trainer wrapping it).
        x, y: the probe, ``[P, ...]`` images in [0, 1] and ``[P]`` integer labels.
        eps: L-inf radius of the probe attack (the training eps).
        steps: PGD iterations of the probe.
        drop: fall in probe accuracy (a fraction, 0.2 = 20 points) that counts as collapse.
        floor: probe accuracy of the kept weights below which the run is reported as not robust.
        state_dir: where the best epoch so far (its probe accuracy and weights) is kept, so that a
            run continued with ``--resume`` compares against it and can still put it back (the
            run's checkpoint folder); ``None``: in memory only.
    """

    STATE = "overfitting_guard.json"
    WEIGHTS = "overfitting_guard_best.weights.h5"

    def __init__(self, model, x, y, eps: float, steps: int = 10, drop: float = 0.2, seed: int = 0,
                 state_dir: str | Path | None = None, floor: float = 0.1):
        super().__init__()
        self.net, self.eps, self.steps, self.drop, self.seed = model, float(eps), int(steps), float(drop), int(seed)
        self.floor = float(floor)
        self.x, self.y = tf.constant(x, tf.float32), tf.constant(y, tf.int64)
        self.best, self.best_epoch, self.best_weights, self.stopped_epoch, self.last = -1.0, None, None, None, None
        self.state_dir = Path(state_dir) if state_dir is not None else None
        if self.state_dir is not None and (self.state_dir / self.STATE).is_file():  # a resumed run
            state = json.loads((self.state_dir / self.STATE).read_text())
            self.best, self.best_epoch = float(state["best_probe_accuracy"]), int(state["best_epoch"])

    def _keep_best(self, acc: float, epoch: int) -> None:
        self.best, self.best_epoch = acc, epoch
        if self.state_dir is None:
            self.best_weights = self.net.get_weights()
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.net.save_weights(self.state_dir / self.WEIGHTS)  # before the record that points to it
        write_json(self.state_dir / self.STATE, {"best_probe_accuracy": acc, "best_epoch": epoch})

    def probe_accuracy(self) -> float:
        """PGD accuracy of the current weights on the probe (a fraction)."""
        adv = pgd_linf(self.net, self.x, self.y, self.eps, 2.5 * self.eps / self.steps, self.steps, True,
                       tf.constant([self.seed, 0], tf.int64))
        return float(tf.reduce_mean(tf.cast(tf.argmax(self.net(adv, training=False), -1) == self.y, tf.float32)))

    def on_epoch_end(self, epoch, logs=None):
        acc = self.last = self.probe_accuracy()
        if logs is not None:
            logs["pgd_probe_accuracy"] = acc
        if acc > self.best:
            self._keep_best(acc, epoch)
        elif acc < self.best - self.drop:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def kept_accuracy(self) -> float | None:
        """Probe accuracy of the weights the run ends with (the best epoch's after a stop)."""
        return self.best if self.stopped_epoch is not None else self.last

    def not_robust(self) -> bool:
        """The weights the run ends with are below ``floor`` on the probe."""
        kept = self.kept_accuracy()
        return kept is not None and kept < self.floor

    def on_train_end(self, logs=None):
        if self.not_robust():
            print(f"fgsm_rs: PGD accuracy on {int(self.y.shape[0])} training examples is {self.kept_accuracy():.3f} at "
                  f"the end (best {self.best:.3f}): the single-step training is not robust (catastrophic "
                  "overfitting, Wong et al. 2020); train with --adversarial pgd or trades, or try another --seed",
                  file=sys.stderr)
        if self.stopped_epoch is not None:
            if self.best_weights is not None:
                self.net.set_weights(self.best_weights)
            else:
                self.net.load_weights(self.state_dir / self.WEIGHTS)
            print(f"fgsm_rs: PGD accuracy on {int(self.y.shape[0])} training examples fell to "
                  f"{self.last:.3f} after epoch {self.stopped_epoch + 1} "
                  f"(best {self.best:.3f} after epoch {self.best_epoch + 1}): catastrophic overfitting (Wong et al. "
                  f"2020); stopped and kept epoch {self.best_epoch + 1}'s weights", file=sys.stderr)

    def record(self) -> dict:
        """What happened, for the export's metadata."""
        return {"probe_examples": int(self.y.shape[0]), "eps": self.eps, "steps": self.steps, "drop": self.drop,
                "best_epoch": None if self.best_epoch is None else self.best_epoch + 1,
                "best_probe_accuracy": round(self.best, 4), "not_robust": self.not_robust(),
                "stopped_after_epoch": None if self.stopped_epoch is None else self.stopped_epoch + 1}
