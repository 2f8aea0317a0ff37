"""GLR on deep families, side by side with backprop and the random-features control.

For one family, trains on the same data, epochs, batch size and schedule (any subset, ``--runs``):
  * ``bp``: backprop on the global loss (the reference),
  * ``glr``: the global likelihood-ratio estimator (one loss credits every noisy unit),
  * ``glr_local``: local, group-wise likelihood-ratio training (forward passes only),
  * ``control``: the same network with every layer below the output frozen at its initialisation and
    only the output layer trained by local GLR (``--top-only``): random features with a trained
    read-out. A GLR result counts by its margin over this control.
and prints test accuracy, wall time and peak memory for each (one process, one after another).

``--probe-epochs K`` adds the representation-learning protocol: after each run, its read-out (the
output layer) is trained again for ``K`` epochs by local GLR with everything below frozen (a
linear probe of the run's features, started from its weights, with a fresh schedule), so learned
and random features are compared with equally converged read-outs. The GLR run and the control
are then compared on the same test points by McNemar's exact test
(:func:`evaluation.metrics.paired_comparison`).

``--linear-probe`` is the converged version of the same protocol, the one representation learning
uses (e.g. Chen et al. 2020, SimCLR's linear evaluation): the features the output layer reads
(standardised) are fit by multinomial logistic regression to convergence (scikit-learn, lbfgs),
the regularisation picked on the last sixth of the training set from a small grid, and the
test predictions of the GLR run and the control are compared by McNemar's exact test. No
read-out budget can then favour either side.

    python benchmarks/bench_glr_local.py cnn6 --epochs 2 --train-limit 10000
    python benchmarks/bench_glr_local.py lstm --epochs 3
    python benchmarks/bench_glr_local.py densenet --epochs 2
    python benchmarks/bench_glr_local.py densenet_gridpool --epochs 5 --probe-epochs 2   # the README's probe rows
    # the global estimator's short-budget numbers in the README (constant learning rate):
    python benchmarks/bench_glr_local.py cnn6 --runs bp,glr --lr-schedule constant --glr-lr 1e-3 --layerwise \
        --epochs 2 --train-limit 10000
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import data_dir, peak_rss_mib

from evaluation.metrics import paired_comparison
from training.run import TrainConfig, train
from zoo.data import load_dataset
from zoo.noise import noisy_layers
from zoo.noise_context import noise_override

PROBE_C = (0.003, 0.01, 0.1, 1.0)  # inverse L2 strengths tried by --linear-probe

SETTINGS = {  # local: glr_local's options for the family (the control takes the same)
    "cnn6": dict(dataset="mnist", model_args={}, local={}),
    "densenet": dict(dataset="fashion_mnist", model_args={"depth": 10, "growth_rate": 12}, local={}),
    "densenet_gridpool": dict(dataset="fashion_mnist", model_args={"depth": 10, "growth_rate": 12},
                              local={"head_input": "concat", "sigma": 0.1}),
    "lstm": dict(dataset="mnist_strokes", model_args={"units": 64},
                 local={"lstm_steps": 16, "lstm_credit": 4, "sigma": 0.1}),  # the recipe's objective
}


def correct(model, data) -> np.ndarray:
    """``[N]`` booleans: the noise-free model's test predictions that match the labels."""
    with noise_override(0.0):
        logits = model.predict(data.x_test, batch_size=500, verbose=0)
    return np.argmax(logits, -1) == data.y_test


def linear_probe(model, data, grid=PROBE_C) -> tuple[np.ndarray, float]:
    """Converged linear probe: ``([N_test] booleans, chosen C)`` of logistic regression on the
    noise-free features the output layer reads, standardised; ``C`` picked on the last sixth of
    the training set, then refit on all of it."""
    import keras
    from sklearn.linear_model import LogisticRegression

    features = keras.Model(model.input, noisy_layers(model)[-1].input)
    with noise_override(0.0):
        f_train, f_test = (features.predict(x, batch_size=500, verbose=0).reshape(len(x), -1)
                           for x in (data.x_train, data.x_test))
    fit = len(f_train) - len(f_train) // 6
    mu, sd = f_train[:fit].mean(0), f_train[:fit].std(0) + 1e-6
    f_train, f_test = (f_train - mu) / sd, (f_test - mu) / sd

    def model_with(c, rows):
        return LogisticRegression(C=c, max_iter=300).fit(f_train[:rows], data.y_train[:rows])

    best = max(grid, key=lambda c: model_with(c, fit).score(f_train[fit:], data.y_train[fit:]))
    return model_with(best, len(f_train)).predict(f_test) == data.y_test, best


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
    p.add_argument("--probe-epochs", type=int, default=0,
                   help="after each run, train its read-out alone for this many epochs by local GLR (0: no probe)")
    p.add_argument("--linear-probe", action="store_true",
                   help="after each run, fit a logistic regression to convergence on its output layer's input features")
    g = p.add_argument_group("global GLR (--runs glr)")
    g.add_argument("--glr-lr", type=float, default=1e-3)
    g.add_argument("--replications", type=int, default=10)
    g.add_argument("--sigma", type=float, default=1.0)
    g.add_argument("--layerwise", action="store_true")
    args = p.parse_args()
    if args.probe_epochs and args.linear_probe:
        p.error("--probe-epochs and --linear-probe are two versions of one protocol: pass one")
    s = SETTINGS[args.family]
    dataset = args.dataset or s["dataset"]
    data = load_dataset(dataset, data_dir()).subset(args.train_limit, args.test_limit)  # the paired test's points too
    common = dict(model=args.family, dataset=dataset, epochs=args.epochs, batch_size=args.batch_size,
                  train_limit=args.train_limit, test_limit=args.test_limit, model_args=s["model_args"], verbose=2,
                  lr_schedule=args.lr_schedule)
    configs = {
        "bp": TrainConfig(method="bp", lr=args.bp_lr, **common),
        "glr": TrainConfig(method="glr", lr=args.glr_lr, method_args=dict(
            replications=args.replications, sigma=args.sigma, baseline=True, layerwise=args.layerwise), **common),
        "glr_local": TrainConfig(method="glr_local", lr=args.lr, method_args=dict(s["local"]), **common),
        "control": TrainConfig(method="glr_local", lr=args.lr, method_args={**s["local"], "top_only": True}, **common),
    }
    work = Path(tempfile.mkdtemp(prefix="bench_glr_local-"))
    results, right = [], {}
    for label in args.runs.split(","):
        t = time.time()
        config = configs[label]
        if args.probe_epochs:
            config.out = str(work / label)
        meta = train(config, data=data)
        row = [label, 100 * meta["metrics"]["test_accuracy"], None, time.time() - t]
        print(f"{args.family} {label}: test accuracy {row[1]:.2f}% after {args.epochs} epoch(s) on "
              f"{meta['dataset']['train_examples']} examples, {row[3]:.0f} s", flush=True)
        if args.probe_epochs:
            probe = TrainConfig(method="glr_local", lr=args.lr, method_args={**s["local"], "top_only": True},
                                init_from=config.out, **{**common, "epochs": args.probe_epochs})
            meta = train(probe, data=data)
            row[2], row[3] = 100 * meta["metrics"]["test_accuracy"], time.time() - t
            print(f"{args.family} {label}: {row[2]:.2f}% after a {args.probe_epochs}-epoch read-out probe", flush=True)
        if args.linear_probe:
            probed, c_best = linear_probe(meta["model"], data)
            row[2], row[3] = 100 * probed.mean(), time.time() - t
            right[label] = probed
            print(f"{args.family} {label}: {row[2]:.2f}% by a converged linear probe (C = {c_best})", flush=True)
        else:
            right[label] = correct(meta["model"], data)
        results.append(row)
    print(f"\n{args.family}, {dataset}, {args.epochs} epoch(s), batch {args.batch_size}, {args.lr_schedule} schedule"
          + (f", then a {args.probe_epochs}-epoch read-out probe (local GLR, layers below frozen)" if args.probe_epochs
             else "") + (", then a converged linear probe" if args.linear_probe else ""))
    print("| run | test accuracy | after the probe | seconds |\n|---|---|---|---|")
    for label, acc, probed, sec in results:
        print(f"| {label} | {acc:.2f}% | {'-' if probed is None else f'{probed:.2f}%'} | {sec:.0f} |")
    if "glr_local" in right and "control" in right:
        c = paired_comparison(right["glr_local"], right["control"])
        print(f"glr_local vs control on the same {c['n']} test points: only glr_local right on {c['only_a']}, "
              f"only the control on {c['only_b']}; McNemar exact p = {c['p_value']:.3g}")
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
