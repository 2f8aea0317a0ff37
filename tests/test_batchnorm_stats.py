"""Batch-norm statistics recomputed after training (``training.batchnorm``, ``glrzoo recalibrate-bn``):
the exact average of the batch statistics, collected under the chosen noise, restored on failure,
exported with a record of what was done."""
import json

import numpy as np
import pytest

import training.batchnorm as batchnorm
from glrzoo.cli import main
from training.batchnorm import recompute_batchnorm_statistics
from training.run import TrainConfig, build_model, evaluate_accuracy, train
from zoo.data import load_dataset
from zoo.errors import UserInputError
from zoo.export import load_model, read_metadata, verify_export
from zoo.noise import batchnorm_layers


@pytest.fixture(scope="module")
def digits_data():
    return load_dataset("digits")


def _noisy_cnn(data):
    return build_model(TrainConfig(model="test_cnn6", dataset="digits", noise="multiplicative", train_stddev=1.0), data)


def _stats(model):
    return [(layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy()) for layer in batchnorm_layers(model)]


def _scramble(model, value):
    for layer in batchnorm_layers(model):
        layer.moving_mean.assign(np.full(layer.moving_mean.shape, value, np.float32))
        layer.moving_variance.assign(np.full(layer.moving_variance.shape, value**2, np.float32))


def test_first_layer_gets_the_exact_mean_and_average_batch_variance(digits_data):
    model = _noisy_cnn(digits_data)
    x = digits_data.x_train[:1000]
    _scramble(model, 5.0)
    assert recompute_batchnorm_statistics(model, x, stddev=0.0, batch_size=250) == len(batchnorm_layers(model)) >= 2
    first = batchnorm_layers(model)[0]
    z = first.product(x, first.kernel).numpy()
    z = z + first.bias.numpy() if first.bias is not None else z
    axes = tuple(range(z.ndim - 1))
    np.testing.assert_allclose(first.moving_mean.numpy(), z.mean(axes), rtol=1e-4, atol=1e-5)
    batch_var = np.mean([z[i:i + 250].var(axes) for i in range(0, 1000, 250)], axis=0)
    np.testing.assert_allclose(first.moving_variance.numpy(), batch_var, rtol=1e-4, atol=1e-5)
    assert all("bn_momentum" not in vars(layer) for layer in batchnorm_layers(model))  # class momentum back


def test_statistics_forget_the_old_ones_and_see_the_chosen_noise(digits_data):
    model = _noisy_cnn(digits_data)
    x = digits_data.x_train[:1000]
    _scramble(model, 5.0)
    recompute_batchnorm_statistics(model, x, stddev=0.0, batch_size=250)
    clean = _stats(model)
    _scramble(model, -3.0)
    recompute_batchnorm_statistics(model, x, stddev=0.0, batch_size=250)
    for (m1, v1), (m2, v2) in zip(clean, _stats(model)):  # noise-free: the old statistics leave no trace
        np.testing.assert_allclose(m1, m2, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(v1, v2, rtol=1e-4, atol=1e-5)
    recompute_batchnorm_statistics(model, x, stddev=1.0, batch_size=250)
    noisy = _stats(model)
    # the first layer's input is the image, so its statistics do not depend on the noise; every later
    # one reads relu(z (1 + n)), whose variance at 0 dB is well above the clean one's
    np.testing.assert_allclose(noisy[0][1], clean[0][1], rtol=1e-4, atol=1e-5)
    for (_, v_clean), (_, v_noisy) in zip(clean[1:], noisy[1:]):
        assert v_noisy.mean() > 1.3 * v_clean.mean(), (v_noisy.mean(), v_clean.mean())


def test_a_failed_pass_leaves_the_statistics_as_they_were(digits_data, monkeypatch):
    model = _noisy_cnn(digits_data)
    _scramble(model, 2.0)
    before = _stats(model)
    real, calls = batchnorm.noise_override, []

    def failing(stddev):
        calls.append(stddev)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(stddev)

    monkeypatch.setattr(batchnorm, "noise_override", failing)
    with pytest.raises(KeyboardInterrupt):
        recompute_batchnorm_statistics(model, digits_data.x_train[:1000], batch_size=250)
    for (m1, v1), (m2, v2) in zip(before, _stats(model)):
        np.testing.assert_array_equal(m1, m2)
        np.testing.assert_array_equal(v1, v2)
    assert all("bn_momentum" not in vars(layer) for layer in batchnorm_layers(model))


def test_refusals_name_the_problem(digits_data):
    mlp = build_model(TrainConfig(model="mlp", dataset="digits"), digits_data)
    with pytest.raises(UserInputError, match="has no batch norm"):
        recompute_batchnorm_statistics(mlp, digits_data.x_train[:600])
    with pytest.raises(UserInputError, match="fewer than one batch of 500"):
        recompute_batchnorm_statistics(_noisy_cnn(digits_data), digits_data.x_train[:100])
    with pytest.raises(UserInputError, match="stddev must be"):
        recompute_batchnorm_statistics(_noisy_cnn(digits_data), digits_data.x_train[:600], stddev=float("nan"))


@pytest.mark.large  # trains a small cnn for 3 epochs: about 15 s here
def test_cli_exports_the_recalibrated_model_with_a_record(tmp_path, capsys, digits_data):
    src, out = tmp_path / "noisy", tmp_path / "recal"
    train(TrainConfig(model="test_cnn6", dataset="digits", noise="multiplicative", train_stddev=1.0, epochs=3, lr=3e-3,
                      out=str(src), verbose=0))
    rc = main(["recalibrate-bn", str(src), "--examples", "1000", "--batch-size", "250", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert "batch norms recomputed at stddev 0" in capsys.readouterr().out
    verify_export(out)
    meta, source = read_metadata(out), read_metadata(src)
    record = meta["batchnorm_statistics"]
    assert record["stddev"] == 0.0 and record["examples"] == 1000 and record["split"] == "train"
    assert record["source"]["model.keras sha256"] == source["files"]["model.keras"]
    assert record["command"].startswith("glrzoo recalibrate-bn")
    assert meta["metrics"]["test_accuracy_before_recalibration"] == source["metrics"]["test_accuracy"]
    model = load_model(out)
    assert meta["metrics"]["test_accuracy"] == pytest.approx(
        evaluate_accuracy(model, digits_data.x_test, digits_data.y_test), abs=1e-9)
    # the source is untouched, and its statistics differ from the recomputed ones
    assert read_metadata(src) == source
    assert any(np.abs(a[1] - b[1]).max() > 1e-3 for a, b in zip(_stats(load_model(src)), _stats(model)))
    # an existing export is not replaced without --overwrite: one line, exit 2, nothing changed
    kept = (out / "metadata.json").read_text()
    rc = main(["recalibrate-bn", str(src), "--examples", "1000", "--batch-size", "250", "--stddev", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (out / "metadata.json").read_text() == kept
    rc = main(["recalibrate-bn", str(src), "--examples", "999999", "--out", str(tmp_path / "x")])
    assert rc == 2 and "examples must be in" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert json.loads(kept)["batchnorm_statistics"]["stddev"] == 0.0
