"""Certified L2 robustness by Gaussian randomized smoothing (Cohen, Rosenfeld and Kolter, ICML 2019).

The smoothed classifier of a base classifier ``f`` (``[N, ...] -> logits [N, K]``, predicting the
argmax) is

    g(x) = argmax_c P(f(x + delta) = c),   delta ~ N(0, sigma^2 I)

with ``sigma`` in input units (pixel values in [0, 1]; the noise is *not* clipped to [0, 1], the
guarantee needs the exact Gaussian). Cohen et al., Theorem 1: if the top class ``c_A`` has
probability at least ``p_A >= 1/2`` under the noise, ``g`` is constant within the L2 ball of radius
``sigma * Phi^-1(p_A)`` around ``x`` (their radius ``sigma/2 (Phi^-1(p_A) - Phi^-1(p_B))`` with
the runner-up bounded by ``p_B = 1 - p_A``).

:func:`certify` is their CERTIFY pseudocode: ``n0`` noisy samples pick ``c_A``;
``n`` fresh samples count it; ``p_lower`` is the one-sided ``(1 - alpha)`` Clopper-Pearson lower
bound on ``p_A`` (:func:`clopper_pearson_lower`); if ``p_lower >= 1/2`` it returns ``c_A`` with
radius ``sigma * Phi^-1(p_lower)``, else it abstains. With probability at least ``1 - alpha`` over
the sampling, a returned class is ``g(x)`` and ``g`` is robust within the returned radius.
:func:`predict` is their PREDICT (binomial test on the two top counts, abstain when not significant
at ``alpha``; at most ``alpha`` chance of returning a class other than ``g(x)``).

A base classifier with its own inference noise (``infer_stddev > 0``, drawn independently of
``delta``) is allowed: the certificate then holds for ``h_c(z) = P_noise(f(z) = c)``, since
``Phi^-1(E_delta h(x + delta))`` is ``1/sigma``-Lipschitz in ``x`` for any ``h`` with values in
[0, 1] (Salman et al., NeurIPS 2019, "Provably robust deep learning via adversarially trained
smoothed classifiers"), so the same radius follows; every sample is still an independent
Bernoulli(``p_A``) draw.

Samples are processed ``max_rows`` (example, noise) rows at a time, so memory is bounded whatever
``n`` and the number of examples.

Harness integration: :func:`certify_suite` is the ``certify`` suite (``--suite certify``) writing
the rows of :func:`certify_rows` (certified accuracy vs L2 radius, Wilson intervals); the report
draws them (``certified_accuracy.png``). Its settings are :class:`CertifySettings`, the CLI's
``--certify-*`` flags.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
from scipy import stats

from evaluation.options import integer, number, option, reals
from evaluation.suites import SuiteContext, register_suite
from zoo.errors import UserInputError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Model = Callable[[tf.Tensor], tf.Tensor]
DEFAULT_MAX_ROWS = 10_000


# --------------------------------------------------------------------------- statistics
def clopper_pearson_lower(k, n, alpha: float) -> np.ndarray:
    """One-sided ``(1 - alpha)`` Clopper-Pearson lower confidence bound on a binomial proportion.

    Clopper and Pearson (1934), Biometrika 26(4): the ``alpha`` quantile of
    ``Beta(k, n - k + 1)``, and 0 where ``k = 0``. Equivalently the ``p`` with
    ``P(Binomial(n, p) >= k) = alpha``. Cohen et al. (2019) use it for ``p_lower`` in CERTIFY.

    Args:
        k: successes (int array or scalar), ``0 <= k <= n``.
        n: trials (int array or scalar, broadcast against ``k``).
        alpha: one-sided error level in (0, 1).

    Returns:
        float64 array of the broadcast shape of ``k`` and ``n``.
    """
    if not 0 < alpha < 1:
        raise UserInputError(f"alpha must be in (0, 1), got {alpha}")
    k = np.asarray(k, np.float64)
    n = np.asarray(n, np.float64)
    if np.any(k < 0) or np.any(k > n):
        raise UserInputError("need 0 <= k <= n")
    with np.errstate(invalid="ignore"):
        bound = stats.beta.ppf(alpha, np.maximum(k, 1), n - k + 1)
    return np.where(k == 0, 0.0, bound)


# --------------------------------------------------------------------------- sampling
def _call(model, x: tf.Tensor) -> tf.Tensor:
    if isinstance(model, keras.layers.Layer):
        return model(x, training=False)
    return model(x)


def _default_rows(model) -> int:
    if isinstance(model, keras.Model):
        try:
            from zoo.memory import rows_per_chunk
            return max(1, min(rows_per_chunk(model), 100_000))
        except Exception:  # a model the estimate does not know; fall back to a fixed chunk
            return DEFAULT_MAX_ROWS
    return DEFAULT_MAX_ROWS


class NoiseSampler:
    """Input-noise mode: the base classifier's class counts on Gaussian-noised inputs (Cohen et al.
    2019, SAMPLEUNDERNOISE), batched with bounded memory.

    ``counts(x, num, ...)`` runs the ``N * num`` (example, sample) rows, at most ``max_rows`` per
    forward pass; row ``r`` is sample ``r % num`` of example ``r // num`` and gets
    ``x[r // num] + sigma * e`` with ``e ~ N(0, I)``, ``sigma`` in input units, no clipping. The
    noise is drawn statelessly from ``(seed, stream, chunk)``: fixed seeds give identical counts,
    different ``stream`` values independent samples (CERTIFY's selection and estimation sets).
    One trace per input shape, reused by every call.

    Args:
        model: Keras model (run with ``training=False``) or callable ``[M, ...] -> [M, K]`` logits.
        sigma: noise stddev in input units (``>= 0``).
        max_rows: rows per forward pass (the memory bound); default from the model's activation
            size (:func:`zoo.memory.rows_per_chunk`), else 10,000.
        stddev: override of the model's own inference noise (``None``: its own ``infer_stddev``).
    """

    def __init__(self, model: Model, sigma: float, max_rows: int | None = None, stddev: float | None = None):
        if not sigma >= 0:
            raise UserInputError(f"sigma must be >= 0, got {sigma}")
        self.model = model
        self.sigma = float(sigma)
        self.max_rows = int(max_rows or _default_rows(model))
        if self.max_rows < 1:
            raise UserInputError(f"max_rows must be >= 1, got {max_rows}")
        self.stddev = stddev
        self._chunks: dict = {}

    def _chunk_fn(self, shape: tuple):
        if shape not in self._chunks:
            spec = [tf.TensorSpec([None, *shape], tf.float32)] + [tf.TensorSpec([], tf.int64)] * 3 + \
                   [tf.TensorSpec([2], tf.int64)]
            self._chunks[shape] = tf.function(self._chunk, input_signature=spec)
        return self._chunks[shape]

    def _chunk(self, images, start, stop, num, key):
        example = tf.range(start, stop) // num
        batch = tf.gather(images, example)
        noisy = batch + self.sigma * tf.random.stateless_normal(tf.shape(batch), key, dtype=tf.float32)
        if self.stddev is None:
            logits = _call(self.model, noisy)
        else:
            from zoo.noise_context import noise_override
            with noise_override(self.stddev):
                logits = _call(self.model, noisy)
        return example, tf.argmax(logits, -1, output_type=tf.int64), tf.shape(logits, out_type=tf.int64)[-1]

    def counts(self, x, num: int, *, seed: int = 0, stream: int = 0) -> np.ndarray:
        """Class counts ``[N, K]`` (int64) over ``num`` noisy copies of each of ``x`` ``[N, ...]``."""
        if num < 1:
            raise UserInputError(f"num must be >= 1, got {num}")
        x = np.asarray(x, np.float32)
        fn = self._chunk_fn(tuple(x.shape[1:]))
        xt = tf.constant(x)
        total, n_ex = len(x) * int(num), len(x)
        counts = None
        for c, start in enumerate(range(0, total, self.max_rows)):
            key = tf.constant([seed * 1_000_003 + stream, c], tf.int64)
            ex, pred, classes = fn(xt, tf.constant(start, tf.int64), tf.constant(min(start + self.max_rows, total),
                                                                                  tf.int64),
                                   tf.constant(num, tf.int64), key)
            classes = int(classes)
            if counts is None:
                counts = np.zeros(n_ex * classes, np.int64)
            counts += np.bincount(ex.numpy() * classes + pred.numpy(), minlength=n_ex * classes)
        if counts is None:  # no examples
            return np.zeros([0, 0], np.int64)
        return counts.reshape(n_ex, -1)


def sample_counts(model: Model, x, num: int, sigma: float, *, seed: int = 0, stream: int = 0,
                  max_rows: int | None = None, stddev: float | None = None) -> np.ndarray:
    """Class counts ``[N, K]`` (int64) of ``model`` on ``num`` Gaussian-noised copies of each of
    ``x`` ``[N, ...]``: ``NoiseSampler(model, sigma, max_rows, stddev).counts(x, num, ...)``."""
    return NoiseSampler(model, sigma, max_rows, stddev).counts(x, num, seed=seed, stream=stream)


# --------------------------------------------------------------------------- PREDICT and CERTIFY
@dataclasses.dataclass
class Certificate:
    """Output of :func:`certify` for ``N`` inputs.

    Attributes:
        prediction: ``[N]`` int, the certified class ``c_A`` or ``-1`` (abstain).
        radius: ``[N]`` float, certified L2 radius in input units (``sigma * Phi^-1(p_lower)``);
            0 where abstained.
        p_lower: ``[N]`` float, one-sided Clopper-Pearson lower bound on ``P(f(x + delta) = c_A)``.
        count: ``[N]`` int, ``n_A`` of the ``n`` estimation samples.
        settings: ``sigma``, ``n0``, ``n``, ``alpha``, ``seed``.
    """
    prediction: np.ndarray
    radius: np.ndarray
    p_lower: np.ndarray
    count: np.ndarray
    settings: dict


def certify(model: Model, x, sigma: float, *, n0: int = 100, n: int = 100_000, alpha: float = 0.001,
            seed: int = 0, max_rows: int | None = None, stddev: float | None = None) -> Certificate:
    """CERTIFY of Cohen, Rosenfeld and Kolter (2019) for a batch of inputs.

    ``c_A`` is the most frequent class among ``n0`` noisy samples; ``n_A`` its count among ``n``
    independent ones; ``p_lower = clopper_pearson_lower(n_A, n, alpha)``. Returns ``c_A`` with
    radius ``sigma * Phi^-1(p_lower)`` (Theorem 1) where ``p_lower >= 1/2``, else abstains (-1).

    Args:
        model: base classifier, Keras model or callable ``[M, ...] -> [M, K]`` logits.
        x: inputs ``[N, ...]``; sigma: Gaussian noise stddev in input units (> 0).
        n0, n: selection and estimation sample sizes (the paper: 100 and 100,000).
        alpha: failure probability per input (the paper: 0.001).
        seed, max_rows, stddev: as in :func:`sample_counts`.
    """
    if not sigma > 0:
        raise UserInputError(f"sigma must be > 0 to certify, got {sigma}")
    sampler = NoiseSampler(model, sigma, max_rows, stddev)
    counts0 = sampler.counts(x, n0, seed=seed, stream=0)
    counts = sampler.counts(x, n, seed=seed, stream=1)
    n_ex = len(counts)
    c_a = counts0.argmax(-1) if n_ex else np.zeros(0, np.int64)
    n_a = counts[np.arange(n_ex), c_a] if n_ex else np.zeros(0, np.int64)
    p_lower = clopper_pearson_lower(n_a, n, alpha)
    ok = p_lower >= 0.5
    radius = np.where(ok, sigma * stats.norm.ppf(np.clip(p_lower, 0.5, 1.0)), 0.0)
    return Certificate(np.where(ok, c_a, -1).astype(np.int64), radius.astype(np.float64), p_lower,
                       n_a.astype(np.int64), {"sigma": float(sigma), "n0": int(n0), "n": int(n),
                                              "alpha": float(alpha), "seed": int(seed)})


def predict(model: Model, x, sigma: float, *, n: int = 1000, alpha: float = 0.001, seed: int = 0,
            max_rows: int | None = None, stddev: float | None = None) -> np.ndarray:
    """PREDICT of Cohen et al. (2019): ``[N]`` int, the smoothed class or ``-1``.

    With ``n_A``, ``n_B`` the two top counts of ``n`` noisy samples, returns the top class when a
    two-sided binomial test of ``n_A`` against ``Binomial(n_A + n_B, 1/2)`` rejects at ``alpha``
    (then it differs from ``g(x)`` with probability at most ``alpha``), else abstains.
    """
    from zoo.voting import smoothed_predict

    counts = sample_counts(model, x, n, sigma, seed=seed, stream=2, max_rows=max_rows, stddev=stddev)
    return smoothed_predict(counts, alpha).astype(np.int64)


# --------------------------------------------------------------------------- certified accuracy
def default_radii(sigma: float, points: int = 17) -> list[float]:
    """``points`` radii evenly from 0 to ``4 sigma`` (the largest radius ``n = 100,000`` samples
    can certify at ``alpha = 0.001`` is about ``3.8 sigma``)."""
    return [float(r) for r in np.round(np.linspace(0.0, 4.0 * sigma, points), 6)]


def certified_accuracy(prediction, radius, y, radii: Sequence[float]) -> list[tuple[float, float]]:
    """Certified accuracy at each radius: rows ``(r, share of inputs with prediction == y and
    certified radius >= r)`` (Cohen et al. 2019, their experiments). Abstentions (-1) never count."""
    prediction, radius, y = np.asarray(prediction), np.asarray(radius), np.asarray(y)
    if not len(y):
        return [(float(r), float("nan")) for r in radii]
    right = prediction == y
    return [(float(r), float(np.mean(right & (radius >= r)))) for r in radii]


def certified_accuracy_curve(model: Model, x, y, sigma: float, radii: Sequence[float] | None = None,
                             **certify_kwargs) -> tuple[list[tuple[float, float]], Certificate]:
    """:func:`certify` on ``(x, y)``, then :func:`certified_accuracy` at ``radii`` (default
    :func:`default_radii`); returns ``(rows, certificate)``."""
    cert = certify(model, x, sigma, **certify_kwargs)
    return certified_accuracy(cert.prediction, cert.radius, y, radii or default_radii(sigma)), cert


def certify_rows(name: str, model: Model, x, y, sigma: float, radii: Sequence[float] | None = None, *,
                 n0: int = 100, n: int = 100_000, alpha: float = 0.001, seed: int = 0,
                 max_rows: int | None = None, stddev: float | None = None) -> list[dict]:
    """Report rows of a ``certify`` suite: one per radius, in the harness's row format.

    Each row: ``key`` (``"{name}|certify|{sigma}|{radius}"``), ``model``, ``suite`` ``"certify"``,
    ``norm`` ``"2"``, ``eps`` and ``radius`` (the L2 radius, input units), ``sigma``, ``n0``,
    ``samples`` (``n``), ``alpha``, ``n`` (points), ``correct``, ``accuracy`` (certified accuracy)
    with its 95% Wilson ``ci95``, ``abstain_rate`` and ``clean_smoothed_accuracy`` (radius 0).
    """
    from evaluation.metrics import accuracy_row

    y = np.asarray(y)
    radii = list(radii) if radii is not None else default_radii(sigma)
    cert = certify(model, x, sigma, n0=n0, n=n, alpha=alpha, seed=seed, max_rows=max_rows, stddev=stddev)
    right = cert.prediction == y
    rows = []
    for r in radii:
        correct = int(np.sum(right & (cert.radius >= r)))
        rows.append({"key": f"{name}|certify|{sigma}|{r}", "model": name, "suite": "certify", "attack": None,
                     "norm": "2", "eps": float(r), "radius": float(r), "sigma": float(sigma), "n0": int(n0),
                     "samples": int(n), "alpha": float(alpha), "seed": int(seed), **accuracy_row(correct, len(y)),
                     "abstain_rate": float(np.mean(cert.prediction < 0)) if len(y) else float("nan"),
                     "clean_smoothed_accuracy": float(np.mean(right)) if len(y) else float("nan")})
    return rows


def curves_from_rows(rows: Sequence[Mapping]) -> dict[str, list[tuple[float, float]]]:
    """``{"<model> sigma=<s>": [(radius, certified accuracy), ...]}`` from ``certify`` suite rows."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r.get("suite") == "certify":
            curves.setdefault(f"{r['model']} sigma={r['sigma']}", []).append((r["radius"], r["accuracy"]))
    return {k: sorted(v) for k, v in curves.items()}


def plot_certified_accuracy(curves: Mapping[str, Sequence[tuple[float, float]]], path=None,
                            title: str | None = None) -> Figure:
    """Certified accuracy vs L2 radius, one line per curve (the plots of Cohen et al. 2019).

    Args:
        curves: ``{label: [(radius, certified accuracy), ...]}`` (e.g. :func:`curves_from_rows`).
        path: if given, the figure is saved there (PNG/PDF by suffix).
        title: optional title.

    Returns:
        The matplotlib ``Figure`` (made without pyplot, so no global backend state is touched).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    for label, pts in curves.items():
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker=".", label=label)
    ax.set_xlabel("L2 radius (input units)")
    ax.set_ylabel("certified accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


# --------------------------------------------------------------------------- harness suite
SUITE_NOTE = ("Certified L2 accuracy of the Gaussian-smoothed model (Cohen, Rosenfeld and Kolter 2019, CERTIFY): "
              "share of points whose smoothed prediction is right with a certified radius >= the row's radius "
              "(input units), each certificate failing with probability at most alpha; abstentions count as wrong.")


def _probability(alpha) -> None:
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise UserInputError(f"must be a number in (0, 1), got {alpha!r}")


@dataclasses.dataclass(frozen=True)
class CertifySettings:
    """Gaussian randomized smoothing, certified L2 accuracy (Cohen, Rosenfeld and Kolter 2019: n0 = 100,
    n = 100,000, alpha = 0.001)."""

    certify_sigmas: tuple[float, ...] = option((0.25,), "comma-separated Gaussian noise stddevs, input units",
                                               **reals(0, above=True))
    certify_n0: int = option(100, "samples that pick the class", **integer(1))
    certify_n: int = option(10_000, "samples that estimate its probability (the largest certifiable radius is "
                            "about 3.2 sigma at 10,000)", **integer(1))
    certify_alpha: float = option(0.001, "failure probability of each certificate", parse=number(float, 0, 1),
                                  check=_probability)
    certify_radii: tuple[float, ...] | None = option(None, "comma-separated L2 radii of the table",
                                                     shown="17 from 0 to 4 sigma", **reals(0, optional=True))
    certify_max_points: int = option(500, "test points certified (the first ones)", **integer(1))


def certified_figure(rows: Sequence[Mapping], out) -> list[str]:
    """The report's picture of the ``certify`` rows: certified accuracy vs L2 radius."""
    curves = curves_from_rows(rows)
    if not curves:
        return []
    cert = next(r for r in rows if r.get("suite") == "certify")
    plot_certified_accuracy(curves, out / "certified_accuracy.png",
                            title=f"Gaussian smoothing, n = {cert['samples']}, alpha = {cert['alpha']}")
    return ["![certified accuracy vs L2 radius](certified_accuracy.png)"]


@register_suite("certify", note=SUITE_NOTE, settings=CertifySettings, figures=(certified_figure,))
def certify_suite(ctx: SuiteContext, c: CertifySettings) -> None:
    """The ``certify`` suite: for every model and sigma, :func:`certify_rows` on the first
    ``certify_max_points`` test points.

    ``certify_n`` is 10,000 by default, so the largest certifiable radius is about ``3.2 sigma``
    (Cohen et al. use 100,000); ``certify_radii`` ``None`` is :func:`default_radii`. A model's own
    inference noise stays on (see the module docstring).
    """
    x, y = ctx.x[:c.certify_max_points], ctx.y[:c.certify_max_points]
    for name, model in ctx.models.items():
        for sigma in c.certify_sigmas:
            radii = list(c.certify_radii or default_radii(sigma))
            if all(ctx.done(f"{name}|certify|{sigma}|{r}") for r in radii):
                continue
            rows = certify_rows(name, model, x, y, sigma, radii, n0=c.certify_n0, n=c.certify_n,
                                alpha=c.certify_alpha, seed=ctx.settings.seed)
            ctx.count("model_passes", c.certify_n0 + c.certify_n)
            for row in rows:
                if not ctx.done(row["key"]):
                    ctx.add(row)
