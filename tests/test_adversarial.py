import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from training.adversarial import pgd_linf, pgd_training
from training.estimators import bp
from training.losses import cross_entropy
from training.trainer import Trainer


def trained_digits_model(digits):
    keras.utils.set_random_seed(0)
    model = zoo.create_model("mlp", digits.input_shape, 10, hidden=(64,), activation="relu")
    trainer = Trainer(model, bp())
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    trainer.fit(digits.x_train, digits.y_train, epochs=8, batch_size=64, verbose=0)
    return model


def test_pgd_stays_in_ball_and_fools_an_undefended_model(digits):
    model = trained_digits_model(digits)
    x, y = tf.constant(digits.x_test[:200]), tf.constant(digits.y_test[:200])
    adv = pgd_linf(model, x, y, eps=0.3, step=0.05, iterations=20, random_start=True, seed=tf.constant([1, 2], tf.int64))
    assert float(tf.reduce_max(tf.abs(adv - x))) <= 0.3 + 1e-6
    assert float(tf.reduce_min(adv)) >= 0.0 and float(tf.reduce_max(adv)) <= 1.0
    clean = np.mean(np.argmax(model(x), -1) == y.numpy())
    robust = np.mean(np.argmax(model(adv), -1) == y.numpy())
    assert clean > 0.9 and robust < 0.2, (clean, robust)
    loss_clean = float(tf.reduce_mean(cross_entropy(model(x), y)))
    assert float(tf.reduce_mean(cross_entropy(model(adv), y))) > loss_clean


def test_transform_keeps_half_natural(digits):
    model = trained_digits_model(digits)
    x, y = tf.constant(digits.x_test[:10]), tf.constant(digits.y_test[:10])
    x2, y2 = pgd_training(eps=0.2, step=0.05, iterations=3)(model, x, y, tf.constant(0))
    np.testing.assert_array_equal(x2[:5], x[:5])
    assert float(tf.reduce_max(tf.abs(x2[5:] - x[5:]))) > 0.1 and y2 is y


@pytest.mark.large  # ~11 s: PGD-trains a model from the CLI
def test_adversarial_training_from_cli_improves_pgd_accuracy(tmp_path, digits):
    from glrzoo.cli import main
    from zoo.export import load_model, read_metadata

    common = ["train", "--model", "mlp", "--model-args", '{"hidden": [64], "activation": "relu"}', "--epochs", "6",
              "--batch-size", "64", "--lr", "0.01", "--quiet"]
    assert main(common + ["--out", str(tmp_path / "plain")]) == 0
    assert main(common + ["--adversarial", "pgd", "--adv-eps", "0.15", "--adv-step", "0.05", "--adv-iters", "5",
                          "--out", str(tmp_path / "adv")]) == 0
    assert read_metadata(tmp_path / "adv")["training"]["transforms"][0]["eps"] == 0.15
    x, y = tf.constant(digits.x_test), tf.constant(digits.y_test)
    acc = {}
    for name in ("plain", "adv"):
        m = load_model(tmp_path / name)
        adv = pgd_linf(m, x, y, 0.15, 0.03, 10, True, tf.constant([3, 4], tf.int64))
        acc[name] = float(np.mean(np.argmax(m(adv), -1) == digits.y_test))
    # 360 test digits: binomial SE <= 2.7 points; demand a 15-point gain
    assert acc["adv"] > acc["plain"] + 0.15, acc


def test_fast_adversarial_training_flags_are_one_random_start_step_of_one_and_a_quarter_eps(tmp_path):
    from glrzoo.cli import _adversarial, build_parser
    from zoo.errors import UserInputError

    parse = build_parser().parse_args
    base = ["train", "--model", "mlp", "--out", str(tmp_path / "x")]
    args = parse(base + ["--adversarial", "fgsm_rs", "--adv-eps", "0.2"])
    assert _adversarial(args) == {"eps": 0.2, "step": 0.25, "iterations": 1, "random_start": True, "fraction": 1.0}
    assert _adversarial(parse(base + ["--adversarial", "fgsm_rs"]))["step"] == 0.375  # eps 0.3 by default
    with pytest.raises(UserInputError, match="one step from a random start"):
        _adversarial(parse(base + ["--adversarial", "fgsm_rs", "--adv-iters", "5"]))


def test_fast_adversarial_transform_replaces_every_example_within_the_ball(digits):
    model = trained_digits_model(digits)
    x, y = tf.constant(digits.x_test[:64]), tf.constant(digits.y_test[:64])
    x2, _ = pgd_training(eps=0.2, step=0.25, iterations=1, fraction=1.0)(model, x, y, tf.constant(3))
    moved = tf.reduce_max(tf.abs(x2 - x), axis=1).numpy()
    assert (moved > 0.1).all() and moved.max() <= 0.2 + 1e-6
    pred = np.argmax(model(x2), -1)
    assert np.mean(pred == y.numpy()) < np.mean(np.argmax(model(x), -1) == y.numpy()) - 0.2  # a real attack


class _Scripted:
    """Probe accuracies read from a list instead of attacking (the guard's decision logic alone)."""

    def __init__(self, accuracies):
        self.accuracies = list(accuracies)

    def __call__(self):
        return self.accuracies.pop(0)


def test_overfitting_guard_stops_on_a_collapse_and_puts_the_best_epochs_weights_back(digits):
    from training.adversarial import OverfittingGuard

    keras.utils.set_random_seed(0)
    model = zoo.create_model("mlp", digits.input_shape, 10, hidden=(16,), activation="relu")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    guard = OverfittingGuard(model, digits.x_train[:32], digits.y_train[:32], eps=0.3, drop=0.2)
    guard.probe_accuracy = _Scripted([0.50, 0.60, 0.45, 0.30, 0.90])  # 0.45: within 0.2 of the best; 0.30: not
    seen = []
    keep = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(model.get_weights()))
    history = model.fit(digits.x_train, digits.y_train, epochs=5, batch_size=64, verbose=0, callbacks=[keep, guard])
    assert len(history.history["loss"]) == 4 and history.history["pgd_probe_accuracy"] == [0.5, 0.6, 0.45, 0.3]
    assert guard.record()["best_epoch"] == 2 and guard.record()["stopped_after_epoch"] == 4
    for now, best, last in zip(model.get_weights(), seen[1], seen[3]):
        np.testing.assert_array_equal(now, best)
    assert any(not np.array_equal(b, last) for b, last in zip(seen[1], seen[3]))  # training had moved on


def test_the_guard_remembers_its_best_epoch_across_a_resume(digits, tmp_path):
    """A resumed run compares against the best epoch before the interruption and puts its weights back."""
    from training.adversarial import OverfittingGuard

    keras.utils.set_random_seed(0)
    model = zoo.create_model("mlp", digits.input_shape, 10, hidden=(16,), activation="relu")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    first = OverfittingGuard(model, digits.x_train[:32], digits.y_train[:32], eps=0.3, state_dir=tmp_path)
    first.probe_accuracy = _Scripted([0.4, 0.7])
    model.fit(digits.x_train, digits.y_train, epochs=2, batch_size=64, verbose=0, callbacks=[first])
    best = model.get_weights()  # epoch 2's: the best so far
    # the process dies here; the resumed run builds a new guard on the same folder
    second = OverfittingGuard(model, digits.x_train[:32], digits.y_train[:32], eps=0.3, state_dir=tmp_path)
    assert (second.best, second.best_epoch) == (0.7, 1)
    second.probe_accuracy = _Scripted([0.6, 0.45])  # 0.6: within 0.2 of 0.7; 0.45: a collapse against 0.7 only
    history = model.fit(digits.x_train, digits.y_train, initial_epoch=2, epochs=5, batch_size=64, verbose=0,
                        callbacks=[second])
    assert len(history.history["loss"]) == 2 and second.record()["stopped_after_epoch"] == 4
    assert second.record()["best_epoch"] == 2
    for now, kept in zip(model.get_weights(), best):
        np.testing.assert_array_equal(now, kept)


def test_fgsm_rs_training_records_the_guards_probe(tmp_path):
    from training.run import TrainConfig, train

    meta = train(TrainConfig(model="test_mlp", dataset="digits", epochs=2, lr=3e-3, verbose=0,
                             adversarial={"eps": 0.1, "step": 0.125, "iterations": 1, "random_start": True,
                                          "fraction": 1.0}))
    record = meta["training"]["overfitting_guard"]
    assert record["probe_examples"] == 512 and record["eps"] == 0.1 and record["steps"] == 10
    assert 0.0 < record["best_probe_accuracy"] <= 1.0 and record["best_epoch"] in (1, 2)
    assert record["stopped_after_epoch"] is None and meta["metrics"]["epochs_run"] == 2
    assert meta["training"]["parts"][-1]["end_epoch"] == 2
    plain = train(TrainConfig(model="test_mlp", dataset="digits", epochs=1, verbose=0))
    assert "overfitting_guard" not in plain["training"]  # only single-step training on every example is guarded


def test_a_guarded_run_that_stops_early_says_so_in_its_metadata(monkeypatch, tmp_path):
    from training.adversarial import OverfittingGuard
    from training.run import TrainConfig, train

    scripted = _Scripted([0.5, 0.1, 0.9, 0.9])
    monkeypatch.setattr(OverfittingGuard, "probe_accuracy", lambda self: scripted())
    meta = train(TrainConfig(model="test_mlp", dataset="digits", epochs=4, lr=3e-3, verbose=0, out=str(tmp_path / "m"),
                             adversarial={"eps": 0.1, "step": 0.125, "iterations": 1, "random_start": True,
                                          "fraction": 1.0}))
    assert meta["training"]["overfitting_guard"]["stopped_after_epoch"] == 2
    assert meta["training"]["overfitting_guard"]["best_epoch"] == 1
    assert meta["metrics"]["epochs_run"] == 2 and meta["training"]["parts"][-1]["end_epoch"] == 2


def test_a_run_that_ends_not_robust_is_reported_with_the_fix(monkeypatch, capsys):
    """A collapse with no robust epoch to fall back on, or a fall too small to stop at (0.12 -> 0),
    finishes, but says so."""
    from training.adversarial import OverfittingGuard
    from training.run import TrainConfig, train

    scripted = _Scripted([0.12, 0.05, 0.0])
    monkeypatch.setattr(OverfittingGuard, "probe_accuracy", lambda self: scripted())
    meta = train(TrainConfig(model="test_mlp", dataset="digits", epochs=3, lr=3e-3, verbose=0,
                             adversarial={"eps": 0.1, "step": 0.125, "iterations": 1, "random_start": True,
                                          "fraction": 1.0}))
    record = meta["training"]["overfitting_guard"]
    assert record["not_robust"] is True and record["stopped_after_epoch"] is None
    assert meta["metrics"]["epochs_run"] == 3
    err = capsys.readouterr().err
    assert "is 0.000 at the end (best 0.120)" in err and "--adversarial pgd or trades" in err
    scripted = _Scripted([0.3, 0.35, 0.4])
    assert train(TrainConfig(model="test_mlp", dataset="digits", epochs=3, lr=3e-3, verbose=0, adversarial={
        "eps": 0.1, "step": 0.125, "iterations": 1, "random_start": True, "fraction": 1.0}))[
        "training"]["overfitting_guard"]["not_robust"] is False


# ---- TRADES (Zhang et al. 2019) and the eps ramp


def test_trades_attack_raises_the_kl_and_stays_in_the_ball(digits):
    from training.adversarial import kl_rows, trades_attack

    model = trained_digits_model(digits)
    x = tf.constant(digits.x_test[:200])
    adv = trades_attack(model, x, eps=0.2, step=0.05, iterations=10, seed=tf.constant([1, 2], tf.int64))
    assert float(tf.reduce_max(tf.abs(adv - x))) <= 0.2 + 1e-6
    assert float(tf.reduce_min(adv)) >= 0.0 and float(tf.reduce_max(adv)) <= 1.0
    near = tf.clip_by_value(x + 0.001 * tf.random.stateless_normal(tf.shape(x), [1, 2]), 0.0, 1.0)
    kl_adv = float(tf.reduce_mean(kl_rows(model(x), model(adv))))
    kl_start = float(tf.reduce_mean(kl_rows(model(x), model(near))))
    assert kl_adv > 100 * max(kl_start, 1e-6) and kl_adv > 0.5, (kl_start, kl_adv)


def test_trades_with_beta_zero_is_the_cross_entropy_gradient(digits):
    """beta = 0 leaves CE(f(x), y): the estimator's gradient equals backprop's on the clean batch."""
    from training.adversarial import TradesBackprop

    model = trained_digits_model(digits)
    x, y = tf.constant(digits.x_train[:64]), tf.constant(digits.y_train[:64])
    trades = TradesBackprop(beta=0.0, eps=0.2, step=0.05, iterations=3)(model, x, y, tf.constant(5))
    exact = bp()(model, x, y, tf.constant(5))
    for a, b in zip(trades.grads, exact.grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    with_kl = TradesBackprop(beta=6.0, eps=0.2, step=0.05, iterations=3)(model, x, y, tf.constant(5))
    assert float(with_kl.logs["kl"]) > 0 and float(with_kl.loss) > float(trades.loss)


def test_the_eps_ramp_grows_linearly_then_holds():
    from training.adversarial import ramp

    assert [round(float(ramp(tf.constant(s), 4)), 6) for s in (0, 1, 3, 10)] == [0.25, 0.5, 1.0, 1.0]
    assert float(ramp(tf.constant(0), 0)) == 1.0


def test_trades_from_the_cli_records_its_objective_and_ramp(tmp_path):
    from glrzoo.cli import main
    from zoo.export import read_metadata

    out = tmp_path / "t"
    assert main(["train", "--model", "test_smallcnn", "--dataset", "digits", "--epochs", "2", "--batch-size", "64",
                 "--adversarial", "trades", "--trades-beta", "3", "--adv-eps", "0.2", "--adv-step", "0.05",
                 "--adv-iters", "2", "--adv-ramp-epochs", "1", "--quiet", "--out", str(out)]) == 0
    training = read_metadata(out)["training"]
    assert training["method"] == {"method": "bp", "objective": "trades", "beta": 3.0, "eps": 0.2, "step": 0.05,
                                  "iterations": 2, "seed": 0, "ramp_steps": 23, "loss": "ce"}  # 1437 / 64 -> 23 steps
    assert training["transforms"] == []
    assert training["recipe"]["adversarial"] == {"kind": "trades", "eps": 0.2, "step": 0.05, "iterations": 2,
                                                 "beta": 3.0, "ramp_epochs": 1.0}


@pytest.mark.parametrize("argv, message", [
    (["--trades-beta", "2"], "--trades-beta needs --adversarial"),
    (["--adv-eps", "0.1"], "--adv-eps needs --adversarial"),
    (["--adversarial", "pgd", "--trades-beta", "2"], "--trades-beta only applies to --adversarial trades"),
    (["--adversarial", "trades", "--adv-no-random-start"], "drop --adv-no-random-start"),
    (["--adversarial", "trades", "--method", "glr"], "trains by backprop of its own objective"),
])
def test_trades_flags_that_cannot_apply_are_refused_in_one_line(argv, message, tmp_path, capsys):
    from glrzoo.cli import main

    out = tmp_path / "x"
    assert main(["train", "--model", "test_mlp", "--epochs", "1", "--quiet", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()
