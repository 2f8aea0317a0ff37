"""The report's pictures, as figure functions ``fig(rows, out) -> markdown lines`` that suites
register (:func:`evaluation.suites.register_suite`'s ``figures``); a figure shared by several
suites is drawn once, from all of their rows. Made with matplotlib's object API (no pyplot
state), PNG at 100 dpi.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

Series = Mapping[str, tuple[list, list]]  # label -> (x values, accuracies in [0, 1])


def line_plot(out: Path, fname: str, title: str, xlabel: str, series: Series) -> list[str]:
    """Accuracy (%) against ``xlabel``, one line per series; the markdown line of the picture
    (nothing when there is no series)."""
    if not series:
        return []
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    for label, (xs, ys) in series.items():
        ax.plot(xs, [100 * v for v in ys], marker="o", label=label)
    ax.set(title=title, xlabel=xlabel, ylabel="accuracy (%)", ylim=(0, 100))
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / fname, dpi=100)
    return [f"![{title}]({fname})"]


def curves(rows: Sequence[dict], where: Callable[[dict], bool], x: str, label: Callable[[dict], str]) -> dict:
    """``{label(row): ([row[x], ...], [row["accuracy"], ...])}`` over the rows ``where`` accepts."""
    series: dict = {}
    for r in rows:
        if where(r):
            xs, ys = series.setdefault(label(r), ([], []))
            xs.append(r[x])
            ys.append(r["accuracy"])
    return series


def accuracy_vs_eps(rows: Sequence[dict], out: Path) -> list[str]:
    """Accuracy against the L-inf radius, one line per model, suite and attack (and source)."""
    series = curves(rows, lambda r: r["suite"] in ("whitebox", "transfer", "gradfree") and r.get("eps") is not None
                    and r.get("norm") in (None, "inf"), "eps",
                    lambda r: f"{r['model']} {r['suite']} {r['attack']}" + (f" from {r['source']}" if r.get("source")
                                                                             else ""))
    return line_plot(out, "accuracy_vs_eps.png", "accuracy vs eps (L-inf)", "eps", series)


def accuracy_vs_severity(rows: Sequence[dict], out: Path) -> list[str]:
    """Accuracy against corruption severity, one line per model and corruption."""
    series = curves(rows, lambda r: r["suite"] == "corruption" and bool(r.get("severity")), "severity",
                    lambda r: f"{r['model']} {r['corruption']}")
    return line_plot(out, "accuracy_vs_severity.png", "accuracy vs corruption severity", "severity", series)


def accuracy_vs_stddev(rows: Sequence[dict], out: Path) -> list[str]:
    """Noisy inference: accuracy against the inference stddev, one line per model and vote count
    (each line starts at its model's noise-free accuracy); the multiplicative SNR in dB below."""
    vote = [r for r in rows if r["suite"] == "voting"]
    series = curves(vote, lambda r: True, "stddev", lambda r: f"{r['model']} {r['votes']} votes")
    for label, (xs, ys) in series.items():
        zero = [r for r in vote if r["stddev"] == 0 and label.startswith(r["model"] + " ")]
        if zero and 0.0 not in xs:
            xs.insert(0, 0.0)
            ys.insert(0, zero[0]["accuracy"])
    lines = line_plot(out, "accuracy_vs_stddev.png", "noisy inference: accuracy vs stddev (SNR dB = -20 log10 s)",
                      "inference stddev", series)
    lines += train_vs_infer_stddev(vote, out)
    if lines:
        lines += ["", "SNR of multiplicative noise: " + ", ".join(
            f"s={s:g}: {-20 * math.log10(s):.1f} dB" for s in (0.2, 0.4, 0.6, 0.8, 1.0))]
    return lines


def train_vs_infer_stddev(vote: Sequence[dict], out: Path) -> list[str]:
    """Train-stddev x inference-stddev accuracy heat map (1 vote and the most votes), when the
    models differ in train stddev."""
    vote = [r for r in vote if r.get("train_stddev") is not None]
    trains = sorted({r["train_stddev"] for r in vote})
    if len(trains) < 2:
        return []
    from matplotlib.figure import Figure

    infers = sorted({r["stddev"] for r in vote})
    top = max(r["votes"] for r in vote)
    fig = Figure(figsize=(9, 3.5))
    axes = fig.subplots(1, 2)
    for ax, votes in zip(axes, (1, top)):
        grid = [[next((100 * r["accuracy"] for r in vote if r["train_stddev"] == t and r["stddev"] == s
                       and (r["votes"] == votes or s == 0)), float("nan")) for s in infers] for t in trains]
        im = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", aspect="auto", origin="lower")
        ax.set(xticks=range(len(infers)), xticklabels=[f"{s:g}" for s in infers], yticks=range(len(trains)),
               yticklabels=[f"{t:g}" for t in trains], xlabel="inference stddev", ylabel="train stddev",
               title=f"accuracy %, {votes} vote{'s' if votes > 1 else ''}")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if v == v:
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="w", fontsize=7)
    fig.colorbar(im, ax=axes)
    fig.savefig(out / "train_vs_infer_stddev.png", dpi=100)
    return ["![train stddev x inference stddev](train_vs_infer_stddev.png)"]


__all__ = ["accuracy_vs_eps", "accuracy_vs_severity", "accuracy_vs_stddev", "curves", "line_plot",
           "train_vs_infer_stddev"]
