"""Noise statistics, on/off switching, seeds, and the GLR recording seam."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import NoisyConv2D, NoisyDense, NoisyLSTM, noise_override, record_noise

N = 20000  # samples per statistic: SE(mean) = s / sqrt(N), SE(var) ~ s^2 sqrt(2 / N)


def constant_dense(value, noise, stddev, training):
    """A 1-unit linear NoisyDense whose pre-activation is the constant ``value``."""
    layer = NoisyDense(1, noise=noise, train_stddev=stddev if training else 0.0,
                       infer_stddev=0.0 if training else stddev, seed=3, kernel_initializer="zeros")
    layer.build((None, 1))
    layer.bias.assign([value])
    return layer


@pytest.mark.parametrize("noise,value,stddev", [("additive", 0.5, 0.3), ("multiplicative", 2.0, 0.4)])
@pytest.mark.parametrize("training", [True, False])
def test_noise_mean_and_variance(noise, value, stddev, training):
    layer = constant_dense(value, noise, stddev, training)
    v = layer(tf.zeros((N, 1)), training=training).numpy().ravel()
    sd = stddev if noise == "additive" else abs(value) * stddev
    assert abs(v.mean() - value) < 4 * sd / math.sqrt(N)
    assert abs(v.var() - sd**2) < 4 * sd**2 * math.sqrt(2.0 / N)


def test_noise_on_and_off():
    layer = constant_dense(1.0, "additive", 0.5, training=True)  # train 0.5, infer 0
    x = tf.zeros((100, 1))
    assert np.all(layer(x, training=False).numpy() == 1.0)
    assert layer(x, training=True).numpy().std() > 0.3
    zoo.set_noise(keras.Sequential([layer]), infer_stddev=0.2)  # no rebuild
    assert 0.1 < layer(x, training=False).numpy().std() < 0.3
    with noise_override(0.0):
        assert np.all(layer(x, training=True).numpy() == 1.0)


def test_set_noise_reaches_compiled_function():
    m = zoo.create_model("test_mlp", (8, 8, 1), 10)
    f = tf.function(lambda x: m(x, training=False))
    x = tf.random.uniform((4, 8, 8, 1))
    a, b = f(x).numpy(), f(x).numpy()
    np.testing.assert_array_equal(a, b)
    zoo.set_noise(m, infer_stddev=0.5)
    assert np.abs(f(x).numpy() - a).max() > 1e-3  # same traced function, new noise level
    with pytest.raises(ValueError, match=">= 0"):
        zoo.set_noise(m, infer_stddev=-1)


def test_seeds_reproduce_and_differ():
    def run(seed):
        keras.utils.set_random_seed(0)
        m = zoo.create_model("test_cnn6", (8, 8, 1), 10, train_stddev=0.5, seed=seed)
        x = tf.ones((2, 8, 8, 1))
        return np.concatenate([m(x, training=True).numpy(), m(x, training=True).numpy()])

    a, b, c = run(1), run(1), run(2)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-4
    assert np.abs(a[:2] - a[2:]).max() > 1e-4  # consecutive calls draw fresh noise


def test_negative_stddev_rejected():
    with pytest.raises(ValueError, match="train_stddev must be a finite number >= 0"):
        NoisyDense(3, train_stddev=-0.1)
    with pytest.raises(ValueError, match="noise must be one of"):
        NoisyDense(3, noise="pink")


def test_recording_exposes_inputs_and_noise_and_replicates_once():
    m = zoo.create_model("test_cnn6", (8, 8, 1), 10)
    x = tf.random.uniform((3, 8, 8, 1))
    with record_noise(replications=4, sigma=0.7) as rec:
        logits = m(x, training=True)
    assert logits.shape == (12, 10)
    layers = zoo.noisy_layers(m)
    assert [r.layer for r in rec.records] == layers
    first, rest = rec.records[0], rec.records[1:]
    assert first.replicated_here and not any(r.replicated_here for r in rest)
    assert first.inputs["x"].shape[0] == 3  # input-side work done once, not R times
    assert all(r.inputs["x"].shape[0] == 12 for r in rest)
    for r in rec.records:
        assert r.noise.shape[0] == 12 and r.sigma == 0.7
    e = np.concatenate([r.noise.numpy().ravel() for r in rec.records])
    assert abs(e.std() - 0.7) < 0.05


def test_recording_antithetic_pairs_and_laplace():
    layer = NoisyDense(5)
    with record_noise(replications=4, antithetic=True, distribution="laplace", sigma=2.0) as rec:
        layer(tf.zeros((2, 3)), training=True)
    e = rec.records[0].noise.numpy().reshape(2, 4, 5)
    np.testing.assert_allclose(e[:, :2], -e[:, 2:])
    with pytest.raises(ValueError, match="even"):
        with record_noise(replications=3, antithetic=True):
            pass


def test_lstm_and_conv_record():
    lstm = NoisyLSTM(4)
    conv = NoisyConv2D(2, 3)
    with record_noise(replications=2) as rec:
        lstm(tf.zeros((3, 5, 2)), training=True)
    assert rec.records[0].noise.shape == (6, 5, 16)
    assert rec.records[0].inputs["h_prev"].shape == (6, 5, 4)
    with record_noise(replications=2) as rec:
        conv(tf.zeros((3, 6, 6, 1)), training=True)
    assert rec.records[0].noise.shape == (6, 6, 6, 2)


def test_vote_counts_chunk_rows_and_sum_to_votes():
    from zoo.voting import vote_counts

    m = zoo.create_model("test_mlp", (8, 8, 1), 10)
    x = tf.random.uniform((7, 8, 8, 1))
    big = vote_counts(m, x, 9, 0.0).numpy()
    tiny = vote_counts(m, x, 9, 0.0, max_rows=4).numpy()  # 63 rows in 16 chunks, splitting examples
    np.testing.assert_array_equal(big, tiny)
    assert big.sum(1).tolist() == [9] * 7 and (big.max(1) == 9).all()  # no noise: unanimous
    noisy = vote_counts(m, x, 50, 3.0, max_rows=5).numpy()
    assert noisy.sum(1).tolist() == [50] * 7 and (noisy.max(1) < 50).any()
