"""Are likelihood-ratio-trained networks more robust? Each shipped GLR model beside its backprop twin.

The likelihood-ratio papers (Li et al., "Gradient-free training of neural networks with
likelihood ratios", tables of transfer/L-BFGS robustness; Jiang et al., ICLR 2024, "One forward is
enough", sec. 5) report that LR-trained networks resist adversarial examples better. This checks
the claim on deep networks: for each pair (same architecture, data and budget; only the gradient
estimator differs) it prints clean accuracy, transfer FGSM and PGD from a separate backprop
substitute (made here, not shipped), SPSA (gradient-free), white-box PGD, the corruption mean
(mA: Xiao, Peng, Hong, Ke and Yang 2020, eq. 6) and the masking flags. Image models
only: the pixel attacks and corruptions are defined on ``[0, 1]`` images, so the stroke LSTM pair
gets clean accuracy and noisy voting instead.

    python benchmarks/bench_glr_pairs.py [--n 500] [--pairs cnn6,densenet,densenet_gridpool,lstm]
    # the README's white-box rows: clean + white-box with AutoAttack at eps 0.1 on 200 points
    python benchmarks/bench_glr_pairs.py --pairs cnn6 --n 200 --suites clean,whitebox --eps 0.1 --autoattack
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import REPO, data_dir, peak_rss_mib
from make_pretrained import substitute

from evaluation.harness import evaluate
from zoo.data import load_dataset

PAIRS = {
    "cnn6": ("mnist", "mnist/cnn6_glr_local", "mnist/cnn6_bp"),
    "densenet": ("fashion_mnist", "fashion_mnist/densenet_glr_local", "fashion_mnist/densenet_bp"),
    "densenet_gridpool": ("fashion_mnist", "fashion_mnist/densenet_gridpool_glr_local", "fashion_mnist/densenet_gridpool_bp"),
    "lstm": ("mnist_strokes", "mnist_strokes/lstm_glr_local", "mnist_strokes/lstm"),
}


def pick(rows, model, suite, **kw):
    hits = [r["accuracy"] for r in rows if r["model"] == model and r["suite"] == suite
            and all(r.get(k) == v for k, v in kw.items())]
    return f"{100 * hits[0]:.1f}" if hits else "-"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=500, help="test points per pair (the first N of the test set)")
    p.add_argument("--pairs", default=",".join(PAIRS), help="comma-separated subset of " + ",".join(PAIRS))
    p.add_argument("--work", default="bench_out/glr_pairs", help="substitutes and reports (not shipped)")
    p.add_argument("--suites", default="clean,whitebox,transfer,gradfree,corruption,voting",
                   help="harness suites for the image pairs (the LSTM pair always gets clean,voting)")
    p.add_argument("--eps", default="0.1,0.3", help="comma-separated L-inf radii")
    p.add_argument("--autoattack", action="store_true",
                   help="add the AutoAttack ensemble (APGD-CE + APGD-T) to the white-box suite (slow)")
    a = p.parse_args()
    work = Path(a.work)
    eps = tuple(float(e) for e in a.eps.split(","))
    e = " / ".join(f"{v:g}" for v in eps)
    header = (f"| pair | model | clean | transfer FGSM {e} | transfer PGD {e} | SPSA {e} | white-box PGD {e} "
              f"| AutoAttack {e} | corruptions mA | s=1.0, 1 / 20 votes | masking flags |")
    lines = [header, "|---" * 11 + "|"]
    for pair in a.pairs.split(","):
        dataset, glr, bp = PAIRS[pair]
        t = time.time()
        data = load_dataset(dataset, data_dir())
        x, y = data.x_test[:a.n], data.y_test[:a.n]
        images = len(data.input_shape) == 3
        dirs = [str(REPO / "saved_models" / m) for m in (glr, bp)]
        suites = tuple(a.suites.split(",")) if images else ("clean", "voting")
        result = evaluate(dirs, x, y, suites=suites,
                          sources=[substitute(dataset, work)] if images and "transfer" in suites else [],
                          out=work / pair, eps_list=eps, steps=20, whitebox_attacks=("fgsm", "pgd"),
                          reference_attack="autoattack" if a.autoattack else None,
                          unbounded_eps=1.0 if not a.autoattack else None, stddevs=(0.0, 1.0), votes_list=(1, 20),
                          vote_repeats=1, dataset=dataset, log=lambda _: None)
        rows, flags = result["rows"], result["flags"]
        for model in (glr, bp):
            name = Path(model).name

            def two(suite, **kw):
                return " / ".join(pick(rows, name, suite, eps=e, **kw) for e in eps)
            lines.append(f"| {pair} | {model} | {pick(rows, name, 'clean')} | {two('transfer', attack='fgsm')} "
                         f"| {two('transfer', attack='pgd')} | {two('gradfree')} | {two('whitebox', attack='pgd')} "
                         f"| {two('whitebox', attack='autoattack')} "
                         f"| {pick(rows, name, 'corruption', corruption='mean (eq. 6)')} "
                         f"| {pick(rows, name, 'voting', stddev=1.0, votes=1)} / "
                         f"{pick(rows, name, 'voting', stddev=1.0, votes=20)} "
                         f"| {'; '.join(flags.get(name, [])) or 'none'} |")
        print(f"{pair}: {time.time() - t:.0f} s", flush=True)
    print(f"\n{a.n} test points per pair; accuracies in %; L-inf eps in pixel units; 20 attack steps "
          "(AutoAttack: its own 100-step schedule)\n")
    print("\n".join(lines))
    print(f"\npeak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
