"""Accuracies with confidence intervals, and the accuracy of a noisy model's majority vote."""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from zoo.noise import noisy_layers
from zoo.voting import vote_predict


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``correct / n``.

    Wilson (1927), "Probable inference, the law of succession, and statistical inference",
    JASA 22(158). Better than the normal approximation near 0 and 1 (robust accuracies often are).
    Returns ``(lower, upper)``; ``(0, 1)`` when ``n == 0``. The interval always contains ``p``:
    at ``p = 0`` or ``p = 1`` the closed-form bound equals ``p`` exactly in real arithmetic, and
    is pinned there so floating-point rounding (e.g. 0.9999999999999999) cannot exclude it.
    """
    if n == 0:
        return 0.0, 1.0
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lower = 0.0 if correct == 0 else max(0.0, min(p, centre - half))
    upper = 1.0 if correct == n else min(1.0, max(p, centre + half))
    return lower, upper


def accuracy_row(correct: int, n: int) -> dict:
    """``{"n", "correct", "accuracy", "ci95": [lo, hi]}``."""
    lo, hi = wilson_interval(correct, n)
    return {"n": int(n), "correct": int(correct), "accuracy": correct / n if n else float("nan"), "ci95": [lo, hi]}


def vote_accuracy(model, x, y, votes: int, stddev: float | None = None) -> float:
    """Share of ``y`` the majority vote of ``votes`` noisy passes gets right (a float in [0, 1]).

    Args:
        model: a Keras model with logits ``[N, C]``.
        x: examples ``[N, *input_shape]``.
        y: int class labels ``[N]``.
        votes: noisy passes per example, in ``[1, zoo.voting.VOTES_CAP]``.
        stddev: inference noise of every noisy layer for the vote (``None``: each layer's own
            ``infer_stddev``); see :func:`zoo.voting.vote_predict` (ties go to the lower class).

    A model without noisy layers has nothing to vote over: one pass, its plain accuracy. ``nan``
    for an empty ``y``.
    """
    y = np.asarray(y)
    if not len(y):
        return float("nan")
    pred = vote_predict(model, x, votes if noisy_layers(model) else 1, stddev).numpy()
    return float(np.mean(pred == y))
