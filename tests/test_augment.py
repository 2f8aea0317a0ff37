"""Gaussian input noise for randomized smoothing (Cohen et al. 2019): the noise has the asked
stddev (a statistical test), is reproducible per step, and is recorded by ``glrzoo train``."""
import numpy as np
import pytest
import tensorflow as tf

from training.augment import GaussianInputNoise
from zoo.errors import UserInputError


def test_the_noise_is_gaussian_with_the_asked_stddev_and_unclipped():
    x = tf.fill([100, 8, 8, 1], 0.5)
    noisy, y = GaussianInputNoise(0.25, seed=3)(None, x, tf.zeros([100], tf.int32), tf.constant(4))
    delta = (noisy - x).numpy().ravel()  # 6,400 draws
    n = delta.size
    # mean 0 within 4 standard errors (sigma / sqrt(n)); stddev within 4 SE of s (about sigma / sqrt(2n))
    assert abs(delta.mean()) < 4 * 0.25 / np.sqrt(n)
    assert abs(delta.std() - 0.25) < 4 * 0.25 / np.sqrt(2 * n)
    assert noisy.numpy().max() > 1.0 or noisy.numpy().min() < 0.0  # not clipped to the pixel range
    again, _ = GaussianInputNoise(0.25, seed=3)(None, x, y, tf.constant(4))
    other, _ = GaussianInputNoise(0.25, seed=3)(None, x, y, tf.constant(5))
    np.testing.assert_array_equal(noisy, again)  # (seed, step) decide the draw: a resumed run repeats it
    assert not np.allclose(noisy, other)


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("inf"), float("nan")])
def test_a_bad_stddev_is_refused(sigma):
    with pytest.raises(UserInputError, match="--input-noise"):
        GaussianInputNoise(sigma)


def test_train_records_the_input_noise(tmp_path):
    from glrzoo.cli import main
    from zoo.export import read_metadata

    out = tmp_path / "m"
    assert main(["train", "--model", "test_mlp", "--epochs", "1", "--input-noise", "0.5", "--quiet",
                 "--out", str(out)]) == 0
    training = read_metadata(out)["training"]
    assert training["transforms"] == [{"transform": "gaussian_input_noise", "sigma": 0.5, "seed": 0}]
    assert training["recipe"]["input_noise"] == 0.5
