"""Accuracies with confidence intervals."""
from __future__ import annotations

import math

from scipy import stats


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``correct / n``.

    Better than the normal approximation near 0 and 1 (robust accuracies often are).
    Returns ``(lower, upper)``; ``(0, 1)`` when ``n == 0``.
    """
    if n == 0:
        return 0.0, 1.0
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_row(correct: int, n: int) -> dict:
    """``{"n", "correct", "accuracy", "ci95": [lo, hi]}``."""
    lo, hi = wilson_interval(correct, n)
    return {"n": int(n), "correct": int(correct), "accuracy": correct / n if n else float("nan"), "ci95": [lo, hi]}
