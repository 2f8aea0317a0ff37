"""Property test of ``--resume``: a run stopped at any of a set of points (each epoch boundary, right
after the last epoch's checkpoint, a newest checkpoint damaged while it was written, the export
failing) and resumed ends with the weights of an uninterrupted run, and its metadata says so.

Stops are simulated in-process (an exception from a callback, a damaged file, a failing export);
``tests/test_faults.py`` kills real processes with SIGKILL."""
from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest

import training.run
from training.checkpoints import completed_epochs, epochs_recorded, record_file, weights_file
from training.run import TrainConfig, train
from zoo.errors import UserInputError
from zoo.export import read_metadata

EPOCHS = 4


def config(out, **kw) -> TrainConfig:
    # training noise: the noise generators' state must be restored too
    return TrainConfig(model="test_mlp", epochs=EPOCHS, batch_size=64, train_stddev=0.3, seed=7, out=str(out),
                       verbose=0, **kw)


class Stop(keras.callbacks.Callback):
    """Raises at the start of epoch ``at`` (0-based), or after the checkpoint of the last epoch."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt

    def on_train_end(self, logs=None):  # after every epoch's checkpoint: a kill before the export
        if self.at >= EPOCHS:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from zoo.data import load_digits
    meta = train(config(tmp_path_factory.mktemp("ref") / "m"), data=load_digits())
    return meta["model"].get_weights(), meta["metrics"]["test_accuracy"]


def assert_same(weights, reference_weights):
    assert len(weights) == len(reference_weights)
    for a, b in zip(weights, reference_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("at", [1, 2, 3, EPOCHS])
def test_stopped_at_an_epoch_boundary_resumes_to_the_uninterrupted_weights(at, digits, tmp_path, reference):
    out = tmp_path / "m"
    with pytest.raises(KeyboardInterrupt):
        train(config(out), data=digits, callbacks=[Stop(at)])
    assert completed_epochs(out / "checkpoints") == at and not (out / "metadata.json").exists()
    meta = train(config(out, resume=True), data=digits)
    assert_same(meta["model"].get_weights(), reference[0])
    assert meta["metrics"]["test_accuracy"] == reference[1]  # not an untrained model (the old bug: 5.6%)
    saved = read_metadata(out)
    assert saved["training"]["resumed"] is True and saved["metrics"]["epochs_run"] == EPOCHS
    assert [(p["start_epoch"], p["end_epoch"]) for p in saved["training"]["parts"]] == [(0, at), (at, EPOCHS)]


@pytest.mark.parametrize("damage", ["truncated", "flipped_byte", "record_missing", "record_garbled"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(damage, digits, tmp_path, reference):
    out = tmp_path / "m"
    with pytest.raises(KeyboardInterrupt):
        train(config(out), data=digits, callbacks=[Stop(3)])
    ckpt = out / "checkpoints"
    assert epochs_recorded(ckpt) == [3, 2]  # the two newest are kept
    newest = weights_file(ckpt, 3)
    if damage == "truncated":  # killed while the weights were written (the rename makes this rare)
        newest.write_bytes(newest.read_bytes()[:1000])
    elif damage == "flipped_byte":
        data = bytearray(newest.read_bytes())
        data[len(data) // 2] ^= 0xFF
        newest.write_bytes(bytes(data))
    elif damage == "record_missing":  # killed between the weights and their record
        record_file(ckpt, 3).unlink()
    else:
        record_file(ckpt, 3).write_text('{"epoch": 3, "sha2')
    assert completed_epochs(ckpt) == 2
    meta = train(config(out, resume=True), data=digits)
    assert_same(meta["model"].get_weights(), reference[0])
    parts = read_metadata(out)["training"]["parts"]
    assert parts[-1]["start_epoch"] == 2 and parts[-1]["end_epoch"] == EPOCHS  # the data restarts where the weights did


def test_no_usable_checkpoint_is_one_line_and_touches_nothing(digits, tmp_path):
    out = tmp_path / "m"
    with pytest.raises(KeyboardInterrupt):
        train(config(out), data=digits, callbacks=[Stop(2)])
    ckpt = out / "checkpoints"
    for n in epochs_recorded(ckpt):
        weights_file(ckpt, n).write_bytes(b"not hdf5")
    before = sorted(p.name for p in ckpt.iterdir())
    with pytest.raises(UserInputError, match="no usable checkpoint") as info:
        train(config(out, resume=True), data=digits)
    assert "\n" not in str(info.value) and "--overwrite" in str(info.value)
    assert sorted(p.name for p in ckpt.iterdir()) == before and not (out / "metadata.json").exists()


def test_a_failed_export_resumes_to_the_trained_model(digits, tmp_path, reference, monkeypatch):
    out = tmp_path / "m"

    def fail(*args, **kwargs):
        raise OSError(27, "File too large")
    real = training.run.export_model
    monkeypatch.setattr(training.run, "export_model", fail)
    with pytest.raises(OSError):
        train(config(out), data=digits)
    monkeypatch.setattr(training.run, "export_model", real)
    assert completed_epochs(out / "checkpoints") == EPOCHS
    meta = train(config(out, resume=True), data=digits)
    assert_same(meta["model"].get_weights(), reference[0])
    assert read_metadata(out)["metrics"]["test_accuracy"] == reference[1]


def test_a_run_checkpointed_by_the_older_keras_backup_resumes(digits, tmp_path, reference):
    """Runs started before this version (Keras BackupAndRestore files) continue."""
    out = tmp_path / "m"
    with pytest.raises(KeyboardInterrupt):
        train(config(out), data=digits, callbacks=[Stop(2)])
    ckpt = out / "checkpoints"
    shutil.copy(weights_file(ckpt, 2), ckpt / "latest.weights.h5")
    (ckpt / "training_metadata.json").write_text(json.dumps({"epoch": 2, "batch": 0}))
    for n in epochs_recorded(ckpt):
        record_file(ckpt, n).unlink()
        weights_file(ckpt, n).unlink()
    meta = train(config(out, resume=True), data=digits)
    assert_same(meta["model"].get_weights(), reference[0])
    assert not (ckpt / "latest.weights.h5").exists() or not (out / "checkpoints").exists()
