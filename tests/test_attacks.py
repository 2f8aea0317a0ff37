"""Every attack finds adversarial examples on an undefended model, and stays in its ball."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from evaluation.attacks import ATTACKS, MINIMAL, attack, blank_gradient_fraction, logits_fn
from training.estimators import bp
from training.trainer import Trainer


@pytest.fixture(scope="module")
def undefended():
    from zoo.data import load_digits
    d = load_digits()
    keras.utils.set_random_seed(0)
    model = zoo.create_model("mlp", d.input_shape, 10, hidden=(64,), activation="relu")
    trainer = Trainer(model, bp())
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    trainer.fit(d.x_train, d.y_train, epochs=8, batch_size=64, verbose=0)
    x, y = d.x_test[:100], d.y_test[:100]
    keep = np.argmax(model(x), -1) == y
    return model, x[keep], y[keep]


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.large  # over 4 s here; the default suite stays under 3 min
def test_attack_fools_undefended_model(undefended, name):
    model, x, y = undefended
    eps = np.inf if name in MINIMAL else 0.3
    own = {"spsa_samples": 32, "spsa_lr": 0.05} if name == "spsa" else {}  # SPSA's own settings (SpsaSettings)
    adv = attack(name, logits_fn(model), x, y, eps=eps, steps=20, restarts=2, **own)
    adv = adv.numpy()
    assert np.max(np.abs(adv - x)) <= eps + 1e-5 and adv.min() >= 0 and adv.max() <= 1
    acc = np.mean(np.argmax(model(adv), -1) == y)
    # from 100% (correct points only); FGSM is one step, the others iterate
    assert acc < (0.5 if name == "fgsm" else 0.2), (name, acc)
    if name in MINIMAL:  # minimal attacks: small changes, well inside the pixel range
        l2 = np.linalg.norm((adv - x).reshape(len(x), -1), axis=1)
        assert np.median(l2) < 2.0, (name, np.median(l2))


def test_threshold_net_has_blank_gradients(undefended):
    _, x, y = undefended
    step_net = zoo.create_model("mlp", (8, 8, 1), 10, hidden=(32,), activation="threshold")
    assert blank_gradient_fraction(logits_fn(step_net), x, y) == 1.0
    model, _, _ = undefended
    assert blank_gradient_fraction(logits_fn(model), x, y) == 0.0


def test_eot_averages_noisy_passes(undefended):
    model, x, _ = undefended
    zoo.set_noise(model, infer_stddev=0.5)
    try:
        one = logits_fn(model)(tf.constant(x[:4])).numpy()
        many = [logits_fn(model, eot=200)(tf.constant(x[:4])).numpy() for _ in range(2)]
        clean = logits_fn(model, stddev=0.0)(tf.constant(x[:4])).numpy()
        # averaging 200 draws shrinks the draw-to-draw spread ~14x
        assert np.abs(many[0] - many[1]).mean() < np.abs(one - clean).mean() / 3
    finally:
        zoo.set_noise(model, infer_stddev=0.0)


def test_bad_attack_arguments(undefended):
    model, x, y = undefended
    with pytest.raises(ValueError, match="unknown attack"):
        attack("deepfool", logits_fn(model), x, y, eps=0.1)
    with pytest.raises(ValueError, match="eps"):
        attack("pgd", logits_fn(model), x, y, eps=-1)


def test_minimal_attack_eps_caps_the_size_kept(undefended):
    model, x, y = undefended
    full = attack("hotcold", logits_fn(model), x, y, eps=np.inf).numpy()
    capped = attack("hotcold", logits_fn(model), x, y, eps=0.05).numpy()
    big = np.abs(full - x).reshape(len(x), -1).max(1) > 0.05 + 1e-6
    assert big.any() and np.array_equal(capped[big], x[big])
    assert np.array_equal(capped[~big], full[~big])
    with pytest.raises(ValueError, match="finite eps"):
        attack("pgd", logits_fn(model), x, y, eps=np.inf)
