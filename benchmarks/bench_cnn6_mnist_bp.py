"""Train ``cnn6`` by backprop on MNIST for one epoch; print seconds per epoch, test accuracy, peak memory.

    python benchmarks/bench_cnn6_mnist_bp.py [--epochs 1] [--batch-size 128]
"""
from __future__ import annotations

import argparse
import time

from common import data_dir, peak_rss_mib

from training.run import TrainConfig, train
from zoo.data import load_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args()
    data = load_dataset("mnist", data_dir())
    config = TrainConfig(model="cnn6", dataset="mnist", epochs=args.epochs, batch_size=args.batch_size, lr=1e-3,
                         verbose=2)
    t = time.time()
    meta = train(config, data=data)
    total = time.time() - t
    m = meta["metrics"]
    print(f"cnn6 bp mnist: {m['train_seconds'] / args.epochs:.1f} s/epoch (fit), {total:.1f} s total, "
          f"test accuracy {100 * m['test_accuracy']:.2f}%, batch {args.batch_size}, peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
