"""PASS, the Perceptual Adversarial Similarity Score (Rozsa et al. 2016; BANG paper section 4).

``PASS(x_adv, x) = SSIM(psi(x_adv, x), x)`` where ``psi`` aligns ``x_adv`` to ``x`` with the
affine warp that maximizes the enhanced correlation coefficient (ECC, Evangelidis and Psarakis
2008). Values in [-1, 1]; 1 means perceptually identical. Small geometric shifts that inflate
L2/L-inf barely lower PASS; that is its point.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage, optimize


def _gray(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, np.float64)
    return img.mean(-1) if img.ndim == 3 else img


def _warp(img: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Affine warp ``[[1 + p0, p1], [p2, 1 + p3]] @ (r, c) + (p4, p5)`` about the image centre."""
    a = np.array([[1 + p[0], p[1]], [p[2], 1 + p[3]]])
    centre = (np.array(img.shape) - 1) / 2
    offset = centre - a @ centre + p[4:6]
    return ndimage.affine_transform(img, a, offset=offset, order=1, mode="constant")


def _ecc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def ecc_align(moving: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``moving`` warped by the affine map maximizing its ECC with ``reference`` (2-D arrays)."""
    res = optimize.minimize(lambda p: -_ecc(_warp(moving, p), reference), np.zeros(6), method="Powell",
                            options={"xtol": 1e-3, "ftol": 1e-4, "maxfev": 400})
    best = res.x if -res.fun >= _ecc(moving, reference) else np.zeros(6)
    return _warp(moving, best)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, sigma: float = 1.5) -> float:
    """Mean structural similarity of two 2-D images (Wang et al. 2004, Gaussian window)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(img):
        return ndimage.gaussian_filter(img, sigma, truncate=3.5)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def pass_score(adversarial: np.ndarray, original: np.ndarray) -> float:
    """PASS of one image pair (``[H, W]`` or ``[H, W, C]``, pixels in [0, 1])."""
    ref = _gray(original)
    return ssim(ecc_align(_gray(adversarial), ref), ref)


def mean_pass(adversarial: np.ndarray, original: np.ndarray, limit: int = 100) -> float | None:
    """Mean PASS over the first ``limit`` pairs of ``[N, H, W(, C)]`` arrays; ``None`` if ``N == 0``."""
    n = min(len(adversarial), limit)
    if n == 0:
        return None
    return float(np.mean([pass_score(adversarial[i], original[i]) for i in range(n)]))
