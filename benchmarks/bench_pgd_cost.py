"""Cost of PGD-20 against its floor: 20 forward-and-backward passes of the same model on the same images.

    python benchmarks/bench_pgd_cost.py [--model cnn6] [--n 10000] [--chunk 500]

PGD-20 (L-inf eps 0.3, random start, cleverhans through :func:`evaluation.attacks.attack`) must
compute 20 input gradients; the floor is a compiled ``grad_x CE(model(x), y)`` called 20 times.
Both run chunk by chunk, interleaved (chunk k of the floor, then chunk k of PGD), so machine load
hits both alike; one warm-up chunk each is not timed. Target: ratio <= 1.25. The weights are the
untrained initialization (the cost does not depend on them). Prints the peak RSS.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import tensorflow as tf
from common import data_dir, peak_rss_mib

import zoo
from evaluation.attacks import attack, logits_fn
from zoo.data import load_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cnn6")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--chunk", type=int, default=500)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    data = load_dataset("mnist", data_dir())
    x, y = data.x_test[:args.n], data.y_test[:args.n].astype(np.int64)
    model = zoo.create_model(args.model, data.input_shape, 10)
    fn = logits_fn(model)

    @tf.function
    def fwd_bwd(xb, yb):
        with tf.GradientTape() as tape:
            tape.watch(xb)
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=fn(xb))
        return tape.gradient(loss, xb)

    def floor(xb, yb):
        for _ in range(args.steps):
            g = fwd_bwd(xb, yb)
        return g.numpy()

    def pgd(xb, yb):
        return attack("pgd", fn, xb, yb, eps=0.3, steps=args.steps, step_size=0.01).numpy()

    warm = (tf.constant(x[:args.chunk]), tf.constant(y[:args.chunk]))
    floor(*warm)
    pgd(*warm)
    t_floor = t_pgd = 0.0
    acc = []
    for i in range(0, len(x), args.chunk):
        xb, yb = tf.constant(x[i:i + args.chunk]), tf.constant(y[i:i + args.chunk])
        t = time.perf_counter()
        floor(xb, yb)
        t_floor += time.perf_counter() - t
        t = time.perf_counter()
        adv = pgd(xb, yb)
        t_pgd += time.perf_counter() - t
        acc.append(np.mean(np.argmax(model(adv, training=False), -1) == y[i:i + args.chunk]))
    print(f"{args.model}, {len(x)} MNIST test images, chunks of {args.chunk}, {args.steps} steps")
    print(f"floor ({args.steps} x fwd+bwd): {t_floor:7.1f} s")
    print(f"PGD-{args.steps}:               {t_pgd:7.1f} s")
    print(f"ratio PGD / floor: {t_pgd / t_floor:.3f}  (target <= 1.25)")
    print(f"(accuracy under PGD of the untrained net: {100 * np.mean(acc):.1f}%)")
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
