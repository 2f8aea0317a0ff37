"""The shipped pretrained set: listed, loaded with checksums, refused when altered, README generated."""
import json
import shutil

import numpy as np
import pytest

import zoo
from glrzoo.cli import main
from zoo.export import ExportError
from zoo.pretrained import list_pretrained, pretrained_root
from zoo.pretrained_docs import README_HEAD, readme_table

REQUIRED = ("mnist/bp_sigmoid_ce", "mnist/glr_sigmoid_ce", "mnist/glr_threshold_ce", "mnist/glr_sigmoid_01",
            "mnist/glr_threshold_01", "digits/glr_threshold_mlp", "mnist/cnn6_noise1.0", "mnist/cnn6_noise0.2",
            "mnist/lenet_bang", "mnist/madry_cnn_pgd", "mnist_strokes/lstm", "mnist/cnn6_bp", "mnist/cnn6_glr_local",
            "mnist_strokes/lstm_glr_local", "fashion_mnist/densenet_bp", "fashion_mnist/densenet_glr_local",
            "mnist_strokes/lstm_noise1.0", "fashion_mnist/densenet_noise1.0", "mnist/cnn6_pgd", "mnist/cnn6_additive1.0",
            "fashion_mnist/densenet_gridpool_glr_local", "fashion_mnist/densenet_gridpool_bp",
            "fashion_mnist/densenet_gridpool_control",
            *(f"fashion_mnist/{row}" for row in ("bp_sigmoid_ce", "glr_sigmoid_ce", "glr_threshold_ce",
                                                 "glr_sigmoid_01", "glr_threshold_01")))


def test_the_promised_set_is_shipped_small_and_evaluated():
    names = list_pretrained()
    assert set(REQUIRED) <= set(names), sorted(set(REQUIRED) - set(names))
    size = sum(p.stat().st_size for p in pretrained_root().rglob("*") if p.is_file())
    # each weight stored once per format (model.keras and the SavedModel): the full-size cnn6
    # exports (bp, glr_local, additive noise, multiplicative noise 0.2 and 1.0) are 5.7 MiB each,
    # madry_cnn (fc 256) 6.8 MiB, the full LeNet 3.5 MiB, each depth-10 DenseNet 1 MiB, each SmallCNN (TRADES,
    # Gaussian-noise base classifiers) 1.6 MiB; 61.3 MiB in all with the sigma-1.0 model, 65 MiB with the LSTM and
    # DenseNet models of issue 30, 65 MiB with the DenseNet's random-features control, 66.5 MiB with
    # Fashion-MNIST's wong_cnn (1.5 MiB); room for one more wong_cnn-sized model
    assert size < 68 * 2**20, size / 2**20
    for name in REQUIRED:
        meta = zoo.describe_pretrained(name)
        assert meta["command"] and meta["training"]["seed"] is not None and meta["versions"]["tensorflow"]
        ev = meta["evaluation"]
        assert ev["n"] == min(1000, meta["dataset"]["test_examples"]) and ev["headline"], name
        assert "masking_flags" in ev


def test_readme_is_generated_from_the_metadata():
    committed = (pretrained_root() / "README.md").read_text()
    assert committed == README_HEAD + readme_table() + "\n", "run 'glrzoo pretrained readme' after changing a model"


def test_load_pretrained_runs_and_refuses_altered_files(tmp_path, digits):
    model = zoo.load_pretrained("glr_threshold_mlp")  # unique short name
    acc = np.mean(np.argmax(model(digits.x_test), -1) == digits.y_test)
    meta = zoo.describe_pretrained("digits/glr_threshold_mlp")
    assert acc == pytest.approx(meta["metrics"]["test_accuracy"], abs=1e-6)
    copy = tmp_path / "digits" / "glr_threshold_mlp"
    shutil.copytree(pretrained_root() / "digits" / "glr_threshold_mlp", copy)
    weights = next(p for p in (copy / "1" / "variables").iterdir() if p.name.startswith("variables.data"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="sha256"):
        zoo.load_pretrained("digits/glr_threshold_mlp", root=tmp_path)
    assert main(["pretrained", "verify", "digits/glr_threshold_mlp", "--root", str(tmp_path)]) == 2
    with pytest.raises(ExportError, match="no pretrained model"):
        zoo.load_pretrained("nope")


def test_cli_lists_and_shows(capsys):
    assert main(["pretrained", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in REQUIRED)
    assert main(["pretrained", "show", "mnist/lenet_bang"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["training"]["method"]["method"] == "bang" and "files" not in shown
    assert main(["pretrained", "show"]) == 2


def test_stroke_lstm_serves_stroke_values():
    """Stroke steps are in [-1, 1]; the shipped LSTM's signature must take them (not only pixels)."""
    import tensorflow as tf

    from zoo.export import load_signatures
    path = pretrained_root() / "mnist_strokes" / "lstm"
    assert zoo.describe_pretrained("mnist_strokes/lstm")["dataset"]["value_range"] == [-1.0, 1.0]
    x = np.zeros((2, 117, 4), np.float32)
    x[:, -5:, :2] = -0.5  # leftward, upward pen moves
    out = load_signatures(path)["serving_default"](images=tf.constant(x))
    np.testing.assert_allclose(out["probabilities"], tf.nn.softmax(zoo.load_pretrained("mnist_strokes/lstm")(x)),
                               atol=1e-5)
