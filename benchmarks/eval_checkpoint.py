"""Test accuracy of an unfinished run's last checkpoint (``DIR/checkpoints``), without touching the run.

Rebuilds the trainer from the run's saved recipe (``checkpoints/run.json``), loads
``latest.weights.h5`` (network, estimator heads, optimizer) and prints the accuracy of the network
on the data set's full test split. Useful to follow a long run epoch by epoch.

    python benchmarks/eval_checkpoint.py runs/glr_local_cnn6
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import data_dir, peak_rss_mib

from training.registry import create_estimator
from training.run import TrainConfig, build_model, make_optimizer
from training.trainer import Trainer
from zoo.data import load_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="the --out folder of a run (holding checkpoints/)")
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
    trainer.load_weights(str(ckpt / "latest.weights.h5"))
    pred = np.argmax(model.predict(data.x_test, batch_size=500, verbose=0), -1)
    epochs = info["parts"][-1]["end_epoch"] if info.get("parts") else "?"
    print(f"{args.run}: after epoch {epochs}, test accuracy {100 * np.mean(pred == data.y_test):.2f}% "
          f"on {len(pred)} test examples; peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
