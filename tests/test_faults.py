"""Fault tests: each long-running command killed with SIGKILL at a random point, rerun, and the
result equals an uninterrupted run (tune: no trial lost or counted twice). All large: each trains
or evaluates twice in a subprocess."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from glrzoo.cli import main
from training.checkpoints import completed_epochs
from zoo.export import load_model, read_metadata

REPO = Path(__file__).resolve().parents[1]


def kill_when(argv, ready, deadline_s=300) -> None:
    """Run ``glrzoo argv`` in a subprocess and SIGKILL it as soon as ``ready()`` holds."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "glrzoo", *map(str, argv)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + deadline_s
    try:
        while time.time() < deadline and proc.poll() is None:
            if ready():
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def epoch_of(ckpt: Path) -> int:
    try:
        return completed_epochs(ckpt)
    except OSError:  # a checkpoint pruned while it was read
        return 0


def same_weights(a: Path, b: Path) -> None:
    for x, y in zip(load_model(a).get_weights(), load_model(b).get_weights()):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.large  # ~40 s: 12 epochs of test_mlp twice
def test_train_killed_and_resumed_equals_uninterrupted(tmp_path):
    at = random.Random().randint(1, 10)
    args = ["train", "--model", "test_mlp", "--epochs", "12", "--batch-size", "16", "--train-stddev", "0.3",
            "--seed", "5", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "full")]) == 0
    killed = tmp_path / "killed"
    kill_when(args + ["--out", killed], lambda: epoch_of(killed / "checkpoints") >= at)
    assert not (killed / "metadata.json").exists()
    assert main(args + ["--out", str(killed), "--resume"]) == 0
    same_weights(tmp_path / "full", killed)
    meta = read_metadata(killed)
    assert meta["training"]["resumed"] is True and meta["metrics"]["epochs_run"] == 12
    parts = meta["training"]["parts"]
    assert parts[0]["start_epoch"] == 0 and parts[-1]["end_epoch"] == 12 and parts[-1]["start_epoch"] >= at
    assert meta["metrics"]["train_seconds"] >= sum(p["seconds"] for p in parts) - 0.05
    assert meta["metrics"]["test_accuracy"] == read_metadata(tmp_path / "full")["metrics"]["test_accuracy"]


@pytest.mark.large  # ~60 s: a two-model sweep twice
def test_sweep_killed_and_resumed_equals_uninterrupted(tmp_path):
    at = random.Random().randint(1, 5)
    args = ["sweep", "--model", "test_mlp", "--epochs", "6", "--batch-size", "32", "--train-stddevs", "0,0.3",
            "--quiet"]
    assert main(args + ["--out", str(tmp_path / "full")]) == 0
    killed = tmp_path / "killed"
    second = killed / "train_stddev_0.3"
    kill_when(args + ["--out", killed], lambda: epoch_of(second / "checkpoints") >= at)
    assert (killed / "train_stddev_0" / "metadata.json").is_file() and not (second / "metadata.json").exists()
    first_before = (killed / "train_stddev_0" / "metadata.json").read_text()
    assert main(args + ["--out", str(killed), "--resume"]) == 0
    assert (killed / "train_stddev_0" / "metadata.json").read_text() == first_before  # finished: not retrained
    for name in ("train_stddev_0", "train_stddev_0.3"):
        same_weights(tmp_path / "full" / name, killed / name)
    assert read_metadata(second)["training"]["resumed"] is True


def trials(search: Path) -> list[dict]:
    found = []
    for f in sorted(search.glob("*/trial_*/trial.json")):
        t = json.loads(f.read_text())
        found.append({"id": t["trial_id"], "status": t["status"], "hp": t["hyperparameters"]["values"],
                      "score": t.get("score")})
    return found


@pytest.mark.large  # ~90 s: a four-trial search twice
def test_tune_killed_and_rerun_loses_and_repeats_no_trial(tmp_path):
    args = ["tune", "--model", "test_mlp", "--method", "bp", "--objective", "val_accuracy", "--max-trials", "4",
            "--epochs", "2", "--batch-size", "32", "--seed", "2"]
    assert main(args + ["--out", str(tmp_path / "full")]) == 0
    at = random.Random().randint(1, 3)
    killed = tmp_path / "killed"
    search = Path(str(killed) + ".tuning")
    kill_when(args + ["--out", killed],
              lambda: sum(t["status"] == "COMPLETED" for t in trials(search)) >= at if search.exists() else False)
    assert not (killed / "metadata.json").exists()
    assert main(args + ["--out", str(killed)]) == 0  # no --overwrite: the search continues
    full, resumed = trials(Path(str(tmp_path / "full") + ".tuning")), trials(search)
    assert len(resumed) == 4 and all(t["status"] == "COMPLETED" for t in resumed)
    assert len({t["id"] for t in resumed}) == 4
    assert [t["hp"] for t in resumed] == [t["hp"] for t in full]
    np.testing.assert_allclose([t["score"] for t in resumed], [t["score"] for t in full], atol=1e-6)
    tuning = read_metadata(killed)["tuning"]
    assert tuning["trials"] == 4 and tuning["best_hyperparameters"] == read_metadata(tmp_path / "full")["tuning"][
        "best_hyperparameters"]


@pytest.mark.large  # ~60 s: clean and corruption suites on two models, twice
def test_evaluate_killed_and_rerun_equals_uninterrupted(tmp_path):
    models = tmp_path / "models"
    for seed in ("1", "2"):
        assert main(["train", "--model", "test_mlp", "--epochs", "3", "--quiet", "--seed", seed,
                     "--out", str(models / f"m{seed}")]) == 0
    args = ["evaluate", models / "m1", models / "m2", "--suite", "clean,corruption", "--n", "200"]
    assert main([*map(str, args), "--out", str(tmp_path / "full")]) == 0
    killed = tmp_path / "killed"
    at = random.Random().randint(2, 30)

    def rows():
        try:
            return len(json.loads((killed / "report.json").read_text())["rows"])
        except (OSError, ValueError, KeyError):
            return 0
    kill_when([*args, "--out", killed], lambda: rows() >= at)
    assert main([*map(str, args), "--out", str(killed)]) == 0
    key = lambda r: r["key"]  # noqa: E731
    full = sorted(json.loads((tmp_path / "full" / "report.json").read_text())["rows"], key=key)
    again = sorted(json.loads((killed / "report.json").read_text())["rows"], key=key)
    assert [r["key"] for r in again] == [r["key"] for r in full]  # none lost, none twice
    assert [(r["accuracy"], r["n"]) for r in again] == [(r["accuracy"], r["n"]) for r in full]
