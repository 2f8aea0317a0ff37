"""Shared round-trip checks for noisy layers and the models built from them.

In the spirit of keras-hub's ``run_layer_test``: one call checks what every noisy layer must keep
through serialization, so a new layer gets the same checks by adding one case, not a new test.

* :func:`run_noisy_layer_test` -- a layer class, its constructor arguments and an input shape:
  (a) ``get_config`` -> ``from_config`` (and Keras' ``serialize_keras_object`` round trip) gives an
  equal config, before and after the layer is built; then the layer inside a tiny model goes
  through :func:`run_model_round_trip`.
* :func:`run_model_round_trip` -- a model and a batch: (b) saved to ``.keras`` and loaded, its
  noise-free outputs are identical, its noise settings (kind, train and inference stddev, seed,
  random state) survive, and the next noisy pass draws the same noise; (c) exported with
  :func:`zoo.export.export_model` (SavedModel + ``model.keras``) and reloaded, the
  ``serving_default`` signature gives the same probabilities and classes, ``noisy_vote`` at
  stddev 0 votes for the noise-free class, and :func:`zoo.export.load_model` gives the same logits.

:func:`noisy_layer_classes` finds every :class:`zoo.noisy_base.NoisyLayer` subclass defined under
``zoo/`` (every module imported), so a test parametrized over it fails for a class nobody covered.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import zoo
from zoo.export import export_model, load_model, load_signatures
from zoo.noise import noise_settings, noisy_layers
from zoo.noisy_base import NoisyLayer

ATOL = 1e-6


def noisy_layer_classes(package: str = "zoo") -> list[type[NoisyLayer]]:
    """Every subclass of :class:`NoisyLayer` (at any depth) defined in a module of ``package``,
    after importing all of its modules and subpackages; sorted by qualified name."""
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        importlib.import_module(info.name)
    found, todo = set(), list(NoisyLayer.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls not in found:
            found.add(cls)
            todo.extend(cls.__subclasses__())
    mine = [c for c in found if c.__module__ == package or c.__module__.startswith(package + ".")]
    return sorted(mine, key=lambda c: f"{c.__module__}.{c.__qualname__}")


def check_config_round_trip(layer: keras.layers.Layer) -> dict:
    """``from_config(get_config())`` and a Keras serialize/deserialize round trip both give ``layer``'s
    class and an equal config; returns the config."""
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert type(clone) is type(layer)
    assert clone.get_config() == config, (clone.get_config(), config)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == config
    return config


def _noise_state(model: keras.Model) -> list[dict]:
    """Per noisy layer (call order): kind, seed, both stddevs and the random state ``[seed, counter]``."""
    return [{"name": layer.name, "noise": layer.noise, "seed": layer.seed,
             "train_stddev": float(layer.train_stddev.numpy()), "infer_stddev": float(layer.infer_stddev.numpy()),
             "rng_state": layer.rng_state.numpy().tolist()} for layer in noisy_layers(model)]


def _clean_logits(model: keras.Model, x: np.ndarray) -> np.ndarray:
    with zoo.noise_override(0.0):
        return np.asarray(model(x, training=False))


def run_model_round_trip(model: keras.Model, x: np.ndarray, tmp_path: Path, export: bool = True,
                         value_range: tuple[float, float] = (0.0, 1.0)) -> None:
    """Checks (b) and (c) of the module docstring on a built ``model`` with logits ``[N, C]``.

    Args:
        model: a model with at least one noisy layer; called once here with ``training=True``
            first, so batch-norm statistics and random states are no longer at their initial values.
        x: a batch ``[N, *input shape]`` inside ``value_range`` (the export refuses inputs outside).
        tmp_path: a fresh folder for ``m.keras`` and the export ``export/``.
        export: also run check (c) (a SavedModel export: a few seconds of tracing).
    """
    assert noisy_layers(model), "the model has no noisy layer to check"
    model(x, training=True)
    path = Path(tmp_path) / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    # (b) identical noise-free outputs; the noise settings and random state survive
    np.testing.assert_allclose(_clean_logits(model, x), _clean_logits(loaded, x), atol=ATOL)
    assert _noise_state(loaded) == _noise_state(model)
    assert noise_settings(loaded) == noise_settings(model)
    # the random state is a weight, so the next noisy pass of each draws the same noise
    np.testing.assert_allclose(model(x, training=True), loaded(x, training=True), atol=ATOL)
    np.testing.assert_allclose(model(x, training=False), loaded(x, training=False), atol=ATOL)
    assert _noise_state(loaded) == _noise_state(model)
    if not export:
        return
    # (c) the project's exporter: SavedModel signatures and the export's model.keras give the same predictions
    out = export_model(model, Path(tmp_path) / "export", {"note": "round-trip test"}, value_range=value_range)
    logits = _clean_logits(model, x)
    sigs = load_signatures(out)
    served = sigs["serving_default"](images=tf.constant(x))
    np.testing.assert_allclose(served["probabilities"], tf.nn.softmax(logits), atol=1e-5)
    np.testing.assert_array_equal(served["classes"], logits.argmax(-1))
    votes = sigs["noisy_vote"](images=tf.constant(x), stddev=tf.constant(0.0), votes=tf.constant(3))
    np.testing.assert_array_equal(votes["classes"], logits.argmax(-1))
    np.testing.assert_array_equal(votes["vote_counts"].numpy().sum(1), 3)
    reloaded = load_model(out)
    np.testing.assert_allclose(_clean_logits(reloaded, x), logits, atol=ATOL)
    assert _noise_state(reloaded) == _noise_state(model)  # each made one pass since the export


def run_noisy_layer_test(layer_cls: type[NoisyLayer], init_kwargs: dict, input_shape: tuple[int, ...], *,
                         tmp_path: Path, batch: int = 3, classes: int = 3, export: bool = True, seed: int = 0) -> None:
    """All round trips of one noisy layer: its config (a), then a tiny model around it saved to
    ``.keras`` (b) and exported as a SavedModel (c); see the module docstring.

    Args:
        layer_cls: a :class:`NoisyLayer` subclass.
        init_kwargs: its constructor arguments; give ``infer_stddev > 0`` so (b) compares noisy passes.
        input_shape: one example's shape (no batch axis), e.g. ``(5, 5, 2)`` for a conv layer.
        tmp_path: a fresh folder for the saved files.
        batch: examples in the test batch (uniform in ``[0, 1)``, seeded by ``seed``).
        classes: width of the dense head that turns the layer's output into logits ``[batch, classes]``.
        export: run check (c).
    """
    check_config_round_trip(layer_cls(**init_kwargs))
    keras.utils.set_random_seed(seed)
    layer = layer_cls(**init_kwargs)
    inputs = keras.Input(input_shape)
    h = layer(inputs)
    if len(h.shape) > 2:
        h = keras.layers.Flatten()(h)
    model = keras.Model(inputs, keras.layers.Dense(classes)(h))
    check_config_round_trip(layer)  # built: the stddevs are read from the layer's variables
    x = np.random.default_rng(seed).random((batch, *input_shape), dtype=np.float32)
    run_model_round_trip(model, x, tmp_path, export=export)


__all__ = ["check_config_round_trip", "noisy_layer_classes", "run_model_round_trip", "run_noisy_layer_test"]
