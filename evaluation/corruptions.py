"""Natural corruptions with five severities, as a named registry anyone can extend (:func:`register_corruption`).

The first four use the constants the GLR authors applied to 28x28 MNIST (Xiao, Peng, Hong, Ke and
Yang 2020, section 3, and their repository GLR_ADV; CIFAR-10-C values, Hendrycks and Dietterich
2019); the summary is the mean accuracy over corruptions and severities (Xiao et al. 2020, eq. 6)::

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

from zoo.errors import UserInputError
from zoo.registry import Registry


class Corruption(NamedTuple):
    """A corruption: ``fn(images, rng, param) -> images`` and its parameter at severities 1..5.

    ``paper`` marks the GLR authors' four, over which the report's ``mean (eq. 6)`` row averages.
    """

    name: str
    fn: Callable[[np.ndarray, np.random.Generator, object], np.ndarray]
    severities: tuple
    paper: bool = False


CORRUPTIONS = Registry("corruption", package="evaluation", unknown="unknown corruption {name!r}; choose from {choices}")


def register_corruption(name, severities: tuple | None = None, *, paper: bool = False):
    """Register a corruption; every registered one runs in the ``corruption`` suite by default.

    As a decorator: ``@register_corruption("fog", (0.1, 0.2, 0.3, 0.4, 0.5))`` above
    ``def fog(images, rng, param) -> images``. A ready :class:`Corruption` can also be passed
    (``register_corruption(Corruption("fog", fog, severities))``). Names must be new; five
    severities are required.
    """
    def add(corruption: Corruption) -> None:
        if len(corruption.severities) != 5:
            raise ValueError("a corruption needs five severities")
        CORRUPTIONS.add(corruption.name, corruption)

    if isinstance(name, Corruption):
        add(name)
        return name

    def decorator(fn):
        add(Corruption(name, fn, tuple(severities), paper))
        return fn
    return decorator


def list_corruptions(pattern: str = "*", *, paper: bool | None = None) -> list[str]:
    """Registered corruption names matching ``pattern`` (``paper=True``: the authors' four), in registration order."""
    return CORRUPTIONS.names(pattern, where=lambda c: paper in (None, c.paper))


def get_corruption(name: str) -> Corruption:
    """The registered corruption ``name``; :class:`UserInputError` naming the choices otherwise."""
    return CORRUPTIONS.entry(name)


@register_corruption("gaussian_noise", (0.04, 0.06, 0.08, 0.09, 0.10), paper=True)
def gaussian_noise(x, rng, std):
    """Additive Gaussian noise of stddev ``std`` (pixel units)."""
    return np.clip(x + rng.normal(0.0, std, x.shape), 0, 1).astype(np.float32)


@register_corruption("impulse_noise", (0.01, 0.02, 0.03, 0.05, 0.07), paper=True)
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


@register_corruption("glass_blur", ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)), paper=True)
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


@register_corruption("contrast", (0.75, 0.5, 0.4, 0.3, 0.15), paper=True)
def contrast(x, rng, factor):
    """Shrink each image towards its mean: ``(x - mean) * factor + mean``."""
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return np.clip((x - mean) * factor + mean, 0, 1).astype(np.float32)


@register_corruption("shot_noise", (60, 25, 12, 5, 3))
def shot_noise(x, rng, photons):
    """Poisson noise with ``photons`` expected counts at full intensity."""
    return np.clip(rng.poisson(x * photons) / photons, 0, 1).astype(np.float32)


@register_corruption("motion_blur", (2, 3, 4, 5, 6))
def motion_blur(x, rng, length):
    """Horizontal motion blur: mean over ``length`` pixels along a row."""
    return np.clip(ndimage.uniform_filter1d(x, size=length, axis=2), 0, 1).astype(np.float32)


@register_corruption("rotate", (5, 10, 15, 20, 30))
def rotate(x, rng, degrees):
    """Rotation by +-``degrees`` (random sign per image), bilinear, zero fill."""
    signs = rng.choice([-1.0, 1.0], size=len(x))
    return np.stack([np.clip(ndimage.rotate(img, s * degrees, axes=(0, 1), reshape=False, order=1), 0, 1)
                     for img, s in zip(x, signs)]).astype(np.float32)


@register_corruption("brightness", (0.1, 0.2, 0.3, 0.4, 0.5))
def brightness(x, rng, delta):
    """Add ``delta`` to every pixel."""
    return np.clip(x + delta, 0, 1).astype(np.float32)


AUTHORS: tuple[Corruption, ...] = tuple(c for c in CORRUPTIONS.values() if c.paper)  # the GLR authors' four
EXTRA: tuple[Corruption, ...] = tuple(c for c in CORRUPTIONS.values() if not c.paper)


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` (1..5) with a fixed seed."""
    c = get_corruption(name)
    if not 1 <= severity <= 5:
        raise UserInputError(f"severity must be 1..5, got {severity}")
    rng = np.random.default_rng([seed, severity, zlib.crc32(name.encode())])
    return c.fn(np.asarray(images, np.float32), rng, c.severities[severity - 1])


def mean_corruption_accuracy(accuracies: dict) -> float:
    """Eq. 6: the mean of ``{(corruption, severity): accuracy}`` over all corruptions and severities."""
    return float(np.mean(list(accuracies.values())))
