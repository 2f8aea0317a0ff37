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
