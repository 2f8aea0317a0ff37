"""Robustness columns of the GLR authors' MNIST and Fashion-MNIST tables for saved_models/<data set>/*.

Xiao et al. 2020, section 3, and the authors' repository GLR_ADV.

    python benchmarks/bench_glr_robustness.py [--n 10000] [--out bench_out/glr_robustness]
    python benchmarks/bench_glr_robustness.py --dataset fashion_mnist --out bench_out/glr_robustness_fashion

As the authors did: a separate backprop substitute, MLP 784-100-50-10 with ReLU, makes FGSM and
L-BFGS examples at eps 0.13 (L-inf, [0, 1] pixels) from the test images it classifies correctly;
each GLR-table model classifies them (transfer / black-box). L-BFGS: targeted at the most similar
class, 3 binary-search rounds of 50 iterations, inside the eps box. Then the four corruptions at
severities 1-5 with the authors' constants, averaged over severities. Everything goes through
the evaluation harness (report.json / report.md in --out), so the attacks are made once per
source and reused for all five targets. Gradient-free SPSA is added as a check the authors did
not run: a model that resists transfer but not SPSA is not robust, only different.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import REPO, data_dir, peak_rss_mib

from evaluation.harness import evaluate
from evaluation.report import write_report
from training.substitute import train_substitute
from zoo.data import load_dataset

NAMES = ("bp_sigmoid_ce", "glr_sigmoid_ce", "glr_threshold_ce", "glr_sigmoid_01", "glr_threshold_01")
NAN = float("nan")
AUTHORS = {  # clean, L-BFGS, FGSM, Gaussian, impulse, glass blur, contrast (Fashion-MNIST: the first three only)
    "mnist": {
        "bp_sigmoid_ce": (96.34, 57.29, 28.37, 96.35, 91.95, 86.16, 67.25),
        "glr_sigmoid_ce": (95.54, 77.60, 45.91, 95.37, 93.78, 87.79, 76.98),
        "glr_threshold_ce": (95.33, 73.30, 54.35, 94.17, 95.01, 86.76, 68.13),
        "glr_sigmoid_01": (84.54, 73.50, 58.05, 82.53, 81.23, 79.25, 80.92),
        "glr_threshold_01": (90.22, 77.74, 61.36, 90.54, 90.10, 87.19, 79.81),
    },
    "fashion_mnist": {
        "bp_sigmoid_ce": (86.45, 49.61, 17.86, NAN, NAN, NAN, NAN),
        "glr_sigmoid_ce": (83.93, 53.54, 52.85, NAN, NAN, NAN, NAN),
        "glr_threshold_ce": (85.54, 52.92, 42.62, NAN, NAN, NAN, NAN),
        "glr_sigmoid_01": (58.68, 51.00, 46.35, NAN, NAN, NAN, NAN),
        "glr_threshold_01": (62.05, 60.15, 57.19, NAN, NAN, NAN, NAN),
    },
}
COLUMNS = ("clean", "L-BFGS", "FGSM", "gaussian", "impulse", "glass blur", "contrast")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10000, help="test images")
    p.add_argument("--spsa-n", type=int, default=500, help="test images for the SPSA check (0: skip)")
    p.add_argument("--out", default="bench_out/glr_robustness")
    p.add_argument("--dataset", default="mnist", choices=sorted(AUTHORS),
                   help="data set; the five models are read from saved_models/<data set>/")
    args = p.parse_args()
    t0 = time.time()
    authors = AUTHORS[args.dataset]
    data = load_dataset(args.dataset, data_dir())
    out = Path(args.out)
    sub = out.with_name(out.name + "_substitute_mlp")  # beside the report folder, which the harness wants empty
    train_substitute(data, epochs=5, lr=1e-3, out=sub)  # made once; reused when it exists
    models = [str(REPO / "saved_models" / args.dataset / n) for n in NAMES]
    x, y = data.x_test[:args.n], data.y_test[:args.n]
    result = evaluate(models, x, y, suites=("clean", "transfer", "corruption"), sources=[str(sub)], out=out,
                      eps_list=(0.13,), transfer_attacks=("lbfgs", "fgsm"), steps=10, log=print)
    if args.spsa_n:
        spsa = evaluate(models, x[:args.spsa_n], y[:args.spsa_n], suites=("gradfree",), out=out / "spsa",
                        eps_list=(0.13,), steps=20, log=print)
        result["rows"] += spsa["rows"]
        # white-box at the same eps; step nets also get PGD through a sigmoid stand-in and through
        # the likelihood-ratio input gradient, because their own gradient is zero (masking)
        wb = evaluate(models, x[:args.spsa_n], y[:args.spsa_n], suites=("whitebox",), out=out / "whitebox",
                      eps_list=(0.13,), whitebox_attacks=("pgd",), minimal_attacks=(), steps=20, log=print)
        result["rows"] += wb["rows"]
    write_report(result, out, title=f"GLR {args.dataset} table: robustness columns")
    rows = result["rows"]

    def acc(model, suite, **kw):
        match = [r for r in rows if r["model"] == model and r["suite"] == suite
                 and all(r.get(k) == v for k, v in kw.items())]
        return 100 * match[0]["accuracy"] if match else float("nan")

    def mean_severity(model, corruption):
        vals = [r["accuracy"] for r in rows if r["model"] == model and r.get("corruption") == corruption
                and r.get("severity")]
        return 100 * sum(vals) / len(vals)

    src = next(r for r in rows if r["suite"] == "transfer")["n"]
    print(f"\n{args.dataset} test n={len(y)}; transfer examples (substitute correct) n={src}; eps 0.13")
    print("| model | " + " | ".join(COLUMNS) + " | SPSA | white-box PGD | PGD, sigmoid stand-in | PGD, LR gradient |")
    print("|---|" + "---|" * (len(COLUMNS) + 4))
    for name in NAMES:
        ours = (acc(name, "clean"), acc(name, "transfer", attack="lbfgs"), acc(name, "transfer", attack="fgsm"),
                *(mean_severity(name, c) for c in ("gaussian_noise", "impulse_noise", "glass_blur", "contrast")))
        cells = [f"{o:.2f} ({a:.2f})" if a == a else f"{o:.2f} (-)" for o, a in zip(ours, authors[name])]
        extra = [acc(name, "gradfree", attack="spsa"), acc(name, "whitebox", attack="pgd"),
                 acc(name, "whitebox", attack="pgd_smoothed"), acc(name, "whitebox", attack="lr_pgd")]
        print(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(f"{v:.1f}" if v == v else "-" for v in extra) + " |")
    print(f"cells: ours (authors'); last four columns: eps 0.13 on the first {args.spsa_n} test points, no authors' "
          "numbers ('-': not applicable, the net has a usable gradient)")
    print(f"work: {result['counters']}; {time.time() - t0:.0f} s; peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
