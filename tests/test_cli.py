"""The console script: commands, bad input (one line, exit 2, nothing half-written), kill and resume."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from glrzoo.cli import main
from training.checkpoints import completed_epochs
from zoo.export import load_model, read_metadata

TRAIN = ["train", "--model", "test_mlp", "--dataset", "digits", "--epochs", "2", "--batch-size", "64", "--lr", "0.01", "--quiet"]


def run_cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_models_and_datasets(capsys):
    code, out, _ = run_cli(["models"], capsys)
    assert code == 0 and "cnn6" in out and "densenet" in out and "784-50-10" in out
    code, out, _ = run_cli(["models", "test_*"], capsys)
    assert code == 0 and "glr_mlp" not in out and "test_lstm" in out
    code, out, _ = run_cli(["datasets"], capsys)
    assert code == 0 and out.splitlines()[0].startswith("digits") and "yes" in out.splitlines()[0]


@pytest.mark.parametrize("extra,needle", [
    (["--model", "resnet999"], "unknown model"),
    (["--dataset", "imagenet"], "unknown data set"),
    (["--train-stddev", "-0.5"], "must be >= 0"),
    (["--activation", "wiggle"], "unknown activation"),
    (["--model-args", "[1]"], "JSON object"),
    (["--loss", "zero_one"], "train it with --method glr"),
])
def test_bad_train_input(tmp_path, capsys, extra, needle):
    out = tmp_path / "m"
    code, _, err = run_cli(TRAIN + ["--out", str(out)] + extra, capsys)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("glrzoo") or "error" in line]
    assert len(lines) == 1 and needle in lines[0], err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_train_exports_and_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "m"
    code, stdout, err = run_cli(TRAIN + ["--out", str(out), "--train-stddev", "0.1"], capsys)
    assert code == 0, err
    meta = read_metadata(out)
    assert meta["architecture"]["name"] == "test_mlp" and meta["dataset"]["name"] == "digits"
    assert 0.3 < meta["metrics"]["test_accuracy"] <= 1.0 and meta["training"]["seed"] == 0
    assert meta["training"]["method"] == {"method": "bp", "loss": "ce"} and "tensorflow" in meta["versions"]
    assert meta["command"].startswith("glrzoo train --model test_mlp")
    assert not (out / "checkpoints").exists()
    load_model(out)
    code, _, err = run_cli(TRAIN + ["--out", str(out)], capsys)
    assert code == 2 and "--overwrite" in err


def _weights(path):
    return [w for w in load_model(path).get_weights()]


@pytest.mark.large  # ~45 s on 2 cores: trains 25 epochs twice; its own 240 s deadline bounds the wait
def test_sigkill_then_resume_loses_nothing(tmp_path):
    """A run killed with SIGKILL mid-training and resumed ends with the same weights as an uninterrupted run."""
    epochs = "25"
    args = ["train", "--model", "test_mlp", "--dataset", "digits", "--epochs", epochs, "--batch-size", "16",
            "--train-stddev", "0.3", "--seed", "3", "--quiet"]
    full = tmp_path / "full"
    assert main(args + ["--out", str(full)]) == 0

    killed = tmp_path / "killed"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, "-m", "glrzoo", *args, "--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            if completed_epochs(ckpt) >= 3:
                break
        except OSError:
            pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = completed_epochs(ckpt)
    assert 3 <= done < int(epochs), "the run was not killed mid-training"
    assert not (killed / "metadata.json").exists()

    assert main(args + ["--out", str(killed)]) == 2  # refuses without --resume
    assert main(args + ["--out", str(killed), "--resume"]) == 0
    for a, b in zip(_weights(full), _weights(killed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.large  # over 4 s here; the default suite stays under 3 min
def test_sweep_trains_one_model_per_stddev(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["sweep", "--model", "test_mlp", "--epochs", "1", "--noise", "multiplicative", "--train-stddevs",
                 "0,0.5", "--quiet", "--out", str(out)])
    assert code == 0
    for s in ("0", "0.5"):
        meta = read_metadata(out / f"train_stddev_{s}")
        assert meta["training"]["train_stddev"] == float(s) and meta["training"]["noise"] == "multiplicative"
    assert main(["sweep", "--model", "test_mlp", "--train-stddevs", "0,-1", "--out", str(tmp_path / "bad")]) == 2
    assert main(["sweep", "--model", "test_mlp", "--train-stddevs", "a,b", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
