"""Wilson score interval: contains its point estimate everywhere, matches the closed form inside."""
import math

import pytest
from scipy import stats

from evaluation.metrics import accuracy_row, wilson_interval


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
