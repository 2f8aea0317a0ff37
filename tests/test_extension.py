"""The cost of extending glrzoo: a toy attack, a toy suite with one setting, a toy corruption and a
toy training flag, each one new module of a temporary package outside the repository, loaded as
plugins (``$GLRZOO_PLUGINS``), run end to end through the CLI into a report. No file of glrzoo is
touched: the plugin modules only import glrzoo's registries."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

MODULES = {
    "attack.py": '''
        import tensorflow as tf
        from evaluation.attacks import register_attack

        @register_attack("toy_push", description="every pixel eps towards mid-grey (a toy attack)")
        def toy_push(fn, x, y, s):
            return tf.clip_by_value(x + s.eps * tf.sign(0.5 - x), 0.0, 1.0)
    ''',
    "suite.py": '''
        import dataclasses
        import numpy as np
        from evaluation.metrics import accuracy_row
        from evaluation.options import integer, option
        from evaluation.suites import register_suite

        @dataclasses.dataclass(frozen=True)
        class ToySettings:
            """A toy suite: clean accuracy on the first toy_points test points."""
            toy_points: int = option(10, "test points the toy suite reads", **integer(1))

        @register_suite("toy", settings=ToySettings, note="Toy suite: accuracy on the first toy_points points.")
        def toy(ctx, s):
            for name, model in ctx.models.items():
                pred = ctx.clean_pred(name, model)[:s.toy_points]
                ctx.add({"key": f"{name}|toy", "model": name, "suite": "toy", "points": s.toy_points,
                         **accuracy_row(int(np.sum(pred == ctx.y[:s.toy_points])), len(pred))})
    ''',
    "corruption.py": '''
        import numpy as np
        from evaluation.corruptions import register_corruption

        @register_corruption("toy_invert", (0.1, 0.2, 0.3, 0.4, 0.5))
        def toy_invert(x, rng, share):
            return np.clip((1 - share) * x + share * (1 - x), 0, 1).astype(np.float32)
    ''',
    "flag.py": '''
        from training.flags import Flag, non_negative
        from training.transforms import register_transform

        class Scale:
            def __init__(self, factor):
                self.factor = factor

            def __call__(self, model, x, y, step):
                return x * self.factor, y

        @register_transform("toy_scale", Flag("--toy-scale", "multiply every training input by this", non_negative))
        def toy_scale(factor, *, seed):
            return Scale(factor)
    ''',
}

SCRIPT = "import sys; from glrzoo.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.large  # ~30 s: two short trainings and an evaluation in subprocesses
def test_toy_attack_suite_corruption_and_flag_from_plugin_modules(tmp_path):
    package = tmp_path / "toyext"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name, body in MODULES.items():
        (package / name).write_text(textwrap.dedent(body))
    env = {**os.environ, "GLRZOO_PLUGINS": "toyext.attack,toyext.suite,toyext.corruption,toyext.flag",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}

    def glrzoo(*args):
        return subprocess.run([sys.executable, "-c", SCRIPT, *args], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=600)

    blind, seen = tmp_path / "blind", tmp_path / "seen"
    for out, scale in ((blind, "0"), (seen, "1")):
        run = glrzoo("train", "--model", "test_mlp", "--epochs", "3", "--lr", "0.01", "--toy-scale", scale,
                     "--quiet", "--out", str(out))
        assert run.returncode == 0, run.stderr[-2000:]
    meta = {p.name: json.loads((p / "metadata.json").read_text()) for p in (blind, seen)}
    assert meta["blind"]["training"]["recipe"]["transforms"] == {"toy_scale": 0.0}  # recorded (and --resume checks it)
    assert {"transform": "Scale"} in meta["blind"]["training"]["transforms"]
    # the flag acts: a net that trained on blank inputs is at chance, the other is not
    assert meta["blind"]["metrics"]["test_accuracy"] < 0.3 < 0.6 < meta["seen"]["metrics"]["test_accuracy"]

    report = tmp_path / "report"
    run = glrzoo("evaluate", str(seen), "--suite", "clean,whitebox,corruption,toy", "--attacks", "toy_push",
                 "--reference-attack", "", "--minimal-attacks", "", "--eps", "0.3", "--corruptions", "toy_invert",
                 "--toy-points", "40", "--n", "60", "--out", str(report))
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads((report / "report.json").read_text())["rows"]
    toy = next(r for r in rows if r["suite"] == "toy")
    assert toy["points"] == 40 and toy["n"] == 40  # the suite's own setting reached it
    clean = next(r for r in rows if r["suite"] == "clean")["accuracy"]
    pushed = next(r for r in rows if r["suite"] == "whitebox" and r["attack"] == "toy_push")
    assert pushed["eps"] == 0.3 and pushed["accuracy"] < clean  # the toy attack ran and hurt
    inverted = {r["severity"]: r["accuracy"] for r in rows if r.get("corruption") == "toy_invert"}
    assert sorted(inverted) == [1, 2, 3, 4, 5]
    md = (report / "report.md").read_text()
    assert "## toy" in md and "Toy suite" in md and "toy_invert" in md and "toy_push" in md
    assert "accuracy_vs_severity.png" in md  # the corruption suite's figure shows the plugin's corruption
    run = glrzoo("evaluate", str(seen), "--help")
    assert "toy suite" in run.stdout and "--toy-points" in run.stdout
