"""BANG vs regular training of LeNet on MNIST: clean accuracy and FGS success rate (BANG paper, Table 1).

    python benchmarks/bench_bang_lenet.py [--epochs 2] [--attack-n 1000]

FGS as in the paper: for each correctly classified test image, the smallest step ``eps`` on a grid
of 1/255 (pixel levels) such that ``clip(x + eps * sign(grad_x CE))`` changes the class; success if
one exists up to ``eps = 1``. Also printed: the fraction of images whose loss gradient is exactly
zero ("blank gradients": gradient masking, which the evaluation harness must not count as
robustness) and the mean L-inf of the successful perturbations in pixel levels (0-255).
Paper (10k iterations, batch 64): regular 99.16% / 90.33% success / 40.5 levels; BANG 99.22% /
1.68% / 5.5.
"""
from __future__ import annotations

import argparse

import numpy as np
import tensorflow as tf
from common import data_dir, peak_rss_mib

from training.losses import cross_entropy
from training.run import TrainConfig, train
from zoo.data import load_dataset


def fgs_minimal(model, x, y, levels=255):
    """Smallest eps (in 1/255 steps) for which FGS flips each image; inf where none does."""
    x, y = tf.constant(x), tf.constant(y)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(cross_entropy(model(x, training=False), y))
    sign = tf.sign(tape.gradient(loss, x))
    blank = tf.reduce_all(tf.equal(sign, 0.0), axis=[1, 2, 3]).numpy()
    found = np.full(len(y), np.inf)
    for k in range(1, levels + 1):
        open_ = np.isinf(found)
        if not open_.any():
            break
        adv = tf.clip_by_value(x + (k / 255.0) * sign, 0.0, 1.0)
        pred = np.argmax(model(adv, training=False).numpy(), -1)
        flipped = (pred != y.numpy()) & open_
        found[flipped] = k
    return found, blank


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--attack-n", type=int, default=1000)
    p.add_argument("--epsilon", type=float, default=0.815)
    p.add_argument("--beta", type=float, default=1.0)
    args = p.parse_args()
    data = load_dataset("mnist", data_dir())
    for label, method, margs in [("regular", "bp", {}), ("BANG", "bang", {"epsilon": args.epsilon, "beta": args.beta})]:
        meta = train(TrainConfig(model="lenet", dataset="mnist", method=method, epochs=args.epochs, batch_size=64,
                                 optimizer="momentum", lr=0.01, seed=0, verbose=2, method_args=margs), data=data)
        model = meta["model"]
        x, y = data.x_test[:args.attack_n], data.y_test[:args.attack_n]
        correct = np.argmax(model(x, training=False).numpy(), -1) == y
        eps, blank = fgs_minimal(model, x[correct], y[correct])
        success = np.isfinite(eps)
        print(f"{label:<8} clean {100 * meta['metrics']['test_accuracy']:.2f}%  FGS success {100 * success.mean():.2f}% "
              f"of {correct.sum()}  mean Linf {eps[success].mean() if success.any() else float('nan'):.1f} levels  "
              f"blank gradients {100 * blank.mean():.2f}%", flush=True)
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
