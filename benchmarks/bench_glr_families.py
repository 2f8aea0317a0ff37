"""GLR beyond the authors' MLP: ``cnn6`` and a small ``densenet`` on MNIST, the ``lstm`` on pen strokes.

Each family is trained by backprop and by GLR with the same data, epochs and batch size, and the
script prints test accuracy and seconds for both, plus peak memory.

    python benchmarks/bench_glr_families.py cnn6 [--epochs 2] [--train-limit 20000]
    python benchmarks/bench_glr_families.py densenet --epochs 1 --train-limit 10000
    python benchmarks/bench_glr_families.py lstm --epochs 2
"""
from __future__ import annotations

import argparse
import time

from common import data_dir, peak_rss_mib

from training.run import TrainConfig, train
from zoo.data import load_dataset

SETTINGS = {
    "cnn6": dict(dataset="mnist", model_args={}),
    "densenet": dict(dataset="mnist", model_args={"depth": 10, "growth_rate": 12}),
    "lstm": dict(dataset="mnist_strokes", model_args={"units": 64}),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("family", choices=sorted(SETTINGS))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--replications", type=int, default=10)
    p.add_argument("--sigma", type=float, default=1.0)
    p.add_argument("--glr-lr", type=float, default=1e-3)
    p.add_argument("--layerwise", action="store_true")
    p.add_argument("--skip-bp", action="store_true")
    args = p.parse_args()
    s = SETTINGS[args.family]
    data = load_dataset(s["dataset"], data_dir())
    common = dict(model=args.family, dataset=s["dataset"], epochs=args.epochs, batch_size=args.batch_size,
                  train_limit=args.train_limit, test_limit=args.test_limit, model_args=s["model_args"], verbose=2)
    runs = [] if args.skip_bp else [("bp", TrainConfig(method="bp", lr=1e-3, **common))]
    runs.append(("glr", TrainConfig(method="glr", lr=args.glr_lr, method_args=dict(
        replications=args.replications, sigma=args.sigma, baseline=True, layerwise=args.layerwise), **common)))
    for label, config in runs:
        t = time.time()
        meta = train(config, data=data)
        print(f"{args.family} {label}: test accuracy {100 * meta['metrics']['test_accuracy']:.2f}% after "
              f"{args.epochs} epoch(s) on {meta['dataset']['train_examples']} examples, {time.time() - t:.0f} s",
              flush=True)
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
