"""GLR on MNIST: the authors' 784-50-10 table (also on Fashion-MNIST), and GLR speed against backprop, side by side.

    python benchmarks/bench_glr_mnist.py speed            # s/epoch: bp, GLR R=10, GLR R=100 (+ ratios)
    python benchmarks/bench_glr_mnist.py to95 [--epochs 30]  # wall time to 95% test accuracy: bp vs GLR
    python benchmarks/bench_glr_mnist.py table [--out saved_models/mnist]   # the five-row accuracy table
    python benchmarks/bench_glr_mnist.py table --dataset fashion_mnist [--out saved_models/fashion_mnist]

The table's recipes (Xiao et al. 2020, section 3, and the authors' repository GLR_ADV): MLP 784-50-10,
batch 128 (32 for threshold + 0-1 loss),
AdaGrad/Adam as listed in PAPER_RECIPES, weight decay 1e-4 where the authors used it, GLR noise Gaussian.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from common import data_dir, epoch_timer, peak_rss_mib

from training.run import TrainConfig, train
from zoo.data import load_dataset

AUTHORS = {  # clean test accuracy (%) in Xiao et al. 2020, per data set
    "mnist": {"bp_sigmoid_ce": 96.34, "glr_sigmoid_ce": 95.54, "glr_threshold_ce": 95.33,
              "glr_sigmoid_01": 84.54, "glr_threshold_01": 90.22},
    "fashion_mnist": {"bp_sigmoid_ce": 86.45, "glr_sigmoid_ce": 83.93, "glr_threshold_ce": 85.54,
                      "glr_sigmoid_01": 58.68, "glr_threshold_01": 62.05},
}

PAPER_RECIPES = {
    "bp_sigmoid_ce": dict(method="bp", activation="sigmoid", loss="ce", optimizer="adam", lr=1e-3, epochs=12),
    "glr_sigmoid_ce": dict(method="glr", activation="sigmoid", loss="ce", optimizer="adam", lr=3e-3, epochs=12,
                           method_args=dict(replications=10, sigma=1.0, baseline=True)),
    "glr_threshold_ce": dict(method="glr", activation="threshold", loss="ce", optimizer="adam", lr=3e-3, epochs=12,
                             method_args=dict(replications=100, sigma=1.0, baseline=True)),
    "glr_sigmoid_01": dict(method="glr", activation="sigmoid", loss="zero_one", optimizer="adam", lr=3e-3,
                           epochs=24, method_args=dict(replications=100, sigma=1.0, baseline=True)),
    "glr_threshold_01": dict(method="glr", activation="threshold", loss="zero_one", optimizer="adam", lr=3e-3,
                             epochs=24, method_args=dict(replications=100, sigma=1.0, baseline=True)),
}


def speed(data, epochs: int = 2) -> None:
    """Seconds per epoch in steady state (the last epoch; the first also traces the step function)."""
    rows = []
    for label, method, args in [("bp", "bp", {}), ("glr R=10", "glr", {"replications": 10}),
                                ("glr R=100", "glr", {"replications": 100}),
                                ("glr R=100 antithetic", "glr", {"replications": 100, "antithetic": True}),
                                ("glr R=100 base+layerw", "glr", {"replications": 100, "baseline": True,
                                                                  "layerwise": True}),
                                ("glr R=100 shared", "glr", {"replications": 100, "shared_noise": True}),
                                ("glr R=100 shared+base", "glr", {"replications": 100, "shared_noise": True,
                                                                  "baseline": True})]:
        config = TrainConfig(model="glr_mlp", dataset="mnist", method=method, epochs=epochs, batch_size=128,
                             optimizer="adam", lr=3e-3, activation="sigmoid", verbose=0, method_args=args)
        timer = epoch_timer()
        meta = train(config, data=data, callbacks=[timer])
        rows.append((label, timer.seconds[-1], meta["metrics"]["test_accuracy"]))
    bp_s = rows[0][1]
    for label, sec, acc in rows:
        print(f"{label:<20} {sec:6.2f} s/epoch (steady)  ratio to bp {sec / bp_s:5.2f}  test acc after {epochs} epochs "
              f"{100 * acc:.2f}%")
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


def time_to_95(data, epochs: int = 30) -> None:
    """Wall seconds of training until the test accuracy first reaches 95% (checked after every epoch;
    evaluation time not counted), backprop and GLR side by side in one process, same MLP and batch."""
    import keras

    class Until95(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.train_s, self.reached, self.epoch = 0.0, None, None

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.train_s += time.perf_counter() - self._t
            acc = self.model.evaluate(data.x_test, data.y_test, batch_size=1000, verbose=0, return_dict=True)
            if self.reached is None and acc["accuracy"] >= 0.95:
                self.reached, self.epoch = self.train_s, epoch + 1
                self.model.stop_training = True

    rows = []
    for label, method, lr, args in [("bp", "bp", 1e-3, {}),
                                    ("glr R=100 shared+base", "glr", 3e-3, {"replications": 100, "shared_noise": True,
                                                                             "baseline": True}),
                                    ("glr R=100 base", "glr", 3e-3, {"replications": 100, "baseline": True})]:
        config = TrainConfig(model="glr_mlp", dataset="mnist", method=method, epochs=epochs, batch_size=128,
                             optimizer="adam", lr=lr, activation="sigmoid", verbose=0, method_args=args)
        cb = Until95()
        train(config, data=data, callbacks=[cb])
        rows.append((label, cb.reached, cb.epoch))
    bp_s = rows[0][1]
    for label, sec, ep in rows:
        if sec is None:
            print(f"{label:<22} did not reach 95% in {epochs} epochs")
        else:
            print(f"{label:<22} 95% after {ep} epochs, {sec:6.1f} s of training  ratio to bp {sec / bp_s:5.2f}")
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


def table(data, out: str | None, only: list[str] | None, dataset: str = "mnist") -> None:
    """Train the five rows of PAPER_RECIPES on `dataset` (same recipes for MNIST and Fashion-MNIST, as the
    authors did) and print each row's clean test accuracy beside the authors'."""
    results = {}
    for name, recipe in PAPER_RECIPES.items():
        if only and name not in only:
            continue
        recipe = dict(recipe)
        config = TrainConfig(model="glr_mlp", dataset=dataset, batch_size=128, seed=0, verbose=2,
                             out=str(Path(out) / name) if out else None, overwrite=True, **recipe)
        t = time.time()
        command = "python " + " ".join(shlex.quote(a) for a in sys.argv) + f"  # row {name}"
        meta = train(config, data=data, command=command)
        acc = 100 * meta["metrics"]["test_accuracy"]
        results[name] = acc
        print(f"{name:<18} clean {acc:6.2f}%  (authors {AUTHORS[dataset][name]:.2f}%)  {time.time() - t:.0f} s", flush=True)
    print(json.dumps(results))
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["speed", "to95", "table"])
    p.add_argument("--epochs", type=int, default=2, help="epochs for 'speed' (the last one is timed)")
    p.add_argument("--out", default=None, help="export the table's models under this folder")
    p.add_argument("--only", nargs="*", default=None, help="rows of the table to run")
    p.add_argument("--dataset", default="mnist", choices=sorted(AUTHORS),
                   help="data set of the table (speed and to95 always use mnist)")
    args = p.parse_args()
    data = load_dataset(args.dataset if args.what == "table" else "mnist", data_dir())
    if args.what == "speed":
        speed(data, args.epochs)
    elif args.what == "to95":
        time_to_95(data, max(args.epochs, 30))
    else:
        table(data, args.out, args.only, args.dataset)


if __name__ == "__main__":
    main()
