"""The evaluation harness on two small exports: rows, transfer matrix, resume, report, masking flags."""
import json

import numpy as np
import pytest

from zoo.cli import main


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    common = ["train", "--model", "mlp", "--epochs", "6", "--batch-size", "64", "--lr", "0.01", "--quiet"]
    assert main(common + ["--model-args", '{"hidden": [64], "activation": "relu"}', "--out", str(root / "relu")]) == 0
    assert main(common + ["--method", "glr", "--activation", "threshold", "--replications", "50", "--baseline",
                          "--model-args", '{"hidden": [64]}', "--out", str(root / "step")]) == 0
    return root


def test_evaluate_writes_rows_flags_and_resumes(exports, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["evaluate", str(exports / "relu"), str(exports / "step"), "--suite", "clean,whitebox,transfer,corruption",
            "--eps", "0.1,0.5", "--n", "120", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    rows = report["rows"]
    assert report["schema_version"] == 1
    clean = {r["model"]: r for r in rows if r["suite"] == "clean"}
    assert clean["relu"]["accuracy"] > 0.8 and clean["relu"]["n"] == 120
    assert clean["step"]["blank_gradient_fraction"] == 1.0
    transfer = [r for r in rows if r["suite"] == "transfer"]
    assert {(r["source"], r["model"]) for r in transfer} == {("relu", "step"), ("step", "relu")}
    wb_step = [r for r in rows if r["suite"] == "whitebox" and r["model"] == "step"]
    wb_relu = [r for r in rows if r["suite"] == "whitebox" and r["model"] == "relu" and r["eps"] == 0.5]
    assert min(r["accuracy"] for r in wb_relu) < 0.05  # a real model collapses at eps 0.5
    # blank gradients: FGSM does nothing, and PGD only its random start does anything ...
    assert all(r["success_rate"] == 0 for r in wb_step if r["attack"] == "fgsm")
    assert min(r["accuracy"] for r in wb_step if r["eps"] == 0.5) > 0.5
    md = (out / "report.md").read_text()
    assert "step **(masking?)**" in md and "blank_gradients" in md  # ... and the report says why
    assert "no_collapse_at_large_eps" in md
    assert (out / "accuracy_vs_eps.png").is_file() and (out / "accuracy_vs_severity.png").is_file()
    assert len([r for r in rows if r["suite"] == "corruption"]) == 2 * (4 * 5 + 1)
    for r in rows:
        if r.get("ci95"):
            assert r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]
    # resume: nothing is redone
    before = (out / "report.json").read_text()
    capsys.readouterr()
    assert main(argv) == 0
    assert json.loads((out / "report.json").read_text())["rows"] == json.loads(before)["rows"]
    assert "acc " not in capsys.readouterr().out  # no row was recomputed


def test_bad_suite_is_refused(exports, tmp_path):
    assert main(["evaluate", str(exports / "relu"), "--suite", "clean,vibes", "--out", str(tmp_path / "r")]) == 2
    assert main(["evaluate", str(tmp_path), "--out", str(tmp_path / "r2")]) == 2
