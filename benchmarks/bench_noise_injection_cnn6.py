"""Noise-injected ``cnn6`` on MNIST (multiplicative noise): accuracy under inference noise, no voting
and with votes, for models trained with train stddev 0 and 1.0 (Qin and Vucinic 2018, section 3; the paper's 0 dB
results are 21.1% plain, 77.7% noise-trained, 99.5% noise-trained with 20 votes).

    python benchmarks/bench_noise_injection_cnn6.py [--epochs 2] [--train-stddevs 0 1.0] [--test-limit 2000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from common import data_dir, peak_rss_mib

from training.run import TrainConfig, train
from zoo.data import load_dataset
from zoo.voting import vote_predict


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-stddevs", type=float, nargs="+", default=[0.0, 1.0])
    p.add_argument("--infer-stddevs", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    p.add_argument("--votes", type=int, nargs="+", default=[1, 20])
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--test-limit", type=int, default=2000)
    args = p.parse_args()
    data = load_dataset("mnist", data_dir())
    print("train_stddev votes " + " ".join(f"s={s:g}" for s in args.infer_stddevs))
    for ts in args.train_stddevs:
        t = time.time()
        meta = train(TrainConfig(model="cnn6", dataset="mnist", epochs=args.epochs, batch_size=128, lr=1e-3,
                                 noise="multiplicative", train_stddev=ts, train_limit=args.train_limit,
                                 test_limit=args.test_limit, verbose=2), data=data)
        model = meta["model"]
        x, y = data.x_test[:args.test_limit], data.y_test[:args.test_limit]
        for votes in args.votes:
            accs = [100 * float(np.mean(vote_predict(model, x, votes, s).numpy() == y)) for s in args.infer_stddevs]
            print(f"{ts:<12g} {votes:<5d} " + " ".join(f"{a:5.1f}" for a in accs), flush=True)
        print(f"(trained in {time.time() - t:.0f} s)")
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
