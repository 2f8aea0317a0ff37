"""``report.md`` from the harness rows: one section per suite, the transfer matrix and the pictures
the suites registered (:mod:`evaluation.plots`)."""
from __future__ import annotations

from pathlib import Path

from evaluation.suites import get_suite, list_suites
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
    _figures(rows, out, lines)
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _figures(rows, out: Path, lines: list[str]) -> None:
    """The pictures each suite with rows registered (:mod:`evaluation.plots`), each figure once."""
    done = []
    for suite in list_suites():
        if not any(r["suite"] == suite for r in rows):
            continue
        for figure in get_suite(suite).figures:
            if figure not in done:
                done.append(figure)
                lines += figure(rows, out)


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
