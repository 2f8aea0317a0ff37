"""Test accuracy of an unfinished run's last checkpoint (``DIR/checkpoints``), without touching the run.

Rebuilds the trainer from the run's saved recipe (``checkpoints/run.json``), loads the newest
checkpoint that verifies (:func:`training.checkpoints.restore_checkpoint`: network, estimator
heads, optimizer) and prints the accuracy of the network on the data set's full test split; with
``--pgd-n N``, also PGD accuracy (L-inf, random start, step 2.5 eps / steps) on the first N test
points. Useful to follow a long run epoch by epoch.

    python benchmarks/eval_checkpoint.py runs/glr_local_cnn6
    python benchmarks/eval_checkpoint.py runs/smallcnn_trades --pgd-n 500 --pgd-eps 0.3 --pgd-steps 40
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tensorflow as tf
from common import data_dir, peak_rss_mib

from training.adversarial import pgd_linf
from training.checkpoints import restore_checkpoint
from training.registry import create_estimator
from training.run import TrainConfig, build_model, make_optimizer
from training.trainer import Trainer
from zoo.data import load_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="the --out folder of a run (holding checkpoints/)")
    p.add_argument("--pgd-n", type=int, default=0, help="test points attacked by PGD (0: none)")
    p.add_argument("--pgd-eps", type=float, default=0.3)
    p.add_argument("--pgd-steps", type=int, default=40)
    args = p.parse_args()
    ckpt = Path(args.run) / "checkpoints"
    info = json.loads((ckpt / "run.json").read_text())
    recipe = {k: v for k, v in info["recipe"].items() if k in TrainConfig.__dataclass_fields__}
    config = TrainConfig(**recipe)
    data = load_dataset(config.dataset, data_dir())
    model = build_model(config, data)
    trainer = Trainer(model, create_estimator(config.method, loss=config.loss, **config.method_args))
    trainer.compile(optimizer=make_optimizer(config.optimizer, config.lr, config.weight_decay))
    trainer.build((None, *data.input_shape))
    trainer.optimizer.build(model.trainable_variables + (trainer.aux.trainable_variables if trainer.aux else []))
    epochs = restore_checkpoint(trainer, ckpt)
    pred = np.argmax(model.predict(data.x_test, batch_size=500, verbose=0), -1)
    line = f"{args.run}: after epoch {epochs}, test accuracy {100 * np.mean(pred == data.y_test):.2f}% on {len(pred)}"
    if args.pgd_n:
        x, y = tf.constant(data.x_test[:args.pgd_n]), tf.constant(data.y_test[:args.pgd_n])
        adv = [pgd_linf(model, x[i:i + 250], y[i:i + 250], args.pgd_eps, 2.5 * args.pgd_eps / args.pgd_steps,
                        args.pgd_steps, True, tf.constant([0, i], tf.int64)) for i in range(0, args.pgd_n, 250)]
        robust = np.argmax(model.predict(tf.concat(adv, 0), batch_size=500, verbose=0), -1) == data.y_test[:args.pgd_n]
        line += f"; PGD-{args.pgd_steps} at eps {args.pgd_eps:g} {100 * np.mean(robust):.2f}% on {args.pgd_n}"
    print(f"{line}; peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
