"""Time to accuracy: forward-only training against backprop, interleaved in one process.

Two runs of the same model are trained side by side, each with its own recipe (``training.recipes``:
learning rate, schedule, epochs), on the same batches in the same order: they take turns, ``--chunk``
optimizer steps at a time, so both see the same machine load (this 2-core machine is shared and
noisy). After every chunk each run's test accuracy on a fixed held-out set (the first ``--eval``
test images; evaluation time not counted) is recorded against its cumulative training wall time.
Printed: the wall time and steps to each ``--targets`` accuracy, their ratio (forward-only /
backprop), each run's accuracy when the other reached the target, and peak memory.

``--profile`` first times one step of each part of the forward-only step (issue 30: where the
time goes): the clean pass alone, the step with only the output layer credited (``top_only``: the
clean pass, the output layer's replicated noisy logits and its score), the full step, and the
backprop step, ``--profile-steps`` steps each after a warm-up.

    python benchmarks/bench_time_to_accuracy.py cnn6 [--targets 0.97,0.98] [--chunk 50] [--eval 2000]
    python benchmarks/bench_time_to_accuracy.py mlp [--targets 0.95]
    python benchmarks/bench_time_to_accuracy.py cnn6 --profile --max-epochs 0
    python benchmarks/bench_time_to_accuracy.py cnn6 --runs bp,glr_local_lr1e-2,local_bp_lr1e-2 --heads

``--runs`` races any of a setup's labels (the first is the reference each other is compared with):
the diagnostic ``local_bp*`` runs follow the exact gradients of local GLR's objectives, so a GLR run
that keeps pace with them is limited by its objective, not its variance; ``--heads`` prints each
local head's accuracy (which layer lags; under ``top_block`` the last hidden layer's head is unused
and stays near chance). The ``bp_lr*`` and ``glr_lr*`` labels sweep learning rates: a ratio against
backprop's recipe flatters GLR when the recipe is not backprop's fastest setting (the MLP's is not).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
from common import data_dir, peak_rss_mib

from training.config import TrainConfig
from training.recipes import fill_settings
from training.registry import create_estimator
from training.run import build_trainer, evaluate_accuracy
from zoo.data import load_dataset

GLR_FAST = {"lr": 1e-2}  # local GLR's recipe (cosine over 6 epochs) at the faster learning rate
# local_bp has no recipe row: its runs get glr_local's schedule here, at the rate given
LOCAL_BP = {"lr_schedule": "cosine", "epochs": 6, "lr": 1e-2}


def _variant(base: dict, **method_args) -> dict:
    """``base`` with estimator options ``method_args`` (the settings of one diagnostic run)."""
    return {**base, "method_args": method_args} if method_args else dict(base)


def _mlp_bp(lr: float) -> tuple:
    """The MLP race's backprop run (sigmoid units) at Adam ``lr``."""
    return "bp", {"lr": lr, "activation": "sigmoid"}


def _mlp_glr(lr: float, **method_args) -> tuple:
    """The MLP race's GLR run at Adam ``lr``: R = 100 shared noises with the leave-one-out baseline,
    overridden by ``method_args``."""
    return "glr", {"lr": lr, "activation": "sigmoid", "method_args": {
        "replications": 100, "shared_noise": True, "baseline": True, **method_args}}


SETUPS = {  # (model, data set, {label: (method, settings over the recipe)}); the first two labels race by default
    "cnn6": ("cnn6", "mnist", {
        "bp": ("bp", {}), "glr_local": ("glr_local", {}),
        "bp_lr3e-3": ("bp", {"lr": 3e-3}),  # is backprop's recipe (Adam 1e-3) its fastest?
        # diagnostics (--runs). Learning rates:
        "glr_local_lr1e-2": ("glr_local", _variant(GLR_FAST)),
        "glr_local_lr3e-2": ("glr_local", {"lr": 3e-2}),
        # the same local objectives with exact gradients (estimator or objective?):
        "local_bp": ("local_bp", {**LOCAL_BP, "lr": 3e-3}),
        "local_bp_lr1e-2": ("local_bp", _variant(LOCAL_BP)),
        # other objectives, exact gradients (does another local objective need fewer steps?):
        "local_bp_grid2": ("local_bp", _variant(LOCAL_BP, grid=2)),
        "local_bp_concat": ("local_bp", _variant(LOCAL_BP, head_input="concat")),
        "local_bp_predsim": ("local_bp", _variant(LOCAL_BP, sim_weight=0.5)),
        "local_bp_top": ("local_bp", _variant(LOCAL_BP, top_block=True)),
        "glr_local_top": ("glr_local", _variant(GLR_FAST, top_block=True)),
        # heads with a hidden layer (Belilovsky et al. 2019), exact gradients and local GLR:
        "local_bp_hidden": ("local_bp", _variant(LOCAL_BP, head_hidden=64)),
        "local_bp_hidden_top": ("local_bp", _variant(LOCAL_BP, head_hidden=64, top_block=True)),
        "glr_local_hidden": ("glr_local", _variant(GLR_FAST, head_hidden=64)),
        # cheaper steps: one loss per position (all channels) instead of per 4 channels; fewer dense draws
        "glr_local_patch": ("glr_local", _variant(GLR_FAST, grouping="patch")),
        "glr_local_cheap": ("glr_local", _variant(GLR_FAST, grouping="patch", dense_replications=4)),
    }),
    "mlp": ("glr_mlp", "mnist", {
        "bp": _mlp_bp(1e-3), "glr": _mlp_glr(3e-3),
        # diagnostics: half the draws; the rse log's second accumulation (off by default)
        "glr_r50": _mlp_glr(3e-3, replications=50), "glr_rse": _mlp_glr(3e-3, report_rse=True),
        # learning rates, both methods; at 1e-2 more draws and layer-wise noise
        "bp_lr3e-3": _mlp_bp(3e-3), "bp_lr1e-2": _mlp_bp(1e-2), "bp_lr3e-2": _mlp_bp(3e-2),
        "glr_lr1e-2": _mlp_glr(1e-2), "glr_lr3e-2": _mlp_glr(3e-2),
        "glr_lr1e-2_r200": _mlp_glr(1e-2, replications=200),
        "glr_lr1e-2_layerwise": _mlp_glr(1e-2, layerwise=True)}),
}


@dataclasses.dataclass
class Run:
    label: str
    config: TrainConfig
    trainer: object = None
    model: object = None
    seconds: float = 0.0
    steps: int = 0
    curve: list = dataclasses.field(default_factory=list)  # (seconds, steps, accuracy)

    def reached(self, target: float):
        """(seconds, steps) of the first evaluation at or above ``target``, else None."""
        return next(((s, k) for s, k, a in self.curve if a >= target), None)

    def accuracy_at(self, seconds: float) -> float:
        """Accuracy of the last evaluation made within ``seconds`` of training."""
        return max((a for s, k, a in self.curve if s <= seconds), default=float("nan"))


def make_run(label: str, model: str, dataset: str, method: str, over: dict, data, batch: int, seed: int) -> Run:
    given = {"method_args": {}, "adversarial": None, **over}
    settings, applied = fill_settings(model, dataset, method, given, use_recipe=True)
    config = TrainConfig(model=model, dataset=dataset, method=method, seed=seed, verbose=0, recipe_defaults=applied,
                         **{**settings, "batch_size": batch})
    estimator = create_estimator(method, loss=config.loss, **config.method_args)
    net, trainer, *_ = build_trainer(config, data, estimator, None)
    return Run(label, config, trainer, net)


def batches(n: int, batch: int, seed: int):
    """Index arrays of every batch, epoch after epoch (a fresh permutation each epoch), forever."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(n)
        for i in range(0, n - batch + 1, batch):
            yield order[i:i + batch]


def train_chunk(run: Run, data, chunk: list) -> None:
    start = time.perf_counter()
    for idx in chunk:
        run.trainer.train_on_batch(data.x_train[idx], data.y_train[idx])
    run.seconds += time.perf_counter() - start
    run.steps += len(chunk)


def head_accuracies(run: Run, x, y, batch: int = 500) -> list[float]:
    """Accuracy of each local head on the clean pass (inference mode), then of the network's output.

    For a local run (``glr_local``, ``local_bp``): which layer's objective lags. Empty for others."""
    from zoo.noise_context import record_local

    aux = getattr(run.trainer, "aux", None)
    if aux is None:
        return []
    hits = None
    for i in range(0, len(x), batch):
        with record_local() as records:
            logits = run.model(x[i:i + batch], training=False)
        preds = [aux.logits(r.layer, r.layer.activate(r.preactivation), r.inputs["x"]) for r in records[:-1]]
        row = np.array([np.sum(np.argmax(p, -1) == y[i:i + batch]) for p in [*preds, logits]])
        hits = row if hits is None else hits + row
    return list(hits / len(x))


def race(runs: list[Run], data, targets, chunk: int, eval_n: int, max_steps: int, seed: int,
         heads: bool = False) -> None:
    x_eval, y_eval = data.x_test[:eval_n], data.y_test[:eval_n]
    order = batches(len(data.x_train), runs[0].config.batch_size, seed)
    active = list(runs)
    while active:
        step_chunk = [next(order) for _ in range(chunk)]  # the same batches for every run
        for run in list(active):
            train_chunk(run, data, step_chunk)
            acc = evaluate_accuracy(run.model, x_eval, y_eval)
            run.curve.append((run.seconds, run.steps, acc))
            per_head = head_accuracies(run, x_eval, y_eval) if heads else []
            print(f"  {run.label:<10} {run.steps:>6} steps {run.seconds:8.1f} s  acc {100 * acc:6.2f}%"
                  + (f"  heads {' '.join(f'{100 * a:.1f}' for a in per_head[:-1])}" if per_head else ""), flush=True)
            if run.reached(max(targets)) or run.steps >= max_steps:
                active.remove(run)


def report(runs: list[Run], targets) -> None:
    """One table per run after the first, each against the first (the reference)."""
    for other in runs[1:]:
        _compare(runs[0], other, targets)
    for run in runs:
        print(f"{run.label}: {run.steps} steps in {run.seconds:.1f} s ({1000 * run.seconds / max(run.steps, 1):.1f} "
              f"ms/step), final {100 * run.curve[-1][2]:.2f}%; settings {run.config.recipe()}")


def _compare(ref: Run, other: Run, targets) -> None:
    print(f"\n| target | {ref.label} s (steps) | {other.label} s (steps) | ratio | {other.label} acc at {ref.label}'s "
          f"time | {ref.label} acc at {other.label}'s time |")
    print("|---|---|---|---|---|---|")
    for t in targets:
        a, b = ref.reached(t), other.reached(t)
        cell = lambda r: f"{r[0]:.1f} ({r[1]})" if r else "not reached"  # noqa: E731
        ratio = f"{b[0] / a[0]:.2f}" if a and b else "-"
        at_a = _pct(other.accuracy_at(a[0]), other) if a else "-"
        at_b = _pct(ref.accuracy_at(b[0]), ref) if b else "-"
        print(f"| {100 * t:g}% | {cell(a)} | {cell(b)} | {ratio} | {at_a} | {at_b} |")


def _pct(acc: float, run: Run) -> str:
    """An accuracy in %, or when the run had no evaluation yet, when its first came."""
    return f"{100 * acc:.2f}" if acc == acc else f"none yet (first at {run.curve[0][0]:.0f} s)"


def profile(model: str, dataset: str, data, batch: int, steps: int, seed: int) -> None:
    """Seconds per step of the parts of the local GLR step, and of backprop's."""
    import tensorflow as tf

    from zoo.noise_context import record_local

    parts = {"backprop step": ("bp", {}), "local GLR, output layer only (top_only)": ("glr_local", {"top_only": True}),
             "local GLR, full step": ("glr_local", {})}
    xb, yb = data.x_train[:batch], data.y_train[:batch]
    rows = []
    for label, (method, extra) in parts.items():
        run = make_run(label, model, dataset, method, {"method_args": extra}, data, batch, seed)
        for _ in range(3):
            run.trainer.train_on_batch(xb, yb)  # trace and warm up
        start = time.perf_counter()
        for _ in range(steps):
            run.trainer.train_on_batch(xb, yb)
        rows.append((label, (time.perf_counter() - start) / steps))
        if method == "glr_local" and not extra:
            clean = tf.function(lambda x, m=run.model: _clean_pass(m, x, record_local))
            clean(tf.constant(xb))
            start = time.perf_counter()
            for _ in range(steps):
                clean(tf.constant(xb)).numpy()
            rows.insert(1, ("clean pass (training mode, inputs recorded)", (time.perf_counter() - start) / steps))
    base = rows[0][1]
    for label, sec in rows:
        print(f"{label:<48} {1000 * sec:8.1f} ms/step  x{sec / base:5.2f} of backprop")


def _clean_pass(model, x, record_local):
    with record_local():
        return model(x, training=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("setup", choices=sorted(SETUPS))
    p.add_argument("--runs", default=None, help="comma-separated labels of the setup to race, the reference first "
                   "(default: the setup's first two; the others are diagnostics: local_bp*, learning rates, --top-block)")
    p.add_argument("--targets", default=None, help="comma-separated accuracies (default: cnn6 0.97,0.98; mlp 0.95)")
    p.add_argument("--chunk", type=int, default=50, help="optimizer steps per turn")
    p.add_argument("--eval", type=int, default=2000, help="held-out test images evaluated after every turn")
    p.add_argument("--max-epochs", type=float, default=4.0, help="stop a run that has not reached the targets")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--heads", action="store_true", help="also print each local head's accuracy at every evaluation")
    p.add_argument("--profile", action="store_true", help="time the parts of a step first")
    p.add_argument("--profile-steps", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    model, dataset, methods = SETUPS[args.setup]
    labels = args.runs.split(",") if args.runs else list(methods)[:2]
    unknown = [label for label in labels if label not in methods]
    if unknown or len(labels) < 2:
        p.error(f"--runs needs two or more of {', '.join(methods)}; got {args.runs!r}")
    targets = [float(t) for t in (args.targets or ("0.97,0.98" if args.setup == "cnn6" else "0.95")).split(",")]
    data = load_dataset(dataset, data_dir())
    if args.profile:
        profile(model, dataset, data, args.batch_size, args.profile_steps, args.seed)
    max_steps = int(args.max_epochs * len(data.x_train) / args.batch_size)
    if max_steps:
        runs = [make_run(label, model, dataset, method, over, data, args.batch_size, args.seed)
                for label, (method, over) in ((label, methods[label]) for label in labels)]
        race(runs, data, targets, args.chunk, args.eval, max_steps, args.seed, heads=args.heads)
        report(runs, targets)
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
