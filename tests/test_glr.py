"""Statistical tests of the likelihood-ratio estimator (fixed seeds, bounds from standard errors)."""
import ast
import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

import training.glr as glr_module
import zoo
from training.glr import glr
from training.losses import cross_entropy
from zoo.noise_context import record_noise


def small_model(kind):
    keras.utils.set_random_seed(1)
    if kind == "dense":
        return zoo.create_model("mlp", (3,), 3, hidden=(4,), activation="sigmoid")
    if kind == "conv_bn":
        i = keras.Input((4, 4, 1))
        h = zoo.NoisyConv2D(2, 3, batchnorm=True, activation="sigmoid", seed=1)(i)
        h = keras.layers.Flatten()(h)
        return keras.Model(i, zoo.NoisyDense(3, seed=2)(h))
    if kind == "lstm":
        return zoo.create_model("lstm", (3, 2), 3, units=2)
    raise ValueError(kind)


def batch(kind):
    rng = np.random.default_rng(0)
    shape = {"dense": (3,), "conv_bn": (4, 4, 1), "lstm": (3, 2)}[kind]
    return tf.constant(rng.random((6, *shape), dtype=np.float32)), tf.constant([0, 1, 2, 0, 1, 2])


def flat(grads):
    return np.concatenate([np.ravel(g) for g in grads])


def pathwise_gradient(model, x, y, sigma, rows):
    """Backprop gradient of the same noisy network (batch-norm statistics as constants), averaged."""
    reps = rows // int(x.shape[0])
    with tf.GradientTape() as tape:
        with record_noise(replications=reps, sigma=sigma):
            logits = model(x, training=True)
        loss = tf.reduce_mean(cross_entropy(logits, tf.repeat(y, reps)))
    return flat(tape.gradient(loss, model.trainable_variables))


def estimates(estimator, model, x, y, k):
    fn = tf.function(lambda step: estimator(model, x, y, step).grads)
    return np.stack([flat(fn(tf.constant(i))) for i in range(k)])


@pytest.mark.parametrize("kind", ["dense", "conv_bn", "lstm"])
@pytest.mark.large  # over 4 s here; the default suite stays under 3 min
def test_glr_mean_matches_backprop_of_noisy_net(kind):
    model = small_model(kind)
    x, y = batch(kind)
    sigma = 0.5
    est = estimates(glr(replications=4000, sigma=sigma, baseline=True, report_rse=False), model, x, y, 24)
    mean, se = est.mean(0), est.std(0, ddof=1) / np.sqrt(len(est))
    ref = np.mean([pathwise_gradient(model, x, y, sigma, 6 * 20000) for _ in range(4)], axis=0)
    z = (mean - ref) / np.maximum(se, 1e-8)
    # ~20-70 coordinates; |z| > 4.5 has probability 7e-6 each under unbiasedness
    assert np.max(np.abs(z)) < 4.5, (kind, np.round(z, 2))
    assert np.mean(z**2) < 2.5  # chi-square per degree of freedom ~ 1
    # and the error shrinks as the samples grow: 16x more samples, ~4x smaller error
    small = estimates(glr(replications=250, sigma=sigma, baseline=True, report_rse=False), model, x, y, 24)
    err_small = np.linalg.norm(small.mean(0) - ref)
    err_big = np.linalg.norm(mean - ref)
    assert err_big < 0.5 * err_small


def variance_and_mean(estimator, model, x, y, k=60):
    est = estimates(estimator, model, x, y, k)
    return est.mean(0), est.var(0, ddof=1).sum(), est.std(0, ddof=1) / np.sqrt(k)


@pytest.mark.parametrize("option", ["baseline", "antithetic", "qmc", "layerwise", "shared_noise"])
@pytest.mark.large  # over 4 s here; the default suite stays under 3 min
def test_variance_reductions_keep_mean(option):
    model = small_model("dense")
    x, y = batch("dense")
    plain_mean, plain_var, plain_se = variance_and_mean(glr(replications=64, report_rse=False), model, x, y)
    kwargs = {option: True}
    mean, var, se = variance_and_mean(glr(replications=64, report_rse=False, **kwargs), model, x, y)
    if option == "layerwise":
        # each step perturbs one of the 2 layers; on average a step carries half of each layer's gradient
        mean = mean * 2
        se = se * 2
    z = (mean - plain_mean) / np.sqrt(plain_se**2 + se**2)
    assert np.max(np.abs(z)) < 4.5, (option, np.round(z, 2))
    if option not in ("layerwise", "shared_noise"):  # shared noise trades variance for far fewer draws
        assert var < plain_var, (option, var, plain_var)


def test_shared_noise_gives_every_example_the_same_draws():
    from zoo.noise_context import NoiseRecorder

    rec = NoiseRecorder(replications=4, shared=True, antithetic=True)
    e = rec.sample((3,), 5, tf.constant([1, 2])).numpy().reshape(5, 4, 3)
    assert np.all(e == e[:1])  # the same R noises for each of the 5 examples
    assert np.all(e[0, 2:] == -e[0, :2]) and np.std(e) > 0.1  # antithetic pairs, and real noise
    independent = NoiseRecorder(replications=4).sample((3,), 5, tf.constant([1, 2])).numpy().reshape(5, 4, 3)
    assert not np.allclose(independent, independent[:1])


def test_baseline_with_qmc_cuts_variance_a_lot():
    model = small_model("dense")
    x, y = batch("dense")
    _, plain, _ = variance_and_mean(glr(replications=64, report_rse=False), model, x, y)
    _, best, _ = variance_and_mean(glr(replications=64, baseline=True, qmc=True, report_rse=False), model, x, y)
    assert best < plain / 3  # measured 4.9x on this case (sample-variance relative SE ~ 0.2)


def test_rse_log_tracks_replications():
    model = small_model("dense")
    x, y = batch("dense")
    rse = [np.mean([float(glr(replications=r, report_rse=True)(model, x, y, i).logs["rse"]) for i in range(3)])
           for r in (1000, 100_000)]
    assert rse[1] < rse[0] / 3  # ~ 1 / sqrt(R): 10x expected once the noise no longer dominates ||G||


def test_glr_path_uses_no_autodiff(monkeypatch):
    """The GLR module names no autodiff API, and a GLR step still gives gradients when opening any
    gradient tape or forward accumulator, or calling ``tf.gradients``, raises."""
    tree = ast.parse(inspect.getsource(glr_module))
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} | {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not names & {"GradientTape", "gradients", "jacobian", "batch_jacobian", "custom_gradient"}
    model = small_model("conv_bn")
    x, y = batch("conv_bn")

    def refuse(*args, **kwargs):
        raise AssertionError("the GLR step used automatic differentiation")

    monkeypatch.setattr(tf.GradientTape, "__enter__", refuse)
    monkeypatch.setattr(tf.autodiff.ForwardAccumulator, "__enter__", refuse)
    monkeypatch.setattr(tf, "gradients", refuse)
    with pytest.raises(AssertionError, match="automatic differentiation"):  # the trap is armed
        with tf.GradientTape():
            pass
    grads = glr(replications=8)(model, x, y, 0).grads
    assert all(g.shape == v.shape for g, v in zip(grads, model.trainable_variables))
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    assert sum(int(np.count_nonzero(g.numpy())) for g in grads) > 0  # a real estimate, not all zeros


def test_threshold_net_with_zero_one_loss_learns_digits(digits):
    """Step activations and the 0-1 loss have no useful derivative; GLR trains them anyway."""
    from training.pipeline import epoch_dataset
    from training.trainer import Trainer

    keras.utils.set_random_seed(0)
    model = zoo.create_model("mlp", digits.input_shape, 10, hidden=(64,), activation="threshold")
    trainer = Trainer(model, glr(loss="zero_one", replications=100, baseline=True))
    trainer.compile(optimizer=keras.optimizers.Adagrad(0.1))
    ds, steps = epoch_dataset(digits.x_train, digits.y_train, 32, 0, 0, 4)
    trainer.fit(ds, epochs=4, steps_per_epoch=steps, verbose=0)
    acc = float(np.mean(np.argmax(model(digits.x_test, training=False), -1) == digits.y_test))
    # chance is 10% (binomial SE 1.6% on 360 examples); 40% is > 18 SE above it
    assert acc > 0.40, acc


def test_glr_under_model_fit_and_cli_flags(tmp_path):
    from glrzoo.cli import main
    from zoo.export import read_metadata

    out = tmp_path / "g"
    argv = ["train", "--model", "test_mlp", "--method", "glr", "--replications", "4", "--estimator-noise", "laplace",
            "--sigma", "0.5", "--baseline", "--antithetic", "--layerwise", "--qmc", "--epochs", "1", "--quiet",
            "--out", str(out)]
    assert main(argv) == 0
    method = read_metadata(out)["training"]["method"]
    assert method["method"] == "glr" and method["replications"] == 4 and method["distribution"] == "laplace"
    assert method["sigma"] == 0.5 and method["baseline"] and method["antithetic"] and method["layerwise"] and method["qmc"]
    assert main(["train", "--model", "test_mlp", "--replications", "4", "--out", str(tmp_path / "x")]) == 2
    assert main(["train", "--model", "test_mlp", "--method", "glr", "--replications", "3", "--antithetic",
                 "--out", str(tmp_path / "y")]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_divergence_stops_with_step_and_cause(tmp_path, capsys):
    from glrzoo.cli import main

    code = main(["train", "--model", "test_mlp", "--method", "glr", "--lr", "1e38", "--epochs", "2", "--quiet",
                 "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 1 and "diverged at epoch 1, step" in err and "--lr" in err and "--sigma" in err
    assert not (tmp_path / "d" / "metadata.json").exists()


def test_chunked_replications_match_single_pass():
    """Batches whose N * R rows exceed max_rows run in example chunks; the estimator is unchanged."""
    model = small_model("dense")
    x, y = batch("dense")
    one = estimates(glr(replications=500, report_rse=False), model, x, y, 24)
    chunked_est = glr(replications=500, max_rows=1000, report_rse=False)  # 2 examples per chunk, 3 chunks
    chunked = estimates(chunked_est, model, x, y, 24)
    z = (one.mean(0) - chunked.mean(0)) / np.sqrt(one.var(0, ddof=1) / 24 + chunked.var(0, ddof=1) / 24)
    assert np.max(np.abs(z)) < 4.5
    res = chunked_est(model, x, y, 0)
    assert res.logits.shape == (6, 3) and np.isfinite(float(res.loss))


def test_the_hinge_is_the_relu_of_one_minus_the_logit_margin():
    import tensorflow as tf

    from training.losses import hinge, logit_margin
    logits = tf.constant([[3.0, 1.0, 0.0], [0.0, 0.5, 2.0], [1.0, 1.0, 0.2]])
    y = tf.constant([0, 1, 2])
    np.testing.assert_allclose(logit_margin(logits, y), [2.0, -1.5, -0.8], atol=1e-6)
    np.testing.assert_allclose(hinge(logits, y), [0.0, 2.5, 1.8], atol=1e-6)
