"""Wilson score interval: contains its point estimate everywhere, matches the closed form inside."""
import math

import numpy as np
import pytest
from scipy import stats

from evaluation.metrics import accuracy_row, paired_comparison, wilson_interval


@pytest.mark.parametrize("n", [1, 3, 7, 10, 49, 100, 1000, 2000, 10000])
def test_interval_contains_point_estimate_at_the_ends(n):
    lo, hi = wilson_interval(n, n)
    assert hi == 1.0 and lo < 1.0
    lo, hi = wilson_interval(0, n)
    assert lo == 0.0 and hi > 0.0


@pytest.mark.parametrize("correct,n", [(c, n) for n in (7, 100, 997) for c in range(0, n + 1, max(1, n // 13))])
def test_interval_contains_point_estimate(correct, n):
    lo, hi = wilson_interval(correct, n)
    assert 0.0 <= lo <= correct / n <= hi <= 1.0


def test_interval_matches_closed_form_and_has_nominal_coverage():
    # 37/100: the textbook Wilson bounds for z = 1.959964
    z = stats.norm.ppf(0.975)
    p, n = 0.37, 100
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = wilson_interval(37, 100)
    assert lo == pytest.approx(centre - half, abs=1e-12) and hi == pytest.approx(centre + half, abs=1e-12)
    ref = stats.binomtest(37, 100).proportion_ci(0.95, method="wilson")  # scipy's independent implementation
    assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)
    # exact coverage over the binomial for p = 0.3, n = 200 stays near 95% (Wilson is close to nominal)
    n, p = 200, 0.3
    cover = sum(stats.binom.pmf(k, n, p) for k in range(n + 1) if wilson_interval(k, n)[0] <= p <= wilson_interval(k, n)[1])
    assert 0.93 <= cover <= 0.97


def test_accuracy_row_shape():
    row = accuracy_row(10, 10)
    assert row["accuracy"] == 1.0 and row["ci95"][1] == 1.0 and row["n"] == 10


def test_vote_accuracy_is_the_share_the_majority_vote_gets_right():
    import keras
    import numpy as np

    import zoo
    from evaluation.metrics import vote_accuracy
    from zoo.noise import noisy_layers
    from zoo.voting import vote_predict

    keras.utils.set_random_seed(0)
    model = zoo.create_model("test_mlp", (8, 8, 1), 10, infer_stddev=0.7)
    x = np.random.default_rng(0).random((40, 8, 8, 1), dtype=np.float32)
    with zoo.noise_override(0.0):
        clean = np.argmax(model(x, training=False), -1)
    y = np.where(np.arange(40) < 25, clean, (clean + 1) % 10)  # 25 of 40 right without noise
    assert vote_accuracy(model, x, y, votes=5, stddev=0.0) == pytest.approx(25 / 40)
    states = [layer.rng_state.numpy().copy() for layer in noisy_layers(model)]
    noisy = vote_accuracy(model, x, y, votes=7, stddev=2.0)
    for layer, state in zip(noisy_layers(model), states):  # the same draws again
        layer.rng_state.assign(state)
    assert noisy == float(np.mean(vote_predict(model, x, 7, 2.0).numpy() == y))
    plain = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    pred = np.argmax(plain.predict(x, verbose=0), -1)
    assert vote_accuracy(plain, x, pred, votes=9, stddev=1.0) == 1.0  # no noisy layer: one plain pass
    assert math.isnan(vote_accuracy(model, x[:0], y[:0], votes=3))


def test_paired_comparison_exact_p_and_calibration():
    """Exact on a hand case, uniform-ish p under the null, and sensitive to a real difference."""
    a = np.array([True] * 10 + [True] * 5 + [False] * 5)
    b = np.array([False] * 10 + [True] * 5 + [False] * 5)
    r = paired_comparison(a, b)
    assert (r["only_a"], r["only_b"]) == (10, 0)
    assert r["p_value"] == pytest.approx(2 * 0.5**10)  # both tails of Binomial(10, 1/2)
    assert paired_comparison(b, b)["p_value"] == 1.0
    rng = np.random.default_rng(0)
    # null: two models with the same 80% accuracy, errors independent; 400 trials of 1,000 points
    false_alarms = np.mean([paired_comparison(rng.random(1000) < 0.8, rng.random(1000) < 0.8)["p_value"] < 0.05
                            for _ in range(400)])
    assert false_alarms <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 400), false_alarms  # exact test: level <= 5%
    # alternative: 2,000 shared points, model a fixes 3% of b's errors and breaks none
    b = rng.random(2000) < 0.85
    a = b | (rng.random(2000) < 0.2)
    assert paired_comparison(a, b)["p_value"] < 1e-6
    with pytest.raises(ValueError, match="one length"):
        paired_comparison(a, b[:10])
