"""Serialization round trips and exported signatures, called the way TF Serving calls them."""
import shutil
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_checks import noisy_layer_classes, run_model_round_trip, run_noisy_layer_test

import zoo
from zoo.export import ExportError, export_model, load_model, load_signatures, read_metadata

# One or more cases per noisy layer class: (constructor arguments, one example's input shape). Every
# NoisyLayer subclass under zoo/ needs an entry (test_every_noisy_layer_class_has_a_case).
LAYER_CASES = {
    "NoisyDense": [
        (dict(units=4, activation="sigmoid:2", noise="multiplicative", train_stddev=0.3, infer_stddev=0.1, seed=5,
              batchnorm=True), (6,)),
        (dict(units=3, activation="threshold", train_stddev=0.2, infer_stddev=0.2, seed=3, use_bias=False), (5,)),
    ],
    "NoisyConv2D": [
        (dict(filters=3, kernel_size=(3, 2), strides=2, padding="valid", activation="threshold", train_stddev=0.2,
              infer_stddev=0.1, seed=1), (7, 6, 2)),
        (dict(filters=2, kernel_size=3, noise="multiplicative", train_stddev=0.4, infer_stddev=0.3, seed=4,
              batchnorm=True), (5, 5, 1)),
    ],
    "NoisyLSTM": [(dict(units=3, noise="additive", train_stddev=0.1, infer_stddev=0.2, seed=2), (4, 3))],
}
NOISY_LAYERS = noisy_layer_classes()


def test_every_noisy_layer_class_has_a_case():
    """A NoisyLayer subclass added under zoo/ fails here until LAYER_CASES covers it."""
    names = [cls.__name__ for cls in NOISY_LAYERS]
    assert {"NoisyDense", "NoisyConv2D", "NoisyLSTM"} <= set(names), names  # the scan sees the known ones
    missing = sorted(set(names) - set(LAYER_CASES))
    assert not missing, f"noisy layer classes without a round-trip case in LAYER_CASES: {missing}"


@pytest.mark.parametrize("layer_cls,case", [
    pytest.param(cls, case, id=f"{cls.__name__}-{i}") for cls in NOISY_LAYERS
    for i, case in enumerate(LAYER_CASES.get(cls.__name__, [None]))])
@pytest.mark.large  # over 4 s here; the default suite stays under 3 min
def test_noisy_layer_round_trips(layer_cls, case, tmp_path):
    """Config, .keras and SavedModel round trips of every noisy layer (tests/layer_checks.py)."""
    if case is None:
        pytest.fail(f"{layer_cls.__module__}.{layer_cls.__name__} has no case in LAYER_CASES; add one")
    init_kwargs, input_shape = case
    run_noisy_layer_test(layer_cls, init_kwargs, input_shape, tmp_path=tmp_path)


@pytest.mark.parametrize("name,shape", [("test_cnn6", (8, 8, 1)), ("test_lstm", (6, 3)), ("test_densenet", (8, 8, 1))])
def test_keras_file_round_trip_keeps_weights_and_noise_state(tmp_path, name, shape):
    """Whole model families (nested blocks, several noisy layers): the .keras checks of the helper."""
    m = zoo.create_model(name, shape, 5, noise="multiplicative", train_stddev=0.4, infer_stddev=0.3)
    x = np.random.default_rng(1).random((4, *shape), dtype=np.float32)
    run_model_round_trip(m, x, tmp_path, export=False)
    assert zoo.noise_settings(keras.saving.load_model(tmp_path / "m.keras"))["infer_stddev"] == pytest.approx(0.3)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    out = tmp_path_factory.mktemp("exp") / "model"
    m = zoo.create_model("test_cnn6", (8, 8, 1), 10, noise="multiplicative")
    x = np.random.default_rng(0).random((6, 8, 8, 1), dtype=np.float32)
    m(x, training=True)
    export_model(m, out, {"architecture": {"name": "test_cnn6"}})
    return m, out, x


def test_export_layout_and_metadata(exported):
    _, out, _ = exported
    assert (out / "1" / "saved_model.pb").is_file() and (out / "model.keras").is_file()
    meta = read_metadata(out)
    assert set(meta["signatures"]) == {"serving_default", "noisy_vote"}
    assert "model.keras" in meta["files"] and "1/saved_model.pb" in meta["files"]
    assert not list(out.parent.glob(".model.tmp-*"))


def test_saved_model_stores_each_weight_once(exported):
    """keras-team/keras#23553: tracking the model beside the endpoints stored every weight twice
    (the Keras wrappers and the tf.Variables they wrap); the variables file holds each value once."""
    m, out, _ = exported
    reader = tf.train.load_checkpoint(str(out / "1" / "variables" / "variables"))
    stored = sum(int(np.prod(shape)) for key, shape in reader.get_variable_to_shape_map().items()
                 if key.endswith("VARIABLE_VALUE"))
    weights = sum(int(np.prod(w.shape)) for w in m.weights)
    kernels = sum(int(np.prod(w.shape)) for w in m.trainable_weights)
    assert kernels <= stored <= weights, (stored, weights)


def test_loaded_model_equals_original(exported):
    m, out, x = exported
    m2 = load_model(out)
    with zoo.noise_override(0.0):
        np.testing.assert_allclose(m(x, training=False), m2(x, training=False), atol=1e-6)


def test_signatures_equal_keras_model(exported):
    m, out, x = exported
    sigs = load_signatures(out)
    res = sigs["serving_default"](images=tf.constant(x))
    with zoo.noise_override(0.0):
        logits = m(x, training=False)
    np.testing.assert_allclose(res["probabilities"], tf.nn.softmax(logits), atol=1e-6)
    np.testing.assert_array_equal(res["classes"], np.argmax(logits, -1))
    # stddev 0: every vote is the clean prediction
    v = sigs["noisy_vote"](images=tf.constant(x), stddev=tf.constant(0.0), votes=tf.constant(7))
    np.testing.assert_array_equal(v["vote_counts"].numpy().sum(1), 7)
    np.testing.assert_array_equal(v["classes"], np.argmax(logits, -1))
    v = sigs["noisy_vote"](images=tf.constant(x), stddev=tf.constant(2.0), votes=tf.constant(9))
    counts = v["vote_counts"].numpy()
    assert counts.sum(1).tolist() == [9] * 6 and (counts.max(1) < 9).any()  # noise changes votes


@pytest.mark.parametrize("kwargs,msg", [
    (dict(votes=0), "votes must be >= 1"), (dict(votes=10_001), "votes must be <= 10000"),
    (dict(stddev=-1.0), "stddev must be >= 0"), (dict(scale=2.0), "images must be in"),
])
def test_signature_validates_inputs(exported, kwargs, msg):
    _, out, x = exported
    sig = load_signatures(out)["noisy_vote"]
    args = dict(images=tf.constant(x * kwargs.get("scale", 1.0)), stddev=tf.constant(kwargs.get("stddev", 0.1)),
                votes=tf.constant(kwargs.get("votes", 3)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=msg):
        sig(**args)
    with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError), match="shape"):
        sig(images=tf.zeros((2, 9, 9, 1)), stddev=tf.constant(0.1), votes=tf.constant(3))


@pytest.mark.large  # slow here (5-20 s); .ci/run runs it
def test_saved_model_cli_runs_signatures(exported, tmp_path):
    """TF Serving loads with the TF1 session loader; saved_model_cli uses the same loader."""
    m, out, x = exported
    cli = shutil.which("saved_model_cli")
    if cli is None:
        pytest.skip("saved_model_cli not on PATH")
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run([cli, "run", "--dir", str(out / "1"), "--tag_set", "serve", "--signature_def",
                          "serving_default", "--inputs", f"images={tmp_path / 'x.npy'}", "--outdir", str(tmp_path),
                          "--overwrite"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    probs = np.load(tmp_path / "probabilities.npy")
    with zoo.noise_override(0.0):
        np.testing.assert_allclose(probs, tf.nn.softmax(m(x, training=False)), atol=1e-5)
    run = subprocess.run([cli, "run", "--dir", str(out / "1"), "--tag_set", "serve", "--signature_def", "noisy_vote",
                          "--inputs", f"images={tmp_path / 'x.npy'}", "--input_exprs", "stddev=0.5;votes=5",
                          "--outdir", str(tmp_path), "--overwrite"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert np.load(tmp_path / "vote_counts.npy").sum(1).tolist() == [5] * 6


def test_tampered_file_is_refused(exported, tmp_path):
    _, out, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open(copy / "model.keras", "ab") as f:
        f.write(b"x")
    with pytest.raises(ExportError, match="sha256"):
        load_model(copy)
    with pytest.raises(ExportError, match="not a glrzoo export"):
        load_model(tmp_path)


def test_failed_export_leaves_nothing(tmp_path):
    m = zoo.create_model("test_mlp", (8, 8, 1), 10)
    with pytest.raises(TypeError):
        export_model(m, tmp_path / "out", {"bad": object.__new__(type("X", (), {"__str__": None}))})
    assert list(tmp_path.iterdir()) == []


def test_value_range_of_the_data_is_what_serving_accepts(tmp_path):
    """Stroke steps are in [-1, 1]: their export must take negative values and refuse beyond."""
    import keras
    keras.utils.set_random_seed(0)
    m = zoo.create_model("test_lstm", (5, 4), 10)
    out = export_model(m, tmp_path / "strokes", {"note": "test"}, value_range=(-1.0, 1.0))
    sig = load_signatures(out)["serving_default"]
    x = np.full((2, 5, 4), -0.6, np.float32)
    np.testing.assert_allclose(sig(images=tf.constant(x))["probabilities"], tf.nn.softmax(m(x)), atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images must be in \[-1, 1\]"):
        sig(images=tf.constant(x - 1.0))
    assert "in [-1, 1]" in read_metadata(out)["signatures"]["serving_default"]["inputs"]["images"]
