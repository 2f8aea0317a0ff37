"""Peak memory of one GLR step (R replications) and one noisy vote (K votes) for each zoo model
at its default batch size, each model in a fresh subprocess (ru_maxrss is a per-process peak).

    python benchmarks/bench_memory.py [--replications 100] [--votes 100] [--models glr_mlp cnn6 ...]

Replications and votes run in row chunks sized from a 1 GiB activation budget
(``zoo.memory.rows_per_chunk``), so the peak should stay under 4 GiB whatever R or K.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from common import REPO

DEFAULTS = {"glr_mlp": ((28, 28, 1), 128), "lenet": ((28, 28, 1), 64), "cnn6": ((28, 28, 1), 32),
            "madry_cnn": ((28, 28, 1), 50), "densenet": ((32, 32, 3), 32), "lstm": ((117, 4), 32)}

CHILD = r"""
import json, sys, time, resource
sys.path.insert(0, {repo!r})
import numpy as np, tensorflow as tf, zoo
from training.glr import glr
from zoo.voting import vote_counts
from zoo.memory import rows_per_chunk
name, shape, batch, R, K = {name!r}, {shape!r}, {batch}, {R}, {K}
model = zoo.create_model(name, shape, 10)
x = tf.random.uniform((batch, *shape)); y = tf.zeros((batch,), tf.int32)
t = time.time(); glr(replications=R)(model, x, y, 0); t_glr = time.time() - t
rss_glr = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.time(); vote_counts(model, x, K, 0.5); t_vote = time.time() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(dict(model=name, batch=batch, rows_per_chunk=rows_per_chunk(model), glr_s=round(t_glr, 1),
                      vote_s=round(t_vote, 1), peak_after_glr_mib=round(rss_glr), peak_mib=round(rss))))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replications", type=int, default=100)
    p.add_argument("--votes", type=int, default=100)
    p.add_argument("--models", nargs="*", default=list(DEFAULTS))
    args = p.parse_args()
    for name in args.models:
        shape, batch = DEFAULTS[name]
        code = CHILD.format(repo=str(REPO), name=name, shape=shape, batch=batch, R=args.replications, K=args.votes)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-300:]
        row = json.loads(line) if line.startswith("{") else {"model": name, "error": line}
        flag = "" if row.get("peak_mib", 1e9) < 4096 else "  OVER 4 GiB"
        print(json.dumps(row) + flag, flush=True)


if __name__ == "__main__":
    main()
