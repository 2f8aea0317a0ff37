"""PASS, the likelihood-ratio input gradient, smoothed surrogates and abstaining votes."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from evaluation.pass_score import pass_score, ssim
from evaluation.surrogate import has_step_activations, lr_input_gradient, smoothed_model
from zoo.voting import smoothed_predict


@pytest.fixture(scope="module")
def digit_images():
    from zoo.data import load_digits
    return load_digits().x_test[:20, :, :, 0]


def test_pass_forgives_a_shift_that_l2_does_not(digit_images):
    img = digit_images[3]
    assert pass_score(img, img) == pytest.approx(1.0, abs=1e-6)
    shifted = np.roll(img, 1, axis=1)
    noisy = np.clip(img + np.random.default_rng(0).normal(0, 0.25, img.shape), 0, 1)
    # the one-pixel shift is a larger L2 change than the noise here, yet far more similar by PASS
    assert np.linalg.norm(shifted - img) > np.linalg.norm(noisy - img)
    assert pass_score(shifted, img) > 0.9 > pass_score(noisy, img)
    assert ssim(shifted, img) < pass_score(shifted, img)  # alignment is what recovers it


@pytest.mark.large  # over 4 s here; the default suite stays under 3 min
def test_lr_input_gradient_is_unbiased_for_the_smoothed_loss():
    keras.utils.set_random_seed(1)
    model = zoo.create_model("mlp", (6,), 3, hidden=(8,), activation="sigmoid")
    x = tf.constant(np.random.default_rng(0).uniform(0, 1, (1, 6)), tf.float32)
    y = tf.constant([1])
    sigma, k = 0.1, 400
    lr = np.stack([lr_input_gradient(model, x, y, sigma, samples=64, seed=i).numpy()[0] for i in range(k)])
    # reference: the tape gradient of the same smoothed loss, E_e[grad L(x + e)], by Monte Carlo
    e = sigma * tf.random.stateless_normal([20000, 6], seed=[3, 4])
    with tf.GradientTape() as tape:
        xe = x + e
        tape.watch(xe)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.repeat(y, 20000), logits=model(xe))
    ref = tape.gradient(loss, xe).numpy()
    se = np.sqrt(lr.var(0, ddof=1) / k + ref.var(0, ddof=1) / len(ref))
    z = (lr.mean(0) - ref.mean(0)) / se
    assert np.max(np.abs(z)) < 4.0, z  # 6 coordinates; |z| < 4 fails with prob ~4e-4 if unbiased
    assert np.linalg.norm(lr.mean(0) - ref.mean(0)) < 0.2 * np.linalg.norm(ref.mean(0))


def test_smoothed_model_tends_to_the_step_net():
    keras.utils.set_random_seed(2)
    step = zoo.create_model("mlp", (8, 8, 1), 10, hidden=(32,), activation="threshold")
    assert has_step_activations(step)
    x = np.random.default_rng(1).uniform(0, 1, (64, 8, 8, 1)).astype(np.float32)
    ref = step(x).numpy()
    errs = [np.abs(smoothed_model(step, slope)(x).numpy() - ref).mean() for slope in (2.0, 20.0, 200.0)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.1 * errs[0]
    smooth = smoothed_model(step)
    assert not has_step_activations(smooth)
    with tf.GradientTape() as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        out = tf.reduce_sum(smooth(xt))
    assert float(tf.reduce_mean(tf.abs(tape.gradient(out, xt)))) > 0


def test_smoothed_predict_abstains_exactly_when_the_binomial_test_fails():
    from scipy import stats
    counts = np.array([[20, 0, 0], [11, 9, 0], [15, 5, 0], [0, 6, 14], [10, 10, 0]])
    pred = smoothed_predict(counts, alpha=0.05)
    for row, p in zip(counts, pred):
        a, b = np.sort(row)[-1], np.sort(row)[-2]
        pval = stats.binomtest(int(a), int(a + b), 0.5).pvalue
        assert (p == -1) == (pval > 0.05)
        if p != -1:
            assert p == row.argmax()
    assert list(pred[[0, 1, 4]]) == [0, -1, -1]
