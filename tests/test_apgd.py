"""APGD-CE, APGD-T and the AutoAttack ensemble (Croce and Hein 2020): schedule, losses, strength,
and the eps ball / [0, 1] box kept by construction."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from evaluation.apgd import (
    ATTACKS,
    _Engine,
    _targets,
    apgd,
    apgd_ce,
    apgd_dlr,
    autoattack,
    checkpoints,
    dlr_loss,
    dlr_targeted_loss,
    run_attack,
)
from evaluation.attacks import attack, logits_fn
from training.estimators import bp
from training.trainer import Trainer


def _train(d, epochs=8, transforms=()):
    keras.utils.set_random_seed(0)
    model = zoo.create_model("mlp", d.input_shape, 10, hidden=(64,), activation="relu")
    trainer = Trainer(model, bp(), transforms=transforms)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    trainer.fit(d.x_train, d.y_train, epochs=epochs, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def digits_data():
    from zoo.data import load_digits
    return load_digits()  # [N, 8, 8, 1], sklearn's 0..16 scaled by 1/16


@pytest.fixture(scope="module")
def undefended(digits_data):
    """A plain digits MLP (64 ReLU units) and 150 test points it classifies correctly."""
    model = _train(digits_data)
    x, y = digits_data.x_test[:160], digits_data.y_test[:160]
    keep = np.argmax(model(x), -1) == y
    return model, x[keep][:150], y[keep][:150]


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model(np.asarray(x)), -1) == y))


def _in_ball(adv, x, eps):
    adv = np.asarray(adv)
    return (np.all(adv >= np.maximum(x - eps, 0.0)) and np.all(adv <= np.minimum(x + eps, 1.0))
            and np.abs(adv - x).max() <= eps * (1 + 1e-6))


def test_checkpoints_follow_the_paper():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    for n in (1, 2, 5, 10, 37, 1000):
        w = checkpoints(n)
        assert w[0] == 0 and all(a < b for a, b in zip(w, w[1:])) and w[-1] <= n
    with pytest.raises(ValueError):
        checkpoints(0)


def test_dlr_losses_by_hand_and_invariances():
    z = tf.constant([[5.0, 3.0, 1.0, 0.0, -1.0]])
    y = tf.constant([0])
    # -(z_y - max_other) / (z_pi1 - z_pi3) = -(5 - 3) / (5 - 1)
    assert np.isclose(dlr_loss(z, y).numpy()[0], -0.5)
    # targeted at t = 3: -(5 - 0) / (5 - (1 + 0) / 2)
    assert np.isclose(dlr_targeted_loss(z, y, tf.constant([3])).numpy()[0], -5.0 / 4.5)
    # invariant to shifting and positive scaling of the logits (no masking by logit scale)
    z2 = 7.0 * z - 3.0
    assert np.isclose(dlr_loss(z2, y).numpy()[0], dlr_loss(z, y).numpy()[0])
    assert np.isclose(dlr_targeted_loss(z2, y, tf.constant([3])).numpy()[0],
                      dlr_targeted_loss(z, y, tf.constant([3])).numpy()[0])
    # positive once misclassified
    assert dlr_loss(z, tf.constant([1])).numpy()[0] > 0


def test_apgd_ce_and_autoattack_reach_zero_on_undefended_model(undefended):
    model, x, y = undefended
    eps = 0.2
    adv = apgd_ce(model, x, y, eps).numpy()
    assert _in_ball(adv, x, eps)
    assert _accuracy(model, adv, y) <= 0.02
    res = autoattack(model, x, y, eps)
    assert _in_ball(res.adv, x, eps)
    assert res.robust_accuracy == 0.0 and _accuracy(model, res.adv, y) == 0.0
    assert res.clean_correct.all() and res.budget["n_iter"] == 100 and res.budget["eps"] == eps


@pytest.mark.large  # over 4 s here; the default suite stays under 3 min
def test_autoattack_at_least_as_strong_as_pgd(undefended):
    """Moderate eps where PGD leaves about a third: the ensemble does not do worse than PGD-100 on
    the same points, and its robust mask is exactly the points still classified correctly."""
    model, x, y = undefended
    eps = 0.1
    pgd = attack("pgd", logits_fn(model), x, y, eps, steps=100, restarts=1, seed=0).numpy()
    res = autoattack(model, x, y, eps)
    acc_pgd, acc_aa = _accuracy(model, pgd, y), _accuracy(model, res.adv, y)
    assert 0.1 < acc_pgd < 0.8  # a regime where the comparison means something
    assert acc_aa <= acc_pgd, (acc_aa, acc_pgd)
    assert np.array_equal(res.robust, np.argmax(model(res.adv), -1) == y)
    assert np.array_equal(res.adv[res.robust], x[res.robust])  # unbroken points are returned clean
    assert res.accuracy_after["apgd_t"] <= res.accuracy_after["apgd_ce"] <= res.accuracy_after["clean"]
    assert _in_ball(res.adv, x, eps)


def test_ball_and_box_by_construction():
    """Random net, inputs at the box's corners, large eps: every output lies in the eps ball
    intersected with [0, 1], for every attack; eps 0 returns x itself."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(32, "relu"),
                              keras.layers.Dense(10)])
    rng = np.random.default_rng(0)
    x = rng.choice([0.0, 0.02, 0.5, 0.98, 1.0], size=(40, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    eps = 0.4
    for adv in (apgd_dlr(model, x, y, eps, n_iter=5, n_target_classes=2),
                apgd(model, x, y, eps, loss="dlr", n_iter=10, n_restarts=2),
                autoattack(model, x, y, eps, n_iter=10, n_target_classes=2).adv):
        assert _in_ball(adv, x, eps)
    assert _in_ball(apgd_ce(model, x, y, 0.03, n_iter=10), x, 0.03)
    assert np.array_equal(apgd_ce(model, x, y, 0.0).numpy(), x)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        apgd_ce(model, x * 2 - 0.5, y, 0.1)
    with pytest.raises(ValueError, match="L-inf"):
        apgd_ce(model, x, y, 0.1, norm="2")


def test_targets_are_the_other_classes_by_clean_logit():
    def model(x):
        return tf.constant([[0.0, 5.0, 1.0, 3.0, 4.0, 2.0]]) + 0.0 * tf.reduce_sum(x, [1, 2, 3])[:, None]

    x = np.zeros((1, 2, 2, 1), np.float32)
    t = _targets(_Engine(model, "dlr_targeted"), x, np.array([1]), 9, 10)
    assert t.tolist() == [[4, 3, 5, 2, 0]]  # top other classes, never the label, capped at K - 1


def test_eot_averages_gradients_of_noisy_passes(undefended):
    model, x, y = undefended
    xb, yb = tf.constant(x[:20]), tf.constant(y[:20], tf.int32)
    zoo.set_noise(model, infer_stddev=0.5)
    try:
        def grads(eot):
            engine = _Engine(model, "ce", eot)
            engine.build(xb.shape[1:])
            return [engine.evaluate(xb, yb, yb)[1].numpy() for _ in range(2)]
        one, many = grads(1), grads(64)
        # two independent gradient estimates agree far better with 64 passes averaged
        def spread(g):
            return np.abs(g[0] - g[1]).mean() / np.abs(g[0]).mean()

        assert spread(many) < spread(one) / 3, (spread(many), spread(one))
    finally:
        zoo.set_noise(model, infer_stddev=0.0)


def test_rand_version_on_noisy_model(undefended):
    """AutoAttack ``rand`` (APGD-CE and APGD-DLR with EOT) against a model with inference noise,
    judged by the same vote: stays in the ball and breaks it at a large eps."""
    model, x, y = undefended
    x, y = x[:40], y[:40]
    zoo.set_noise(model, infer_stddev=0.3)
    try:
        res = autoattack(model, x, y, 0.25, version="rand", eot_samples=8, n_iter=25)
        assert res.budget["eot"] == 8 and res.budget["attacks"] == ["apgd_ce", "apgd_dlr"]
        assert _in_ball(res.adv, x, 0.25)
        assert res.robust_accuracy <= 0.1, res.accuracy_after
    finally:
        zoo.set_noise(model, infer_stddev=0.0)


def test_registry_adapter(undefended):
    from evaluation import apgd as module
    from evaluation.attacks import ATTACKS as REGISTRY
    from evaluation.attacks import attack as run_registered

    model, x, y = undefended
    x, y = x[:30], y[:30]
    fn = logits_fn(model)  # one function for all three: its engines are traced once
    assert ATTACKS == ("apgd_ce", "apgd_dlr", "autoattack")
    for name in ATTACKS:
        adv = run_attack(name, fn, x, y, 0.2, steps=20, restarts=1, seed=0, step_size=None)
        assert isinstance(adv, tf.Tensor) and _in_ball(adv.numpy(), x, 0.2)
        assert _accuracy(model, adv, y) <= 0.1, name
    with pytest.raises(ValueError, match="unknown attack"):
        run_attack("fab", fn, x, y, 0.1)
    added = [name for name in ATTACKS if name not in REGISTRY]
    try:
        module.register()
        module.register()  # idempotent
        assert all(REGISTRY[name].kind == "ball" and REGISTRY[name].gradient == "model" for name in ATTACKS)
        adv = run_registered("autoattack", fn, x, y, 0.2, steps=20).numpy()
        assert _in_ball(adv, x, 0.2) and _accuracy(model, adv, y) <= 0.1
        with pytest.raises(ValueError, match="L-inf"):
            run_registered("apgd_ce", fn, x, y, 0.5, norm=2)
    finally:
        for name in added:
            REGISTRY.pop(name, None)


@pytest.mark.large
def test_adversarially_trained_model_autoattack_beats_pgd40_with_restarts(digits_data):
    """Madry-style PGD training on digits (eps 0.1); at eps 0.15 the ensemble leaves no more
    than PGD-40 with 5 restarts (measured: 49.7% vs 51.7% on 300 points)."""
    from training.adversarial import pgd_training
    model = _train(digits_data, epochs=15,
                   transforms=[pgd_training(eps=0.1, step=0.025, iterations=7, fraction=1.0)])
    x, y = digits_data.x_test[:300], digits_data.y_test[:300]
    eps = 0.15
    res = autoattack(model, x, y, eps)
    pgd = attack("pgd", logits_fn(model), x, y, eps, steps=40, restarts=5, seed=0).numpy()
    acc_aa, acc_pgd = _accuracy(model, res.adv, y), _accuracy(model, pgd, y)
    assert acc_pgd > 0.3  # the training worked: PGD does not break it
    assert acc_aa <= acc_pgd, (acc_aa, acc_pgd)


def test_randomized_model_points_are_attacked_whatever_their_clean_vote(undefended):
    """A noisy model's clean vote is one random draw. A point it got wrong by chance must still be
    attacked, or the next fresh vote judges the unattacked image (and finds it right about as often as
    before): this made the unbounded attack look like it failed on a noisy model. Deterministic models
    keep AutoAttack's saving (points already wrong are not attacked)."""
    model, x, y = undefended
    x, y = x[:20], y[:20]
    calls = []

    def judge_first_clean_wrong(a):  # the clean vote (first call) says wrong on the first 5 points
        pred = np.argmax(model(a), -1)
        if not calls:
            pred[:5] = (y[:5] + 1) % 10
        calls.append(1)
        return pred

    zoo.set_noise(model, infer_stddev=0.3)
    try:
        res = autoattack(model, x, y, 0.5, version="rand", eot_samples=4, n_iter=10, predict=judge_first_clean_wrong)
        assert not res.clean_correct[:5].any() and res.clean_correct[5:].all()
        assert (np.abs(res.adv[:5] - x[:5]).reshape(5, -1).max(1) > 0.1).all()  # attacked anyway
        assert _accuracy(model, res.adv, y) <= 0.1
    finally:
        zoo.set_noise(model, infer_stddev=0.0)
    calls.clear()
    res = autoattack(model, x, y, 0.5, n_iter=10, predict=judge_first_clean_wrong)
    np.testing.assert_array_equal(res.adv[:5], x[:5])  # deterministic: already wrong, not attacked
    assert (np.abs(res.adv[5:] - x[5:]).reshape(15, -1).max(1) > 0).all()
