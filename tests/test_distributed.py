"""Backprop, BANG and GLR under MirroredStrategy over two logical CPUs equal a single-device run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.large  # ~15-20 s each: two-replica and single-device runs
@pytest.mark.parametrize("method", ["bp", "bang", "glr"])
def test_mirrored_matches_single_device(method):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, str(REPO / "tests" / "helpers" / "distributed_run.py"), method],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["max_moved"] > 1e-2  # training really changed the weights ...
    assert result["max_gap"] < 1e-5   # ... identically on one device and on two replicas
