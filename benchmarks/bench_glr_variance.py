"""Variance of the GLR estimator under each combination of variance reductions, on a fixed batch,
and the test accuracy each combination reaches after a short training run.

    python benchmarks/bench_glr_variance.py [--activation sigmoid] [--replications 10] [--train-epochs 1]

Variance: total variance ``sum_j Var(G_j)`` over ``--draws`` independent estimates of the gradient
of the 784-50-10 MLP on one fixed MNIST batch of 128, as a ratio to plain Monte Carlo (higher is
better). Training: ``--train-epochs`` epochs of MNIST with each combination, same seed and lr.
"""
from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import tensorflow as tf
from common import data_dir, peak_rss_mib

import zoo
from training.glr import glr
from training.run import TrainConfig, train
from zoo.data import load_dataset

OPTIONS = ("baseline", "antithetic", "qmc", "layerwise")


def combos():
    for bits in itertools.product([False, True], repeat=len(OPTIONS)):
        yield dict(zip(OPTIONS, bits))


def label(c):
    return "+".join(k for k, v in c.items() if v) or "plain"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--activation", default="sigmoid")
    p.add_argument("--loss", default="ce")
    p.add_argument("--replications", type=int, default=10)
    p.add_argument("--draws", type=int, default=40)
    p.add_argument("--train-epochs", type=int, default=1)
    args = p.parse_args()
    data = load_dataset("mnist", data_dir())
    model = zoo.create_model("glr_mlp", (28, 28, 1), 10, activation=args.activation, seed=0)
    x, y = tf.constant(data.x_train[:128]), tf.constant(data.y_train[:128])
    rows, plain = [], None
    for c in combos():
        est = glr(loss=args.loss, replications=args.replications, report_rse=False, **c)
        fn = tf.function(lambda step, est=est: est(model, x, y, step).grads)
        draws = np.stack([np.concatenate([np.ravel(g) for g in fn(tf.constant(i))]) for i in range(args.draws)])
        if c["layerwise"]:
            draws = draws * 2  # one of two layers per step: rescale so the mean is the full gradient
        var = draws.var(0, ddof=1).sum()
        plain = var if plain is None else plain
        acc = None
        if args.train_epochs:
            cfg = TrainConfig(model="glr_mlp", dataset="mnist", method="glr", epochs=args.train_epochs,
                              batch_size=128, lr=3e-3, activation=args.activation, loss=args.loss, verbose=0,
                              method_args=dict(replications=args.replications, **c))
            t = time.time()
            acc = train(cfg, data=data)["metrics"]["test_accuracy"]
        rows.append((label(c), plain / var, acc))
        print(f"{label(c):<36} variance cut {plain / var:6.2f}x" +
              (f"   test acc after {args.train_epochs} epoch(s) {100 * acc:.2f}% ({time.time() - t:.0f} s)"
               if acc is not None else ""), flush=True)
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
