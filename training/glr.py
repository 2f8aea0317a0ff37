"""Likelihood-ratio (GLR) gradient estimator: gradients from forward passes only.

Each noisy neuron computes ``v = z(theta; x) + e`` with estimator noise ``e`` of density ``p``.
Because ``theta`` enters only through the density of ``v`` given ``x``, the push-out likelihood
ratio gives, for every layer at once (Xiao, Peng, Hong, Ke and Yang 2020, section 2, eq. 5)::

    d/dtheta E[L] = E[ L * (dz/dtheta)^T * s(e) ],   s(e) = e / sigma^2   (Gaussian)
                                                     s(e) = sign(e) / b   (Laplace, scale b)

With ``R`` replications of each of ``N`` examples the estimate is the sample mean over the
``N * R`` rows. ``dz/dtheta`` is local to each layer (its input, or ``x_hat`` and 1 for batch-norm
scale and shift): each noisy layer computes its own term in ``glr_gradients``. No automatic
differentiation is used anywhere on this path: there is no tape, so the loss and the activations
may be discontinuous (0-1 loss, threshold units).

Variance reductions (each keeps the estimator unbiased):

* ``baseline``: subtract from ``L`` a value independent of the row's own noise: the leave-one-out
  mean of the other replications of the same example (leave-pair-out with antithetic pairs); with
  ``qmc`` the replications are dependent, so the example's noise-free loss is used instead.
* ``antithetic``: replications come in pairs ``(e, -e)``.
* ``layerwise``: at step ``t`` only noisy layer ``t mod K`` is perturbed and updated.
* ``qmc``: stratified (randomized quasi-Monte Carlo) noise along the replication axis.

Replications are one batched forward pass (the batch is tiled by the first noisy layer, after
its own matrix multiply, so that product and the input side of its outer product are computed
once); batches whose ``N * R`` rows exceed the memory budget run in chunks of examples.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import tensorflow as tf

from training.estimators import Estimate
from training.losses import get_loss
from training.registry import Option, register_estimator
from zoo.errors import UserInputError
from zoo.memory import rows_per_chunk
from zoo.noise import noisy_layers
from zoo.noise_context import noise_override, record_noise


@dataclasses.dataclass(frozen=True)
class GLR:
    """Likelihood-ratio estimator; build it with :func:`glr`.

    Attributes:
        loss: per-example loss name (``ce``, ``zero_one``, ``hinge``).
        replications: ``R``, noise draws per example (even when ``antithetic``).
        distribution: ``gaussian`` or ``laplace``.
        sigma: noise scale (Gaussian stddev or Laplace ``b``), in units of the pre-activation.
        layer_sigma: optional ``{layer name: sigma}`` overrides.
        baseline, antithetic, layerwise, qmc: variance reductions (module docstring).
        shared_noise: one set of ``R`` noises for every example of a batch (or chunk) instead of
            ``N x R`` draws: unbiased (each example's noise has its exact density), far fewer random
            numbers; see ``zoo.noise_context.NoiseRecorder``.
        max_rows: rows (examples x replications) per forward chunk; ``None`` derives it from a
            1 GiB activation budget for the model.
        report_rse: also log ``rse``, the estimated relative standard error of the gradient over
            the noise for this batch, ``sqrt(tr Var(G)) / ||G||``, from splitting the replications
            into two halves (approximate with ``qmc`` or ``baseline``, whose halves are dependent).
            Off by default: it accumulates the gradient a second time, about a fifth of an MLP step.
    """

    loss: str = "ce"
    replications: int = 10
    distribution: str = "gaussian"
    sigma: float = 1.0
    layer_sigma: Mapping[str, float] | None = None
    baseline: bool = False
    antithetic: bool = False
    layerwise: bool = False
    qmc: bool = False
    shared_noise: bool = False
    max_rows: int | None = None
    report_rse: bool = False

    def __post_init__(self):
        get_loss(self.loss)
        if self.replications < 1:
            raise UserInputError(f"replications must be >= 1, got {self.replications}")
        if self.distribution not in ("gaussian", "laplace"):
            raise UserInputError(f"estimator noise must be 'gaussian' or 'laplace', got {self.distribution!r}")
        if not self.sigma > 0:
            raise UserInputError(f"sigma must be > 0, got {self.sigma}")
        if self.antithetic and self.replications % 2:
            raise UserInputError(f"antithetic pairs need an even number of replications, got {self.replications}")
        if self.baseline and not self.qmc and self.replications < (4 if self.antithetic else 2):
            raise UserInputError("a leave-one-out baseline needs replications >= 2 (>= 4 with antithetic pairs)")

    @property
    def log_names(self) -> tuple[str, ...]:
        return ("rse",) if self.report_rse else ()

    def config(self) -> dict:
        out = {"method": "glr", **dataclasses.asdict(self)}
        out["layer_sigma"] = dict(self.layer_sigma or {})
        return out

    # ------------------------------------------------------------------ estimate
    def __call__(self, model, x, y, step=0) -> Estimate:
        layers = noisy_layers(model)
        if not layers:
            raise UserInputError(f"model {model.name!r} has no noisy layers; GLR needs noise on its pre-activations")
        R = self.replications
        chunk = max(1, (self.max_rows or rows_per_chunk(model)) // R)
        n = tf.shape(x)[0]
        active = tf.cast(step, tf.int32) % len(layers) if self.layerwise else None
        variables = model.trainable_variables
        index = {id(v): i for i, v in enumerate(variables)}
        classes = model.output_shape[-1]
        total = tf.cast(n * R, tf.float32)

        def chunk_estimate(start, xs, ys):
            b = tf.shape(xs)[0]
            with record_noise(replications=R, distribution=self.distribution, sigma=self.sigma,
                              layer_sigma=self.layer_sigma, antithetic=self.antithetic, qmc=self.qmc,
                              active_layer=active, shared=self.shared_noise) as rec:
                logits = model(xs, training=True)  # [b * R, classes]
            losses = get_loss(self.loss)(logits, tf.repeat(ys, R))  # [b * R]
            centred = losses - self._baseline(model, xs, ys, losses, b)
            weights = centred / total
            grads = self._accumulate(rec, weights, index, variables)
            if self.report_rse:
                half = tf.tile(self._half_mask(), [b]) if R > 1 else tf.cast((tf.range(b) + start) % 2 == 0, tf.float32)
                grads_half = self._accumulate(rec, weights * half * 2.0, index, variables)
            else:
                grads_half = [tf.zeros_like(g) for g in grads]
            mean_logits = tf.reduce_mean(tf.reshape(logits, [b, R, classes]), axis=1)
            return grads, grads_half, tf.reduce_sum(losses), mean_logits

        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            # Layers update replicated state (noise counters, batch-norm statistics) with a cross-replica
            # merge, which TensorFlow forbids inside a while_loop: each replica takes its local batch
            # in one pass (keep per-replica batch x R within memory).
            grads, grads_half, loss_sum, logits = chunk_estimate(0, x, y)
        else:
            def body(start, grads, grads_half, loss_sum, logits_ta):
                g, gh, ls, lg = chunk_estimate(start, x[start:start + chunk], y[start:start + chunk])
                grads = [a + c for a, c in zip(grads, g)]
                grads_half = [a + c for a, c in zip(grads_half, gh)]
                return start + chunk, grads, grads_half, loss_sum + ls, logits_ta.write(start // chunk, lg)

            zeros = [tf.zeros_like(v) for v in variables]
            ta = tf.TensorArray(tf.float32, size=0, dynamic_size=True, infer_shape=False,
                                element_shape=tf.TensorShape([None, classes]))
            _, grads, grads_half, loss_sum, ta = tf.while_loop(
                lambda start, *_: start < n, body, (tf.constant(0), zeros, list(zeros), tf.constant(0.0), ta))
            logits = ta.concat()
        logs = {}
        if self.report_rse:
            # G = (G_a + G_b) / 2 with independent halves: tr Var(G) ~ ||G_a - G_b||^2 / 4 = ||G_a - G||^2
            sq = tf.add_n([tf.reduce_sum(tf.square(a - g)) for a, g in zip(grads_half, grads)])
            norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]))
            logs["rse"] = tf.sqrt(sq) / (norm + 1e-12)
        return Estimate(grads, loss_sum / total, logits, logs)

    def _half_mask(self) -> tf.Tensor:
        """``[R]`` 0/1 mask of half of the replications (antithetic partners stay together)."""
        r = tf.range(self.replications)
        if self.antithetic:
            r = r % (self.replications // 2)
        return tf.cast(r % 2 == 0, tf.float32)

    def _baseline(self, model, xs, ys, losses, b):
        if not self.baseline:
            return 0.0
        R = self.replications
        if self.qmc:
            with noise_override(0.0):
                clean = get_loss(self.loss)(model(xs, training=False), ys)
            return tf.repeat(tf.stop_gradient(clean), R)
        per = tf.reshape(losses, [b, R])
        total = tf.reduce_sum(per, axis=1, keepdims=True)
        if self.antithetic:
            half = R // 2
            partner = tf.concat([per[:, half:], per[:, :half]], axis=1)
            return tf.reshape((total - per - partner) / (R - 2), [-1])
        return tf.reshape((total - per) / (R - 1), [-1])

    def _accumulate(self, rec, weights, index, variables):
        grads = [None] * len(variables)
        for record in rec.records:
            score = rec.score(record)
            shape = tf.concat([tf.shape(weights), tf.ones([tf.rank(score) - 1], tf.int32)], 0)
            g = score * tf.reshape(weights, shape)
            for key, grad in record.layer.glr_gradients(record, g, rec.replications).items():
                i = index[key]
                grads[i] = grad if grads[i] is None else grads[i] + grad
        return [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]


OPTIONS = (
    Option("--replications", "replications", int, help="noise draws per example (R)"),
    Option("--estimator-noise", "distribution", choices=("gaussian", "laplace"), help="estimator noise distribution"),
    Option("--sigma", "sigma", float, help="estimator noise scale"),
    Option("--baseline", "baseline", switch=True, help="subtract a leave-one-out baseline"),
    Option("--antithetic", "antithetic", switch=True, help="antithetic noise pairs (e, -e)"),
    Option("--layerwise", "layerwise", switch=True, help="noise in one layer per step, cycling"),
    Option("--qmc", "qmc", switch=True, help="stratified quasi-Monte Carlo noise"),
    Option("--shared-noise", "shared_noise", switch=True,
           help="the same R noises for every example of a batch (unbiased; R x units draws instead of N x R x units)"),
    Option("--report-rse", "report_rse", switch=True,
           help="log rse, the gradient's estimated relative standard error (costs a second accumulation per step)"),
)


def search_space(hp) -> dict:
    """GLR's tuning space: replications, sigma and the four variance-reduction switches."""
    return {"replications": hp.Choice("replications", [10, 30, 100]),
            "sigma": hp.Float("sigma", 0.25, 2.0, sampling="log"),
            "baseline": hp.Boolean("baseline", default=True),
            "antithetic": hp.Boolean("antithetic", default=False),
            "layerwise": hp.Boolean("layerwise", default=False),
            "qmc": hp.Boolean("qmc", default=False)}


@register_estimator("glr", options=OPTIONS, search_space=search_space,
                    description="Likelihood-ratio (GLR) gradients from forward passes only")
def glr(*, loss: str = "ce", replications: int = 10, distribution: str = "gaussian", sigma: float = 1.0,
        layer_sigma: Mapping[str, float] | None = None, baseline: bool = False, antithetic: bool = False,
        layerwise: bool = False, qmc: bool = False, shared_noise: bool = False, max_rows: int | None = None,
        report_rse: bool = False) -> GLR:
    """Likelihood-ratio gradient estimator (see :class:`GLR`).

    Example:
        >>> trainer = Trainer(zoo.create_model("glr_mlp", (28, 28, 1), 10, activation="threshold"),
        ...                   glr(loss="zero_one", replications=100, baseline=True))
    """
    return GLR(loss=loss, replications=replications, distribution=distribution, sigma=sigma,
               layer_sigma=layer_sigma, baseline=baseline, antithetic=antithetic, layerwise=layerwise, qmc=qmc,
               shared_noise=shared_noise, max_rows=max_rows, report_rse=report_rse)
