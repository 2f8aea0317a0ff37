"""``report.md`` and PNG plots from the harness rows."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from evaluation.suites import get_suite, list_suites  # noqa: E402
from zoo.files import write_text_atomic


def _pct(row):
    acc = f"{100 * row['accuracy']:.1f}"
    if row.get("ci95"):
        lo, hi = row["ci95"]
        acc += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
    return acc


_EXTRA = (  # (row key, column title, format)
    ("success_rate", "success %", lambda v: f"{100 * v:.1f}"),
    ("mean_l2", "mean L2", lambda v: f"{v:.3f}"),
    ("mean_linf", "mean Linf", lambda v: f"{v:.3f}"),
    ("mean_pass", "mean PASS", lambda v: f"{v:.3f}"),
    ("blank_gradient_fraction", "blank grads %", lambda v: f"{100 * v:.1f}"),
    ("flat_probe_fraction", "flat probes %", lambda v: f"{100 * v:.1f}"),
    ("spread", "spread (std)", lambda v: f"{100 * v:.2f}"),
    ("abstain_rate", "abstain %", lambda v: f"{100 * v:.1f}"),
    ("smoothed_accuracy", "answered & right %", lambda v: f"{100 * v:.1f}"),
    ("changed_rate", "class changed %", lambda v: f"{100 * v:.2f}"),
    ("accuracy_after", "accuracy after each member %", lambda v: ", ".join(f"{k} {100 * a:.1f}" for k, a in v.items())),
)


def write_report(result: dict, out: str | Path, title: str = "glrzoo robustness report") -> Path:
    """Write ``out/report.md`` and plots; flagged models (possible gradient masking) are marked."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, flags = result["rows"], result.get("flags", {})
    lines = [f"# {title}", "", "Accuracy in %, with 95% Wilson intervals. A model marked **(masking?)** has a "
             "gradient-masking flag: its white-box numbers are not evidence of robustness.", ""]
    lines += ["## Gradient-masking flags", ""]
    for model, fl in flags.items():
        lines.append(f"- `{model}`: {', '.join(fl) if fl else 'none'}")
    c = result.get("counters", {})
    lines += ["", f"Work done: {c.get('attack_runs', 0)} attack runs, {c.get('model_passes', 0)} extra model passes.", ""]
    for suite in list_suites():  # one section per registered suite, headed by its note
        mine = [r for r in rows if r["suite"] == suite]
        if not mine:
            continue
        cols = [c for c in _EXTRA if any(c[0] in r for r in mine)]
        lines += [f"## {suite}", "", get_suite(suite).note, "",
                  "| model | what | settings | n | accuracy | " + " | ".join(c[1] for c in cols) + " |",
                  "|---|---|---|---|---|" + "---|" * len(cols)]
        for r in mine:
            flagged = flags.get(r["model"], [])
            masked = (suite == "whitebox" and flagged) or (
                suite == "gradfree" and any(f.startswith("flat_finite_differences") for f in flagged))
            name = r["model"] + (" **(masking?)**" if masked else "")
            what = r.get("attack") or r.get("corruption") or ""
            settings = " ".join(f"{k}={r[k]}" for k in ("source", "eps", "norm", "steps", "restarts", "eot", "version",
                                                        "severity", "stddev", "votes", "draws", "sigma", "n0",
                                                        "samples", "alpha") if r.get(k) is not None)
            extra = [c[2](r[c[0]]) if r.get(c[0]) is not None else "" for c in cols]
            lines.append(f"| {name} | {what} | {settings} | {r['n']} | {_pct(r)} | " + " | ".join(extra) + " |")
        lines.append("")
    _transfer_matrix(rows, lines)
    _plots(rows, out, lines)
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _plots(rows, out: Path, lines: list[str]) -> None:
    def plot(fname, title, xlabel, series):
        if not series:
            return
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for label, (xs, ys) in series.items():
            ax.plot(xs, [100 * v for v in ys], marker="o", label=label)
        ax.set(title=title, xlabel=xlabel, ylabel="accuracy (%)", ylim=(0, 100))
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=100)
        plt.close(fig)
        lines.append(f"![{title}]({fname})")

    series = {}
    for r in rows:
        if r["suite"] in ("whitebox", "transfer", "gradfree"):
            label = f"{r['model']} {r['suite']} {r['attack']}" + (f" from {r['source']}" if r.get("source") else "")
            series.setdefault(label, ([], []))
            series[label][0].append(r["eps"])
            series[label][1].append(r["accuracy"])
    plot("accuracy_vs_eps.png", "accuracy vs eps (L-inf)", "eps", series)
    series = {}
    for r in rows:
        if r["suite"] == "corruption" and r.get("severity"):
            series.setdefault(f"{r['model']} {r['corruption']}", ([], []))
            series[f"{r['model']} {r['corruption']}"][0].append(r["severity"])
            series[f"{r['model']} {r['corruption']}"][1].append(r["accuracy"])
    plot("accuracy_vs_severity.png", "accuracy vs corruption severity", "severity", series)
    series = {}
    for r in rows:
        if r["suite"] == "voting":
            label = f"{r['model']} {r['votes']} votes"
            series.setdefault(label, ([], []))
            series[label][0].append(r["stddev"])
            series[label][1].append(r["accuracy"])
    for label, (xs, _) in series.items():
        zero = [r for r in rows if r["suite"] == "voting" and r["stddev"] == 0 and label.startswith(r["model"] + " ")]
        if zero and 0.0 not in xs:
            xs.insert(0, 0.0)
            series[label][1].insert(0, zero[0]["accuracy"])
    plot("accuracy_vs_stddev.png", "noisy inference: accuracy vs stddev (SNR dB = -20 log10 s)", "inference stddev",
         series)
    _heatmap(rows, out, lines)
    _certified(rows, out, lines)
    lines.append("")
    lines.append("SNR of multiplicative noise: " + ", ".join(
        f"s={s:g}: {-20 * math.log10(s):.1f} dB" for s in (0.2, 0.4, 0.6, 0.8, 1.0)))


def _certified(rows, out: Path, lines: list[str]) -> None:
    """Certified accuracy vs L2 radius (Cohen, Rosenfeld and Kolter 2019), one curve per model and sigma."""
    from evaluation.certify import curves_from_rows, plot_certified_accuracy

    curves = curves_from_rows(rows)
    if not curves:
        return
    cert = [r for r in rows if r["suite"] == "certify"]
    plot_certified_accuracy(curves, out / "certified_accuracy.png",
                            title=f"Gaussian smoothing, n = {cert[0]['samples']}, alpha = {cert[0]['alpha']}")
    lines.append("![certified accuracy vs L2 radius](certified_accuracy.png)")


def _heatmap(rows, out: Path, lines: list[str]) -> None:
    """Train-stddev x inference-stddev accuracy heat map (most votes), when models differ in train stddev."""
    vote = [r for r in rows if r["suite"] == "voting" and r.get("train_stddev") is not None]
    trains = sorted({r["train_stddev"] for r in vote})
    if len(trains) < 2:
        return
    infers = sorted({r["stddev"] for r in vote})
    top = max(r["votes"] for r in vote)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
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
    plt.close(fig)
    lines.append("![train stddev x inference stddev](train_vs_infer_stddev.png)")


def _transfer_matrix(rows, lines: list[str]) -> None:
    """Source x target accuracy matrices, one per transfer attack and eps."""
    transfer = [r for r in rows if r["suite"] == "transfer"]
    if not transfer:
        return
    lines += ["## transfer matrix", "", "Accuracy (%) of each target (columns) on the examples each source (rows) made.", ""]
    targets = list(dict.fromkeys(r["model"] for r in transfer))
    for att, eps in dict.fromkeys((r["attack"], r["eps"]) for r in transfer):
        lines += [f"**{att}, eps {eps}**", "", "| source (rows) / target (columns) | " + " | ".join(targets) + " |",
                  "|---|" + "---|" * len(targets)]
        for src in dict.fromkeys(r["source"] for r in transfer):
            cells = [next((f"{100 * r['accuracy']:.1f}" for r in transfer if r["source"] == src and r["model"] == t
                           and r["attack"] == att and r["eps"] == eps), "") for t in targets]
            lines.append(f"| {src} | " + " | ".join(cells) + " |")
        lines.append("")
