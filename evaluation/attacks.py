"""Adversarial attacks behind one adapter; cleverhans is imported here and nowhere else.

Every attack maps clean images ``x`` (``[N, ...]``, pixels in [0, 1]) and labels ``y`` to
adversarial images inside the L-inf (or L2) ball of radius ``eps`` around ``x``, clipped to [0, 1].

=========  ============================================================  ======================
name       method                                                        source
=========  ============================================================  ======================
``fgsm``   one signed-gradient step (Goodfellow et al. 2015)             cleverhans, as is
``bim``    iterative FGSM, no random start (Kurakin et al. 2017)         cleverhans, ``sanity_checks=False``
``pgd``    projected gradient descent, random start, restarts (Madry)    cleverhans + restarts here
``mim``    momentum iterative method (Dong et al. 2018)                  cleverhans, as is
``cw_l2``  Carlini-Wagner L2 (minimal L2; ``eps`` caps the L2 kept)       :mod:`evaluation.minimal_attacks`
``spsa``   gradient-free SPSA with Adam (Uesato et al. 2018)             reimplemented, batched
``lbfgs``  box-constrained L-BFGS, L-inf ball ``eps`` (Szegedy 2014)     :mod:`evaluation.minimal_attacks`
``hotcold``  hot/cold HC1, minimal step; ``eps`` caps the L-inf kept       :mod:`evaluation.minimal_attacks`
``lr_pgd``  PGD on the likelihood-ratio input gradient (forward only)    :mod:`evaluation.surrogate`
``apgd_ce``  APGD, cross-entropy (Croce and Hein 2020)                    :mod:`evaluation.apgd`
``apgd_dlr``  APGD-T, targeted DLR loss (Croce and Hein 2020)              :mod:`evaluation.apgd`
``autoattack``  per point the worst of APGD-CE and APGD-T (the reference)  :mod:`evaluation.apgd`
=========  ============================================================  ======================

cleverhans 4.0.0's ``carlini_wagner_l2`` is broken on Keras 3 in three ways (see
:func:`evaluation.minimal_attacks.carlini_wagner_l2`), so it is reimplemented, batched.

cleverhans 4.0.0's ``spsa`` passes ``lr=`` to a Keras 3 optimizer and takes one example at a
time, so it is reimplemented here (same estimator and margin loss, whole batches at once).

Attacks are registered by name (:func:`register_attack`, :func:`list_attacks`,
:func:`get_attack`), each with its kind (eps ``ball`` or ``minimal``) and what steers it (the
model's gradient, a ``surrogate`` for step nets, or ``none``); the CLI's choices, the harness's
suites and the masking checks read those attributes.

Stochastic models (noise on at inference) are attacked through :func:`logits_fn` with ``eot``
draws: the attacked function is the mean of the logits over ``eot`` noisy passes
(expectation over transformation), so the gradient is not a single random draw's.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, NamedTuple

import numpy as np
import tensorflow as tf

from evaluation.options import NoSettings, integer, make, option, real
from training.losses import logit_margin
from zoo.errors import UserInputError
from zoo.registry import Registry


class AttackSettings(NamedTuple):
    """What every registered attack receives: the shared knobs (most attacks use a few) and
    ``own``, an instance of the attack's own settings class (:class:`evaluation.options.NoSettings`
    for an attack without any)."""

    eps: float
    order: float  # np.inf or 2
    steps: int
    step_size: float
    restarts: int
    seed: int
    own: object = NoSettings()


@dataclasses.dataclass(frozen=True)
class AttackEntry:
    """A registered attack.

    Attributes:
        run: ``run(fn, x, y, settings) -> adversarial x`` (tensors; ``fn``: ``x -> logits``).
        kind: ``"ball"`` (stays inside the eps ball) or ``"minimal"`` (smallest change that flips
            the class; ``eps`` only caps what is kept, and may be ``inf``).
        gradient: what steers it: ``"model"`` (the model's own input gradient), ``"surrogate"``
            (a usable stand-in for a zero-almost-everywhere gradient: the harness adds these to the
            white-box suite of step nets, and the masking checks compare them with plain PGD) or
            ``"none"`` (queries only: the gradient-free suite runs these).
        single_step: one gradient step (FGSM); the masking audit expects every iterative attack
            to do at least as well (Carlini et al. 2019, checklist).
        settings: the attack's own settings class (:mod:`evaluation.options`): its fields become
            ``glrzoo evaluate`` flags and arrive as ``settings.own``.
    """

    name: str
    run: Callable[[Callable, tf.Tensor, tf.Tensor, AttackSettings], tf.Tensor]
    kind: str
    gradient: str
    description: str
    single_step: bool = False
    settings: type = NoSettings


ATTACKS = Registry("attack", package="evaluation")
KINDS = ("ball", "minimal")
GRADIENTS = ("model", "surrogate", "none")


def register_attack(name: str, *, kind: str = "ball", gradient: str = "model", description: str | None = None,
                    single_step: bool = False, settings: type = NoSettings):
    """Decorator: register ``run(fn, x, y, settings) -> adversarial x`` as attack ``name``.

    A new attack is one decorated function in any module of ``evaluation/``; it becomes a choice of
    ``--attacks`` and ``--transfer-attacks`` (``--minimal-attacks`` for ``kind="minimal"``), and a
    gradient-free one (``gradient="none"``) joins the ``gradfree`` suite. ``settings``: its own
    settings class, whose fields become flags and arrive as ``settings.own``.
    """
    if kind not in KINDS or gradient not in GRADIENTS:
        raise ValueError(f"attack {name!r}: kind must be one of {KINDS} and gradient one of {GRADIENTS}")

    return ATTACKS.decorator(name, lambda run: AttackEntry(
        name, run, kind, gradient, description or (inspect.getdoc(run) or name).splitlines()[0], single_step,
        settings))


def list_attacks(pattern: str = "*", *, kind: str | None = None, gradient: str | None = None) -> list[str]:
    """Registered attack names matching ``pattern`` (and ``kind`` / ``gradient`` if given), in registration order."""
    return ATTACKS.names(pattern, where=lambda a: kind in (None, a.kind) and gradient in (None, a.gradient))


def get_attack(name: str) -> AttackEntry:
    """The registry entry of attack ``name``; :class:`UserInputError` naming the choices otherwise."""
    return ATTACKS.entry(name)


def logits_fn(model, eot: int = 1, stddev=None) -> Callable[[tf.Tensor], tf.Tensor]:
    """``x -> logits`` in inference mode; with ``eot > 1`` the mean over ``eot`` noisy passes.

    Args:
        model: Keras model returning logits.
        eot: number of noise draws averaged (expectation over transformation); 1 for a
            deterministic model.
        stddev: inference noise stddev override (``None``: the model's own ``infer_stddev``).
    """
    from zoo.noise_context import noise_override

    def call(x):
        if stddev is None:
            logits = model(x, training=False)
        else:
            with noise_override(stddev):
                logits = model(x, training=False)
        # A zero-weight path from x keeps the input gradient defined (exactly 0, a "blank
        # gradient") for nets with no differentiable path, e.g. all-threshold units; cleverhans
        # crashes on a None gradient.
        return logits + 0.0 * tf.reduce_sum(x, axis=list(range(1, len(x.shape))))[:, None]

    if eot <= 1:
        return call

    def averaged(x):
        n = tf.shape(x)[0]
        reps = tf.concat([[eot], tf.ones([tf.rank(x) - 1], tf.int32)], 0)
        logits = call(tf.tile(x, reps))
        return tf.reduce_mean(tf.reshape(logits, [eot, n, -1]), axis=0)

    return averaged


def _norm(norm):
    return np.inf if norm in ("inf", "linf", np.inf) else int(norm)


def attack(name: str, fn: Callable, x, y, eps: float, norm="inf", steps: int = 20, step_size: float | None = None,
           restarts: int = 1, seed: int = 0, options: object | None = None, **own) -> tf.Tensor:
    """Run the registered attack ``name`` against ``fn`` (``x -> logits``); returns adversarial ``x``.

    Args:
        eps: radius of the threat model in pixel units (L-inf or L2, per ``norm``).
        steps: iterations (ignored by FGSM).
        step_size: per-step size; default ``2.5 * eps / steps`` (Madry et al. 2018).
        restarts: PGD random restarts; per example the first restart that fools the model is
            kept (else the last).
        options: an instance of the attack's settings class; else ``own`` (its fields by name,
            e.g. ``spsa_samples=128``) over its defaults.
    """
    entry = get_attack(name)
    options = options if options is not None else make(entry.settings, **own)
    if not eps >= 0:
        raise UserInputError(f"eps must be >= 0, got {eps}")
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.int64)
    if not np.isfinite(eps) and entry.kind != "minimal":
        raise UserInputError(f"attack {name!r} needs a finite eps; only {', '.join(list_attacks(kind='minimal'))} "
                             "run unbounded")
    step_size = step_size if step_size is not None else 2.5 * eps / max(steps, 1)
    if eps == 0:
        return x
    settings = AttackSettings(eps, _norm(norm), steps, step_size, restarts, seed, options)
    return entry.run(fn, x, y, settings)


@register_attack("fgsm", description="one signed-gradient step (Goodfellow et al. 2015)", single_step=True)
def _fgsm(fn, x, y, s: AttackSettings) -> tf.Tensor:
    from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
    return fast_gradient_method(fn, x, s.eps, s.order, clip_min=0.0, clip_max=1.0, y=y)


@register_attack("bim", description="iterative FGSM, no random start (Kurakin et al. 2017)")
def _bim(fn, x, y, s: AttackSettings) -> tf.Tensor:
    from cleverhans.tf2.attacks.basic_iterative_method import basic_iterative_method
    return basic_iterative_method(fn, x, s.eps, s.step_size, s.steps, s.order, sanity_checks=False,
                                  clip_min=0.0, clip_max=1.0, y=y)


@register_attack("pgd", description="projected gradient descent, random start, restarts (Madry et al. 2018)")
def _pgd(fn, x, y, s: AttackSettings) -> tf.Tensor:
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent
    best = None
    tf.random.set_seed(s.seed)
    for _ in range(max(s.restarts, 1)):
        adv = projected_gradient_descent(fn, x, s.eps, s.step_size, s.steps, s.order, rand_init=True,
                                         sanity_checks=False, clip_min=0.0, clip_max=1.0, y=y)
        if best is None:
            best = adv
        else:
            fooled = tf.not_equal(tf.argmax(fn(best), -1), y)
            best = tf.where(tf.reshape(fooled, [-1] + [1] * (len(x.shape) - 1)), best, adv)
    return best


@register_attack("mim", description="momentum iterative method (Dong et al. 2018)")
def _mim(fn, x, y, s: AttackSettings) -> tf.Tensor:
    from cleverhans.tf2.attacks.momentum_iterative_method import momentum_iterative_method
    return momentum_iterative_method(fn, x, s.eps, s.step_size, s.steps, s.order, clip_min=0.0, clip_max=1.0, y=y)


@register_attack("cw_l2", kind="minimal", description="Carlini-Wagner L2, minimal L2 (Carlini and Wagner 2017)")
def _cw_l2(fn, x, y, s: AttackSettings) -> tf.Tensor:
    from evaluation.minimal_attacks import carlini_wagner_l2
    return _keep_within(x, carlini_wagner_l2(fn, x.numpy(), y.numpy(), steps=max(s.steps, 10) * 5), s.eps, 2)


@dataclasses.dataclass(frozen=True)
class SpsaSettings:
    """Gradient-free SPSA (Uesato, O'Donoghue, van den Oord and Kohli 2018): directions per step, probe size
    and the Adam step of the perturbation."""

    spsa_samples: int = option(64, "SPSA: Rademacher directions per example and step", **integer(1))
    spsa_delta: float = option(0.01, "SPSA: finite-difference probe size (pixel units)", **real(0, above=True))
    spsa_lr: float = option(0.01, "SPSA: Adam learning rate of the perturbation", **real(0, above=True))


@register_attack("spsa", gradient="none", description="gradient-free SPSA with Adam (Uesato et al. 2018)",
                 settings=SpsaSettings)
def _spsa(fn, x, y, s: AttackSettings) -> tf.Tensor:
    o = s.own
    return spsa_linf(fn, x, y, s.eps, s.steps, o.spsa_samples, o.spsa_delta, o.spsa_lr, s.seed)


@register_attack("lbfgs", description="box-constrained L-BFGS inside the L-inf ball (Szegedy et al. 2014)")
def _lbfgs(fn, x, y, s: AttackSettings) -> tf.Tensor:
    from evaluation.minimal_attacks import lbfgs
    # steps sets the L-BFGS iterations per binary-search round (5 per step: 100 at the default 20)
    return tf.constant(lbfgs(fn, x.numpy(), y.numpy(), eps=s.eps if s.order == np.inf else None, search_steps=3,
                             max_iter=5 * s.steps))


@register_attack("hotcold", kind="minimal", description="hot/cold HC1, minimal L-inf step (Rozsa et al. 2016)")
def _hotcold(fn, x, y, s: AttackSettings) -> tf.Tensor:
    from evaluation.minimal_attacks import hot_cold
    return _keep_within(x, hot_cold(fn, x.numpy(), y.numpy()), s.eps, np.inf)


@register_attack("lr_pgd", gradient="surrogate", description="PGD on the likelihood-ratio input gradient")
def _lr_pgd(fn, x, y, s: AttackSettings) -> tf.Tensor:
    from evaluation.surrogate import lr_pgd
    return lr_pgd(fn, x, y, s.eps, s.steps, s.step_size, seed=s.seed)


MINIMAL = tuple(a.name for a in ATTACKS.values() if a.kind == "minimal")  # the built-in minimal attacks


def _keep_within(x: tf.Tensor, adv, eps: float, order) -> tf.Tensor:
    """``adv`` where its change from ``x`` is at most ``eps`` in the ``order`` norm, else ``x``
    (a minimal attack's result capped to a threat model)."""
    adv = tf.convert_to_tensor(adv, tf.float32)
    size = tf.norm(tf.reshape(adv - x, [len(x), -1]), ord=order, axis=1)
    return tf.where(tf.reshape(size <= eps + 1e-6, [-1] + [1] * (len(x.shape) - 1)), adv, x)


def _probe_differences(fn, x, y, dirs, delta) -> tf.Tensor:
    """``m(x + delta v) - m(x - delta v)`` of the margin ``m`` for each direction ``v`` in ``dirs``
    (``[N, S, ...]``); all ``2 S N`` queries in one call to ``fn``. Returns ``[N, S]``."""
    n, samples, shape = x.shape[0], dirs.shape[1], x.shape[1:]
    probe = tf.concat([x[:, None] + delta * dirs, x[:, None] - delta * dirs], axis=1)
    margins = logit_margin(fn(tf.reshape(probe, [-1, *shape])), tf.repeat(y, 2 * samples))
    margins = tf.reshape(margins, [n, 2 * samples])
    return margins[:, :samples] - margins[:, samples:]


def spsa_linf(fn, x, y, eps, steps=20, samples=64, delta=0.01, lr=0.01, seed=0) -> tf.Tensor:
    """Gradient-free L-inf attack: SPSA gradient estimates of the margin loss, Adam steps, projection.

    Each step draws ``samples`` Rademacher directions ``v`` per example and estimates the gradient
    as ``mean_v [m(x + delta v) - m(x - delta v)] / (2 delta) * v``; all ``2 * samples * N`` queries
    go through ``fn`` as one batch. Never uses ``fn``'s gradient, so masked gradients do not stop it.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.int64)
    n = x.shape[0]
    shape = x.shape[1:]
    rng = tf.random.Generator.from_seed(seed)
    pert = rng.uniform(tf.shape(x), -eps, eps)
    m = tf.zeros_like(x)
    v2 = tf.zeros_like(x)
    b1, b2 = 0.9, 0.999

    @tf.function
    def step(pert, m, v2, t, dirs):
        adv = tf.clip_by_value(x + pert, 0.0, 1.0)
        diff = _probe_differences(fn, adv, y, dirs, delta) / (2 * delta)
        grad = tf.reduce_mean(tf.reshape(diff, [n, samples] + [1] * len(shape)) * dirs, axis=1)
        m = b1 * m + (1 - b1) * grad
        v2 = b2 * v2 + (1 - b2) * grad * grad
        update = lr * (m / (1 - b1**t)) / (tf.sqrt(v2 / (1 - b2**t)) + 1e-8)
        pert = tf.clip_by_value(pert - update, -eps, eps)
        return tf.clip_by_value(x + pert, 0.0, 1.0) - x, m, v2

    for t in range(1, steps + 1):
        dirs = tf.sign(rng.uniform([n, samples, *shape], -1.0, 1.0))
        pert, m, v2 = step(pert, m, v2, tf.constant(float(t)), dirs)
    return tf.clip_by_value(x + pert, 0.0, 1.0)


def blank_gradient_fraction(fn, x, y) -> float:
    """Fraction of inputs whose cross-entropy gradient w.r.t. the input is exactly zero (masking flag)."""
    x = tf.convert_to_tensor(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32), logits=fn(x))
    grad = tape.gradient(loss, x)
    if grad is None:  # no differentiable path at all (e.g. every unit is a step function)
        return 1.0
    axes = list(range(1, len(x.shape)))
    return float(tf.reduce_mean(tf.cast(tf.reduce_all(tf.equal(grad, 0.0), axis=axes), tf.float32)))


def flat_probe_fraction(fn, x, y, delta: float = 0.01, probes: int = 8, seed: int = 0) -> float:
    """Share of random +-``delta`` finite differences of the margin (``probes`` per input) that are
    exactly zero: where the output is locally flat, SPSA-style gradient-free attacks see nothing
    either (a masking flag for query attacks, as blank gradients are for gradient ones)."""
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.int64)
    n, shape = x.shape[0], x.shape[1:]
    dirs = tf.sign(tf.random.stateless_uniform([n, probes, *shape], [seed, 11], -1.0, 1.0))
    flat = tf.equal(_probe_differences(fn, x, y, dirs, delta), 0.0)
    return float(tf.reduce_mean(tf.cast(flat, tf.float32)))
