import math

import numpy as np
import pytest

from evaluation.corruptions import (
    AUTHORS,
    CORRUPTIONS,
    Corruption,
    corrupt,
    get_corruption,
    list_corruptions,
    mean_corruption_accuracy,
    register_corruption,
)
from zoo.errors import UserInputError

GREY = np.full((200, 28, 28, 1), 0.5, np.float32)  # 156,800 pixels: SEs below are tiny


def test_gaussian_noise_std():
    out = corrupt(GREY, "gaussian_noise", 3)  # std 0.08, no clipping at 0.5 +- 6 sd
    n = out.size
    assert abs((out - 0.5).mean()) < 4 * 0.08 / math.sqrt(n)
    assert abs((out - 0.5).std() - 0.08) < 4 * 0.08 / math.sqrt(2 * n)


def test_impulse_fraction():
    out = corrupt(GREY, "impulse_noise", 5)  # amount 0.07
    hit = np.mean(out != 0.5)
    assert abs(hit - 0.07) < 4 * math.sqrt(0.07 * 0.93 / out.size)
    assert abs(np.mean(out == 1.0) - np.mean(out == 0.0)) < 4 * math.sqrt(0.035 / out.size) * 2


def test_contrast_keeps_mean_and_scales_spread(digits):
    x = digits.x_test[:50]
    out = corrupt(x, "contrast", 4)  # factor 0.3
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 0.3 * x.std(axis=(1, 2, 3)), rtol=1e-4)


@pytest.mark.parametrize("c", AUTHORS, ids=lambda c: c.name)
def test_authors_corruptions_grow_with_severity_and_are_seeded(digits, c):
    x = digits.x_test[:40]
    dist = [float(np.abs(corrupt(x, c.name, s) - x).mean()) for s in range(1, 6)]
    assert dist[4] > dist[0] > 0
    np.testing.assert_array_equal(corrupt(x, c.name, 2, seed=1), corrupt(x, c.name, 2, seed=1))
    out = corrupt(x, c.name, 5)
    assert out.shape == x.shape and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1


def test_registry_and_eq6(monkeypatch):
    """A corruption registers as a decorator or a ready Corruption; duplicates and bad severities are refused."""
    monkeypatch.setattr("evaluation.corruptions.CORRUPTIONS", CORRUPTIONS.copy())  # registrations end with the test
    assert len(list_corruptions()) >= 8 and list_corruptions(paper=True) == [c.name for c in AUTHORS]

    @register_corruption("invert_test", (1, 1, 1, 1, 1))
    def invert(x, rng, p):
        return 1 - x * p

    assert corrupt(GREY[:1], "invert_test", 1).mean() == pytest.approx(0.5)
    assert "invert_test" in list_corruptions() and not get_corruption("invert_test").paper
    register_corruption(Corruption("invert_too", invert, (1,) * 5))
    assert "invert_too" in list_corruptions()
    with pytest.raises(ValueError, match="already registered"):
        register_corruption(Corruption("contrast", None, (1,) * 5))
    with pytest.raises(ValueError, match="five severities"):
        register_corruption("short", (1, 2))(invert)
    with pytest.raises(ValueError, match="severity"):
        corrupt(GREY, "contrast", 6)
    with pytest.raises(UserInputError, match="unknown corruption"):
        corrupt(GREY, "fog", 1)
    assert mean_corruption_accuracy({("a", 1): 0.5, ("a", 2): 0.7, ("b", 1): 0.9}) == pytest.approx(0.7)


@pytest.mark.parametrize("name", ["shot_noise", "motion_blur", "rotate", "brightness"])
def test_each_extra_corruption_alone_stays_in_range_and_grows_with_severity(name):
    """The four corruptions beyond the GLR authors' (shot noise, motion blur, rotation, brightness):
    pixels stay in [0, 1], the shape is kept, the same seed gives the same images, and the mean
    change grows with the severity."""
    rng = np.random.default_rng(0)
    digits = np.zeros((50, 28, 28, 1), np.float32)
    digits[:, 8:20, 12:16] = rng.uniform(0.6, 1.0, (50, 12, 4, 1))  # a bar: blur and rotation move it
    change = []
    for severity in range(1, 6):
        out = corrupt(digits, name, severity, seed=3)
        assert out.shape == digits.shape and out.min() >= 0.0 and out.max() <= 1.0
        np.testing.assert_array_equal(out, corrupt(digits, name, severity, seed=3))
        change.append(float(np.mean(np.abs(out - digits))))
    assert change[0] > 0, change
    assert change[-1] > change[0] and all(b >= a - 1e-3 for a, b in zip(change, change[1:])), change


def test_portable_argv_drops_this_machines_data_folder():
    from training.run import portable_argv

    argv = ["train", "--model", "cnn6", "--data-dir", "/home/me/data", "--epochs", "2", "--data-dir=/x", "--out", "m"]
    assert portable_argv(argv) == ["train", "--model", "cnn6", "--epochs", "2", "--out", "m"]
    assert portable_argv(["train", "--out", "--data-dir-like"]) == ["train", "--out", "--data-dir-like"]
