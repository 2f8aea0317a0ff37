"""BANG's random-distortion test (Rozsa, Günther and Boult 2016, "Towards Robust Deep
Neural Networks with BANG", section 4).

Take images that every compared model classifies correctly (up to ``per_class`` per class), add
Gaussian noise of stddev ``s`` (pixel units on [0, 1]; the paper goes up to 100/255 for MNIST)
``draws`` times to each, clip to [0, 1], and report per model the fraction of distorted copies
whose predicted class differs from the original's. Unlike an attack this probes many random
directions, so gradient masking cannot help.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np


def common_correct(preds: Mapping[str, np.ndarray], y: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of points every model gets right, at most ``per_class`` per class (first ones)."""
    ok = np.all([p == y for p in preds.values()], axis=0) if preds else np.ones(len(y), bool)
    keep = [np.flatnonzero(ok & (y == c))[:per_class] for c in np.unique(y)]
    return np.sort(np.concatenate(keep)) if keep else np.zeros([0], int)


def changed_fraction(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, stddev: float, draws: int,
                     seed: int = 0, chunk: int = 4096) -> tuple[float, float]:
    """Fraction of ``draws`` noisy copies of each image in ``x`` whose class changes, and its SE.

    ``predict`` maps images to classes. The standard error is over images (the copies of one image
    are not independent): ``std(per-image fractions) / sqrt(N)``.
    Returns ``(mean fraction, standard error)``.
    """
    rng = np.random.default_rng(seed)
    base = predict(x)
    per_image = np.zeros(len(x))
    reps = max(1, chunk // max(len(x), 1))
    done = 0
    while done < draws:
        k = min(reps, draws - done)
        noisy = np.clip(np.repeat(x[None], k, 0) + rng.normal(0, stddev, (k, *x.shape)), 0, 1).astype(np.float32)
        pred = predict(noisy.reshape(-1, *x.shape[1:])).reshape(k, len(x))
        per_image += (pred != base[None]).sum(0)
        done += k
    per_image /= draws
    se = per_image.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    return float(per_image.mean()), float(se)
