"""GLR on deep families, side by side with backprop and the random-features control.

For one family, trains on the same data, epochs, batch size and schedule (any subset, ``--runs``):
  * ``bp``: backprop on the global loss (the reference),
  * ``glr``: the global likelihood-ratio estimator (one loss credits every noisy unit),
  * ``glr_local``: local, group-wise likelihood-ratio training (forward passes only),
  * ``control``: the same network with every layer below the output frozen at its initialisation and
    only the output layer trained by local GLR (``--top-only``): random features with a trained
    read-out. A GLR result counts by its margin over this control.
and prints test accuracy, wall time and peak memory for each (one process, one after another).

    python benchmarks/bench_glr_local.py cnn6 --epochs 2 --train-limit 10000
    python benchmarks/bench_glr_local.py lstm --epochs 3
    python benchmarks/bench_glr_local.py densenet --epochs 2
    # the global estimator's short-budget numbers in the README (constant learning rate):
    python benchmarks/bench_glr_local.py cnn6 --runs bp,glr --lr-schedule constant --glr-lr 1e-3 --layerwise \
        --epochs 2 --train-limit 10000
"""
from __future__ import annotations

import argparse
import time

from common import data_dir, peak_rss_mib

from training.run import TrainConfig, train
from zoo.data import load_dataset

SETTINGS = {
    "cnn6": dict(dataset="mnist", model_args={}),
    "densenet": dict(dataset="fashion_mnist", model_args={"depth": 10, "growth_rate": 12}),
    "lstm": dict(dataset="mnist_strokes", model_args={"units": 64}),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("family", choices=sorted(SETTINGS))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--bp-lr", type=float, default=1e-3)
    p.add_argument("--lr-schedule", choices=["cosine", "constant"], default="cosine")
    p.add_argument("--dataset", default=None, help="override the family's data set")
    p.add_argument("--runs", default="bp,glr_local,control", help="comma-separated subset of bp,glr,glr_local,control")
    g = p.add_argument_group("global GLR (--runs glr)")
    g.add_argument("--glr-lr", type=float, default=1e-3)
    g.add_argument("--replications", type=int, default=10)
    g.add_argument("--sigma", type=float, default=1.0)
    g.add_argument("--layerwise", action="store_true")
    args = p.parse_args()
    s = SETTINGS[args.family]
    dataset = args.dataset or s["dataset"]
    data = load_dataset(dataset, data_dir())
    common = dict(model=args.family, dataset=dataset, epochs=args.epochs, batch_size=args.batch_size,
                  train_limit=args.train_limit, test_limit=args.test_limit, model_args=s["model_args"], verbose=2,
                  lr_schedule=args.lr_schedule)
    configs = {
        "bp": TrainConfig(method="bp", lr=args.bp_lr, **common),
        "glr": TrainConfig(method="glr", lr=args.glr_lr, method_args=dict(
            replications=args.replications, sigma=args.sigma, baseline=True, layerwise=args.layerwise), **common),
        "glr_local": TrainConfig(method="glr_local", lr=args.lr, **common),
        "control": TrainConfig(method="glr_local", lr=args.lr, method_args={"top_only": True}, **common),
    }
    results = []
    for label in args.runs.split(","):
        t = time.time()
        meta = train(configs[label], data=data)
        results.append((label, 100 * meta["metrics"]["test_accuracy"], time.time() - t))
        print(f"{args.family} {label}: test accuracy {results[-1][1]:.2f}% after {args.epochs} epoch(s) on "
              f"{meta['dataset']['train_examples']} examples, {results[-1][2]:.0f} s", flush=True)
    print(f"\n{args.family}, {dataset}, {args.epochs} epoch(s), batch {args.batch_size}, {args.lr_schedule} schedule")
    print("| run | test accuracy | seconds |\n|---|---|---|")
    for label, acc, sec in results:
        print(f"| {label} | {acc:.2f}% | {sec:.0f} |")
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
