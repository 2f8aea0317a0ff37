"""keras-tuner on digits: a two-trial search in seconds, every objective reported, best re-trainable."""
import json
import shutil

import keras_tuner as kt
import numpy as np
import pytest

from glrzoo.cli import main
from glrzoo.tuning import OBJECTIVES, ZooHyperModel, tune
from training.run import TrainConfig


def test_search_space_follows_the_method(digits):
    base = TrainConfig(model="mlp", dataset="digits", epochs=1, verbose=0)
    for method, keys in {"glr": {"replications", "sigma", "baseline", "antithetic", "layerwise", "qmc"},
                         "bang": {"bang_epsilon", "bang_beta"}, "adv": {"adv_eps"}, "bp": set()}.items():
        hp = kt.HyperParameters()
        config = ZooHyperModel("mlp", method, digits, base).config(hp)
        assert set(hp.values) == keys | {"lr", "train_stddev"}, method
        config.validate()
        if method == "adv":
            assert config.method == "bp" and config.adversarial["eps"] == hp.values["adv_eps"]
    with pytest.raises(ValueError, match="unknown tuning method"):
        ZooHyperModel("mlp", "magic", digits)


@pytest.mark.large  # 12-20 s: a keras-tuner search
def test_two_trial_search_on_digits(digits, tmp_path):
    base = TrainConfig(model="mlp", dataset="digits", epochs=2, batch_size=64, verbose=0,
                       model_args={"hidden": [32]}, activation="relu")
    hm = ZooHyperModel("mlp", "bp", digits, base, objective_stddev=0.5, objective_votes=5)
    tuner, best = tune(hm, "val_robust", max_trials=2, directory=str(tmp_path), seed=1)
    trials = tuner.oracle.get_best_trials(2)
    assert len(trials) == 2
    for t in trials:
        metrics = {k: t.metrics.get_last_value(k) for k in OBJECTIVES}
        assert all(0 <= v <= 1 for v in metrics.values())
        # the robust objective is the mean of the other three, measured on the validation split
        assert metrics["val_robust"] == pytest.approx(np.mean([metrics[k] for k in OBJECTIVES[:3]]), abs=1e-6)
    assert trials[0].score >= trials[1].score
    assert best.lr == trials[0].hyperparameters.values["lr"]
    assert len(hm.data.x_test) == int(len(digits.x_train) * 0.2)  # validation came out of the training split


@pytest.mark.large  # 12-20 s: a keras-tuner search
def test_glrzoo_tune_exports_the_best(tmp_path, capsys):
    out = tmp_path / "best"
    argv = ["tune", "--model", "mlp", "--method", "bp", "--objective", "val_accuracy", "--max-trials", "2",
            "--epochs", "3", "--batch-size", "16", "--activation", "relu", "--model-args", '{"hidden": [32]}',
            "--seed", "3", "--out", str(out)]
    assert main(argv) == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["tuning"]["objective"] == "val_accuracy" and meta["tuning"]["trials"] == 2
    # the best recipe, re-trained from scratch, does on the test set about what it did on validation
    assert meta["metrics"]["test_accuracy"] > 0.3
    assert abs(meta["metrics"]["test_accuracy"] - meta["tuning"]["score"]) < 0.15
    assert main(["tune", "--model", "mlp", "--method", "bp", "--objective", "vibes", "--out", str(tmp_path / "x")]) == 2
    assert "objective" in capsys.readouterr().err


def test_tune_starts_every_trial_from_a_pretrained_name(tmp_path, capsys):
    """--init-from takes a pretrained name (verified) as every other command does; the final model
    records where its weights started."""
    from glrzoo.cli import main
    from zoo.export import read_metadata

    out = tmp_path / "tuned"
    assert main(["tune", "--model", "glr_mlp", "--dataset", "digits", "--method", "bp", "--max-trials", "1",
                 "--epochs", "1", "--model-args", '{"activation": "threshold"}', "--init-from",
                 "digits/glr_threshold_mlp", "--out", str(out)]) == 0
    assert "digits/glr_threshold_mlp: pretrained model at" in capsys.readouterr().err
    init = read_metadata(out)["training"]["init_from"]
    assert init["source"] == "digits/glr_threshold_mlp" and init["dataset"] == "digits" and init["variables_copied"] > 0


def test_state_file_interrupted_mid_write_keeps_the_previous_one(tmp_path, monkeypatch):
    """keras-tuner writes trial.json in place; a kill mid-write left an empty file and the rerun crashed in
    json.loads. The zoo's tuner writes through a temporary file and a rename."""
    import tensorflow as tf

    from glrzoo import tuning

    path = tmp_path / "trial.json"
    tuning._write_json_atomically(str(path), {"status": "COMPLETED", "score": 0.9})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after the temporary file, before the rename

    monkeypatch.setattr(tf.io.gfile, "rename", killed)
    with pytest.raises(KeyboardInterrupt):
        tuning._write_json_atomically(str(path), {"status": "RUNNING", "score": None})
    assert json.loads(path.read_text()) == {"status": "COMPLETED", "score": 0.9}


@pytest.mark.large  # ~15 s: a one-trial search, then a rerun over a torn file
def test_rerun_over_a_torn_trial_file_names_it(tmp_path, capsys):
    out = tmp_path / "best"
    argv = ["tune", "--model", "test_mlp", "--method", "bp", "--objective", "val_accuracy", "--max-trials", "1",
            "--epochs", "1", "--out", str(out)]
    assert main(argv) == 0
    assert not list((tmp_path / "best.tuning").rglob("*.tmp"))  # every rename happened
    [trial] = (tmp_path / "best.tuning").glob("*/trial_*/trial.json")
    trial.write_text("")  # what an older version left when killed mid-write, before the export
    shutil.rmtree(out)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(trial) in err and "--overwrite" in err
    assert trial.read_text() == ""  # nothing of the user's changed
