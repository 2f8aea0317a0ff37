import json

import pytest

from glrzoo.cli import main


@pytest.mark.large  # ~25 s: the quick demo end to end
def test_demo_quick_trains_exports_and_reports(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| bp_plain | 1 |" in out and "| glr_threshold | 5 |" in out
    report = json.loads((tmp_path / "report.json").read_text())
    models = {r["model"] for r in report["rows"]}
    assert models == {"bp_plain", "bp_noise1.0", "glr_sigmoid", "glr_threshold"}
    for name in models:
        assert (tmp_path / name / "1" / "saved_model.pb").is_file()
    clean = {r["model"]: r for r in report["rows"] if r["stddev"] == 0}
    assert clean["bp_plain"]["accuracy"] > 0.8  # 360 test digits; chance is 0.1
    assert clean["glr_threshold"]["accuracy"] > 0.3
    for r in report["rows"]:
        lo, hi = r["ci95"]
        assert lo <= r["accuracy"] <= hi and r["n"] == 360
    assert (tmp_path / "report.md").read_text().startswith("# glrzoo demo report")
    robust = json.loads((tmp_path / "robustness" / "report.json").read_text())
    suites = {r["suite"] for r in robust["rows"]}
    assert suites == {"clean", "transfer", "gradfree", "corruption", "voting"}
    assert {r["source"] for r in robust["rows"] if r["suite"] == "transfer"} == {"substitute"}
    assert (tmp_path / "robustness" / "train_vs_infer_stddev.png").is_file()
    assert "blank_gradients" in (tmp_path / "robustness" / "report.md").read_text()  # the threshold net is flagged
    assert "masking flags" in out
