"""Minimal-perturbation attacks written here: L-BFGS (Szegedy et al. 2014) and hot/cold (Rozsa et al. 2016).

Both search for the smallest change that flips the prediction, rather than the worst point in a
fixed ball, so their success rate is paired with the perturbation's size (L2, L-inf, PASS).
Images are ``[N, ...]`` with pixels in [0, 1]; ``fn`` maps images to logits ``[N, classes]``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf
from scipy.optimize import fmin_l_bfgs_b


def most_similar_class(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The highest-scoring class other than ``y`` (the "hot" class of HC1, the L-BFGS target)."""
    z = np.array(logits, np.float64)
    z[np.arange(len(y)), y] = -np.inf
    return z.argmax(-1)


def lbfgs(fn: Callable, x, y, eps: float | None = None, target: np.ndarray | None = None,
          search_steps: int = 5, max_iter: int = 100, initial_const: float = 1.0, batch_size: int = 500) -> np.ndarray:
    """Box-constrained L-BFGS attack (Szegedy et al. 2014), batched.

    Minimizes, per example, ``c * CE(fn(x + r), t) + ||r||_2^2`` over ``r`` with ``x + r`` in
    ``[0, 1]`` and, when ``eps`` is given, ``|r|_inf <= eps`` (the bounds of L-BFGS-B, so no
    projection is needed). ``t`` is the target class (default: the most similar wrong class). The
    constant ``c`` is found by a per-example binary search (``search_steps`` rounds); each round
    solves all examples jointly, which is exact because the objective is a sum of per-example terms.
    Returns the successful example with the smallest L2 norm, or the last iterate where none was.
    Runs ``batch_size`` examples at a time (L-BFGS-B keeps 10 float64 copies of its variables).
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y)
    if len(x) > batch_size:
        return np.concatenate([
            lbfgs(fn, x[i:i + batch_size], y[i:i + batch_size], eps, None if target is None else target[i:i + batch_size],
                  search_steps, max_iter, initial_const, batch_size) for i in range(0, len(x), batch_size)])
    n, shape = len(x), x.shape[1:]
    if n == 0:
        return x.copy()
    t = most_similar_class(fn(tf.constant(x)).numpy(), y) if target is None else np.asarray(target)
    lo = np.zeros(n)
    hi = np.full(n, np.inf)
    c = np.full(n, initial_const)
    lower = np.zeros_like(x) if eps is None else np.maximum(x - eps, 0.0)
    upper = np.ones_like(x) if eps is None else np.minimum(x + eps, 1.0)
    bounds = list(zip(lower.ravel(), upper.ravel()))
    t_tf = tf.constant(t, tf.int32)

    @tf.function
    def value_and_grad(adv, const):
        with tf.GradientTape() as tape:
            tape.watch(adv)
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=t_tf, logits=fn(adv))
            dist = tf.reduce_sum(tf.reshape(adv - x, [n, -1]) ** 2, -1)
            loss = tf.reduce_sum(const * ce + dist)
        return loss, tape.gradient(loss, adv)

    best = x.copy()
    best_l2 = np.full(n, np.inf)
    last = x.copy()
    for _ in range(search_steps):
        const = tf.constant(c, tf.float32)

        def f(flat):
            adv = tf.constant(flat.reshape(x.shape), tf.float32)
            loss, grad = value_and_grad(adv, const)
            return float(loss), grad.numpy().astype(np.float64).ravel()

        flat, _, _ = fmin_l_bfgs_b(f, x.ravel().astype(np.float64), bounds=bounds, maxiter=max_iter)
        last = flat.reshape(x.shape).astype(np.float32)
        pred = fn(tf.constant(last)).numpy().argmax(-1)
        ok = pred == t
        l2 = np.linalg.norm((last - x).reshape(n, -1), axis=1)
        better = ok & (l2 < best_l2)
        best[better], best_l2[better] = last[better], l2[better]
        # success: try a smaller c (less weight on the target, smaller r); failure: a larger one
        hi = np.where(ok, np.minimum(hi, c), hi)
        lo = np.where(ok, lo, np.maximum(lo, c))
        c = np.where(np.isfinite(hi), (lo + hi) / 2, c * 10)
    failed = ~np.isfinite(best_l2)
    best[failed] = last[failed]
    return best.reshape((n, *shape))


def hot_cold(fn: Callable, x, y, scales=None, iterations: int = 3) -> np.ndarray:
    """Hot/cold attack targeting the most similar class (HC1 of Rozsa, Günther and Boult 2016, the BANG paper).

    Direction ``d = grad_x (z_hot - z_cold)``: raise the "hot" class (the most similar wrong one),
    lower the "cold" one (the true class). A line search over ``scales`` (multiples of the unit-L-inf
    direction, pixel units) keeps the smallest step that changes the prediction, with pixels clipped
    to [0, 1] as the only constraint; points not yet flipped repeat from there (``iterations``).
    A blank gradient (``d = 0``) cannot move the image: those points stay unchanged (failure).
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y)
    n = len(x)
    scales = np.geomspace(1 / 255, 1.0, 40) if scales is None else np.asarray(scales)
    scales = scales.astype(np.float32)
    cur = x.copy()
    done = np.zeros(n, bool)
    out = x.copy()

    @tf.function
    def direction(adv, hot, cold):
        with tf.GradientTape() as tape:
            tape.watch(adv)
            z = fn(adv)
            obj = tf.reduce_sum(tf.gather(z, hot, batch_dims=1) - tf.gather(z, cold, batch_dims=1))
        return tape.gradient(obj, adv)

    for _ in range(iterations):
        todo = np.flatnonzero(~done)
        if not len(todo):
            break
        xa = tf.constant(cur[todo])
        hot = most_similar_class(fn(xa).numpy(), y[todo])
        d = direction(xa, tf.constant(hot, tf.int32), tf.constant(y[todo], tf.int32)).numpy()
        size = np.abs(d.reshape(len(todo), -1)).max(axis=1)
        unit = d / np.maximum(size, 1e-12).reshape([-1] + [1] * (d.ndim - 1))
        found = np.zeros(len(todo), bool)
        for s in scales:
            cand = np.clip(cur[todo] + s * unit, 0.0, 1.0)
            flipped = (fn(tf.constant(cand)).numpy().argmax(-1) != y[todo]) & ~found & (size > 0)
            out[todo[flipped]] = cand[flipped]
            found |= flipped
            if found.all():
                break
        done[todo[found]] = True
        # not flipped: continue from the largest step taken, so the next gradient is new
        cur[todo[~found]] = np.clip(cur[todo[~found]] + scales[-1] * 0.25 * unit[~found], 0.0, 1.0)
    out[~done] = x[~done]
    return out


def carlini_wagner_l2(fn: Callable, x, y, steps: int = 100, search_steps: int = 5, lr: float = 0.05,
                      initial_const: float = 1.0, confidence: float = 0.0) -> np.ndarray:
    """Carlini-Wagner L2 attack (untargeted), batched, every example with its own constant.

    Minimizes ``||x' - x||_2^2 + c_i * max(z_y - max_{k != y} z_k + confidence, 0)`` over
    ``x' = (tanh(w) + 1) / 2`` (so ``x'`` stays in [0, 1]) with Adam, ``steps`` per round, and a
    binary search on each ``c_i`` over ``search_steps`` rounds. Keeps, per example, the
    misclassified iterate with the smallest L2 (the clean image where none was found).

    Written here because cleverhans 4.0.0's version fails three ways on Keras 3: it resets its
    optimizer with ``optimizer.variables()`` (a list now), its constant of shape ``[N, H, W, C]``
    broadcasts against the per-example margin ``[N]`` (every example's margin is weighted by all
    ``N * H * W * C`` constants, coupling the batch), and its untargeted success test adds the
    confidence to every logit, a no-op.
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y)
    n = len(x)
    if n == 0:
        return x.copy()
    axes = list(range(1, x.ndim))
    w0 = tf.constant(np.arctanh((2 * x - 1) * 0.999999), tf.float32)
    x0 = (tf.tanh(w0) + 1) / 2
    onehot = tf.one_hot(y, int(fn(x0[:1]).shape[-1]))
    b1, b2 = 0.9, 0.999

    @tf.function
    def step(delta, m, v, t, const):
        with tf.GradientTape() as tape:
            tape.watch(delta)
            adv = (tf.tanh(w0 + delta) + 1) / 2
            z = fn(adv)
            real = tf.reduce_sum(onehot * z, -1)
            other = tf.reduce_max(z - 1e9 * onehot, -1)
            l2 = tf.reduce_sum(tf.square(adv - x0), axes)
            loss = tf.reduce_sum(l2 + const * tf.maximum(real - other + confidence, 0.0))
        g = tape.gradient(loss, delta)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        delta = delta - lr * (m / (1 - b1**t)) / (tf.sqrt(v / (1 - b2**t)) + 1e-8)
        return delta, m, v, adv, l2, tf.argmax(z, -1)

    lo, hi = np.zeros(n), np.full(n, np.inf)
    c = np.full(n, initial_const)
    best, best_l2 = x.copy(), np.full(n, np.inf)
    for _ in range(search_steps):
        delta = tf.zeros_like(w0)
        m, v = tf.zeros_like(w0), tf.zeros_like(w0)
        const = tf.constant(c, tf.float32)
        ok_round = np.zeros(n, bool)
        for t in range(1, steps + 1):
            delta, m, v, adv, l2, pred = step(delta, m, v, tf.constant(float(t)), const)
            ok = pred.numpy() != y
            l2 = l2.numpy()
            better = ok & (l2 < best_l2)
            if better.any():
                best[better], best_l2[better] = adv.numpy()[better], l2[better]
            ok_round |= ok
        hi = np.where(ok_round, np.minimum(hi, c), hi)
        lo = np.where(ok_round, lo, np.maximum(lo, c))
        c = np.where(np.isfinite(hi), (lo + hi) / 2, c * 10)
    return best
