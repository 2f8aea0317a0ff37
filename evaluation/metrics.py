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


def paired_comparison(correct_a, correct_b) -> dict:
    """Two models scored on the same test points: which is more accurate, and is it chance?

    McNemar's exact test (McNemar 1947, "Note on the sampling error of the difference between
    correlated proportions or percentages", Psychometrika 12(2)): only the points where exactly one
    model is right carry information; under the null hypothesis of equal accuracy each such point
    is equally likely to favour either model, so the count favouring ``a`` is Binomial(d, 1/2) with
    ``d`` the number of discordant points. Paired, so far more sensitive than comparing two
    independent confidence intervals when the models agree on most points.

    Args:
        correct_a, correct_b: boolean arrays ``[N]``, whether each model got each point right.
    Returns:
        ``{"n", "accuracy_a", "accuracy_b", "only_a", "only_b", "p_value"}`` (two-sided exact p;
        1.0 when no point is discordant).
    """
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two boolean vectors of one length, got shapes {a.shape} and {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    d = only_a + only_b
    p_value = float(stats.binomtest(only_a, d, 0.5).pvalue) if d else 1.0
    return {"n": int(a.size), "accuracy_a": float(a.mean()), "accuracy_b": float(b.mean()),
            "only_a": only_a, "only_b": only_b, "p_value": p_value}


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
