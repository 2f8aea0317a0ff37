"""Multi-worker training on real processes: two workers on 127.0.0.1 with TF_CONFIG and
MultiWorkerMirroredStrategy equal one worker on the same global batch, and a worker killed with
SIGKILL mid-epoch resumes, when the job is restarted with --resume, from its per-epoch checkpoint (training.checkpoints)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from training.checkpoints import completed_epochs

REPO = Path(__file__).resolve().parents[1]
HELPER = REPO / "tests" / "helpers" / "multiworker_run.py"


def free_ports(n: int) -> str:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = ",".join(str(s.getsockname()[1]) for s in socks)
    for s in socks:
        s.close()
    return ports


def start(index: int, ports: str, out: Path, *extra: str, **env) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", **env)
    return subprocess.Popen([sys.executable, str(HELPER), str(index), ports, str(out), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(procs, timeout=300) -> None:
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-3000:]


def weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as f:
        return [f[k] for k in f.files]


def max_gap(a, b) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> list[np.ndarray]:
    out = tmp_path_factory.mktemp("single")
    finish([start(0, "0", out, "single")])
    return weights(out / "worker0.npz")


@pytest.mark.large  # ~40 s: two TensorFlow workers and one single-worker run
def test_two_workers_equal_one_worker_on_the_same_global_batch(single, tmp_path):
    ports = free_ports(2)
    procs = [start(i, ports, tmp_path) for i in (0, 1)]
    finish(procs)
    two = [weights(tmp_path / f"worker{i}.npz") for i in (0, 1)]
    assert max_gap(two[0], two[1]) == 0.0  # the replicas stay in sync
    assert max_gap(two[0], single) < 1e-5  # ... and equal one worker on the same global batch
    meta = json.loads((tmp_path / "worker0" / "metadata.json").read_text())  # the chief exported
    assert meta["training"]["epochs"] == 3 and not (tmp_path / "worker1" / "metadata.json").exists()


@pytest.mark.large  # ~60 s: a killed two-worker job restarted from its backups
def test_worker_killed_mid_epoch_resumes_from_its_backup(single, tmp_path):
    ports = free_ports(2)
    procs = [start(i, ports, tmp_path, GLRZOO_SLOW_STEP="0.1") for i in (0, 1)]
    backup = tmp_path / "worker1" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            if completed_epochs(backup) >= 1:
                break
        except OSError:
            pass
        time.sleep(0.02)
    time.sleep(0.35)  # a few steps into the next epoch
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait()
    assert procs[0].poll() is None, "the chief finished before the worker was killed"
    done = completed_epochs(backup)
    assert 1 <= done < 3
    # the surviving worker cannot go on without its peer; a cluster manager restarts the whole job
    try:
        procs[0].wait(timeout=10)
    except subprocess.TimeoutExpired:
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
    assert not (tmp_path / "worker0" / "metadata.json").exists()
    ports = free_ports(2)
    finish([start(i, ports, tmp_path, GLRZOO_RESUME="1") for i in (0, 1)])
    resumed = weights(tmp_path / "worker0.npz")
    assert max_gap(resumed, weights(tmp_path / "worker1.npz")) == 0.0
    assert max_gap(resumed, single) < 1e-5  # nothing lost, nothing repeated
    meta = json.loads((tmp_path / "worker0" / "metadata.json").read_text())
    assert meta["training"]["resumed"] is True and meta["training"]["parts"][-1]["start_epoch"] == done
