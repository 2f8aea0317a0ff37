"""``glrzoo demo``: the main job on the bundled digits, end to end, in a few minutes on 2 CPU cores.

Trains a plain and a noise-injected model by backprop and two forward-only GLR models (sigmoid
and threshold units) and exports them; then the robustness harness loads the exports back and runs
on them (transfer attacks from a separate backprop substitute, gradient-free SPSA, the GLR authors'
four corruptions, noisy voting with abstention and the train x inference stddev heat map) into
``<out>/robustness/``. Its voting rows (accuracy under multiplicative inference noise, stddev 0 to
1, with 1 and 20 votes) are also the demo's own table: ``<out>/report.json``, ``<out>/report.md``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from evaluation.corruptions import list_corruptions
from evaluation.harness import evaluate
from evaluation.report import write_report
from training.run import TrainConfig, train
from zoo.data import load_digits
from zoo.errors import OutputExistsError
from zoo.files import write_text_atomic

STDDEVS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def demo_configs(out: Path, quick: bool) -> list[TrainConfig]:
    """Backprop plain and noise-injected (multiplicative, stddev 1.0) MLPs, and two GLR-trained MLPs
    (sigmoid and threshold units, Gaussian estimator noise with a leave-one-out baseline)."""
    epochs = 5 if quick else 40
    glr_epochs = 3 if quick else 20
    common = dict(model="mlp", dataset="digits", batch_size=32, noise="multiplicative", verbose=0, overwrite=True)
    bp_args = dict(epochs=epochs, lr=3e-3, model_args={"hidden": [128], "activation": "relu"})
    glr_args = dict(method="glr", epochs=glr_epochs, lr=1e-2, model_args={"hidden": [64]})
    return [
        TrainConfig(out=str(out / "bp_plain"), train_stddev=0.0, **bp_args, **common),
        TrainConfig(out=str(out / "bp_noise1.0"), train_stddev=1.0, **bp_args, **common),
        TrainConfig(out=str(out / "glr_sigmoid"), activation="sigmoid",
                    method_args={"replications": 10, "baseline": True}, **glr_args, **common),
        TrainConfig(out=str(out / "glr_threshold"), activation="threshold",
                    method_args={"replications": 100, "baseline": True}, **glr_args, **common),
    ]


def _check_reports(out: Path) -> None:
    """Refuse (before anything is written) an ``out`` whose ``report.md`` or ``report.json`` the demo did not write."""
    for name in ("report.md", "report.json"):
        path = out / name
        if not path.exists():
            continue
        try:
            text = path.read_text()
            ours = (text.startswith("# glrzoo demo report") if name == "report.md" else
                    {"schema", "dataset", "rows", "seconds"} <= set(json.loads(text)))
        except (OSError, ValueError, TypeError, UnicodeDecodeError):
            ours = False
        if not ours:
            raise OutputExistsError(f"{path} was not written by the demo and would be replaced; move it away or "
                                    "choose another --out (nothing was changed)")


def run_demo(out: str | Path = "demo_out", quick: bool = False) -> dict:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} is a file, not a folder; choose another --out (nothing was changed)")
    _check_reports(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_digits()
    votes_list = (1, 5) if quick else (1, 20)
    t0 = time.time()
    for config in demo_configs(out, quick):
        print(f"[demo] training {Path(config.out).name} ({config.method}, {config.model}, "
              f"train_stddev={config.train_stddev}) ...", flush=True)
        train(config, data=data)
    print("[demo] robustness harness: transfer from a backprop substitute, SPSA, corruptions, voting ...", flush=True)
    substitute = TrainConfig(model="substitute_mlp", dataset="digits", epochs=5 if quick else 30, lr=1e-3,
                             batch_size=32, verbose=0, overwrite=True, out=str(out / "substitute"))
    train(substitute, data=data)
    dirs = [c.out for c in demo_configs(out, quick)]
    result = evaluate(dirs, data.x_test, data.y_test, suites=("clean", "transfer", "gradfree", "corruption", "voting"),
                      sources=[substitute.out], out=out / "robustness", eps_list=(0.1, 0.2) if not quick else (0.2,),
                      steps=10 if not quick else 3, stddevs=STDDEVS, votes_list=votes_list,
                      vote_repeats=1 if quick else 2, corruptions=list_corruptions(paper=True), log=lambda line: None)
    keep = ("model", "suite", "noise", "stddev", "votes", "n", "accuracy", "ci95", "spread", "repeats")
    rows = [{k: r[k] for k in keep if k in r} for r in result["rows"] if r["suite"] == "voting"]  # the harness's votes
    report = {"schema": 1, "dataset": "digits", "rows": rows, "seconds": round(time.time() - t0, 1)}
    write_text_atomic(out / "report.json", json.dumps(report, indent=2))
    table = format_table(rows, votes_list)
    write_text_atomic(out / "report.md", "# glrzoo demo report (digits test set, n=%d)\n\n%s\n" % (len(data.y_test), table))
    print(table)
    write_report(result, out / "robustness", title="glrzoo demo: robustness on digits")
    print(format_robustness(result))
    print(f"[demo] done in {round(time.time() - t0, 1)} s; exports in {out}/, reports in {out}/report.md and "
          f"{out}/robustness/report.md")
    return report


def format_robustness(result: dict) -> str:
    """One line per model: clean, transfer (from the substitute), SPSA, and mean corruption accuracy (eq. 6)."""
    rows = result["rows"]
    lines = ["| model | clean | transfer from the substitute: FGSM eps .1/.2, PGD eps .1/.2 | SPSA eps .1/.2 | "
             "corruptions mA (eq. 6) | masking flags |",
             "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        pick = lambda suite, **kw: [r for r in mine if r["suite"] == suite and all(r.get(k) == v for k, v in kw.items())]  # noqa: E731
        fmt = lambda rs: " / ".join(f"{100 * r['accuracy']:.1f}" for r in rs) or "-"  # noqa: E731
        lines.append(f"| {name} | {fmt(pick('clean'))} | {fmt(pick('transfer'))} | {fmt(pick('gradfree'))} | "
                     f"{fmt(pick('corruption', corruption='mean (eq. 6)'))} | "
                     f"{', '.join(result['flags'].get(name, [])) or '-'} |")
    return "\n".join(lines)


def format_table(rows: list[dict], votes_list) -> str:
    models = list(dict.fromkeys(r["model"] for r in rows))
    header = "| model | votes | " + " | ".join(f"s={s:g}" for s in STDDEVS) + " |"
    lines = [header, "|" + "---|" * (2 + len(STDDEVS))]
    for m in models:
        for v in votes_list:
            cells = []
            for s in STDDEVS:
                match = [r for r in rows if r["model"] == m and r["stddev"] == s and (r["votes"] == v or s == 0)]
                cells.append(f"{100 * match[0]['accuracy']:.1f}" if match else "")
            lines.append(f"| {m} | {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
