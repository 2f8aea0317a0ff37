"""Noisy voting at its compute floor: time of K votes over one plain predict pass, and peak memory,
for every model family, each in a fresh subprocess (ru_maxrss is a per-process peak).

    python benchmarks/bench_voting.py [--votes 20] [--n 2000] [--repeats 3] [--models mlp cnn6 ...]

Per family, measured side by side in one process (interleaved, best of ``--repeats``):

* ``plain``: one noise-free inference pass over the ``n`` inputs (the model compiled once, inputs in
  chunks of ``zoo.memory.rows_per_chunk`` rows, as the votes are);
* ``vote_1`` and ``vote_K``: ``zoo.voting.vote_counts`` with multiplicative inference noise of
  stddev 1.0 (0 dB) and its defaults: the part before the first noise once per example, the noise
  read from a table at random offsets (``zoo.noise_table``), the per-vote part compiled by XLA;
* ``full_K``: the same ``K`` votes as ``K`` full passes (``reuse_prefix=False``);
* ``nojit_K``: the table without XLA; ``exact_K``: independent Gaussian draws without XLA (what
  voting did before the table);
* ``noisy``: one compiled pass with the noise on (the same loop as ``plain``): what a single noisy
  pass costs before any voting machinery, i.e. the plain pass plus drawing its Gaussian noise;
* ``folded``: the plain pass with batch norm folded into the kernels, as every voting pass runs
  (``zoo.noise_context.folded_batchnorm``). A plain predict pass does not fold, so ``folded``
  shows how much of a vote's saving is that rewrite rather than the shared prefix or the table.

``ratio_K`` = vote_K / plain; the target is ``ratio_K <= K``. With independent draws the floor is
about ``K * noisy`` (on CPU, TensorFlow's Philox Gaussian for ``cnn6``'s 75,000 activations per
example costs about one plain pass); the table removes the random-number arithmetic and XLA fuses
its reads into the passes, so what is left is ``K`` passes minus the shared prefix.
Peak memory is the process's peak RSS (MiB) and its growth over the model-building baseline.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from common import REPO

# family -> (create_model name, input shape, overrides, default n)
FAMILIES = {
    "mlp": ("glr_mlp", (28, 28, 1), {}, 2000),
    "lenet": ("lenet", (28, 28, 1), {}, 2000),
    "cnn6": ("cnn6", (28, 28, 1), {}, 2000),
    "madry_cnn": ("madry_cnn", (28, 28, 1), {}, 2000),
    "densenet_small": ("densenet", (28, 28, 1), {"depth": 16, "growth_rate": 12}, 500),
    "lstm": ("lstm", (117, 4), {}, 500),
}

CHILD = r"""
import json, sys, time, resource
sys.path.insert(0, {repo!r})
import numpy as np, tensorflow as tf, zoo
from zoo.memory import rows_per_chunk
from zoo.noise import set_noise
from zoo.noise_context import folded_batchnorm
from zoo.voting import vote_counts
family, name, shape, overrides, n, K, repeats = {family!r}, {name!r}, {shape!r}, {overrides!r}, {n}, {K}, {repeats}
model = zoo.create_model(name, shape, 10, noise="multiplicative", **overrides)
x = tf.random.uniform((n, *shape), seed=0)
chunk = rows_per_chunk(model)
forward = tf.function(lambda b: tf.argmax(model(b, training=False), -1), input_signature=[tf.TensorSpec([None, *shape])])
def folded_forward(b):
    with folded_batchnorm():
        return tf.argmax(model(b, training=False), -1)
folded_fn = tf.function(folded_forward, input_signature=[tf.TensorSpec([None, *shape])])
def plain():
    return [forward(x[i:i + chunk]).numpy() for i in range(0, n, chunk)]
def folded():
    return [folded_fn(x[i:i + chunk]).numpy() for i in range(0, n, chunk)]
def votes(k, reuse=True, **kw):
    return lambda: vote_counts(model, x, k, reuse_prefix=reuse, **kw).numpy()
def best(fn, times):
    out = []
    for _ in range(times):
        t = time.perf_counter(); fn(); out.append(time.perf_counter() - t)
    return out
base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
set_noise(model, infer_stddev=0.0); plain(); folded()  # trace
set_noise(model, infer_stddev=1.0); plain(); votes(1)(); votes(K)(); votes(K, False)()  # trace
votes(K, jit=False)(); votes(K, noise_source="exact", jit=False)()
t = dict(plain=[], folded=[], noisy=[], vote_1=[], vote_K=[], full_K=[], nojit_K=[], exact_K=[])
for _ in range(repeats):  # interleaved, so a busy machine slows all of them alike
    set_noise(model, infer_stddev=0.0); t["plain"] += best(plain, 1); t["folded"] += best(folded, 1)
    set_noise(model, infer_stddev=1.0); t["noisy"] += best(plain, 1)
    t["vote_1"] += best(votes(1), 1); t["vote_K"] += best(votes(K), 1); t["full_K"] += best(votes(K, False), 1)
    t["nojit_K"] += best(votes(K, jit=False), 1); t["exact_K"] += best(votes(K, noise_source="exact", jit=False), 1)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
b = {{k: min(v) for k, v in t.items()}}
print(json.dumps(dict(family=family, model=name, n=n, votes=K, rows_per_chunk=chunk, plain_s=round(b["plain"], 3),
                      folded_ratio=round(b["folded"] / b["plain"], 2),
                      noisy_ratio=round(b["noisy"] / b["plain"], 2), ratio_1=round(b["vote_1"] / b["plain"], 2),
                      ratio_K=round(b["vote_K"] / b["plain"], 2),
                      full_K_ratio=round(b["full_K"] / b["plain"], 2),
                      nojit_K_ratio=round(b["nojit_K"] / b["plain"], 2), exact_K_ratio=round(b["exact_K"] / b["plain"], 2),
                      peak_mib=round(peak),
                      peak_growth_mib=round(peak - base_rss))))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--votes", type=int, default=20)
    p.add_argument("--n", type=int, default=None, help="inputs per family (default: 2000, 500 for densenet and lstm)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--models", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    args = p.parse_args()
    print(f"{'family':<15} {'n':>5} {'plain s':>8} {'folded':>6} {'noisy':>6} {'1 vote':>7} {f'{args.votes} votes':>9} "
          f"{'full passes':>11} {'no XLA':>7} {'exact':>7} {'peak MiB':>9} {'growth':>7}")
    for family in args.models:
        name, shape, overrides, n = FAMILIES[family]
        code = CHILD.format(repo=str(REPO), family=family, name=name, shape=shape, overrides=overrides,
                            n=args.n or n, K=args.votes, repeats=args.repeats)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-300:]
        if not line.startswith("{"):
            print(f"{family:<15} error: {line}", flush=True)
            continue
        r = json.loads(line)
        floor = "" if r["ratio_K"] <= args.votes else f"  ABOVE {args.votes}x"
        print(f"{family:<15} {r['n']:>5} {r['plain_s']:>8.3f} {r['folded_ratio']:>5.2f}x {r['noisy_ratio']:>5.2f}x "
              f"{r['ratio_1']:>6.2f}x "
              f"{r['ratio_K']:>8.2f}x "
              f"{r['full_K_ratio']:>10.2f}x {r['nojit_K_ratio']:>6.2f}x {r['exact_K_ratio']:>6.2f}x "
              f"{r['peak_mib']:>9} {r['peak_growth_mib']:>7}{floor}", flush=True)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
