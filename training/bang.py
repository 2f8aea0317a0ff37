"""BANG, Batch Adjusted Network Gradients (Rozsa, Günther and Boult 2016,
"Towards Robust Deep Neural Networks with BANG", section 3).

Backprop in which each example's contribution to a layer's *weight update* is rescaled; the
signal passed to lower layers is unchanged. For layer ``l`` with output ``y^(l)`` and per-example
loss ``E_i``::

    kappa_i = dE_i / dy_i^(l)                      (one backward pass gives every kappa_i)
    m       = max_i' ||kappa_i'||_2
    rho_i   = epsilon * (1 - ||kappa_i|| / m)      (epsilon / 2 for misclassified examples, optionally)
    eta_i   = (m / ||kappa_i||) ** rho_i
    grad_W  = beta * (1 / N) * sum_i eta_i * dE_i / dW^(l)

Examples already classified well (small ``kappa``) get larger weights, so they keep flattening the
decision surface around themselves. ``sum_i eta_i dE_i/dW`` is the vector-Jacobian product of the
layer's own pre-activation with the rescaled cotangent ``eta_i * dE_i/dv_i``; the layer input is
held fixed there, so no per-example gradients are materialized.
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf

from training.estimators import Estimate
from training.losses import DIFFERENTIABLE, get_loss
from training.registry import Option, register_estimator
from zoo.errors import UserInputError
from zoo.noise import noisy_layers
from zoo.noise_context import record_outputs
from zoo.noisy_lstm import NoisyLSTM


@dataclasses.dataclass(frozen=True)
class Bang:
    """BANG estimator; build it with :func:`bang`.

    Attributes:
        loss: differentiable per-example loss (``ce`` or ``hinge``).
        epsilon: exponent scale, global float or ``{layer name: epsilon}`` (paper: 0.78-0.86).
        beta: gradient scale, global float or ``{layer name: beta}`` (paper: 0.4-1.6).
        half_epsilon_misclassified: use ``epsilon / 2`` for misclassified examples (the paper's
            CIFAR-10 setting).
    """

    loss: str = "ce"
    epsilon: float | dict = 0.815
    beta: float | dict = 1.0
    half_epsilon_misclassified: bool = False
    log_names = ()

    def __post_init__(self):
        if self.loss not in DIFFERENTIABLE:
            raise UserInputError(f"BANG is backprop-based; loss {self.loss!r} has no useful gradient (use ce or hinge)")
        for label, value in (("epsilon", self.epsilon), ("beta", self.beta)):
            values = value.values() if isinstance(value, dict) else [value]
            if any(not v >= 0 for v in values):
                raise UserInputError(f"BANG {label} must be >= 0, got {value}")

    def _per_layer(self, value, layer, default):
        return float(value.get(layer.name, default)) if isinstance(value, dict) else float(value)

    def config(self) -> dict:
        return {"method": "bang", **dataclasses.asdict(self)}

    def scales(self, kappa_norm: tf.Tensor, epsilon: tf.Tensor) -> tf.Tensor:
        """``eta_i`` ``[N]`` from ``||kappa_i||`` ``[N]`` and per-example ``epsilon`` ``[N]``."""
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:  # the max is over the global batch
            m = tf.reduce_max(ctx.all_gather(kappa_norm, axis=0))
        else:
            m = tf.reduce_max(kappa_norm)
        safe = tf.where(kappa_norm > 0, kappa_norm, m)
        rho = epsilon * (1.0 - safe / tf.maximum(m, 1e-30))
        eta = tf.pow(tf.maximum(m, 1e-30) / safe, rho)
        return tf.where(kappa_norm > 0, eta, tf.ones_like(eta))

    def __call__(self, model, x, y, step=0) -> Estimate:
        if any(isinstance(layer, NoisyLSTM) for layer in noisy_layers(model)):
            raise UserInputError("BANG supports dense and convolutional layers; the LSTM's recurrence needs per-step "
                             "rescaling that is not implemented")
        variables = model.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            with record_outputs() as records:
                logits = model(x, training=True)
            per_example = get_loss(self.loss)(logits, y)
            total = tf.reduce_sum(per_example)
        pre = [r.preactivation for r in records]
        outs = [r.output for r in records]
        kappas, deltas = tape.gradient(total, [outs, pre])
        n = tf.cast(tf.shape(x)[0], tf.float32)
        wrong = tf.not_equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(y, tf.int32))
        index = {id(v): i for i, v in enumerate(variables)}
        grads = [None] * len(variables)
        for record, kappa, delta in zip(records, kappas, deltas):
            layer = record.layer
            eps = self._per_layer(self.epsilon, layer, 0.815)
            eps_i = tf.fill([tf.shape(x)[0]], eps)
            if self.half_epsilon_misclassified:
                eps_i = tf.where(wrong, eps / 2, eps_i)
            axes = list(range(1, len(kappa.shape)))
            eta = self.scales(tf.sqrt(tf.reduce_sum(tf.square(kappa), axes)), eps_i)
            cot = delta * tf.reshape(eta, [-1] + [1] * len(axes)) * (self._per_layer(self.beta, layer, 1.0) / n)
            layer_vars = layer.trainable_variables
            for v, g in zip(layer_vars, tape.gradient(record.preactivation, layer_vars, output_gradients=cot)):
                grads[index[id(v)]] = tf.zeros_like(v) if g is None else g
        del tape
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
        return Estimate(grads, total / n, logits, {})


@register_estimator(
    "bang",
    options=(Option("--bang-epsilon", "epsilon", float, help="exponent scale epsilon (paper: 0.78-0.86)"),
             Option("--bang-beta", "beta", float, help="gradient scale beta (paper: 0.4-1.6)"),
             Option("--bang-half-eps-misclassified", "half_epsilon_misclassified", switch=True,
                    help="use epsilon / 2 for misclassified examples (the paper's CIFAR-10 setting)")),
    search_space=lambda hp: {"epsilon": hp.Float("bang_epsilon", 0.78, 0.86), "beta": hp.Float("bang_beta", 0.4, 1.6)})
def bang(*, loss: str = "ce", epsilon: float | dict = 0.815, beta: float | dict = 1.0,
         half_epsilon_misclassified: bool = False) -> Bang:
    """BANG: backprop with a per-example, per-layer rescaled weight update (see :class:`Bang`).

    Example: ``Trainer(zoo.create_model("lenet", ...), bang(epsilon=0.815))``.
    """
    return Bang(loss=loss, epsilon=epsilon, beta=beta, half_epsilon_misclassified=half_epsilon_misclassified)
