"""Evaluate exported models: clean, white-box, transfer, gradient-free, corruptions, noisy voting.

:func:`evaluate` returns (and writes to ``report.json``) a list of rows. Every row has ``model``,
``suite``, ``attack`` or ``corruption``, its settings, ``n``, ``accuracy`` with a 95% Wilson
interval, and for attacks the success rate and the mean L2 / L-inf size of successful
perturbations. Rows are keyed; a rerun with the same output directory skips finished rows, so an
interrupted run resumes. Work is shared: adversarial examples are made once per source model and
reused for every target, corrupted images once per corruption and severity, and iterative attacks
run only on the points still classified correctly (as AutoAttack does).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from evaluation.attacks import attack, blank_gradient_fraction, logits_fn
from evaluation.corruptions import AUTHORS, corrupt, mean_corruption_accuracy
from evaluation.metrics import accuracy_row
from zoo.export import load_model
from zoo.noise import noise_settings
from zoo.voting import vote_counts

SCHEMA_VERSION = 1
SUITES = ("clean", "whitebox", "transfer", "gradfree", "corruption", "voting")


class Evaluation:
    """Holds the report rows, their keys and the counters; saves after every row (atomic rename)."""

    def __init__(self, out: Path | None, log: Callable[[str], None] = print):
        self.out = out
        self.log = log
        self.rows: list[dict] = []
        self.counters = {"attack_runs": 0, "model_passes": 0}
        if out is not None and (out / "report.json").exists():
            self.rows = json.loads((out / "report.json").read_text())["rows"]

    def done(self, key: str) -> dict | None:
        return next((r for r in self.rows if r["key"] == key), None)

    def add(self, row: dict) -> dict:
        self.rows.append(row)
        self.log(f"  {row['model']:<24} {row['suite']:<10} {row.get('attack') or row.get('corruption') or '':<16} "
                 f"{_settings(row):<40} acc {100 * row['accuracy']:.2f}%")
        self.save()
        return row

    def save(self) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / "report.json.tmp"
        tmp.write_text(json.dumps({"schema_version": SCHEMA_VERSION, "counters": self.counters, "rows": self.rows},
                                  indent=1, default=float))
        os.replace(tmp, self.out / "report.json")


def _settings(row):
    keys = ("eps", "norm", "steps", "restarts", "severity", "stddev", "votes", "eot", "source")
    return " ".join(f"{k}={row[k]}" for k in keys if row.get(k) is not None)


def _predict(model, x, votes: int = 1, batch: int = 1000) -> np.ndarray:
    """Predictions in inference mode: noise-free if the model's infer stddev is 0, else voted."""
    noisy = noise_settings(model)["infer_stddev"] > 0
    out = []
    for i in range(0, len(x), batch):
        xb = tf.constant(x[i:i + batch])
        if noisy:
            out.append(tf.argmax(vote_counts(model, xb, votes), -1).numpy())
        else:
            out.append(tf.argmax(model(xb, training=False), -1).numpy())
    return np.concatenate(out) if out else np.zeros([0], np.int64)


def _attack_row(name, suite, attack_name, x, y, adv, pred_adv, settings, source=None, pred_clean=None):
    """Accuracy on ``adv``; success rate = share of the points classified correctly on clean input
    that the attack flips; L2 / L-inf sizes of those successful perturbations."""
    n = len(y)
    correct = int(np.sum(pred_adv == y))
    delta = (adv - x).reshape(n, -1)
    was_right = np.ones(n, bool) if pred_clean is None else pred_clean == y
    fooled = (pred_adv != y) & was_right
    row = {"model": name, "suite": suite, "attack": attack_name, **settings, "source": source,
           **accuracy_row(correct, n), "success_rate": float(fooled.sum() / max(was_right.sum(), 1)),
           "mean_l2": float(np.linalg.norm(delta[fooled], axis=1).mean()) if fooled.any() else 0.0,
           "mean_linf": float(np.abs(delta[fooled]).max(axis=1).mean()) if fooled.any() else 0.0}
    return row


def evaluate(model_dirs: Sequence[str], x: np.ndarray, y: np.ndarray, suites: Sequence[str] = SUITES,
             sources: Sequence[str] = (), out: str | os.PathLike | None = None, eps_list=(0.1, 0.2, 0.3),
             transfer_attacks=("fgsm", "pgd"), steps: int = 20, restarts: int = 1, eot: int = 20,
             stddevs=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), votes_list=(1, 5, 10, 20), vote_repeats: int = 3,
             seed: int = 0, log: Callable[[str], None] = print) -> dict:
    """Evaluate every export in ``model_dirs`` on ``(x, y)``; returns ``{"rows", "counters", "flags"}``.

    Args:
        model_dirs: exported model directories (``glrzoo train --out``).
        x, y: test images ``[N, ...]`` in [0, 1] and labels ``[N]``.
        suites: subset of :data:`SUITES`.
        sources: exports that make transfer attacks (default: the evaluated models themselves).
        eps_list: L-inf radii (pixel units) for the attack suites.
        eot: noise draws per gradient for models with inference noise (white-box only).
        stddevs, votes_list, vote_repeats: the noisy-voting grid (multiplicative or additive as
            each model was built) and how often each cell is repeated.
    """
    unknown = set(suites) - set(SUITES)
    if unknown:
        raise ValueError(f"unknown suite(s) {sorted(unknown)}; choose from {', '.join(SUITES)}")
    out = Path(out) if out is not None else None
    ev = Evaluation(out, log)
    models = {Path(d).name: load_model(d) for d in model_dirs}  # verifies each export's checksums
    clean_preds: dict[str, np.ndarray] = {}

    def clean_pred(name, model):
        """Each model's predictions on the clean ``x``, computed once and shared by every suite."""
        if name not in clean_preds:
            ev.counters["model_passes"] += 1
            clean_preds[name] = _predict(model, x)
        return clean_preds[name]
    y = np.asarray(y)

    if "clean" in suites:
        for name, model in models.items():
            key = f"{name}|clean"
            if not ev.done(key):
                pred = clean_pred(name, model)
                ev.add({"key": key, "model": name, "suite": "clean", **accuracy_row(int(np.sum(pred == y)), len(y)),
                        "blank_gradient_fraction": blank_gradient_fraction(logits_fn(model, stddev=0.0), x[:500], y[:500])})

    if "whitebox" in suites:
        for name, model in models.items():
            noisy = noise_settings(model)["infer_stddev"] > 0
            fn = logits_fn(model, eot=eot if noisy else 1)
            pred_clean = clean_pred(name, model)
            for eps in eps_list:
                for att in transfer_attacks:
                    key = f"{name}|whitebox|{att}|{eps}"
                    if ev.done(key):
                        continue
                    adv = attack(att, fn, x, y, eps, steps=steps, restarts=restarts, seed=seed).numpy()
                    ev.counters["attack_runs"] += 1
                    ev.add({"key": key, **_attack_row(name, "whitebox", att, x, y, adv, _predict(model, adv),
                                                      {"eps": eps, "norm": "inf", "steps": steps,
                                                       "eot": eot if noisy else 1}, pred_clean=pred_clean)})

    if "transfer" in suites:
        src_dirs = list(sources) or list(model_dirs)
        for src_dir in src_dirs:
            src_name = Path(src_dir).name
            src = models.get(src_name) or load_model(src_dir)
            keep = clean_pred(src_name, src) == y  # only examples the source classifies correctly (GLR authors)
            xs, ys = x[keep], y[keep]
            for att in transfer_attacks:
                for eps in eps_list:
                    keys = {name: f"{name}|transfer|{src_name}|{att}|{eps}" for name in models if name != src_name}
                    if all(ev.done(k) for k in keys.values()):
                        continue
                    adv = attack(att, logits_fn(src, stddev=0.0), xs, ys, eps, steps=steps, restarts=restarts,
                                 seed=seed).numpy()
                    ev.counters["attack_runs"] += 1
                    for name, key in keys.items():
                        if not ev.done(key):
                            ev.add({"key": key, **_attack_row(name, "transfer", att, xs, ys, adv,
                                                              _predict(models[name], adv),
                                                              {"eps": eps, "norm": "inf", "steps": steps},
                                                              source=src_name, pred_clean=_predict(models[name], xs))})

    if "gradfree" in suites:
        for name, model in models.items():
            for eps in eps_list:
                key = f"{name}|gradfree|spsa|{eps}"
                if ev.done(key):
                    continue
                pred = clean_pred(name, model)
                idx = np.flatnonzero(pred == y)  # attack only the points still correct
                adv = x.copy()
                if len(idx):
                    adv[idx] = attack("spsa", logits_fn(model), x[idx], y[idx], eps, steps=steps, seed=seed).numpy()
                ev.counters["attack_runs"] += 1
                ev.add({"key": key, **_attack_row(name, "gradfree", "spsa", x, y, adv, _predict(model, adv),
                                                  {"eps": eps, "norm": "inf", "steps": steps}, pred_clean=pred)})

    if "corruption" in suites:
        for c in AUTHORS:
            for severity in range(1, 6):
                keys = {name: f"{name}|corruption|{c.name}|{severity}" for name in models}
                if all(ev.done(k) for k in keys.values()):
                    continue
                xc = corrupt(x, c.name, severity, seed)
                for name, key in keys.items():
                    if not ev.done(key):
                        pred = _predict(models[name], xc)
                        ev.add({"key": key, "model": name, "suite": "corruption", "corruption": c.name,
                                "severity": severity, **accuracy_row(int(np.sum(pred == y)), len(y))})
        for name in models:
            accs = {(r["corruption"], r["severity"]): r["accuracy"] for r in ev.rows
                    if r["model"] == name and r["suite"] == "corruption" and r.get("severity")}
            key = f"{name}|corruption|mean"
            if accs and not ev.done(key):
                ev.add({"key": key, "model": name, "suite": "corruption", "corruption": "mean (eq. 6)",
                        "n": len(y), "accuracy": mean_corruption_accuracy(accs), "ci95": None})

    if "voting" in suites:
        for name, model in models.items():
            for s in stddevs:
                for votes in votes_list:
                    key = f"{name}|voting|{s}|{votes}"
                    if ev.done(key) or (s == 0 and votes > 1):
                        continue
                    accs = []
                    for _ in range(vote_repeats if s > 0 else 1):
                        counts = vote_counts(model, tf.constant(x), votes, s).numpy()
                        accs.append(float(np.mean(counts.argmax(-1) == y)))
                    row = accuracy_row(int(round(np.mean(accs) * len(y))), len(y))
                    ev.add({"key": key, "model": name, "suite": "voting", "stddev": s, "votes": votes,
                            "noise": noise_settings(model)["noise"], **row, "accuracy": float(np.mean(accs)),
                            "spread": float(np.std(accs)), "repeats": len(accs)})

    flags = masking_flags(ev.rows)
    ev.save()
    return {"rows": ev.rows, "counters": ev.counters, "flags": flags}


def masking_flags(rows: list[dict]) -> dict:
    """Gradient-masking flags per model (PAPERS.md section 4).

    * ``blank_gradients``: some inputs have an exactly zero loss gradient.
    * ``whitebox_above_blackbox``: white-box accuracy exceeds transfer or gradient-free accuracy at
      the same eps (a stronger attack should never do worse).
    * ``no_collapse_at_large_eps``: white-box accuracy at the largest eps stays above 10%.
    """
    flags: dict[str, list[str]] = {}
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        out = []
        clean = next((r for r in mine if r["suite"] == "clean"), None)
        if clean and clean.get("blank_gradient_fraction", 0) > 0:
            out.append(f"blank_gradients ({100 * clean['blank_gradient_fraction']:.0f}% of inputs)")
        wb = [r for r in mine if r["suite"] == "whitebox"]
        for r in wb:
            others = [o for o in mine if o["suite"] in ("transfer", "gradfree") and o.get("eps") == r["eps"]]
            if any(o["accuracy"] < r["accuracy"] - 0.02 for o in others):
                out.append(f"whitebox_above_blackbox (eps {r['eps']})")
                break
        if wb:
            top = max(r["eps"] for r in wb)
            if min(r["accuracy"] for r in wb if r["eps"] == top) > 0.10:
                out.append(f"no_collapse_at_large_eps (eps {top})")
        flags[name] = out
    return flags
