"""The leaderboard (saved_models/LEADERBOARD.md and leaderboard/model_info/*.json) is generated from the
metadata: it does not drift, a model flagged for gradient masking never shows a white-box number, and
each JSON has RobustBench's model_info keys."""
import json
import re
import shutil

from glrzoo.cli import main
from zoo import leaderboard
from zoo.leaderboard import (
    LEADERBOARD,
    generated_files_on_disk,
    leaderboard_files,
    whitebox_block,
    write_leaderboard,
)
from zoo.pretrained import list_pretrained, pretrained_root

# RobustBench's model_info keys (model_info/cifar10/Linf/*.json; corruptions_acc from model_info/*/corruptions/)
ROBUSTBENCH_KEYS = ("link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                    "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "corruptions_acc", "footnote",
                    "unreliable")
PERCENT = re.compile(r"^\d{1,3}\.\d\d$")
WHITEBOX = {"norm": "Linf", "eps": 0.3, "accuracy": {"fgsm": 0.9012, "pgd": 0.8765, "autoattack": 0.4321}}


def test_committed_leaderboard_is_generated_from_the_metadata():
    root = pretrained_root()
    assert generated_files_on_disk(root) == leaderboard_files(root), \
        "saved_models/LEADERBOARD.md or leaderboard/ drifted from the metadata: run 'glrzoo pretrained readme'"


def _meta(dataset="mnist", evaluation=None, clean=0.9876):
    meta = {"architecture": {"name": "cnn6", "parameters": 1234, "args": {"noise": "multiplicative"}},
            "training": {"method": {"method": "bp", "loss": "ce"}, "transforms": [], "noise": "multiplicative"},
            "dataset": {"name": dataset, "test_examples": 10000}, "metrics": {"test_accuracy": clean}}
    if evaluation is not None:
        meta["evaluation"] = evaluation
    return meta


def _evaluation(flags, whitebox=WHITEBOX, suites=("clean", "whitebox", "transfer", "corruption", "voting")):
    ev = {"n": 1000, "suites": list(suites), "masking_flags": flags, "command": "make it",
          "headline": {"transfer FGSM 0.13": 0.811, "transfer PGD 0.3": 0.622, "corruptions mA": 0.733,
                       "s=1.0, 1 vote": 0.644, "s=1.0, 20 votes": 0.955}}
    if whitebox is not None:
        ev["whitebox"] = whitebox
    return ev


def _root(tmp_path, metas: dict):
    root = tmp_path / "models"
    for name, meta in metas.items():
        (root / name).mkdir(parents=True)
        (root / name / "metadata.json").write_text(json.dumps(meta))
    return root


def _row(markdown: str, name: str) -> list[str]:
    line = next(ln for ln in markdown.splitlines() if ln.startswith(f"| [`{name}`]"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_flagged_models_never_show_a_white_box_number(tmp_path):
    root = _root(tmp_path, {
        "mnist/clean_one": _meta(evaluation=_evaluation([])),
        "mnist/masked": _meta(evaluation=_evaluation(["blank_gradients (100% of inputs)"])),
        "mnist/unaudited": _meta(evaluation=_evaluation([], suites=("clean", "transfer"))),
        "mnist/no_whitebox": _meta(evaluation=_evaluation([], whitebox=None)),
        "mnist/not_evaluated": _meta(),
        "digits/other": _meta(dataset="digits", evaluation=_evaluation([])),
    })
    files = leaderboard_files(root)
    md = files[LEADERBOARD]
    assert md.count("## ") == 2 and md.index("## digits") < md.index("## mnist")
    header = [c.strip() for c in next(ln for ln in md.splitlines() if ln.startswith("| model")).strip("|").split("|")]
    cells = {name: dict(zip(header, _row(md, name))) for name in list_pretrained(root)}
    info = {name: json.loads(files[f"leaderboard/model_info/{name}.json"]) for name in list_pretrained(root)}

    shown = cells["mnist/clean_one"]  # the strongest attack: the lowest accuracy, with its attack and eps
    assert shown["white-box"] == "43.2 (autoattack, eps 0.3)"
    assert info["mnist/clean_one"]["autoattack_acc"] == "43.21" == info["mnist/clean_one"]["whitebox_acc"]
    assert info["mnist/clean_one"]["eps"] == "0.3" and info["mnist/clean_one"]["unreliable"] is False
    assert (shown["transfer FGSM"], shown["transfer PGD"], shown["corruptions mA"]) == \
        ("81.1 (eps 0.13)", "62.2 (eps 0.3)", "73.3")
    assert (shown["noise s=1.0, 1 vote"], shown["noise s=1.0, 20 votes"], shown["clean"]) == ("64.4", "95.5", "98.76")
    assert shown["masking flags"] == "none"

    masked = info["mnist/masked"]
    assert cells["mnist/masked"]["white-box"] == "flagged"
    assert cells["mnist/masked"]["masking flags"] == "blank_gradients (100% of inputs)"
    assert masked["unreliable"] is True and masked["masking_flags"] == ["blank_gradients (100% of inputs)"]
    assert masked["autoattack_acc"] is None and masked["whitebox_acc"] is None and masked["eps"] is None
    row = " ".join(_row(md, "mnist/masked")) + files["leaderboard/model_info/mnist/masked.json"]
    assert not any(s in row for s in ("43.2", "87.6", "90.1", "(autoattack", "\"autoattack\""))

    assert cells["mnist/unaudited"]["white-box"] == "unaudited" and info["mnist/unaudited"]["whitebox_acc"] is None
    assert cells["mnist/no_whitebox"]["white-box"] == "-" and info["mnist/no_whitebox"]["autoattack_acc"] is None

    missing = cells["mnist/not_evaluated"]  # no evaluation block yet: only the clean accuracy
    assert missing["clean"] == "98.76"
    assert all(v == "-" for k, v in missing.items() if k not in ("model", "method", "clean")), missing
    unknown = info["mnist/not_evaluated"]
    assert unknown["masking_flags"] is None and unknown["unreliable"] is None and unknown["eval_n"] is None

    assert _row(md, "mnist/masked")[0] == "[`mnist/masked`](leaderboard/model_info/mnist/masked.json)"
    assert md.index("mnist/clean_one`]") < md.index("mnist/masked`]")  # a shown white-box number ranks first


def test_every_shipped_flagged_model_withholds_white_box_numbers():
    files = leaderboard_files(pretrained_root())
    for name in list_pretrained(pretrained_root()):
        info = json.loads(files[f"leaderboard/model_info/{name}.json"])
        if info["masking_flags"]:
            assert info["unreliable"] is True and info["autoattack_acc"] is None and info["whitebox_acc"] is None
            assert _row(files[LEADERBOARD], name)[3] == "flagged", name


def test_model_info_has_the_robustbench_keys():
    files = leaderboard_files(pretrained_root())
    names = list_pretrained(pretrained_root())
    assert sorted(k for k in files if k != LEADERBOARD) == sorted(f"leaderboard/model_info/{n}.json" for n in names)
    for name in names:
        info = json.loads(files[f"leaderboard/model_info/{name}.json"])
        assert tuple(info)[:len(ROBUSTBENCH_KEYS)] == ROBUSTBENCH_KEYS, name
        assert info["name"] == name and info["additional_data"] is False and info["number_forward_passes"] == 1
        for key in ("clean_acc", "autoattack_acc", "corruptions_acc", "whitebox_acc", "transfer_fgsm_acc",
                    "transfer_pgd_acc", *(f"noisy_inference.{v}" for v in leaderboard.VOTES)):
            value = info["noisy_inference"]["acc"][key.split(".")[1]] if "." in key else info[key]
            assert value is None or PERCENT.match(value), (name, key, value)
        assert PERCENT.match(info["clean_acc"]), name


def test_whitebox_block_from_harness_rows():
    rows = [{"model": "m", "suite": "whitebox", "attack": "pgd", "eps": 0.3, "accuracy": 0.5},
            {"model": "m", "suite": "whitebox", "attack": "autoattack", "eps": 0.3, "accuracy": 0.4},
            {"model": "m", "suite": "whitebox", "attack": "autoattack", "eps": 1.0, "accuracy": 0.0},
            {"model": "m", "suite": "whitebox", "attack": "cw_l2", "eps": None, "accuracy": 0.0},
            {"model": "m", "suite": "transfer", "attack": "pgd", "eps": 0.3, "accuracy": 0.1},
            {"model": "other", "suite": "whitebox", "attack": "pgd", "eps": 0.3, "accuracy": 0.2}]
    assert whitebox_block(rows, "m", 0.3) == {"norm": "Linf", "eps": 0.3, "accuracy": {"autoattack": 0.4, "pgd": 0.5}}
    assert whitebox_block(rows, "m", 0.1) is None


def test_write_replaces_stale_files_and_the_readme_command_writes_it(tmp_path, capsys):
    root = _root(tmp_path, {"mnist/a": _meta(evaluation=_evaluation([])), "mnist/b": _meta()})
    write_leaderboard(root)
    assert generated_files_on_disk(root) == leaderboard_files(root)
    shutil.rmtree(root / "mnist" / "b")
    write_leaderboard(root)
    assert not (root / "leaderboard" / "model_info" / "mnist" / "b.json").exists()
    assert generated_files_on_disk(root) == leaderboard_files(root)
    assert not [p for p in root.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]

    export = tmp_path / "real"  # 'glrzoo pretrained readme' writes README, leaderboard and index together
    name = list_pretrained(pretrained_root())[0]
    shutil.copytree(pretrained_root() / name, export / name)
    assert main(["pretrained", "readme", "--root", str(export)]) == 0
    assert "LEADERBOARD.md" in capsys.readouterr().out
    assert generated_files_on_disk(export) == leaderboard_files(export)
    assert (export / "README.md").is_file() and (export / "index.json").is_file()
    assert list_pretrained(export) == [name]  # the leaderboard folder is not taken for a model
