"""Train, evaluate and describe the pretrained set in saved_models/ with the project's own code.

    python benchmarks/make_pretrained.py [--only NAME ...] [--retrain] [--n 1000]

A thin script over :mod:`glrzoo.pretrained_build`, which holds the recipes (``PRETRAINED_RECIPES``) and the
workflow. Every recipe is trained through ``training.run.train`` and exported; its metadata records
the equivalent ``glrzoo train`` command (run from the repository root, it trains the same model).
Then the evaluation harness measures every model on ``--n`` test points (clean; transfer FGSM/PGD
from a backprop substitute made here and not shipped; the four corruptions; noisy voting), and a
headline of those numbers is written into the model's ``metadata.json`` under ``evaluation``.
Finally ``saved_models/README.md`` and ``index.json`` are regenerated from the metadata (``glrzoo
pretrained readme``). The five MNIST MLPs of the GLR table come from ``benchmarks/bench_glr_mnist.py
table --out saved_models/mnist``; this script only evaluates them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from common import REPO, data_dir, peak_rss_mib

from glrzoo.pretrained_build import GLR_TABLE, PRETRAINED_RECIPES, build, headline, substitute_export  # noqa: F401 (re-exported)

ROOT = REPO / "saved_models"


def substitute(dataset: str, work: Path) -> str:
    """The backprop substitute of ``dataset`` for transfer attacks (784-100-50-10 ReLU MLP), made once
    under ``work``; returns its export folder. Not shipped."""
    return str(substitute_export(dataset, work, data_dir=data_dir()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=None, help="names to (re)build; default all")
    p.add_argument("--retrain", action="store_true", help="train even where an export exists")
    p.add_argument("--n", type=int, default=1000, help="test points for the evaluation summary")
    p.add_argument("--work", default="bench_out/pretrained", help="substitutes and full reports (not shipped)")
    args = p.parse_args()
    readme, index = build(ROOT, args.only, retrain=args.retrain, n=args.n, work=Path(args.work), data_dir=data_dir(),
                          log=lambda line: print(line, flush=True))
    print(f"wrote {readme} and {index}; peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
