"""Natural corruptions with five severities, as a named registry anyone can extend.

The first four use the constants the GLR authors applied to 28x28 MNIST (CIFAR-10-C values;
PAPERS.md section 5); the summary is the mean accuracy over corruptions and severities (eq. 6)::

    mA(model) = (1 / (C * S)) * sum_c sum_s A_{c,s}(model)

Every function maps a float batch ``[N, H, W, C]`` in [0, 1] and a ``numpy.random.Generator`` to
a corrupted batch of the same shape, clipped to [0, 1]. Corrupted images are made once per
(corruption, severity, seed) and reused for every model evaluated.
"""
from __future__ import annotations

import zlib
from typing import Callable, NamedTuple

import numpy as np
from scipy import ndimage


class Corruption(NamedTuple):
    """A corruption: ``fn(images, rng, param) -> images`` and its parameter at severities 1..5."""

    name: str
    fn: Callable[[np.ndarray, np.random.Generator, object], np.ndarray]
    severities: tuple


def gaussian_noise(x, rng, std):
    """Additive Gaussian noise of stddev ``std`` (pixel units)."""
    return np.clip(x + rng.normal(0.0, std, x.shape), 0, 1).astype(np.float32)


def impulse_noise(x, rng, amount):
    """Salt-and-pepper: a fraction ``amount`` of pixels set to 0 or 1 with equal probability."""
    out = x.copy()
    hit = rng.random(x.shape) < amount
    salt = rng.random(x.shape) < 0.5
    out[hit & salt] = 1.0
    out[hit & ~salt] = 0.0
    return out.astype(np.float32)


def _blur(x, sigma):
    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0))


def glass_blur(x, rng, params):
    """Gaussian blur ``sigma``, then ``iterations`` passes of swapping every pixel with a random
    neighbour within ``max_delta`` (CIFAR-10-C's order, vectorized over the batch), then blur again."""
    sigma, max_delta, iterations = params
    out = _blur(x, sigma)
    n, h, w = out.shape[:3]
    rows = np.arange(n)
    for _ in range(iterations):
        for i in range(h - max_delta, max_delta, -1):
            for j in range(w - max_delta, max_delta, -1):
                dx, dy = rng.integers(-max_delta, max_delta, size=(2, n))
                ip, jp = i + dy, j + dx
                a, b = out[rows, i, j].copy(), out[rows, ip, jp].copy()
                out[rows, i, j], out[rows, ip, jp] = b, a
    return np.clip(_blur(out, sigma), 0, 1).astype(np.float32)


def contrast(x, rng, factor):
    """Shrink each image towards its mean: ``(x - mean) * factor + mean``."""
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return np.clip((x - mean) * factor + mean, 0, 1).astype(np.float32)


def shot_noise(x, rng, photons):
    """Poisson noise with ``photons`` expected counts at full intensity."""
    return np.clip(rng.poisson(x * photons) / photons, 0, 1).astype(np.float32)


def rotate(x, rng, degrees):
    """Rotation by +-``degrees`` (random sign per image), bilinear, zero fill."""
    signs = rng.choice([-1.0, 1.0], size=len(x))
    return np.stack([np.clip(ndimage.rotate(img, s * degrees, axes=(0, 1), reshape=False, order=1), 0, 1)
                     for img, s in zip(x, signs)]).astype(np.float32)


def motion_blur(x, rng, length):
    """Horizontal motion blur: mean over ``length`` pixels along a row."""
    return np.clip(ndimage.uniform_filter1d(x, size=length, axis=2), 0, 1).astype(np.float32)


def brightness(x, rng, delta):
    """Add ``delta`` to every pixel."""
    return np.clip(x + delta, 0, 1).astype(np.float32)


AUTHORS = (
    Corruption("gaussian_noise", gaussian_noise, (0.04, 0.06, 0.08, 0.09, 0.10)),
    Corruption("impulse_noise", impulse_noise, (0.01, 0.02, 0.03, 0.05, 0.07)),
    Corruption("glass_blur", glass_blur, ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))),
    Corruption("contrast", contrast, (0.75, 0.5, 0.4, 0.3, 0.15)),
)
EXTRA = (
    Corruption("shot_noise", shot_noise, (60, 25, 12, 5, 3)),
    Corruption("motion_blur", motion_blur, (2, 3, 4, 5, 6)),
    Corruption("rotate", rotate, (5, 10, 15, 20, 30)),
    Corruption("brightness", brightness, (0.1, 0.2, 0.3, 0.4, 0.5)),
)
CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in AUTHORS + EXTRA}


def register_corruption(corruption: Corruption) -> None:
    """Add a corruption to the registry (name must be new; five severities expected)."""
    if corruption.name in CORRUPTIONS:
        raise ValueError(f"corruption {corruption.name!r} already exists")
    if len(corruption.severities) != 5:
        raise ValueError("a corruption needs five severities")
    CORRUPTIONS[corruption.name] = corruption


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` (1..5) with a fixed seed."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if not 1 <= severity <= 5:
        raise ValueError(f"severity must be 1..5, got {severity}")
    c = CORRUPTIONS[name]
    rng = np.random.default_rng([seed, severity, zlib.crc32(name.encode())])
    return c.fn(np.asarray(images, np.float32), rng, c.severities[severity - 1])


def mean_corruption_accuracy(accuracies: dict) -> float:
    """Eq. 6: the mean of ``{(corruption, severity): accuracy}`` over all corruptions and severities."""
    return float(np.mean(list(accuracies.values())))
