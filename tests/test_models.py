import numpy as np
import pytest

import zoo
from zoo.registry import get_entry

SHAPES = {"test_lstm": (12, 4)}


@pytest.mark.parametrize("name", [n for n in zoo.list_models("test_*")])
def test_every_family_builds_and_runs(name):
    shape = SHAPES.get(name, (8, 8, 1))
    model = zoo.create_model(name, shape, 7)
    x = np.random.default_rng(0).random((3, *shape), dtype=np.float32)
    for training in (True, False):
        y = model(x, training=training).numpy()
        assert y.shape == (3, 7)
        assert np.isfinite(y).all()
    assert len(zoo.noisy_layers(model)) >= 2


def test_every_family_has_a_test_variant():
    families = {"mlp", "lenet", "cnn6", "madry_cnn", "densenet", "lstm"}
    assert {f"test_{f}" for f in families} <= set(zoo.list_models("test_*"))
    assert families <= set(zoo.list_models())


def trainable_count(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def test_pinned_parameter_counts():
    assert trainable_count(zoo.create_model("glr_mlp", (28, 28, 1), 10)) == 784 * 50 + 50 + 50 * 10 + 10
    sub = zoo.create_model("substitute_mlp", (28, 28, 1), 10)
    assert trainable_count(sub) == 784 * 100 + 100 + 100 * 50 + 50 + 50 * 10 + 10
    # DenseNet-40, growth 12: "about 1M parameters" (Qin and Vucinic 2018, section 3)
    dn = zoo.create_model("densenet", (32, 32, 3), 10)
    assert 0.9e6 < trainable_count(dn) < 1.1e6
    # Caffe LeNet on 28x28: 20*25+20 + 50*20*25+50 + 800*500+500 + 500*10+10
    assert trainable_count(zoo.create_model("lenet", (28, 28, 1), 10)) == 431080


def test_registry_overrides_and_errors():
    m = zoo.create_model("mlp", (8, 8, 1), 10, hidden=(5, 6), activation="threshold")
    assert [layer.units for layer in zoo.noisy_layers(m)] == [5, 6, 10]
    assert zoo.noisy_layers(m)[0].activation == "threshold"
    with pytest.raises(ValueError, match="unknown model"):
        zoo.create_model("nope", (8, 8, 1), 10)
    with pytest.raises(ValueError, match="takes no argument"):
        zoo.create_model("mlp", (8, 8, 1), 10, widths=3)
    assert zoo.list_models("test_c*") == ["test_cnn6"]
    assert "784-50-10" in get_entry("glr_mlp").description


def test_lstm_reads_images_row_by_row():
    m = zoo.create_model("test_lstm", (8, 8, 1), 10)
    assert m(np.zeros((2, 8, 8, 1), np.float32)).shape == (2, 10)


def test_densenet_depth_validation():
    with pytest.raises(ValueError, match="3k \\+ 4"):
        zoo.create_model("densenet", (32, 32, 3), 10, depth=41)


def test_densenet_gridpool_classifier_reads_cell_averages():
    """``densenet_gridpool``'s classifier reads the final map averaged over a 4x4 grid of cells (the
    features local heads train), so its logits equal a linear map of those averages."""
    m = zoo.create_model("densenet_gridpool", (28, 28, 1), 10, depth=7, growth_rate=4, initial_filters=4)
    final = m.get_layer("grid_pool").input  # [N, 7, 7, C] after two transitions
    assert tuple(final.shape[1:3]) == (7, 7)
    features = m.get_layer("grid_features").output
    channels = int(final.shape[-1])
    assert int(features.shape[-1]) == 4 * 4 * channels
    x = np.random.default_rng(1).random((2, 28, 28, 1), dtype=np.float32)
    import keras
    fmap = keras.Model(m.inputs, final)(x).numpy()
    cells = np.stack([np.stack([fmap[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean((1, 2)) for j in range(4)], 1)
                      for i in range(4)], 1)  # [N, 4, 4, C]; the last row and column are 1-wide cells
    logits = m.get_layer("logits")
    expect = cells.reshape(2, -1) @ logits.kernel.numpy() + logits.bias.numpy()
    np.testing.assert_allclose(m(x, training=False).numpy(), expect, rtol=1e-4, atol=1e-4)
    gap = zoo.create_model("densenet", (28, 28, 1), 10, depth=7, growth_rate=4, initial_filters=4)
    assert "global_pool" in [layer.name for layer in gap.layers]
    with pytest.raises(ValueError, match="classifier_grid"):
        zoo.create_model("densenet", (28, 28, 1), 10, depth=7, classifier_grid=0)


def test_row_budget_counts_lstm_internals():
    """GLR replications and votes are chunked by rows_per_chunk; an LSTM's per-step state must count."""
    from zoo.memory import rows_per_chunk

    lstm = zoo.create_model("lstm", (117, 4), 10)
    mlp = zoo.create_model("glr_mlp", (28, 28, 1), 10)
    assert rows_per_chunk(lstm) < 1000 < rows_per_chunk(mlp)
