"""Reference-strength L-inf attacks: APGD-CE, APGD-DLR (targeted or not) and the AutoAttack ensemble.

Croce and Hein (ICML 2020), "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks". Written here in TensorFlow, batched, for any ``model`` mapping
inputs ``x`` (``[N, ...]``, e.g. images ``[N, H, W, C]``, values in [0, 1]) to logits
``[N, classes]``. Every iterate is projected onto ``{x' : |x' - x|_inf <= eps} ∩ [0, 1]^d``, so
every returned example lies in the eps ball and in [0, 1] by construction.

APGD (Croce and Hein 2020, Algorithm 1) is PGD on the sign of the gradient with

* a step size ``eta`` starting at ``2 eps`` and halved only at checkpoints
  ``w_j = ceil(p_j N_iter)`` with ``p_0 = 0``, ``p_1 = 0.22``,
  ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` (their Section 3), when either
  condition 1: fewer than ``rho = 0.75`` of the steps since the last checkpoint raised the loss, or
  condition 2: the step size was not halved at the last checkpoint and the best loss has not
  improved since; after a halving the iterate restarts from the best point found;
* momentum ``alpha = 0.75``:
  ``z = P(x_k + eta sign(grad f(x_k)))``,
  ``x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1}))`` (``alpha = 1`` on the first step);
* random restarts, each run only on the points not yet misclassified.

Losses (maximized; ``z`` the logits, ``z_pi1 >= z_pi2 >= ...`` sorted decreasingly):

* ``ce``: cross-entropy ``-log softmax(z)_y``.
* ``dlr``: ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` (their Section 4), invariant to shifts and
  rescaling of the logits, so logit scaling cannot mask the gradient.
* ``dlr_targeted``: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (their Section 4), run
  against each of the ``n_target_classes`` (default 9) highest-scoring other classes ``t``.

Randomized models (inference noise on) are attacked with expectation over transformation (Athalye
et al., ICML 2018): every gradient and loss value is the mean over ``eot_samples`` stochastic
forward passes (AutoAttack's ``rand`` version uses 20), and a point counts as misclassified when
the majority vote of those passes is wrong. A randomized model is judged afterwards by fresh noise,
so an iterate that one vote got wrong by luck may be right the next time: with ``eot_samples > 1``
each run therefore uses its whole iteration budget (no stop once every point is misclassified) and
returns per point the misclassified iterate with the largest share of wrong passes, the surest of
them, rather than the last one (Athalye, Carlini and Wagner 2018, Section 4: the attacker optimizes
the expectation over the randomness, not one draw). For the same reason every point is attacked,
whatever its clean vote said.

:func:`autoattack` runs APGD-CE, then APGD-T (targeted DLR), each only on the points still
classified correctly, and keeps per point the first successful adversarial example (the worst case
over the attacks). The FAB-T and Square members of AutoAttack standard are not included here.

Registry: importing this module (as every registry read does, :func:`zoo.registry.import_submodules`)
calls :func:`register`, which adds ``apgd_ce``, ``apgd_dlr`` (targeted) and ``autoattack`` to
:mod:`evaluation.attacks`'s registry (kind ``ball``, gradient ``model``): they are choices of
``--attacks`` and ``--transfer-attacks``. The harness's white-box suite runs them through
:func:`harness_attack` instead, on the model itself (EOT, the harness's vote as the judge), and
``autoattack`` is its reference white-box number.
"""
from __future__ import annotations

import dataclasses
import math
import weakref
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from zoo.errors import UserInputError

ATTACKS = ("apgd_ce", "apgd_dlr", "autoattack")
LOSSES = ("ce", "dlr", "dlr_targeted")

Model = Callable[[tf.Tensor], tf.Tensor]


# --------------------------------------------------------------------------- schedule and losses
def checkpoints(n_iter: int, p1: float = 0.22, decrease: float = 0.03, min_length: float = 0.06) -> list[int]:
    """APGD's checkpoints ``w_j = ceil(p_j n_iter)`` in iterations (Croce and Hein 2020, Section 3).

    ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, kept while
    ``p_j <= 1``. Returns the strictly increasing list ``[0, w_1, w_2, ...]``; for ``n_iter = 100``
    it is ``[0, 22, 41, 57, 70, 80, 87, 93, 99]``.
    """
    if n_iter < 1:
        raise UserInputError(f"n_iter must be >= 1, got {n_iter}")
    p = [0.0, p1]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - decrease, min_length)
        if nxt > 1.0 + 1e-12:
            break
        p.append(nxt)
    # round before ceil: 0.22 * 100 is 22.000000000000004 in floating point
    w = sorted({min(n_iter, math.ceil(round(pj * n_iter, 6))) for pj in p})
    return w


def _other_max(z: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """``max_{i != y} z_i`` per row of ``z`` ``[N, K]``."""
    mask = tf.one_hot(y, tf.shape(z)[-1], on_value=True, off_value=False)
    return tf.reduce_max(tf.where(mask, tf.constant(-np.inf, z.dtype), z), axis=-1)


def ce_loss(z: tf.Tensor, y: tf.Tensor, t: tf.Tensor | None = None) -> tf.Tensor:
    """Cross-entropy ``[N]`` of logits ``z`` ``[N, K]`` against labels ``y`` ``[N]`` (``t`` unused)."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32), logits=z)


def dlr_loss(z: tf.Tensor, y: tf.Tensor, t: tf.Tensor | None = None) -> tf.Tensor:
    """Difference of logits ratio ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)``, ``[N]``.

    Croce and Hein (2020), Section 4; needs at least 3 classes. Positive once ``x`` is misclassified.
    """
    zs = tf.sort(z, axis=-1, direction="DESCENDING")
    zy = tf.gather(z, y, batch_dims=1)
    return -(zy - _other_max(z, y)) / (zs[:, 0] - zs[:, 2] + 1e-12)


def dlr_targeted_loss(z: tf.Tensor, y: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
    """Targeted DLR ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``, ``[N]``.

    Croce and Hein (2020), Section 4 (APGD-T); needs at least 4 classes. ``t`` ``[N]`` the targets.
    """
    zs = tf.sort(z, axis=-1, direction="DESCENDING")
    zy = tf.gather(z, y, batch_dims=1)
    zt = tf.gather(z, t, batch_dims=1)
    return -(zy - zt) / (zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, 3]) + 1e-12)


_LOSS_FNS = {"ce": ce_loss, "dlr": dlr_loss, "dlr_targeted": dlr_targeted_loss}


def _call(model, x: tf.Tensor) -> tf.Tensor:
    """Logits of ``model`` at ``x``: Keras models run in inference mode (``training=False``; a
    model with ``infer_stddev > 0`` draws fresh noise on every call), other callables as they are."""
    z = model(x, training=False) if isinstance(model, keras.layers.Layer) else model(x)
    return tf.cast(z, tf.float32)  # float32 losses whatever the model's compute dtype


def _tile(x: tf.Tensor, times: int) -> tf.Tensor:
    if times == 1:
        return x
    reps = tf.concat([[times], tf.ones([tf.rank(x) - 1], tf.int32)], 0)
    return tf.tile(x, reps)


def _bcast(v: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """``[N]`` -> ``[N, 1, ..., 1]`` broadcastable against ``like``."""
    return tf.reshape(v, tf.concat([tf.shape(v), tf.ones([tf.rank(like) - 1], tf.int32)], 0))


# --------------------------------------------------------------------------- one APGD run
class _Engine:
    """The traced pieces of APGD for one model, loss and EOT count (reused across batches, targets
    and restarts, so each is traced once per input shape)."""

    def __init__(self, model, loss: str, eot_samples: int = 1):
        if loss not in _LOSS_FNS:
            raise UserInputError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        if eot_samples < 1:
            raise UserInputError(f"eot_samples must be >= 1, got {eot_samples}")
        # held weakly where possible: engines are cached per model (see _engine) and must not keep it
        # alive; every caller holds the model itself while it uses the engine
        try:
            self._model = weakref.ref(model)
        except TypeError:
            self._model = lambda: model
        self.loss_fn = _LOSS_FNS[loss]
        self.eot = int(eot_samples)
        self.randomized = self.eot > 1  # judged later by fresh noise: keep the surest misclassified iterate
        self.shape = None

    def build(self, shape: Sequence[int]) -> None:
        """Trace the steps for inputs ``[None, *shape]`` (any batch size, one trace each)."""
        if self.shape == tuple(shape):
            return
        self.shape = tuple(shape)
        img = tf.TensorSpec([None, *shape], tf.float32)
        vec = tf.TensorSpec([None], tf.float32)
        lab = tf.TensorSpec([None], tf.int32)
        scalar = tf.TensorSpec([], tf.float32)
        self.evaluate = tf.function(self._evaluate, input_signature=[img, lab, lab])
        self.loop = tf.function(self._loop, input_signature=[img, img, lab, lab, scalar, scalar, scalar, vec])
        self.logits = tf.function(self._mean_logits, input_signature=[img])

    def _mean_logits(self, x):
        """Mean logits ``[N, K]`` over ``eot`` passes (targets of APGD-T, clean predictions)."""
        n = tf.shape(x)[0]
        z = _call(self._model(), _tile(x, self.eot))
        return tf.reduce_mean(tf.reshape(z, [self.eot, n, -1]), axis=0)

    def _evaluate(self, x, y, t):
        """Loss ``[N]`` (mean over EOT passes), its input gradient ``[N, ...]`` (the mean of the
        passes' gradients), whether the passes' majority vote is wrong ``[N]`` (bool) and the share
        of passes that are wrong ``[N]`` (in [0, 1])."""
        n = tf.shape(x)[0]
        with tf.GradientTape() as tape:
            tape.watch(x)
            z = _call(self._model(), _tile(x, self.eot))
            per = self.loss_fn(z, tf.tile(y, [self.eot]), tf.tile(t, [self.eot]))
            total = tf.reduce_sum(per) / self.eot
        grad = tape.gradient(total, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        loss = tf.reduce_mean(tf.reshape(per, [self.eot, n]), axis=0)
        pred = tf.reshape(tf.argmax(z, -1, output_type=tf.int32), [self.eot, n])
        votes = tf.reduce_sum(tf.one_hot(pred, tf.shape(z)[-1], dtype=tf.int32), axis=0)
        wrong = tf.not_equal(tf.argmax(votes, -1, output_type=tf.int32), tf.cast(y, tf.int32))
        share = 1.0 - tf.cast(tf.gather(votes, tf.cast(y, tf.int32), batch_dims=1), tf.float32) / self.eot
        return loss, grad, wrong, share

    def _step(self, s, x0, y, t, eps, a):
        """One APGD iteration (momentum update of Croce and Hein 2020, Section 3) with the bookkeeping of Algorithm 1."""
        lo = tf.maximum(x0 - eps, 0.0)
        hi = tf.minimum(x0 + eps, 1.0)
        x = s["x"]
        z = tf.clip_by_value(x + _bcast(s["eta"], x) * tf.sign(s["grad"]), lo, hi)
        x_new = tf.clip_by_value(x + a * (z - x) + (1.0 - a) * (x - s["x_prev"]), lo, hi)
        loss, grad, wrong, share = self._evaluate(x_new, y, t)
        better = loss > s["loss_best"]
        wide = _bcast(better, x)
        keep = wrong & (share >= s["share_adv"]) if self.randomized else wrong
        return {
            "x": x_new, "x_prev": x, "grad": grad, "loss": loss, "eta": s["eta"],
            "x_best": tf.where(wide, x_new, s["x_best"]), "loss_best": tf.where(better, loss, s["loss_best"]),
            "grad_best": tf.where(wide, grad, s["grad_best"]),
            "x_adv": tf.where(_bcast(keep, x), x_new, s["x_adv"]), "share_adv": tf.where(keep, share, s["share_adv"]),
            "found": s["found"] | wrong,
            "count": s["count"] + tf.cast(loss > s["loss"], tf.float32),
            "reduced_last": s["reduced_last"], "loss_best_last": s["loss_best_last"],
        }

    def _check(self, s, length, rho):
        """Checkpoint ``w_j``: halve the step and restart from the best point where condition 1
        (under ``rho`` of the ``length`` steps raised the loss) or condition 2 (no halving at the
        last checkpoint and no new best loss since) holds (Croce and Hein 2020, Section 3). As in their
        Algorithm 1 the previous iterate is kept, so the next step's momentum term is
        ``x_best - x_k``."""
        cond1 = s["count"] < rho * length
        cond2 = tf.logical_not(s["reduced_last"]) & (s["loss_best"] <= s["loss_best_last"])
        reduce = cond1 | cond2
        wide = _bcast(reduce, s["x"])
        out = dict(s)
        out.update({
            "eta": tf.where(reduce, s["eta"] / 2.0, s["eta"]),
            "x": tf.where(wide, s["x_best"], s["x"]),
            "grad": tf.where(wide, s["grad_best"], s["grad"]),
            "loss": tf.where(reduce, s["loss_best"], s["loss"]),
            "count": tf.zeros_like(s["count"]), "reduced_last": reduce, "loss_best_last": s["loss_best"],
        })
        return out

    def _loop(self, x0, start, y, t, eps, alpha, rho, lengths):
        """The whole run in one graph: ``lengths[k]`` is ``w_j - w_{j-1}`` when iteration ``k + 1``
        is checkpoint ``w_j``, else 0. A deterministic model's run stops early once every point is
        misclassified (later iterates cannot change the outcome); a randomized one's runs to the end."""
        loss, grad, wrong, share = self._evaluate(start, y, t)
        n = tf.shape(x0)[0]
        s = {"x": start, "x_prev": start, "grad": grad, "loss": loss, "eta": tf.fill([n], 2.0 * eps),
             "x_best": start, "loss_best": loss, "grad_best": grad,
             "x_adv": tf.where(_bcast(wrong, x0), start, x0), "found": wrong,
             "share_adv": tf.where(wrong, share, tf.zeros([n])),
             "count": tf.zeros([n], tf.float32), "reduced_last": tf.zeros([n], tf.bool), "loss_best_last": loss}

        def body(k, s):
            s = self._step(s, x0, y, t, eps, tf.where(k == 0, tf.constant(1.0), alpha))
            length = lengths[k]
            s = tf.cond(length > 0, lambda: self._check(s, length, rho), lambda: s)
            return k + 1, s

        def more(k, s):
            if self.randomized:
                return k < tf.shape(lengths)[0]
            return (k < tf.shape(lengths)[0]) & tf.logical_not(tf.reduce_all(s["found"]))

        _, s = tf.while_loop(more, body, (tf.constant(0), s))
        return tf.where(_bcast(s["found"], x0), s["x_adv"], s["x_best"]), s["found"]

    def run(self, x0: tf.Tensor, y: tf.Tensor, t: tf.Tensor, eps: float, n_iter: int, rng: tf.random.Generator,
            random_start: bool = True, alpha: float = 0.75, rho: float = 0.75) -> tuple[tf.Tensor, tf.Tensor]:
        """One APGD run on a batch ``x0`` ``[B, ...]``; returns ``(x_out, found)``: per point the
        last misclassified iterate where one was found (``found`` ``[B]``; for a randomized model the
        misclassified iterate with the largest share of wrong passes), else the point of highest loss.
        The start is uniform in the ball (clipped to [0, 1]) or ``x0``."""
        self.build(x0.shape[1:])
        eps_t = tf.constant(eps, x0.dtype)
        start = x0
        if random_start:
            start = tf.clip_by_value(x0 + rng.uniform(tf.shape(x0), -eps, eps, x0.dtype),
                                     tf.maximum(x0 - eps_t, 0.0), tf.minimum(x0 + eps_t, 1.0))
        marks = checkpoints(n_iter)
        lengths = np.zeros(n_iter, np.float32)
        lengths[np.array(marks[1:]) - 1] = np.diff(marks)
        return self.loop(x0, start, y, t, eps_t, tf.constant(alpha, tf.float32), tf.constant(rho, tf.float32),
                         tf.constant(lengths))


_ENGINES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _engine(model, loss: str, eot_samples: int) -> _Engine:
    """The engine of ``(model, loss, eot_samples)``, cached per model (a Keras model or any callable
    that takes weak references; the entry dies with the model), so repeated attacks on one model
    trace their graphs once. Not cached inside a :func:`zoo.noise_context.noise_override` block,
    which is read when a graph is traced."""
    from zoo.noise_context import current_override

    if current_override() is not None:
        return _Engine(model, loss, eot_samples)
    try:
        per_model = _ENGINES.setdefault(model, {})
    except TypeError:  # not weakly referenceable or not hashable
        return _Engine(model, loss, eot_samples)
    key = (loss, int(eot_samples))
    if key not in per_model:
        per_model[key] = _Engine(model, loss, eot_samples)
    return per_model[key]


def _check_inputs(x, y, eps: float, norm) -> tuple[np.ndarray, np.ndarray]:
    if norm not in ("inf", "linf", np.inf):
        raise UserInputError(f"APGD here is L-inf only; got norm {norm!r}")
    if not (eps >= 0 and np.isfinite(eps)):
        raise UserInputError(f"eps must be finite and >= 0, got {eps}")
    x = np.asarray(x, np.float32)
    y = np.asarray(y).astype(np.int32)
    if x.size and (x.min() < 0 or x.max() > 1):
        raise UserInputError(f"inputs must lie in [0, 1]; got [{x.min():.3g}, {x.max():.3g}]")
    if len(x) != len(y):
        raise UserInputError(f"{len(x)} inputs but {len(y)} labels")
    return x, y


def _targets(engine: _Engine, x: np.ndarray, y: np.ndarray, n_target_classes: int, batch_size: int) -> np.ndarray:
    """``[N, min(n_target_classes, K - 1)]``: per point the other classes by decreasing clean logit
    (mean over the EOT passes), the targets of APGD-T (Croce and Hein 2020, Section 4)."""
    engine.build(x.shape[1:])
    z = np.concatenate([engine.logits(tf.constant(x[i:i + batch_size])).numpy()
                        for i in range(0, len(x), batch_size)]).astype(np.float64)
    if z.shape[1] < 4:
        raise UserInputError(f"targeted DLR needs at least 4 classes, the model has {z.shape[1]}")
    z[np.arange(len(z)), y] = -np.inf
    return np.argsort(-z, axis=1, kind="stable")[:, :min(n_target_classes, z.shape[1] - 1)].astype(np.int32)


def _apgd_points(engine: _Engine, x: np.ndarray, y: np.ndarray, t: np.ndarray, eps: float, n_iter: int,
                 n_restarts: int, rng: tf.random.Generator, batch_size: int, alpha: float, rho: float,
                 random_start: bool, adv: np.ndarray, found: np.ndarray) -> None:
    """Run APGD (``n_restarts`` times, each on the points not yet found) over all points in
    batches; updates ``adv`` and ``found`` in place."""
    for r in range(max(n_restarts, 1)):
        todo = np.flatnonzero(~found)
        for i in range(0, len(todo), batch_size):
            idx = todo[i:i + batch_size]
            out, ok = engine.run(tf.constant(x[idx]), tf.constant(y[idx]), tf.constant(t[idx]), eps, n_iter, rng,
                                 random_start=random_start or r > 0, alpha=alpha, rho=rho)
            out, ok = out.numpy(), ok.numpy()
            # keep the first success; a failed restart replaces a failed earlier one (highest loss of the latest)
            replace = ok | ~found[idx]
            adv[idx[replace]] = out[replace]
            found[idx] |= ok


def apgd(model: Model, x, y, eps: float, *, loss: str = "ce", n_iter: int = 100, n_restarts: int = 1,
         n_target_classes: int = 9, eot_samples: int = 1, alpha: float = 0.75, rho: float = 0.75,
         random_start: bool = True, seed: int = 0, batch_size: int = 500, norm="inf",
         return_found: bool = False) -> tf.Tensor | tuple[tf.Tensor, np.ndarray]:
    """APGD with loss ``loss`` (Croce and Hein 2020, Algorithm 1), L-inf, batched.

    Args:
        model: Keras model (called with ``training=False``) or callable, ``[N, ...] -> [N, K]`` logits.
        x: inputs ``[N, ...]``, values in [0, 1].
        y: labels ``[N]`` (int).
        eps: L-inf radius, in input units (pixel values in [0, 1]).
        loss: ``"ce"`` (APGD-CE), ``"dlr"`` (APGD-DLR) or ``"dlr_targeted"`` (APGD-T: one run of
            ``n_iter`` per target, over the ``n_target_classes`` highest other classes, each run on
            the points not yet misclassified).
        n_iter: iterations per run (gradient evaluations: ``n_iter + 1``); 100 in AutoAttack.
        n_restarts: runs per point (per target for APGD-T); a restart starts at a random point
            of the ball and runs only on the points no earlier run misclassified.
        eot_samples: stochastic forward passes averaged per gradient and loss (EOT); 1 for a
            deterministic model, 20 in AutoAttack's ``rand`` version.
        alpha, rho: momentum and the checkpoint's improvement share (0.75 and 0.75 in the paper).
        random_start: first run from a uniform random point of the ball (else from ``x``).
        seed: seed of the random starts (a noisy model's own noise has its own state).
        batch_size: points per batch; one forward pass holds ``batch_size * eot_samples`` rows.
        return_found: also return the bool mask ``[N]`` of points misclassified at some iterate.

    Returns:
        Adversarial inputs ``[N, ...]`` (``tf.float32``) with ``|x_adv - x|_inf <= eps`` and values
        in [0, 1]: per point the misclassified iterate where one was found, else the iterate of
        highest loss. With ``return_found``, ``(x_adv, found)``.
    """
    x, y = _check_inputs(x, y, eps, norm)
    engine = _engine(model, loss, eot_samples)
    adv = x.copy()
    found = np.zeros(len(x), bool)
    rng = tf.random.Generator.from_seed(seed)
    if len(x) and eps > 0:
        if loss == "dlr_targeted":
            targets = _targets(engine, x, y, n_target_classes, batch_size)
            for j in range(targets.shape[1]):
                _apgd_points(engine, x, y, targets[:, j], eps, n_iter, n_restarts, rng, batch_size, alpha, rho,
                             random_start, adv, found)
        else:
            _apgd_points(engine, x, y, y, eps, n_iter, n_restarts, rng, batch_size, alpha, rho, random_start,
                         adv, found)
    adv = tf.constant(adv)
    return (adv, found) if return_found else adv


def apgd_ce(model: Model, x, y, eps: float, **kwargs) -> tf.Tensor:
    """APGD-CE: :func:`apgd` with the cross-entropy loss (Croce and Hein 2020). Returns ``[N, ...]``."""
    return apgd(model, x, y, eps, loss="ce", **kwargs)


def apgd_dlr(model: Model, x, y, eps: float, *, targeted: bool = True, **kwargs) -> tf.Tensor:
    """APGD-DLR: targeted (APGD-T, AutoAttack standard, 9 target classes by default) or
    untargeted (AutoAttack ``rand``) :func:`apgd` with the DLR loss. Returns ``[N, ...]``."""
    return apgd(model, x, y, eps, loss="dlr_targeted" if targeted else "dlr", **kwargs)


# --------------------------------------------------------------------------- AutoAttack ensemble
@dataclasses.dataclass
class AutoAttackResult:
    """What :func:`autoattack` found.

    Attributes:
        adv: ``[N, ...]`` float32; the successful adversarial example where one was found, else ``x``.
        robust: ``[N]`` bool; classified correctly on ``x`` and by every attack in the ensemble.
        clean_correct: ``[N]`` bool; classified correctly on ``x``.
        accuracy_after: ``{attack name: robust accuracy after it}`` in the order run.
        budget: the settings (norm, eps, n_iter, restarts, targets, EOT samples, version).
    """
    adv: np.ndarray
    robust: np.ndarray
    clean_correct: np.ndarray
    accuracy_after: dict
    budget: dict

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.mean()) if len(self.robust) else float("nan")


def vote_predictor(model: Model, eot_samples: int = 1, batch_size: int = 500) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> labels [N]``: argmax of the logits, or for ``eot_samples > 1`` the majority vote of
    that many stochastic passes (ties to the lower class), the criterion APGD uses internally."""
    def predict(x: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(x), batch_size):
            xb = tf.constant(np.asarray(x[i:i + batch_size], np.float32))
            n = xb.shape[0]
            z = _call(model, _tile(xb, eot_samples))
            pred = tf.reshape(tf.argmax(z, -1, output_type=tf.int32), [eot_samples, n])
            votes = tf.reduce_sum(tf.one_hot(pred, z.shape[-1], dtype=tf.int32), axis=0)
            out.append(tf.argmax(votes, -1, output_type=tf.int32).numpy())
        return np.concatenate(out) if out else np.zeros([0], np.int32)

    return predict


def autoattack(model: Model, x, y, eps: float, *, version: str = "standard", n_iter: int = 100,
               n_restarts: int = 1, n_target_classes: int = 9, eot_samples: int | None = None, seed: int = 0,
               batch_size: int = 500, predict: Callable[[np.ndarray], np.ndarray] | None = None,
               attacks: Sequence[str] | None = None, norm="inf",
               log: Callable[[str], None] | None = None) -> AutoAttackResult:
    """AutoAttack-style ensemble (Croce and Hein 2020): per point the worst case over
    APGD-CE and APGD-T (``version="standard"``) or APGD-CE and untargeted APGD-DLR with EOT
    (``version="rand"``, 20 EOT samples by default), each attack run only on the points that are
    still classified correctly (for a randomized model, ``eot_samples > 1``: every point not yet
    fooled, whatever its clean vote said).

    Args:
        model: Keras model or callable ``[N, ...] -> [N, K]`` logits.
        x: inputs ``[N, ...]`` in [0, 1]; y: labels ``[N]``; eps: L-inf radius (input units).
        n_iter, n_restarts, n_target_classes: per attack, as in :func:`apgd` (AutoAttack standard:
            100, 1, 9).
        eot_samples: stochastic passes per gradient (default 1 for ``standard``, 20 for ``rand``).
        predict: ``x -> labels`` judging success (default: :func:`vote_predictor` with
            ``eot_samples``); for a noisy model pass the prediction that is being evaluated
            (e.g. the vote of the harness).
        attacks: override the member list; names from ``"apgd_ce"``, ``"apgd_t"``, ``"apgd_dlr"``.
        log: optional ``str -> None`` progress callback.

    Returns:
        :class:`AutoAttackResult`; ``adv`` lies in the eps ball around ``x`` and in [0, 1].
    """
    if version not in ("standard", "rand"):
        raise UserInputError(f"version must be 'standard' or 'rand', got {version!r}")
    x, y = _check_inputs(x, y, eps, norm)
    if eot_samples is None:
        eot_samples = 20 if version == "rand" else 1
    members = list(attacks) if attacks is not None else (
        ["apgd_ce", "apgd_t"] if version == "standard" else ["apgd_ce", "apgd_dlr"])
    losses = {"apgd_ce": "ce", "apgd_t": "dlr_targeted", "apgd_dlr": "dlr"}
    unknown = set(members) - set(losses)
    if unknown:
        raise UserInputError(f"unknown ensemble member(s) {sorted(unknown)}; choose from {', '.join(losses)}")
    predict = predict or vote_predictor(model, eot_samples, batch_size)
    clean_correct = predict(x) == y if len(x) else np.zeros(0, bool)
    # a randomized model's clean vote is itself one random draw: a point it got wrong by chance is attacked
    # too, or the next fresh vote would judge the unattacked image (and find it right about as often)
    robust = clean_correct.copy() if eot_samples == 1 else np.ones(len(x), bool)
    adv = x.copy()
    accuracy_after = {"clean": float(robust.mean()) if len(x) else float("nan")}
    rng = tf.random.Generator.from_seed(seed)
    for name in members:
        engine = _engine(model, losses[name], eot_samples)
        targets = None
        if name == "apgd_t":
            idx = np.flatnonzero(robust)
            targets = np.zeros([len(x), 0], np.int32)
            if len(idx) and eps > 0:
                t = _targets(engine, x[idx], y[idx], n_target_classes, batch_size)
                targets = np.zeros([len(x), t.shape[1]], np.int32)
                targets[idx] = t
        runs = range(targets.shape[1]) if targets is not None else [None]
        for j in runs:
            idx = np.flatnonzero(robust)
            if not len(idx) or eps == 0:
                break
            t = y[idx] if j is None else targets[idx, j]
            out = x[idx].copy()
            found = np.zeros(len(idx), bool)
            _apgd_points(engine, x[idx], y[idx], t, eps, n_iter, n_restarts, rng, batch_size, 0.75, 0.75, True,
                         out, found)
            fooled = predict(out) != y[idx]  # judged by the evaluated prediction, not the attack's own
            adv[idx[fooled]] = out[fooled]
            robust[idx[fooled]] = False
        accuracy_after[name] = float(robust.mean()) if len(x) else float("nan")
        if log:
            log(f"autoattack {name}: robust accuracy {100 * accuracy_after[name]:.2f}% (eps {eps})")
    budget = {"norm": "inf", "eps": float(eps), "n_iter": n_iter, "restarts": n_restarts,
              "n_target_classes": n_target_classes, "eot": eot_samples, "version": version, "attacks": members}
    return AutoAttackResult(adv, robust, clean_correct, accuracy_after, budget)


# --------------------------------------------------------------------------- registry adapter
DESCRIPTIONS = {
    "apgd_ce": "APGD-CE: step-size schedule, momentum, restarts (Croce and Hein 2020)",
    "apgd_dlr": "APGD-T: targeted DLR loss, 9 target classes (Croce and Hein 2020)",
    "autoattack": "worst case of APGD-CE and APGD-T per point, only on points still correct (Croce and Hein 2020)",
}


def run_attack(name: str, fn: Model, x, y, eps: float, norm="inf", steps: int = 100, restarts: int = 1,
               seed: int = 0, eot: int = 1, batch_size: int = 500, **unused) -> tf.Tensor:
    """Run ``name`` (one of :data:`ATTACKS`) with the keywords of :func:`evaluation.attacks.attack`:
    ``(fn, x, y, eps, norm, steps, restarts, seed)`` -> adversarial ``x`` ``[N, ...]`` (``tf.float32``).

    ``steps`` is APGD's ``n_iter`` (100 for AutoAttack's reference number), ``restarts`` its
    ``n_restarts``, ``eot`` its ``eot_samples``. With ``eot > 1``, pass ``fn`` as one stochastic
    pass (``logits_fn(model)``) so EOT averages gradients here; a ``fn`` that already averages the
    logits of several passes (``logits_fn(model, eot=20)``) is EOT too, with ``eot=1`` here.
    Keywords of other attacks (``step_size``, ``spsa_*``) do not apply to parameter-free APGD and
    are ignored.
    """
    kwargs = dict(n_iter=steps, n_restarts=restarts, seed=seed, eot_samples=eot, batch_size=batch_size, norm=norm)
    if name == "apgd_ce":
        return apgd_ce(fn, x, y, eps, **kwargs)
    if name == "apgd_dlr":
        return apgd_dlr(fn, x, y, eps, targeted=True, **kwargs)
    if name == "autoattack":
        return tf.constant(autoattack(fn, x, y, eps, **kwargs).adv)
    raise UserInputError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")


def registry_run(name: str) -> Callable:
    """``run(fn, x, y, settings) -> adversarial x``, the signature of
    :class:`evaluation.attacks.AttackEntry`, for attack ``name``: ``settings.steps`` iterations,
    ``settings.restarts`` restarts, ``settings.seed``; L-inf only (``settings.order`` inf)."""
    def run(fn, x, y, settings) -> tf.Tensor:
        if settings.order != np.inf:
            raise UserInputError(f"{name} is an L-inf attack; got norm {settings.order}")
        return run_attack(name, fn, np.asarray(x), np.asarray(y), settings.eps, steps=settings.steps,
                          restarts=settings.restarts, seed=settings.seed)

    run.__doc__ = DESCRIPTIONS[name]
    return run


def register() -> None:
    """Add :data:`ATTACKS` to :mod:`evaluation.attacks`'s registry (kind ``ball``, gradient
    ``model``); a no-op for names already there."""
    from evaluation.attacks import ATTACKS as REGISTRY
    from evaluation.attacks import register_attack

    for name in ATTACKS:
        if name not in REGISTRY:
            register_attack(name, kind="ball", gradient="model", description=DESCRIPTIONS[name])(registry_run(name))


def harness_attack(name: str, model: Model, x, y, eps: float, *, n_iter: int = 100, n_restarts: int = 1,
                   eot: int = 1, seed: int = 0, predict: Callable[[np.ndarray], np.ndarray] | None = None,
                   batch_size: int | None = None) -> tuple[np.ndarray, dict]:
    """Run ``name`` (one of :data:`ATTACKS`) on ``model`` itself, as the harness's white-box suite does.

    Deterministic models (``eot == 1``) get AutoAttack ``standard`` (APGD-CE, then APGD-T with 9
    targets); models with inference noise (``eot > 1``) get AutoAttack's ``rand`` version (APGD-CE,
    then untargeted APGD-DLR, each gradient and loss the mean over ``eot`` noisy passes: expectation
    over transformation, Athalye et al. 2018, section 4; Croce and Hein 2020, section 5). Success is
    judged by ``predict`` (the harness's prediction, e.g. the vote of 20 noisy passes).

    Args:
        name: ``"apgd_ce"``, ``"apgd_dlr"`` (targeted for ``eot == 1``, untargeted with EOT, as in
            AutoAttack's two versions) or ``"autoattack"``.
        model: Keras model (``training=False``) or callable ``[N, ...] -> [N, K]`` logits.
        x, y: the points ``[N, ...]`` in [0, 1], labels ``[N]``. Those ``predict`` already gets wrong
            are not attacked, unless the model is randomized (see :func:`autoattack`).
        eps: L-inf radius in input units.
        n_iter, n_restarts: per APGD run (AutoAttack: 100 and 1).
        eot: stochastic passes per gradient (1 for a deterministic model).
        predict: ``x -> labels``; default the majority vote of ``eot`` passes.
        batch_size: points per batch (default: what :func:`zoo.memory.rows_per_chunk` allows for
            ``eot`` copies of each, at most 500).

    Returns:
        ``(adv, budget)``: ``adv`` ``[N, ...]`` float32 inside the eps ball and [0, 1] (a point no
        member broke is returned unchanged); ``budget`` with ``norm``, ``eps``, ``n_iter``,
        ``restarts``, ``eot``, ``version``, ``attacks`` and ``accuracy_after`` (share of the ``N``
        points still classified correctly after each member, in the order run).
    """
    if name not in ATTACKS:
        raise UserInputError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    if batch_size is None:
        batch_size = 500
        if isinstance(model, keras.Model):
            from zoo.memory import rows_per_chunk
            batch_size = max(1, min(500, rows_per_chunk(model) // max(eot, 1)))
    version = "rand" if eot > 1 else "standard"
    members = {"autoattack": None, "apgd_ce": ["apgd_ce"],
               "apgd_dlr": ["apgd_dlr"] if version == "rand" else ["apgd_t"]}[name]
    res = autoattack(model, x, y, eps, version=version, n_iter=n_iter, n_restarts=n_restarts, eot_samples=eot,
                     seed=seed, batch_size=batch_size, predict=predict, attacks=members)
    budget = dict(res.budget)
    budget["accuracy_after"] = res.accuracy_after
    return res.adv, budget


register()
