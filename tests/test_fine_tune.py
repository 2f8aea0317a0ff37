"""Fine-tuning options of ``glrzoo train``: --init-from copies an export's weights (not its noise
settings), --freeze-bn-stats keeps batch norm on its moving statistics while training, the
inverse learning-rate schedule follows Caffe's formula and the cyclic one is a single triangle."""
import json

import numpy as np
import pytest

from glrzoo.cli import main
from training.run import InverseDecay, TrainConfig, TriangularCycle, build_model, initialize_from, train
from zoo.data import load_dataset
from zoo.errors import UserInputError
from zoo.noise import noisy_layers


def test_inverse_decay_is_caffes_inv_policy():
    schedule = InverseDecay(0.01)
    for step in (0, 1, 100, 10_000):
        assert float(schedule(step)) == pytest.approx(0.01 * (1 + 1e-4 * step) ** -0.75, rel=1e-6)


def test_triangular_cycle_rises_to_lr_at_half_the_run_and_falls_to_zero():
    schedule = TriangularCycle(5e-3, total_steps=1000)
    expected = {0: 0.0, 250: 2.5e-3, 500: 5e-3, 750: 2.5e-3, 1000: 0.0, 1200: 0.0}
    for step, lr in expected.items():
        assert float(schedule(step)) == pytest.approx(lr, abs=1e-9)
    assert TriangularCycle.from_config(schedule.get_config()).total_steps == 1000


def test_step_schedule_divides_the_rate_by_ten_for_the_last_tenth_of_the_run():
    from training.optim import make_learning_rate

    schedule = make_learning_rate(1e-3, "step", total_steps=1000)
    expected = {0: 1e-3, 899: 1e-3, 900: 1e-4, 999: 1e-4, 5000: 1e-4}
    for step, lr in expected.items():
        assert float(schedule(step)) == pytest.approx(lr, rel=1e-6)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = tmp_path_factory.mktemp("src") / "cnn"
    train(TrainConfig(model="test_cnn6", dataset="digits", epochs=2, lr=3e-3, out=str(out), verbose=0))
    return out


def _bn(model):
    return {layer.name: (layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy())
            for layer in noisy_layers(model) if layer.batchnorm_enabled}


@pytest.mark.large  # trains small models: about 30 s here
def test_init_from_copies_weights_but_not_noise_settings(source):
    data = load_dataset("digits")
    config = TrainConfig(model="test_cnn6", dataset="digits", noise="multiplicative", train_stddev=0.5)
    model = build_model(config, data)
    record = initialize_from(model, str(source))
    from zoo.export import load_model
    theirs = load_model(source)
    for mine, other in zip(noisy_layers(model), noisy_layers(theirs)):
        np.testing.assert_array_equal(mine.kernel.numpy(), other.kernel.numpy())
        assert float(mine.train_stddev.numpy()) == 0.5 and float(other.train_stddev.numpy()) == 0.0
    assert record["variables_copied"] > 0 and len(record["model_keras_sha256"]) == 64
    wider = build_model(TrainConfig(model="test_cnn6", dataset="digits", model_args={"dense": 9}), data)
    with pytest.raises(UserInputError, match="architecture differs.*same --model and --model-args"):
        initialize_from(wider, str(source))


@pytest.mark.large
def test_frozen_bn_stats_stay_put_while_the_weights_train(source, tmp_path):
    out = tmp_path / "ft"
    meta = train(TrainConfig(model="test_cnn6", dataset="digits", noise="multiplicative", train_stddev=0.5, epochs=1,
                             lr=1e-3, init_from=str(source), freeze_bn_stats=True, out=str(out), verbose=0))
    from zoo.export import load_model
    before, after = load_model(source), meta["model"]
    for name, (mean, var) in _bn(before).items():
        np.testing.assert_array_equal(_bn(after)[name][0], mean)
        np.testing.assert_array_equal(_bn(after)[name][1], var)
    moved = [np.abs(a.kernel.numpy() - b.kernel.numpy()).max() for a, b in zip(noisy_layers(after), noisy_layers(before))]
    assert min(moved) > 0
    training = json.loads((out / "metadata.json").read_text())["training"]
    assert training["freeze_bn_stats"] is True and training["init_from"]["source"] == str(source)
    # without freezing, the statistics move
    free = train(TrainConfig(model="test_cnn6", dataset="digits", noise="multiplicative", train_stddev=0.5, epochs=1,
                             lr=1e-3, init_from=str(source), verbose=0))["model"]
    assert any(np.abs(_bn(free)[n][0] - m).max() > 1e-4 for n, (m, _) in _bn(before).items())


def test_bad_fine_tune_flags_name_the_problem(tmp_path, capsys):
    rc = main(["train", "--model", "mlp", "--dataset", "digits", "--freeze-bn-stats", "--epochs", "1",
               "--out", str(tmp_path / "a")])
    assert rc != 0 and "has no batch-normalized layer" in capsys.readouterr().err
    rc = main(["train", "--model", "mlp", "--dataset", "digits", "--init-from", str(tmp_path / "missing"), "--epochs", "1",
               "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc != 0 and "missing" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
