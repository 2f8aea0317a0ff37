"""The evaluation harness on two small exports: rows, transfer matrix, resume, report, masking flags."""
import json

import numpy as np
import pytest

from evaluation.corruptions import list_corruptions
from glrzoo.cli import main


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    common = ["train", "--model", "mlp", "--epochs", "6", "--batch-size", "64", "--lr", "0.01", "--quiet"]
    assert main(common + ["--model-args", '{"hidden": [64], "activation": "relu"}', "--out", str(root / "relu")]) == 0
    assert main(common + ["--method", "glr", "--activation", "threshold", "--replications", "50", "--baseline",
                          "--model-args", '{"hidden": [64]}', "--out", str(root / "step")]) == 0
    return root


@pytest.mark.large  # ~25 s: every attack suite on two models
def test_evaluate_writes_rows_flags_and_resumes(exports, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["evaluate", str(exports / "relu"), str(exports / "step"), "--suite", "clean,whitebox,transfer,corruption",
            "--eps", "0.1,0.5", "--n", "120", "--apgd-steps", "25", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    rows = report["rows"]
    assert report["schema_version"] == 3
    clean = {r["model"]: r for r in rows if r["suite"] == "clean"}
    assert clean["relu"]["accuracy"] > 0.8 and clean["relu"]["n"] == 120
    assert clean["step"]["blank_gradient_fraction"] == 1.0
    assert clean["step"]["flat_probe_fraction"] > 0.5 and clean["relu"]["flat_probe_fraction"] == 0.0
    transfer = [r for r in rows if r["suite"] == "transfer"]
    assert {(r["source"], r["model"]) for r in transfer} == {("relu", "step"), ("step", "relu")}
    wb_step = [r for r in rows if r["suite"] == "whitebox" and r["model"] == "step"]
    wb_relu = [r for r in rows if r["suite"] == "whitebox" and r["model"] == "relu" and r["eps"] == 0.5]
    assert min(r["accuracy"] for r in wb_relu) < 0.05  # a real model collapses at eps 0.5
    # blank gradients: FGSM does nothing, and PGD only its random start does anything ...
    assert all(r["success_rate"] == 0 for r in wb_step if r["attack"] == "fgsm")
    acc = {(r["attack"], r.get("eps")): r["accuracy"] for r in wb_step}
    assert acc[("pgd", 0.5)] > 0.5
    # ... while a usable gradient (smooth stand-in, likelihood-ratio input gradient) breaks it
    assert acc[("pgd_smoothed", 0.5)] < acc[("pgd", 0.5)] - 0.3
    assert acc[("lr_pgd", 0.5)] < acc[("pgd", 0.5)] - 0.3
    # minimal attacks on the relu net: (nearly) every correct point flipped, with a PASS score
    for att in ("cw_l2", "hotcold"):
        row = next(r for r in rows if r["model"] == "relu" and r.get("attack") == att)
        assert row["eps"] is None and row["success_rate"] > 0.9 and 0 < row["mean_pass"] <= 1
    md = (out / "report.md").read_text()
    assert "plain_gradient_weaker_than_smoothed" in md
    assert "## transfer matrix" in md and "| relu | " in md  # source rows x target columns
    assert "step **(masking?)**" in md and "blank_gradients" in md  # ... and the report says why
    assert "- `relu`: none" in md  # an undefended net whose attacks behave as the checklist expects: no flag
    wb_aa = [r for r in rows if r["suite"] == "whitebox" and r["attack"] == "autoattack"]
    assert {(r["model"], r["eps"]) for r in wb_aa} == {(m, e) for m in ("relu", "step") for e in (0.1, 0.5, 1.0)}
    assert next(r for r in wb_aa if r["model"] == "relu" and r["eps"] == 1.0)["success_rate"] == 1.0
    assert (out / "accuracy_vs_eps.png").is_file() and (out / "accuracy_vs_severity.png").is_file()
    # every registered corruption at five severities, the authors' mean (eq. 6) and the mean over all
    assert len([r for r in rows if r["suite"] == "corruption"]) == 2 * (len(list_corruptions()) * 5 + 2)
    for r in rows:
        if r.get("ci95"):
            assert r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]
    # resume: nothing is redone
    before = (out / "report.json").read_text()
    capsys.readouterr()
    assert main(argv) == 0
    assert json.loads((out / "report.json").read_text())["rows"] == json.loads(before)["rows"]
    assert "acc " not in capsys.readouterr().out  # no row was recomputed


def test_bad_suite_is_refused(tmp_path, capsys):
    """Names are checked before any model is looked at (no model needs to exist, nothing is written)."""
    absent = str(tmp_path / "no_model")
    assert main(["evaluate", absent, "--attacks", "fgsm,deepfool", "--out", str(tmp_path / "r3")]) == 2
    assert "unknown deepfool" in capsys.readouterr().err
    assert main(["evaluate", absent, "--suite", "clean,vibes", "--out", str(tmp_path / "r")]) == 2
    assert "unknown vibes" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), "--out", str(tmp_path / "r2")]) == 2  # a folder that is no export
    assert "not a glrzoo export" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.large  # slow here (5-20 s); .ci/run runs it
def test_voting_abstention_and_distortion(exports, tmp_path):
    from evaluation.harness import evaluate
    from zoo.data import load_digits
    d = load_digits()
    x, y = d.x_test[:150], d.y_test[:150]
    res = evaluate([str(exports / "relu"), str(exports / "step")], x, y, suites=("voting", "distortion"),
                   out=tmp_path, stddevs=(0.0, 0.5, 2.0), votes_list=(1, 9), vote_repeats=2,
                   distortion_stddevs=(0.05, 0.6), distortion_per_class=5, distortion_draws=20, log=lambda _: None)
    rows = res["rows"]
    vote = {(r["model"], r["stddev"], r["votes"]): r for r in rows if r["suite"] == "voting"}
    # more inference noise: more abstentions (the binomial test cannot separate the top two)
    assert vote[("relu", 2.0, 9)]["abstain_rate"] > vote[("relu", 0.5, 9)]["abstain_rate"]
    for r in vote.values():
        if "abstain_rate" in r:  # answering less often never makes more correct answers
            assert r["smoothed_accuracy"] <= r["accuracy"] + 1e-9
    dist = {(r["model"], r["stddev"]): r for r in rows if r["suite"] == "distortion"}
    assert {r["n"] for r in dist.values()} == {50}  # 5 per class, correct for both models
    for m in ("relu", "step"):
        assert dist[(m, 0.6)]["changed_rate"] > dist[(m, 0.05)]["changed_rate"]


@pytest.mark.large  # over 4 s here; the default suite stays under 3 min
def test_report_has_heat_map_for_different_train_stddevs(exports, tmp_path):
    from evaluation.harness import evaluate
    from evaluation.report import write_report
    from zoo.data import load_digits
    d = load_digits()
    noisy = tmp_path / "noisy"
    assert main(["train", "--model", "mlp", "--epochs", "2", "--batch-size", "64", "--quiet", "--train-stddev", "0.5",
                 "--model-args", '{"hidden": [32]}', "--out", str(noisy)]) == 0
    res = evaluate([str(exports / "relu"), str(noisy)], d.x_test[:60], d.y_test[:60], suites=("voting",),
                   out=tmp_path / "r", stddevs=(0.0, 0.5), votes_list=(1, 3), vote_repeats=1, log=lambda _: None)
    trains = {r["train_stddev"] for r in res["rows"]}
    assert trains == {0.0, 0.5}
    md = write_report(res, tmp_path).read_text()
    assert "train_vs_infer_stddev.png" in md and (tmp_path / "train_vs_infer_stddev.png").stat().st_size > 1000
    assert "abstain %" in md


@pytest.mark.large  # slow here (5-20 s); .ci/run runs it
def test_targets_with_inference_noise_are_judged_by_their_vote(exports, tmp_path):
    from evaluation.harness import evaluate
    from zoo.data import load_digits
    d = load_digits()
    kw = dict(suites=("clean", "transfer"), transfer_attacks=("fgsm",), eps_list=(0.2,), log=lambda _: None)
    dirs = [str(exports / "relu"), str(exports / "step")]
    quiet = evaluate(dirs, d.x_test[:200], d.y_test[:200], out=tmp_path / "a", **kw)["rows"]
    noisy = evaluate(dirs, d.x_test[:200], d.y_test[:200], out=tmp_path / "b", infer_stddev=3.0, votes=3, **kw)["rows"]
    assert all(r.get("votes") is None for r in quiet if r["suite"] == "transfer")
    assert all(r["votes"] == 3 for r in noisy if r["suite"] == "transfer")
    # heavy additive noise on every unit really is on: clean accuracy moves
    acc = lambda rows, m: next(r["accuracy"] for r in rows if r["suite"] == "clean" and r["model"] == m)  # noqa: E731
    assert abs(acc(quiet, "relu") - acc(noisy, "relu")) > 0.02


def test_image_only_suites_refuse_sequences_up_front(tmp_path):
    from evaluation.harness import evaluate
    x = np.random.default_rng(0).uniform(0, 1, (10, 117, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="needs images"):
        evaluate([str(tmp_path)], x, np.zeros(10, int), suites=("clean", "corruption"), out=tmp_path / "r")
    assert not (tmp_path / "r").exists()  # refused before any work or output


def test_distortion_votes_with_predict_votes_not_the_voting_grid(exports, tmp_path, monkeypatch):
    """Regression: the voting suite's loop once rebound ``votes``, so the distortion suite after it voted
    with the last entry of the voting grid (9 here) instead of ``votes`` (--predict-votes, 3 here)."""
    import evaluation.suites as suites
    from evaluation.harness import evaluate
    from zoo.data import load_digits

    seen = []
    real = suites.predict_classes

    def spy(model, x, votes=1, batch=1000):
        seen.append(votes)
        return real(model, x, votes, batch)

    monkeypatch.setattr(suites, "predict_classes", spy)
    d = load_digits()
    res = evaluate([str(exports / "relu")], d.x_test[:60], d.y_test[:60], suites=("voting", "distortion"),
                   out=tmp_path, stddevs=(0.0, 0.3), votes_list=(1, 9), vote_repeats=1, votes=3, infer_stddev=0.3,
                   distortion_stddevs=(0.1,), distortion_per_class=2, distortion_draws=4, log=lambda _: None)
    assert {r["votes"] for r in res["rows"] if r["suite"] == "voting"} == {1, 9}
    assert any(r["suite"] == "distortion" for r in res["rows"])
    assert seen and set(seen) == {3}, seen


def test_every_registered_corruption_reaches_the_report(exports, tmp_path, monkeypatch):
    """A corruption added with register_corruption gets rows and joins 'mean (all)', not the authors' eq. 6 mean."""
    import evaluation.corruptions as corruptions
    from evaluation.harness import evaluate
    from evaluation.report import write_report
    from zoo.data import load_digits

    monkeypatch.setattr(corruptions, "CORRUPTIONS", corruptions.CORRUPTIONS.copy())

    @corruptions.register_corruption("test_invert", (0.1, 0.2, 0.3, 0.4, 0.5))
    def invert(x, rng, share):
        return np.where(rng.random(x.shape) < share, 1 - x, x).astype(np.float32)

    d = load_digits()
    res = evaluate([str(exports / "relu")], d.x_test[:40], d.y_test[:40], suites=("corruption",), out=tmp_path,
                   log=lambda _: None)
    rows = res["rows"]
    assert {r["corruption"] for r in rows} == {*corruptions.list_corruptions(), "mean (eq. 6)", "mean (all)"}
    per = {(r["corruption"], r["severity"]): r["accuracy"] for r in rows if r.get("severity")}
    eq6 = np.mean([a for (c, _), a in per.items() if corruptions.get_corruption(c).paper])
    assert next(r for r in rows if r["corruption"] == "mean (eq. 6)")["accuracy"] == pytest.approx(eq6)
    assert next(r for r in rows if r["corruption"] == "mean (all)")["accuracy"] == pytest.approx(np.mean(list(per.values())))
    assert "test_invert" in write_report(res, tmp_path).read_text()


def test_voting_rows_after_a_resume_equal_an_uninterrupted_run(exports, digits, tmp_path):
    """Each voting cell restarts the noise streams from its own key, so a cell computed after an
    interruption draws the same noise as in one uninterrupted run (kill -9 then rerun: same rows)."""
    import json
    import shutil

    from evaluation.harness import evaluate

    x, y = digits.x_test[:120], digits.y_test[:120]
    kw = dict(suites=("voting",), stddevs=(0.5, 1.0), votes_list=(1, 5), vote_repeats=2, log=lambda s: None)
    evaluate([str(exports / "relu")], x, y, out=tmp_path / "full", **kw)
    full = json.loads((tmp_path / "full" / "report.json").read_text())["rows"]
    assert len(full) == 4 and len({r["accuracy"] for r in full}) > 1
    shutil.copytree(tmp_path / "full", tmp_path / "resumed")
    report = tmp_path / "resumed" / "report.json"
    kept = json.loads(report.read_text())
    kept["rows"] = kept["rows"][:1]  # as if killed after the first cell
    report.write_text(json.dumps(kept))
    evaluate([str(exports / "relu")], x, y, out=tmp_path / "resumed", **kw)
    again = json.loads(report.read_text())["rows"]
    key = lambda r: r["key"]  # noqa: E731
    assert [(r["key"], r["accuracy"], r["spread"]) for r in sorted(again, key=key)] == \
        [(r["key"], r["accuracy"], r["spread"]) for r in sorted(full, key=key)]
