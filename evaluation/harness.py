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

from evaluation.attacks import MINIMAL, attack, blank_gradient_fraction, flat_probe_fraction, logits_fn
from evaluation.corruptions import AUTHORS, corrupt, mean_corruption_accuracy
from evaluation.distortion import changed_fraction, common_correct
from evaluation.metrics import accuracy_row
from evaluation.pass_score import mean_pass
from evaluation.surrogate import has_step_activations, smoothed_model
from zoo.export import load_model
from zoo.noise import noise_settings, set_noise
from zoo.voting import smoothed_predict, vote_counts

SCHEMA_VERSION = 2
SUITES = ("clean", "whitebox", "transfer", "gradfree", "corruption", "voting", "distortion")


class Evaluation:
    """Holds the report rows, their keys and the counters; saves after every row (atomic rename)."""

    def __init__(self, out: Path | None, log: Callable[[str], None] = print):
        self.out = out
        self.log = log
        self.rows: list[dict] = []
        self.counters = {"attack_runs": 0, "model_passes": 0}
        self.started = time.perf_counter()
        if out is not None and (out / "report.json").exists():
            self.rows = json.loads((out / "report.json").read_text())["rows"]

    def done(self, key: str) -> dict | None:
        return next((r for r in self.rows if r["key"] == key), None)

    def add(self, row: dict) -> dict:
        self.rows.append(row)
        self.log(f"  [{len(self.rows):>4} rows, {time.perf_counter() - self.started:6.0f} s] {row['model']:<24} {row['suite']:<10} {row.get('attack') or row.get('corruption') or '':<16} "
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
    """Predictions in inference mode: noise-free if the model's infer stddev is 0, else the
    majority of ``votes`` noisy passes (one batched call per chunk)."""
    noisy = noise_settings(model)["infer_stddev"] > 0
    out = []
    for i in range(0, len(x), batch):
        xb = tf.constant(x[i:i + batch])
        if noisy:
            out.append(tf.argmax(vote_counts(model, xb, votes), -1).numpy())
        else:
            out.append(tf.argmax(model(xb, training=False), -1).numpy())
    return np.concatenate(out) if out else np.zeros([0], np.int64)


def _attack_correct(name, fn, x, y, pred_clean, eps, **kwargs) -> np.ndarray:
    """``x`` with only the points ``pred_clean`` gets right attacked; the others are already wrong,
    so attacking them is wasted work (AutoAttack's saving)."""
    idx = np.flatnonzero(pred_clean == y)
    adv = x.copy()
    if len(idx):
        adv[idx] = attack(name, fn, x[idx], y[idx], eps, **kwargs).numpy()
    return adv


def _attack_row(name, suite, attack_name, x, y, adv, pred_adv, settings, source=None, pred_clean=None,
                pass_limit: int = 0):
    """Accuracy on ``adv``; success rate = share of the points classified correctly on clean input
    that the attack flips; L2 / L-inf sizes of those successful perturbations, and their mean PASS
    (over the first ``pass_limit`` of them; 0 skips it)."""
    n = len(y)
    correct = int(np.sum(pred_adv == y))
    delta = (adv - x).reshape(n, -1)
    was_right = np.ones(n, bool) if pred_clean is None else pred_clean == y
    fooled = (pred_adv != y) & was_right
    row = {"model": name, "suite": suite, "attack": attack_name, **settings, "source": source,
           **accuracy_row(correct, n), "success_rate": float(fooled.sum() / max(was_right.sum(), 1)),
           "mean_l2": float(np.linalg.norm(delta[fooled], axis=1).mean()) if fooled.any() else 0.0,
           "mean_linf": float(np.abs(delta[fooled]).max(axis=1).mean()) if fooled.any() else 0.0}
    if pass_limit:
        row["mean_pass"] = mean_pass(adv[fooled], x[fooled], pass_limit)
    return row


def evaluate(model_dirs: Sequence[str], x: np.ndarray, y: np.ndarray, suites: Sequence[str] = SUITES,
             sources: Sequence[str] = (), out: str | os.PathLike | None = None, eps_list=(0.1, 0.2, 0.3),
             transfer_attacks=("fgsm", "pgd"), steps: int = 20, restarts: int = 1, eot: int = 20,
             stddevs=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), votes_list=(1, 5, 10, 20), vote_repeats: int = 3,
             seed: int = 0, log: Callable[[str], None] = print, whitebox_attacks=("fgsm", "pgd"),
             minimal_attacks=MINIMAL, pass_limit: int = 50, abstain_alpha: float | None = 0.05,
             distortion_stddevs=(0.1, 0.2, 0.3, 0.4), distortion_per_class: int = 10,
             distortion_draws: int = 100, votes: int = 20, step_size: float | None = None,
             infer_stddev: float | None = None) -> dict:
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
        whitebox_attacks: eps-ball attacks of the white-box suite. Models with step activations
            also get ``pgd_smoothed`` (PGD on the sigmoid stand-in, scored on the real model) and
            ``lr_pgd`` (PGD on the likelihood-ratio input gradient).
        minimal_attacks: minimal-perturbation attacks (one row per model, no eps), with PASS.
        pass_limit: successful examples per row whose PASS is computed (0: none).
        abstain_alpha: level of the randomized-smoothing abstention rows in the voting suite
            (``None``: no abstention rows).
        distortion_stddevs, distortion_per_class, distortion_draws: BANG's random-distortion test.
        votes: noisy passes voted on for every prediction of a model whose inference noise is on
            (the prediction under attack is the voted one).
        step_size: per-step size of iterative attacks (default ``2.5 * eps / steps``); the
            noisy-inference paper's transfer setting is eps 0.3, step 0.05, 20 steps, 20 restarts.
        infer_stddev: if set, turn inference noise of this stddev on in every evaluated model (its
            own kind, additive or multiplicative); sources stay noise-free.
    """
    unknown = set(suites) - set(SUITES)
    if unknown:
        raise ValueError(f"unknown suite(s) {sorted(unknown)}; choose from {', '.join(SUITES)}")
    if "corruption" in suites and np.ndim(x) != 4:
        raise ValueError(f"suite 'corruption' needs images [N, H, W, C], but the examples have shape "
                         f"{tuple(np.shape(x)[1:])}; leave it out of --suite for this data set")
    pixel_suites = sorted(set(suites) & {"whitebox", "transfer", "gradfree", "distortion"})
    if pixel_suites and (np.min(x) < 0 or np.max(x) > 1):
        raise ValueError(f"suites {', '.join(pixel_suites)} clip to [0, 1] pixels, but these inputs span "
                         f"[{np.min(x):.3g}, {np.max(x):.3g}]; use --suite clean,voting for this data set")
    if np.ndim(x) != 4:
        pass_limit = 0  # PASS compares images
    out = Path(out) if out is not None else None
    ev = Evaluation(out, log)
    models = {Path(d).name: load_model(d) for d in model_dirs}  # verifies each export's checksums
    if infer_stddev is not None:  # evaluate every target with its inference noise on (noisy hardware)
        for model in models.values():
            set_noise(model, infer_stddev=infer_stddev)
    clean_preds: dict[str, np.ndarray] = {}

    def predict(model, images, batch: int = 1000):
        return _predict(model, images, votes, batch)

    def clean_pred(name, model):
        """Each model's predictions on the clean ``x``, computed once and shared by every suite."""
        if name not in clean_preds:
            ev.counters["model_passes"] += 1
            clean_preds[name] = predict(model, x)
        return clean_preds[name]
    y = np.asarray(y)

    if "clean" in suites:
        for name, model in models.items():
            key = f"{name}|clean"
            if not ev.done(key):
                pred = clean_pred(name, model)
                ev.add({"key": key, "model": name, "suite": "clean", **accuracy_row(int(np.sum(pred == y)), len(y)),
                        "blank_gradient_fraction": blank_gradient_fraction(logits_fn(model, stddev=0.0), x[:500], y[:500]),
                        "flat_probe_fraction": flat_probe_fraction(logits_fn(model, stddev=0.0), x[:500], y[:500],
                                                                   seed=seed)})

    if "whitebox" in suites:
        for name, model in models.items():
            noisy = noise_settings(model)["infer_stddev"] > 0
            fn = logits_fn(model, eot=eot if noisy else 1)
            pred_clean = clean_pred(name, model)
            plan = [(att, fn, att) for att in whitebox_attacks]
            if has_step_activations(model):  # zero gradients a.e.: give the attacker a usable gradient
                plan += [("pgd_smoothed", logits_fn(smoothed_model(model), eot=eot if noisy else 1), "pgd"),
                         ("lr_pgd", fn, "lr_pgd")]
            for eps in eps_list:
                for label, attack_fn, att in plan:
                    key = f"{name}|whitebox|{label}|{eps}"
                    if ev.done(key):
                        continue
                    adv = attack(att, attack_fn, x, y, eps, steps=steps, step_size=step_size, restarts=restarts,
                                 seed=seed).numpy()
                    ev.counters["attack_runs"] += 1
                    ev.add({"key": key, **_attack_row(name, "whitebox", label, x, y, adv, predict(model, adv),
                                                      {"eps": eps, "norm": "inf", "steps": steps,
                                                       "eot": eot if noisy else 1}, pred_clean=pred_clean)})
            for att in minimal_attacks:
                key = f"{name}|whitebox|{att}"
                if ev.done(key):
                    continue
                adv = _attack_correct(att, fn, x, y, pred_clean, np.inf, steps=steps, seed=seed)
                ev.counters["attack_runs"] += 1
                ev.add({"key": key, **_attack_row(name, "whitebox", att, x, y, adv, predict(model, adv),
                                                  {"eps": None, "norm": "2" if att == "cw_l2" else "inf",
                                                   "eot": eot if noisy else 1},
                                                  pred_clean=pred_clean, pass_limit=pass_limit)})

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
                    adv = attack(att, logits_fn(src, stddev=0.0), xs, ys, eps, steps=steps, step_size=step_size,
                                 restarts=restarts, seed=seed).numpy()
                    ev.counters["attack_runs"] += 1
                    for name, key in keys.items():
                        if not ev.done(key):
                            ev.counters["model_passes"] += 2
                            ev.add({"key": key, **_attack_row(name, "transfer", att, xs, ys, adv,
                                                              predict(models[name], adv),
                                                              {"eps": eps, "norm": "inf", "steps": steps,
                                                               "restarts": restarts, "step_size": step_size,
                                                               "votes": votes if noise_settings(models[name])[
                                                                   "infer_stddev"] > 0 else None},
                                                              source=src_name, pred_clean=predict(models[name], xs))})

    if "gradfree" in suites:
        for name, model in models.items():
            for eps in eps_list:
                key = f"{name}|gradfree|spsa|{eps}"
                if ev.done(key):
                    continue
                pred = clean_pred(name, model)
                adv = _attack_correct("spsa", logits_fn(model), x, y, pred, eps, steps=steps, seed=seed)
                ev.counters["attack_runs"] += 1
                ev.add({"key": key, **_attack_row(name, "gradfree", "spsa", x, y, adv, predict(model, adv),
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
                        pred = predict(models[name], xc)
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
            train_stddev = noise_settings(model)["train_stddev"]
            for s in stddevs:
                for votes in votes_list:
                    key = f"{name}|voting|{s}|{votes}"
                    if ev.done(key) or (s == 0 and votes > 1):
                        continue
                    accs, abstain, kept_acc = [], [], []
                    for _ in range(vote_repeats if s > 0 else 1):
                        counts = vote_counts(model, tf.constant(x), votes, s).numpy()  # all votes in one call
                        ev.counters["model_passes"] += votes
                        accs.append(float(np.mean(counts.argmax(-1) == y)))
                        if abstain_alpha is not None and votes > 1:
                            pred = smoothed_predict(counts, abstain_alpha)
                            abstain.append(float(np.mean(pred < 0)))
                            kept_acc.append(float(np.mean(pred == y)))
                    row = accuracy_row(int(round(np.mean(accs) * len(y))), len(y))
                    extra = {}
                    if abstain:
                        extra = {"abstain_alpha": abstain_alpha, "abstain_rate": float(np.mean(abstain)),
                                 "smoothed_accuracy": float(np.mean(kept_acc))}
                    ev.add({"key": key, "model": name, "suite": "voting", "stddev": s, "votes": votes,
                            "noise": noise_settings(model)["noise"], "train_stddev": train_stddev, **row,
                            "accuracy": float(np.mean(accs)), "spread": float(np.std(accs)), "repeats": len(accs),
                            **extra})

    if "distortion" in suites:
        preds = {name: clean_pred(name, model) for name, model in models.items()}
        idx = common_correct(preds, y, distortion_per_class)
        for name, model in models.items():
            for s in distortion_stddevs:
                key = f"{name}|distortion|{s}"
                if ev.done(key) or not len(idx):
                    continue
                rate, se = changed_fraction(lambda im, m=model: predict(m, im, batch=4096), x[idx], s,
                                            distortion_draws, seed)
                ev.counters["model_passes"] += distortion_draws
                ev.add({"key": key, "model": name, "suite": "distortion", "corruption": "gaussian (BANG test)",
                        "stddev": s, "draws": distortion_draws, "n": int(len(idx)), "changed_rate": rate,
                        "accuracy": 1.0 - rate, "ci95": [max(0.0, 1 - rate - 1.96 * se), min(1.0, 1 - rate + 1.96 * se)]})

    flags = masking_flags(ev.rows)
    ev.save()
    return {"rows": ev.rows, "counters": ev.counters, "flags": flags}


def masking_flags(rows: list[dict]) -> dict:
    """Gradient-masking flags per model (PAPERS.md section 4).

    * ``blank_gradients``: some inputs have an exactly zero loss gradient.
    * ``flat_finite_differences``: over 5% of small random probes leave the output exactly
      unchanged, so SPSA-style gradient-free numbers are not evidence of robustness either.
    * ``whitebox_above_blackbox``: white-box accuracy exceeds transfer or gradient-free accuracy at
      the same eps (a stronger attack should never do worse).
    * ``no_collapse_at_large_eps``: an attack's white-box accuracy at the largest eps stays above 10%.
    * ``plain_gradient_weaker_than_smoothed``: (step-activation nets) PGD on the model's own
      gradient leaves accuracy well above PGD on its smooth stand-in or its likelihood-ratio gradient.
    """
    flags: dict[str, list[str]] = {}
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        out = []
        clean = next((r for r in mine if r["suite"] == "clean"), None)
        if clean and clean.get("blank_gradient_fraction", 0) > 0:
            out.append(f"blank_gradients ({100 * clean['blank_gradient_fraction']:.0f}% of inputs)")
        if clean and clean.get("flat_probe_fraction", 0) > 0.05:
            out.append(f"flat_finite_differences ({100 * clean['flat_probe_fraction']:.0f}% of probes)")
        wb = [r for r in mine if r["suite"] == "whitebox" and r.get("eps") is not None]
        for r in wb:
            others = [o for o in mine if o["suite"] in ("transfer", "gradfree") and o.get("eps") == r["eps"]]
            if any(o["accuracy"] < r["accuracy"] - 0.02 for o in others):
                out.append(f"whitebox_above_blackbox (eps {r['eps']})")
                break
        plain = {r["eps"]: r["accuracy"] for r in wb if r["attack"] == "pgd"}
        for r in wb:
            if r["attack"] in ("pgd_smoothed", "lr_pgd") and r["eps"] in plain and r["accuracy"] < plain[r["eps"]] - 0.02:
                out.append(f"plain_gradient_weaker_than_smoothed (eps {r['eps']}: pgd {100 * plain[r['eps']]:.0f}% "
                           f"vs {r['attack']} {100 * r['accuracy']:.0f}%)")
                break
        if wb:
            top = max(r["eps"] for r in wb)
            stuck = [f"{r['attack']} {100 * r['accuracy']:.0f}%" for r in wb if r["eps"] == top and r["accuracy"] > 0.10]
            if stuck:
                out.append(f"no_collapse_at_large_eps (eps {top}: {', '.join(stuck)})")
        flags[name] = out
    return flags
