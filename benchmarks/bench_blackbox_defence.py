"""The noisy-inference paper's black-box defence on MNIST: adversarial examples made white-box on one
adversarially trained net (the source) are classified by a different adversarially trained net (the
target) without noise, and with noisy inference and a majority vote (Qin and Vucinic 2018, section
4.3: source Madry et al.'s 4-layer CNN, target the CNN6, PGD eps 0.3, step 0.05, 20 iterations, 20
random restarts; 97.40% without noise, 97.90% with the best inference stddev and 20 votes).

Every test point is attacked (not only those the source gets right), so the numbers read as the
target's accuracy on the transferred set. Per example, PGD keeps the first restart that fools the
source (else the last). Prints the target's accuracy at each inference stddev with 1 pass and with
``--votes`` votes, the source's own accuracy on its examples, wall time and peak memory.

    python benchmarks/bench_blackbox_defence.py --source mnist/madry_cnn_fgsm_rs --target mnist/cnn6_adv

The full test set takes about two hours of PGD on 2 CPU cores: ``--cache DIR`` keeps each finished
chunk's adversarial examples there, so an interrupted run started again with the same arguments
attacks only the chunks it has not finished.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from common import data_dir, peak_rss_mib

from evaluation.attacks import attack, logits_fn
from training.files import write_json
from zoo.data import load_dataset
from zoo.export import load_model
from zoo.pretrained import load_pretrained
from zoo.voting import vote_predict


def load(name_or_dir: str):
    return load_model(name_or_dir) if Path(name_or_dir).is_dir() else load_pretrained(name_or_dir)


def accuracy(pred, y) -> float:
    return 100.0 * float(np.mean(np.asarray(pred) == y))


def cached_attack(fn, x, y, args, start: int) -> np.ndarray:
    """PGD on one chunk, read from / written to ``args.cache`` when given (written atomically)."""
    stop = start + len(x)
    path = Path(args.cache) / f"adv_{start:05d}_{stop:05d}.npy" if args.cache else None
    if path is not None and path.is_file():
        return np.load(path)
    adv = attack("pgd", fn, x, y, args.eps, steps=args.iterations, step_size=args.step,
                 restarts=args.restarts).numpy()
    if path is not None:
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, adv)
        os.replace(tmp, path)
        print(f"  chunk {start}-{stop} attacked and kept in {path}", flush=True)
    return adv


def check_cache(args) -> None:
    """Make ``args.cache`` and refuse one made with other attack settings (its chunks would mix)."""
    keys = ("source", "eps", "step", "iterations", "restarts", "chunk")
    want = {k: getattr(args, k) for k in keys}
    cache = Path(args.cache)
    record = cache / "settings.json"
    if not record.is_file():
        write_json(record, want)  # makes the folder
    elif (have := json.loads(record.read_text())) != want:
        raise SystemExit(f"error: {cache} holds examples made with {have}, not {want}; pass another --cache folder")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="export folder or pretrained name of the attacked net")
    p.add_argument("--target", required=True, help="export folder or pretrained name of the defended net")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--step", type=float, default=0.05)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--restarts", type=int, default=20)
    p.add_argument("--infer-stddevs", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    p.add_argument("--votes", type=int, default=20)
    p.add_argument("--test-limit", type=int, default=None, help="first N test points (default: all 10,000)")
    p.add_argument("--chunk", type=int, default=1000, help="test points attacked at once")
    p.add_argument("--cache", default=None, help="folder keeping each attacked chunk, so a rerun resumes")
    args = p.parse_args()
    if args.cache:
        check_cache(args)

    data = load_dataset("mnist", data_dir())
    x, y = data.x_test[:args.test_limit], data.y_test[:args.test_limit]
    source, target = load(args.source), load(args.target)
    t = time.time()
    fn = logits_fn(source, stddev=0.0)
    adv = np.concatenate([cached_attack(fn, x[i:i + args.chunk], y[i:i + args.chunk], args, i)
                          for i in range(0, len(x), args.chunk)])
    attack_s = time.time() - t
    assert float(np.max(np.abs(adv - x))) <= args.eps + 1e-6
    src_pred = np.argmax(source.predict(adv, batch_size=500, verbose=0), axis=1)
    print(f"source {args.source}: clean {accuracy(np.argmax(source.predict(x, batch_size=500, verbose=0), 1), y):.2f}%, "
          f"on its PGD examples {accuracy(src_pred, y):.2f}% (eps {args.eps}, step {args.step}, "
          f"{args.iterations} iterations, {args.restarts} restarts, {len(x)} points, {attack_s:.0f} s)")
    print(f"target {args.target} on the transferred examples (clean in brackets):")
    print("infer_stddev  1 pass            " + f"{args.votes} votes")
    for s in args.infer_stddevs:
        one = [accuracy(vote_predict(target, a, 1, s).numpy(), y) for a in (adv, x)]
        many = [accuracy(vote_predict(target, a, args.votes, s).numpy(), y) for a in (adv, x)]
        print(f"{s:<12g}  {one[0]:6.2f} ({one[1]:6.2f})  {many[0]:6.2f} ({many[1]:6.2f})", flush=True)
    print(f"wall {time.time() - t:.0f} s, peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
