"""BANG against a direct computation with per-example gradients scaled by hand."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from training.bang import bang
from training.losses import cross_entropy
from zoo.noise_context import record_outputs


def per_example_reference(model, x, y, epsilon, beta, half_wrong=False):
    """sum_i eta_i dE_i/dW per layer, one example at a time (noise off, no batch norm)."""
    variables = model.trainable_variables
    n = x.shape[0]
    layer_of = {id(v): layer for layer in zoo.noisy_layers(model) for v in layer.trainable_variables}
    kappa_norms, per_grads, wrong = [], [], []
    for i in range(n):
        with tf.GradientTape(persistent=True) as tape:
            with record_outputs() as recs:
                logits = model(x[i:i + 1], training=True)
            e = tf.reduce_sum(cross_entropy(logits, y[i:i + 1]))
        kappa_norms.append({r.layer.name: float(tf.norm(tape.gradient(e, r.output))) for r in recs})
        per_grads.append(tape.gradient(e, variables))
        wrong.append(int(np.argmax(logits[0])) != int(y[i]))
    grads = []
    for j, v in enumerate(variables):
        name = layer_of[id(v)].name
        k = np.array([kn[name] for kn in kappa_norms])
        m = k.max()
        eps = np.where(np.array(wrong) & half_wrong, epsilon / 2, epsilon)
        eta = (m / k) ** (eps * (1 - k / m))
        grads.append(beta / n * sum(eta[i] * per_grads[i][j].numpy() for i in range(n)))
    return grads


@pytest.mark.parametrize("model_name,shape", [("test_mlp", (8, 8, 1)), ("test_lenet", (8, 8, 1))])
@pytest.mark.parametrize("half_wrong", [False, True])
def test_bang_equals_hand_scaled_per_example_gradients(model_name, shape, half_wrong):
    keras.utils.set_random_seed(0)
    model = zoo.create_model(model_name, shape, 4, **({"dropout": 0.0} if "lenet" in model_name else {}))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((6, *shape), dtype=np.float32))
    y = tf.constant([0, 1, 2, 3, 0, 1])
    est = bang(epsilon=0.8, beta=1.3, half_epsilon_misclassified=half_wrong)(model, x, y, 0)
    ref = per_example_reference(model, x, y, 0.8, 1.3, half_wrong)
    for g, r in zip(est.grads, ref):
        np.testing.assert_allclose(g.numpy(), r, rtol=2e-4, atol=1e-6)


def test_bang_with_zero_epsilon_is_backprop():
    keras.utils.set_random_seed(0)
    model = zoo.create_model("test_mlp", (8, 8, 1), 4)
    x = tf.random.uniform((5, 8, 8, 1))
    y = tf.constant([0, 1, 2, 3, 0])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(cross_entropy(model(x, training=True), y))
    ref = tape.gradient(loss, model.trainable_variables)
    est = bang(epsilon=0.0, beta=1.0)(model, x, y, 0)
    for g, r in zip(est.grads, ref):
        np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=1e-5, atol=1e-7)


def test_bang_rejects_bad_settings():
    with pytest.raises(ValueError, match="no useful gradient"):
        bang(loss="zero_one")
    with pytest.raises(ValueError, match="epsilon must be >= 0"):
        bang(epsilon=-0.1)
    model = zoo.create_model("test_lstm", (5, 2), 3)
    with pytest.raises(ValueError, match="LSTM"):
        bang()(model, tf.zeros((2, 5, 2)), tf.constant([0, 1]), 0)


@pytest.mark.large  # over 4 s here; the default suite stays under 3 min
def test_bang_from_the_cli(tmp_path):
    from glrzoo.cli import main
    from zoo.export import read_metadata

    out = tmp_path / "b"
    assert main(["train", "--model", "test_lenet", "--method", "bang", "--bang-epsilon", "0.8", "--bang-beta", "1.2",
                 "--bang-half-eps-misclassified", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    method = read_metadata(out)["training"]["method"]
    assert method == {"method": "bang", "loss": "ce", "epsilon": 0.8, "beta": 1.2, "half_epsilon_misclassified": True}
    assert main(["train", "--model", "test_lenet", "--bang-beta", "1.2", "--out", str(tmp_path / "x")]) == 2
