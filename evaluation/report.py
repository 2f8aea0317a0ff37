"""``report.md`` and PNG plots from the harness rows."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _pct(row):
    acc = f"{100 * row['accuracy']:.1f}"
    if row.get("ci95"):
        lo, hi = row["ci95"]
        acc += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
    return acc


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
    for suite in ("clean", "whitebox", "transfer", "gradfree", "corruption", "voting"):
        mine = [r for r in rows if r["suite"] == suite]
        if not mine:
            continue
        lines += [f"## {suite}", "", "| model | what | settings | n | accuracy | success | mean L2 | mean Linf |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in mine:
            name = r["model"] + (" **(masking?)**" if flags.get(r["model"]) and suite == "whitebox" else "")
            what = r.get("attack") or r.get("corruption") or ""
            settings = " ".join(f"{k}={r[k]}" for k in ("source", "eps", "steps", "eot", "severity", "stddev", "votes")
                                if r.get(k) is not None)
            extra = [f"{100 * r['success_rate']:.1f}" if "success_rate" in r else "",
                     f"{r['mean_l2']:.3f}" if "mean_l2" in r else "", f"{r['mean_linf']:.3f}" if "mean_linf" in r else ""]
            lines.append(f"| {name} | {what} | {settings} | {r['n']} | {_pct(r)} | " + " | ".join(extra) + " |")
        lines.append("")
    _plots(rows, out, lines)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
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
    lines.append("")
    lines.append("SNR of multiplicative noise: " + ", ".join(
        f"s={s:g}: {-20 * math.log10(s):.1f} dB" for s in (0.2, 0.4, 0.6, 0.8, 1.0)))
