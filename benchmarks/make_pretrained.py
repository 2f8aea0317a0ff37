"""Train, evaluate and describe the pretrained set in saved_models/ with the project's own commands.

    python benchmarks/make_pretrained.py [--only NAME ...] [--retrain] [--n 1000]

Every model is trained by ``glrzoo train`` (the exact command lands in its metadata), then the
evaluation harness measures it on ``--n`` test points (clean; transfer FGSM/PGD from a backprop
substitute made here and not shipped; the four corruptions; noisy voting), and a headline of those
numbers is written into the model's ``metadata.json`` under ``evaluation``. Finally
``saved_models/README.md`` and ``index.json`` are regenerated from the metadata (``glrzoo pretrained readme``).
The five MNIST MLPs of the GLR table come from ``benchmarks/bench_glr_mnist.py table --out
saved_models/mnist``; this script only evaluates them.
"""
from __future__ import annotations

import argparse
import os
import shlex
import time
from pathlib import Path

from common import REPO, data_dir, peak_rss_mib

from evaluation.harness import evaluate
from glrzoo.cli import main as glrzoo
from zoo.data import load_dataset
from zoo.export import read_metadata, update_metadata
from zoo.pretrained import write_index, write_readme

ROOT = REPO / "saved_models"
SMALL_CNN = '{"filters": [16, 16, 32, 32], "dense": 64}'
DENSENET10 = '{"depth": 10, "growth_rate": 12}'
RECIPES: dict[str, list[str]] = {
    "digits/glr_threshold_mlp": ["--model", "glr_mlp", "--dataset", "digits", "--method", "glr", "--activation",
                                 "threshold", "--replications", "100", "--baseline", "--epochs", "30",
                                 "--batch-size", "32", "--lr", "0.003"],
    "mnist/cnn6_noise1.0": ["--model", "cnn6", "--dataset", "mnist", "--noise", "multiplicative", "--train-stddev",
                            "1.0", "--epochs", "2", "--lr", "0.002", "--model-args", SMALL_CNN],
    "mnist/lenet_bang": ["--model", "lenet", "--dataset", "mnist", "--method", "bang", "--bang-epsilon", "0.815",
                         "--bang-beta", "1.0", "--epochs", "2", "--batch-size", "64", "--lr", "0.001",
                         "--model-args", '{"filters": [10, 20], "dense": 100}'],
    "mnist/madry_cnn_pgd": ["--model", "madry_cnn", "--dataset", "mnist", "--adversarial", "pgd", "--adv-eps", "0.3",
                            "--adv-step", "0.05", "--adv-iters", "7", "--epochs", "2", "--lr", "0.001",
                            "--model-args", '{"filters": [16, 32], "dense": 128}'],
    "mnist_strokes/lstm": ["--model", "lstm", "--dataset", "mnist_strokes", "--method", "bp", "--epochs", "8",
                           "--lr", "0.003", "--lr-schedule", "cosine", "--model-args", '{"units": 64}'],
    # GLR models of the GLR issue and their backprop twins (same architecture, data, epochs, schedule)
    "mnist/cnn6_bp": ["--model", "cnn6", "--dataset", "mnist", "--method", "bp", "--epochs", "6", "--lr", "0.001",
                      "--lr-schedule", "cosine"],
    "mnist/cnn6_glr_local": ["--model", "cnn6", "--dataset", "mnist", "--method", "glr_local", "--epochs", "6",
                             "--lr", "0.003", "--lr-schedule", "cosine"],
    "fashion_mnist/densenet_bp": ["--model", "densenet", "--dataset", "fashion_mnist", "--method", "bp", "--epochs",
                                  "4", "--lr", "0.001", "--lr-schedule", "cosine", "--model-args", DENSENET10],
    "fashion_mnist/densenet_glr_local": ["--model", "densenet", "--dataset", "fashion_mnist", "--method", "glr_local",
                                         "--epochs", "4", "--lr", "0.003", "--lr-schedule", "cosine", "--model-args",
                                         DENSENET10],
    "mnist_strokes/lstm_glr_local": ["--model", "lstm", "--dataset", "mnist_strokes", "--method", "glr_local",
                                     "--epochs", "8", "--lr", "0.003", "--lr-schedule", "cosine", "--model-args",
                                     '{"units": 64}'],
}
GLR_TABLE = ("mnist/bp_sigmoid_ce", "mnist/glr_sigmoid_ce", "mnist/glr_threshold_ce", "mnist/glr_sigmoid_01",
             "mnist/glr_threshold_01")


def substitute(dataset: str, work: Path) -> str:
    """A backprop substitute (784-100-50-10 ReLU MLP style) for transfer attacks; not shipped."""
    out = work / f"substitute_{dataset}"
    if not (out / "metadata.json").exists():
        argv = ["train", "--model", "substitute_mlp", "--dataset", dataset, "--epochs", "5" if dataset == "mnist"
                else "30", "--lr", "0.001", "--quiet", "--overwrite", "--out", str(out)]
        assert glrzoo(argv + (["--data-dir", data_dir()] if data_dir() else [])) == 0
    return str(out)


def headline(rows: list[dict], name: str) -> dict:
    """The few numbers the README table shows (accuracies in [0, 1])."""
    mine = [r for r in rows if r["model"] == name]

    def pick(suite, **kw):
        return next((r["accuracy"] for r in mine if r["suite"] == suite and all(r.get(k) == v for k, v in kw.items())),
                    None)
    out = {}
    for att, choose in (("fgsm", min), ("pgd", max)):
        eps = [r["eps"] for r in mine if r["suite"] == "transfer" and r["attack"] == att]
        if eps:
            e = choose(eps)
            out[f"transfer {att.upper()} {e:g}"] = pick("transfer", attack=att, eps=e)
    out.update({"corruptions mA": pick("corruption", corruption="mean (eq. 6)"),
                "s=1.0, 1 vote": pick("voting", stddev=1.0, votes=1),
                "s=1.0, 20 votes": pick("voting", stddev=1.0, votes=20)})
    return {k: v for k, v in out.items() if v is not None}


def evaluate_one(name: str, n: int, work: Path) -> None:
    path = ROOT / name
    meta = read_metadata(path)
    dataset = meta["dataset"]["name"]
    data = load_dataset(dataset, data_dir())
    x, y = data.x_test[:n], data.y_test[:n]
    images = len(data.input_shape) == 3
    suites = ("clean", "transfer", "corruption", "voting") if images else ("clean", "voting")
    report = work / "reports" / name.replace("/", "__")
    result = evaluate([str(path)], x, y, suites=suites, sources=[substitute(dataset, work)] if images else [],
                      out=report, eps_list=(0.13, 0.3) if dataset != "digits" else (0.1, 0.3), steps=20,
                      stddevs=(0.0, 0.5, 1.0), votes_list=(1, 20), vote_repeats=2, log=lambda _: None)
    name_in_rows = path.name
    summary = {"n": len(y), "dataset": dataset, "suites": list(suites),
               "command": "python benchmarks/make_pretrained.py --only " + name,
               "transfer_source": "substitute_mlp (backprop, ReLU 784-100-50-10), FGSM/PGD L-inf",
               "voting": "noise of the model's kind (additive or multiplicative) at stddev s",
               "headline": headline(result["rows"], name_in_rows),
               "masking_flags": result["flags"].get(name_in_rows, [])}
    update_metadata(path, evaluation=summary)
    print(f"{name}: {summary['headline']}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=None, help="names to (re)build; default all")
    p.add_argument("--retrain", action="store_true", help="train even where an export exists")
    p.add_argument("--n", type=int, default=1000, help="test points for the evaluation summary")
    p.add_argument("--work", default="bench_out/pretrained", help="substitutes and full reports (not shipped)")
    args = p.parse_args()
    work = Path(args.work)
    names = args.only or [*GLR_TABLE, *RECIPES]
    for name in names:
        t = time.time()
        if name in RECIPES and (args.retrain or not (ROOT / name / "metadata.json").exists()):
            argv = ["train", *RECIPES[name], "--seed", "0", "--quiet", "--overwrite", "--out", f"saved_models/{name}"]
            if data_dir():
                argv += ["--data-dir", data_dir()]
            print("glrzoo " + " ".join(shlex.quote(a) for a in argv), flush=True)
            cwd = os.getcwd()
            os.chdir(REPO)
            try:
                assert glrzoo(argv) == 0, name
            finally:
                os.chdir(cwd)
        evaluate_one(name, args.n, work)
        print(f"  {time.time() - t:.0f} s", flush=True)
    print(f"wrote {write_readme(ROOT)} and {write_index(ROOT)}; peak RSS {peak_rss_mib():.0f} MiB")



if __name__ == "__main__":
    main()
