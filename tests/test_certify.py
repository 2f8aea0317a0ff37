"""Randomized smoothing (Cohen, Rosenfeld and Kolter 2019): Clopper-Pearson bounds against scipy, and
CERTIFY on linear classifiers, whose smoothed radius is known exactly.

For ``f(x) = [w.x + b > 0]`` and ``delta ~ N(0, sigma^2 I)``, ``w.(x + delta) + b`` is
``N(w.x + b, sigma^2 |w|^2)``, so ``p_A = Phi(|w.x + b| / (sigma |w|))`` and the certified radius
``sigma * Phi^-1(p_A)`` equals ``|w.x + b| / |w|``, the distance to the decision boundary.
"""
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from evaluation.certify import (
    NoiseSampler,
    certified_accuracy,
    certify,
    certify_rows,
    certify_suite,
    clopper_pearson_lower,
    curves_from_rows,
    default_radii,
    plot_certified_accuracy,
    predict,
    sample_counts,
)

SIGMA = 0.5
DIM = 16


def linear_classifier(w: np.ndarray, b: float, record: list | None = None):
    """Logits ``[-(w.x + b), w.x + b]`` ``[M, 2]``: class 1 iff ``w.x + b > 0``."""
    wt = tf.constant(w.ravel(), tf.float32)

    def f(x):
        if record is not None:
            record.append(int(x.shape[0]) if x.shape[0] is not None else -1)
        s = tf.reduce_sum(tf.reshape(x, [tf.shape(x)[0], -1]) * wt, -1) + b
        return tf.stack([-s, s], -1)
    return f


def points_at(w: np.ndarray, b: float, signed_radii: np.ndarray, seed: int = 0) -> np.ndarray:
    """Random points ``[N, DIM]`` at signed distance ``signed_radii`` from the hyperplane ``w.x + b = 0``."""
    z = np.random.default_rng(seed).normal(size=(len(signed_radii), w.size))
    norm = np.linalg.norm(w)
    margin = z @ w + b
    return (z - ((margin - signed_radii * norm) / norm**2)[:, None] * w[None]).astype(np.float32)


@pytest.fixture(scope="module")
def plane():
    w = np.random.default_rng(1).normal(size=DIM).astype(np.float32)
    return w, 0.3


def test_clopper_pearson_equals_scipy_beta_quantiles():
    for n in (1, 10, 100, 1000, 100_000):
        k = np.unique(np.linspace(0, n, 23).astype(int))
        for alpha in (0.001, 0.05, 0.3):
            lo = clopper_pearson_lower(k, n, alpha)
            pos = k > 0
            assert np.allclose(lo[pos], stats.beta.ppf(alpha, k[pos], n - k[pos] + 1), rtol=1e-12, atol=0)
            assert np.all(lo[~pos] == 0.0)
            assert np.all(np.diff(lo) > 0)  # more successes, higher bound
            # defining property: P(Binomial(n, lo) >= k) = alpha
            assert np.allclose(stats.binom.sf(k[pos] - 1, n, lo[pos]), alpha, rtol=1e-6)
            # and scipy's exact (Clopper-Pearson) two-sided interval at 1 - 2 alpha has the same lower end
            for kk in k[pos][::5]:
                ci = stats.binomtest(int(kk), n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
                assert np.isclose(clopper_pearson_lower(kk, n, alpha), ci.low, rtol=1e-9)
    with pytest.raises(ValueError):
        clopper_pearson_lower(3, 10, 0.0)
    with pytest.raises(ValueError):
        clopper_pearson_lower(11, 10, 0.05)


def test_sampler_counts_follow_the_gaussian_and_memory_stays_bounded(plane):
    w, b = plane
    signed = np.array([-1.0, -0.3, 0.0, 0.2, 0.6, 1.2])
    x = points_at(w, b, signed)
    seen = []
    num = 20_000
    counts = NoiseSampler(linear_classifier(w, b, seen), SIGMA, max_rows=7_000).counts(x, num, seed=3)
    assert counts.shape == (6, 2) and np.all(counts.sum(1) == num)
    assert max(seen) <= 7_000  # never more than max_rows rows in one forward pass
    p1 = stats.norm.cdf(signed / SIGMA)  # P(class 1) = Phi(signed distance / sigma)
    se = np.sqrt(p1 * (1 - p1) / num)
    assert np.all(np.abs(counts[:, 1] / num - p1) <= 5 * se + 1e-12), (counts[:, 1] / num, p1)
    # fixed seeds reproduce; another stream draws other noise
    again = sample_counts(linear_classifier(w, b), x, num, SIGMA, seed=3, max_rows=7_000)
    other = sample_counts(linear_classifier(w, b), x, num, SIGMA, seed=3, stream=1, max_rows=7_000)
    assert np.array_equal(counts, again) and not np.array_equal(counts, other)
    # sigma 0: the base classifier itself, num times
    off = signed != 0  # the point on the plane goes either way by rounding
    assert np.array_equal(sample_counts(linear_classifier(w, b), x, 5, 0.0)[off, 1], 5 * (signed[off] > 0))


def test_certified_radius_approaches_the_exact_one_from_below(plane):
    """Exact radii 0.2 sigma .. 2 sigma on both sides of the plane: every certificate names the true
    side, never exceeds the exact radius beyond statistical error, and the gap shrinks with n,
    as the delta method predicts (gap ~ sigma z_alpha se(p) / phi(Phi^-1(p)))."""
    w, b = plane
    exact = np.tile(np.linspace(0.2, 2.0, 10) * SIGMA, 2)
    signed = exact * np.repeat([1, -1], 10)
    x = points_at(w, b, signed, seed=2)
    truth = (signed > 0).astype(int)
    alpha = 0.001
    p = stats.norm.cdf(exact / SIGMA)
    gaps = []
    for n in (1_000, 10_000, 100_000):
        cert = certify(linear_classifier(w, b), x, SIGMA, n0=100, n=n, alpha=alpha, seed=5, max_rows=50_000)
        certified = cert.prediction >= 0
        assert np.all(cert.prediction[certified] == truth[certified])
        se = np.sqrt(p * (1 - p) / n)
        # one standard error of the radius estimate (delta method), in input units
        radius_se = SIGMA * se / stats.norm.pdf(stats.norm.ppf(p))
        assert np.all(cert.radius <= exact + 3 * radius_se), (n, cert.radius - exact)
        gap = np.where(certified, exact - cert.radius, exact)
        predicted = SIGMA * (stats.norm.ppf(p) - stats.norm.ppf(np.clip(p - stats.norm.ppf(1 - alpha) * se, 0.5, 1)))
        tight = exact <= 1.5 * SIGMA  # p_A <= 0.93: the delta method is accurate there at these n
        assert np.all(np.abs(gap - predicted)[tight] <= 4 * radius_se[tight]), (n, gap, predicted)
        gaps.append(gap.mean())
    assert gaps[0] > gaps[1] > gaps[2] > 0, gaps
    assert gaps[2] < 0.05 * SIGMA  # n = 100,000: within 5% of sigma on average


def test_abstains_when_p_lower_is_below_one_half(plane):
    w, b = plane
    x = points_at(w, b, np.array([0.0, 0.002, -0.002, 0.8 * SIGMA]), seed=4)
    cert = certify(linear_classifier(w, b), x, SIGMA, n0=100, n=2_000, alpha=0.001, seed=0)
    assert np.all(cert.p_lower[:3] < 0.5) and np.all(cert.prediction[:3] == -1) and np.all(cert.radius[:3] == 0)
    assert cert.prediction[3] == 1 and cert.p_lower[3] >= 0.5 and cert.radius[3] > 0
    assert np.allclose(cert.p_lower, clopper_pearson_lower(cert.count, 2_000, 0.001))
    # PREDICT: abstains on the boundary, answers far from it
    pred = predict(linear_classifier(w, b), x, SIGMA, n=2_000, alpha=0.001)
    assert np.all(pred[:3] == -1) and pred[3] == 1
    # a constant classifier: n_A = n, p_lower = alpha^(1/n), the largest radius n samples can certify
    const = lambda z: tf.one_hot(tf.fill([tf.shape(z)[0]], 1), 3) + 0.0 * z[:, :1]  # noqa: E731
    cert = certify(const, x, SIGMA, n0=10, n=1_000, alpha=0.01)
    assert np.all(cert.prediction == 1)
    assert np.allclose(cert.radius, SIGMA * stats.norm.ppf(0.01 ** (1 / 1_000)))


def test_certified_accuracy_rows_suite_and_plot(plane, tmp_path):
    assert certified_accuracy([1, -1, 2, 0], [0.5, 0.0, 1.5, 2.0], [1, 1, 2, 1], [0.0, 0.5, 1.0, 2.0]) == [
        (0.0, 0.5), (0.5, 0.5), (1.0, 0.25), (2.0, 0.0)]
    assert default_radii(0.25)[:3] == [0.0, 0.0625, 0.125] and default_radii(0.25)[-1] == 1.0
    w, b = plane
    signed = np.linspace(-2, 2, 12) * SIGMA
    x, y = points_at(w, b, signed, seed=6), (signed > 0).astype(int)
    rows = certify_rows("lin", linear_classifier(w, b), x, y, SIGMA, [0.0, 0.25, 0.5, 1.0], n0=50, n=2_000)
    assert [r["key"] for r in rows] == [f"lin|certify|{SIGMA}|{r}" for r in (0.0, 0.25, 0.5, 1.0)]
    accs = [r["accuracy"] for r in rows]
    assert accs == sorted(accs, reverse=True) and accs[0] > 0.5
    assert all(r["suite"] == "certify" and r["n"] == 12 and r["samples"] == 2_000 and r["ci95"][0] <= r["accuracy"]
               for r in rows)
    # no point is certified beyond its distance to the plane
    assert rows[-1]["correct"] <= int(np.sum(np.abs(signed) >= 1.0))
    fig = plot_certified_accuracy(curves_from_rows(rows), tmp_path / "cert.png", title="linear")
    assert (tmp_path / "cert.png").stat().st_size > 1000 and fig.axes[0].get_title() == "linear"


def test_certify_suite_in_the_harness_context(plane, tmp_path):
    from evaluation.certify import CertifySettings, certified_figure
    from evaluation.harness import Evaluation
    from evaluation.suites import SUITES, SuiteContext, SuiteSettings

    w, b = plane
    signed = np.linspace(-1, 1, 8) * SIGMA
    x, y = points_at(w, b, signed, seed=7), (signed > 0).astype(int)
    ev = Evaluation(tmp_path, log=lambda line: None)
    ctx = SuiteContext(models={"lin": linear_classifier(w, b)}, model_dirs=[], x=x, y=y, settings=SuiteSettings(),
                       ev=ev)
    certify_suite(ctx, CertifySettings())  # the defaults (sigma 0.25, n 10,000) apply
    rows = [r for r in ev.rows if r["suite"] == "certify"]
    assert len(rows) == len(default_radii(0.25)) and rows[0]["samples"] == 10_000
    assert (tmp_path / "report.json").exists()
    assert certified_figure(ev.rows, tmp_path) and (tmp_path / "certified_accuracy.png").stat().st_size > 1000
    certify_suite(ctx, CertifySettings())  # resumes: nothing new
    assert len([r for r in ev.rows if r["suite"] == "certify"]) == len(rows)
    assert SUITES.entry("certify").run is certify_suite and SUITES.entry("certify").settings is CertifySettings


def test_keras_base_classifier_with_its_own_noise():
    """A zoo MLP as base classifier: its own inference noise stays on unless overridden, and an
    override of 0 gives exactly the counts of the noise-free model (same input noise)."""
    import keras

    import zoo
    keras.utils.set_random_seed(0)
    model = zoo.create_model("mlp", (8, 8, 1), 10, hidden=(16,), activation="relu")
    x = np.random.default_rng(0).uniform(size=(5, 8, 8, 1)).astype(np.float32)
    clean = sample_counts(model, x, 200, 0.3, seed=1)
    zoo.set_noise(model, infer_stddev=2.0)
    try:
        overridden = sample_counts(model, x, 200, 0.3, seed=1, stddev=0.0)
        noisy = sample_counts(model, x, 200, 0.3, seed=1)
    finally:
        zoo.set_noise(model, infer_stddev=0.0)
    assert np.array_equal(clean, overridden) and not np.array_equal(clean, noisy)
    assert clean.shape == (5, 10) and np.all(noisy.sum(1) == 200)
