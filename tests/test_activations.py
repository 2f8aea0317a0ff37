import numpy as np
import pytest
import tensorflow as tf

from zoo import activations


def test_values():
    v = tf.constant([-2.0, -0.1, 0.0, 0.3, 2.0])
    np.testing.assert_array_equal(activations.get("threshold")(v), [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(activations.get("sign")(v), [-1, -1, 0, 1, 1])
    np.testing.assert_allclose(activations.get("sigmoid:4")(v), 1 / (1 + np.exp(-4 * v.numpy())), rtol=1e-6)
    np.testing.assert_array_equal(activations.get("staircase:4")(tf.constant([-1.0, 0.1, 0.3, 0.6, 0.99, 2.0])),
                                  [0, 0, 0.25, 0.5, 0.75, 0.75])
    np.testing.assert_allclose(activations.get("relu")(v), [0, 0, 0, 0.3, 2.0], rtol=1e-6)


def test_step_like_have_zero_gradient():
    v = tf.Variable([-1.0, 0.5, 2.0])
    for spec in ("threshold", "sign", "staircase:4"):
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(activations.get(spec)(v))
        g = tape.gradient(y, v)
        assert g is None or not np.any(g.numpy())
        assert activations.is_step_like(spec)
    assert not activations.is_step_like("sigmoid:2")


@pytest.mark.parametrize("bad", ["tanhh", "relu:3", "sigmoid:-1", "staircase:x", 3])
def test_bad_specs(bad):
    with pytest.raises(ValueError):
        activations.get(bad)
