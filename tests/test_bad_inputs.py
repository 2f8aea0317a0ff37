"""Bad inputs as a new user would give them, across the CLI, the library and the exported signatures.

Every case asserts the exit code (or the exception), the one-line message, and that the
filesystem is unchanged except for what the command promises (nothing of the user's deleted,
nothing half-written). One tiny digits export is trained once per module and copied per case.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from glrzoo.cli import main
from training.checkpoints import completed_epochs
from training.run import TrainConfig, TrainingDiverged, sweep, train
from zoo.data import DataFileError, load_strokes
from zoo.errors import OutputExistsError, UserInputError
from zoo.export import ExportError, export_model, load_signatures, read_metadata, update_metadata, verify_export
from zoo.noise import set_noise
from zoo.pretrained import DownloadError

TRAIN = ["train", "--model", "test_mlp", "--dataset", "digits", "--epochs", "1", "--batch-size", "64", "--quiet"]


def snapshot(root: Path) -> dict[str, str]:
    """``{relative path: sha256 or '<dir>'}`` of everything under ``root``, hidden entries included."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "mlp"
    assert main(TRAIN + ["--out", str(out)]) == 0
    return out


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("glrzoo: error:") or "error:" in line]
    assert len(errors) == 1, err
    assert "Traceback" not in err, err
    return errors[0]


def run_cli(argv, capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


# ---- set-ups: each returns (argv, paths the command may create) given (tmp_path, a copy of the export)


def user_folder(tmp):
    d = tmp / "mine"
    d.mkdir()
    (d / "keep.txt").write_text("keep")
    return d


def a_file(tmp):
    f = tmp / "notes.txt"
    f.write_text("mine")
    return f


def tamper(copy: Path, how: str) -> Path:
    meta = json.loads((copy / "metadata.json").read_text())
    if how == "no_files":
        meta.pop("files")
    elif how == "empty_files":
        meta["files"] = {}
    elif how == "files_not_mapping":
        meta["files"] = ["model.keras"]
    elif how == "unlisted_weights":  # the checksum of the weights dropped, then the weights altered
        meta["files"].pop("model.keras")
    elif how == "extra_file":
        (copy / "1" / "extra.bin").write_bytes(b"x")
    elif how == "altered":
        with open(copy / "model.keras", "ab") as f:
            f.write(b"x")
    elif how == "missing_file":
        (copy / "1" / "fingerprint.pb").unlink()
    elif how == "bad_json":
        (copy / "metadata.json").write_text("{not json")
        return copy
    elif how == "infinity":
        (copy / "metadata.json").write_text((copy / "metadata.json").read_text().replace(
            '"test_accuracy": ', '"test_accuracy": Infinity, "x": '))
        return copy
    (copy / "metadata.json").write_text(json.dumps(meta))
    if how == "unlisted_weights":
        with open(copy / "model.keras", "ab") as f:
            f.write(b"x")
    return copy


TAMPERS = ["no_files", "empty_files", "files_not_mapping", "unlisted_weights", "extra_file", "altered",
           "missing_file", "bad_json", "infinity"]


def fake_run(out: Path, **changes) -> Path:
    """An unfinished run of TRAIN's recipe (what a killed 'glrzoo train' leaves)."""
    config = TrainConfig(model="test_mlp", dataset="digits", epochs=1, batch_size=64)
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "run.json").write_text(json.dumps({"recipe": config.recipe(), "parts": []}))
    return out


def truncated_mnist(tmp: Path, gz: bool) -> Path:
    d = tmp / "data" / "mnist"
    d.mkdir(parents=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        header = (0x0803 if "images" in stem else 0x0801).to_bytes(4, "big") + (10).to_bytes(4, "big")
        if "images" in stem:
            header += (28).to_bytes(4, "big") * 2
        body = header + b"\0" * 50  # far fewer bytes than the header promises
        if gz:
            (d / (stem + ".gz")).write_bytes(gzip.compress(body)[:-6] if "t10k-labels" in stem else gzip.compress(body))
        else:
            (d / stem).write_bytes(body)
    return tmp / "data"


def strokes_folder(tmp: Path, how: str) -> Path:
    """A stroke data folder (numpy-encoded tar archives) of 8 sequences whose test split is broken ``how``."""
    import io
    import tarfile
    d = tmp / "strokes"
    (d / "numpy-encoded").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        seq = rng.integers(-3, 4, size=(8, 117, 4)).astype(np.float64)
        labels = np.arange(8) % 10
        if split == "test" and how == "nan":
            seq[3, 50, 0] = np.nan
        elif split == "test" and how == "inf":
            seq[1, 5, 1] = np.inf
        elif split == "test" and how == "labels":
            labels[2] = 12
        elif split == "test" and how == "shape":
            seq = seq[..., :3]
        for stem, array in (("padded-leading", seq), ("labels", labels)):
            buf = io.BytesIO()
            np.save(buf, array)
            with tarfile.open(d / "numpy-encoded" / f"{split}-{stem}.tar.gz", "w:gz") as tar:
                info = tarfile.TarInfo(f"{split}-{stem}.npy")
                info.size = len(buf.getvalue())
                tar.addfile(info, io.BytesIO(buf.getvalue()))
    return d


def report_folder(tmp: Path, name: str) -> Path:
    d = tmp / "reports"
    d.mkdir()
    (d / name).write_text("my own notes" if name.endswith(".md") else '{"mine": 1}')
    return d


def other_report(tmp: Path) -> Path:
    """A report folder holding another model's evaluation."""
    d = tmp / "r"
    d.mkdir()
    (d / "report.json").write_text(json.dumps({"schema_version": 2, "rows": [
        {"key": "other|clean", "model": "other", "suite": "clean", "accuracy": 0.9, "n": 10}]}))
    return d


def broken_checkpoints(out: Path) -> Path:
    """An unfinished run whose only checkpoint is not a weights file."""
    fake_run(out)
    ckpt = out / "checkpoints"
    (ckpt / "epoch-0001.weights.h5").write_bytes(b"not hdf5")
    (ckpt / "epoch-0001.json").write_text(json.dumps({"epoch": 1, "sha256": hashlib.sha256(b"not hdf5").hexdigest()}))
    return out


STROKES = ["train", "--model", "test_lstm", "--dataset", "mnist_strokes", "--epochs", "1", "--quiet"]


CLI_CASES = {
    # name: (setup(tmp, export copy) -> argv, expected code, needle in the one error line)
    # round two (issue 27): seeds, zero-width layers, TRADES flags, names escaping the cache, the demo's
    # reports, stroke data with NaN or bad labels, unusable checkpoints
    "train_seed_negative": (lambda t, e: TRAIN + ["--seed", "-1", "--out", t / "m"], 2, "--seed must be an integer in"),
    "train_seed_huge": (lambda t, e: TRAIN + ["--seed", "99999999999999999999", "--out", t / "m"], 2,
                        "--seed must be an integer in"),
    "train_zero_width_layer": (lambda t, e: TRAIN + ["--model-args", '{"hidden": [0]}', "--out", t / "m"], 2,
                               "zero width"),
    "train_zero_filters": (lambda t, e: ["train", "--model", "test_cnn6", "--epochs", "1", "--quiet", "--model-args",
                                         '{"filters": [2, 0, 4, 4]}', "--out", t / "m"], 2, "zero width"),
    "train_trades_beta_alone": (lambda t, e: TRAIN + ["--trades-beta", "2", "--out", t / "m"], 2,
                                "--trades-beta needs --adversarial"),
    "train_adv_eps_alone": (lambda t, e: TRAIN + ["--adv-eps", "0.1", "--out", t / "m"], 2, "--adv-eps needs --adversarial"),
    "train_trades_beta_with_pgd": (lambda t, e: TRAIN + ["--adversarial", "pgd", "--trades-beta", "2", "--out", t / "m"],
                                   2, "only applies to --adversarial trades"),
    "train_trades_by_glr": (lambda t, e: TRAIN + ["--adversarial", "trades", "--method", "glr", "--out", t / "m"], 2,
                            "trains by backprop"),
    "train_trades_beta_negative": (lambda t, e: TRAIN + ["--adversarial", "trades", "--trades-beta", "-1", "--out",
                                                         t / "m"], 2, "--trades-beta"),
    "train_trades_beta_nan": (lambda t, e: TRAIN + ["--adversarial", "trades", "--trades-beta", "nan", "--out",
                                                    t / "m"], 2, "--trades-beta"),
    "train_ramp_negative": (lambda t, e: TRAIN + ["--adversarial", "pgd", "--adv-ramp-epochs", "-2", "--out", t / "m"],
                            2, "--adv-ramp-epochs"),
    "train_resume_unusable_checkpoint": (lambda t, e: TRAIN + ["--out", broken_checkpoints(t / "run"), "--resume"], 2,
                                         "no usable checkpoint"),
    "train_strokes_nan": (lambda t, e: STROKES + ["--data-dir", strokes_folder(t, "nan"), "--out", t / "m"], 2,
                          "NaN or infinite"),
    "train_strokes_inf": (lambda t, e: STROKES + ["--data-dir", strokes_folder(t, "inf"), "--out", t / "m"], 2,
                          "NaN or infinite"),
    "train_strokes_labels": (lambda t, e: STROKES + ["--data-dir", strokes_folder(t, "labels"), "--out", t / "m"], 2,
                             "outside 0..9"),
    "train_strokes_shape": (lambda t, e: STROKES + ["--data-dir", strokes_folder(t, "shape"), "--out", t / "m"], 2,
                            "not stroke sequences"),
    "pretrained_verify_dotdot": (lambda t, e: ["pretrained", "verify", "../../escape/x"], 2, "refused the model name"),
    "pretrained_show_absolute": (lambda t, e: ["pretrained", "show", str(t / "mine")], 2, "refused the model name"),
    "init_from_dotdot": (lambda t, e: TRAIN + ["--init-from", "../mnist/x", "--out", t / "m"], 2, "no folder ../mnist/x"),
    "evaluate_unknown_name": (lambda t, e: ["evaluate", "mnist/no_such_model", "--suite", "clean", "--out", t / "r"], 2,
                              "no pretrained model"),
    "evaluate_no_folder": (lambda t, e: ["evaluate", t / "no" / "folder", "--suite", "clean", "--out", t / "r"], 2,
                           "no folder"),
    "demo_over_users_report_md": (lambda t, e: ["demo", "--quick", "--out", report_folder(t, "report.md")], 2,
                                  "was not written by the demo"),
    "demo_over_users_report_json": (lambda t, e: ["demo", "--quick", "--out", report_folder(t, "report.json")], 2,
                                    "was not written by the demo"),
    "demo_into_file": (lambda t, e: ["demo", "--quick", "--out", a_file(t)], 2, "is a file"),
    "train_into_user_folder": (lambda t, e: TRAIN + ["--out", user_folder(t)], 2, "not a glrzoo export"),
    "train_overwrite_user_folder": (lambda t, e: TRAIN + ["--out", user_folder(t), "--overwrite"], 2,
                                    "not a glrzoo export"),
    "train_resume_user_folder": (lambda t, e: TRAIN + ["--out", user_folder(t), "--resume"], 2, "not a glrzoo export"),
    "train_into_file": (lambda t, e: TRAIN + ["--out", a_file(t)], 2, "is a file"),
    "train_into_export": (lambda t, e: TRAIN + ["--out", e], 2, "--overwrite"),
    "train_export_with_user_file_overwrite": (
        lambda t, e: (e / "notes.txt").write_text("mine") and TRAIN + ["--out", e, "--overwrite"], 2,
        "not part of its export"),
    "train_resume_nothing": (lambda t, e: TRAIN + ["--out", t / "new", "--resume"], 2, "no unfinished run"),
    "train_resume_finished": (lambda t, e: TRAIN + ["--out", e, "--resume"], 2, "finished export"),
    "train_unfinished_no_flag": (lambda t, e: TRAIN + ["--out", fake_run(t / "run")], 2, "--resume"),
    "train_resume_changed_lr": (lambda t, e: TRAIN + ["--out", fake_run(t / "run"), "--resume", "--lr", "0.5"], 2,
                                "lr: run has 0.001, now 0.5"),
    "train_resume_changed_seed_allowed": (
        lambda t, e: TRAIN + ["--out", fake_run(t / "run"), "--resume", "--seed", "4", "--allow-recipe-change"], 2,
        "seed: run has 0, now 4"),
    "train_resume_changed_model": (
        lambda t, e: TRAIN[:2] + ["mlp"] + TRAIN[3:] + ["--out", fake_run(t / "run"), "--resume"], 2,
        "model: run has 'test_mlp', now 'mlp'"),
    "train_infer_inf": (lambda t, e: TRAIN + ["--out", t / "m", "--infer-stddev", "inf"], 2, "finite"),
    "train_infer_nan": (lambda t, e: TRAIN + ["--out", t / "m", "--infer-stddev", "nan"], 2, "finite"),
    "train_train_stddev_inf": (lambda t, e: TRAIN + ["--out", t / "m", "--train-stddev", "Infinity"], 2, "finite"),
    "train_lr_nan": (lambda t, e: TRAIN + ["--out", t / "m", "--lr", "nan"], 2, "finite"),
    "train_lr_zero": (lambda t, e: TRAIN + ["--out", t / "m", "--lr", "0"], 2, "must be > 0"),
    "train_lr_text": (lambda t, e: TRAIN + ["--out", t / "m", "--lr", "fast"], 2, "must be a number"),
    "train_weight_decay_inf": (lambda t, e: TRAIN + ["--out", t / "m", "--weight-decay", "inf"], 2, "finite"),
    "train_adv_eps_nan": (lambda t, e: TRAIN + ["--out", t / "m", "--adversarial", "pgd", "--adv-eps", "nan"], 2,
                          "finite"),
    "train_epochs_zero": (lambda t, e: TRAIN + ["--out", t / "m", "--epochs", "0"], 2, "must be >= 1"),
    "train_model_args_nan": (lambda t, e: TRAIN + ["--out", t / "m", "--model-args", '{"hidden": [NaN]}'], 2,
                             "not a finite number"),
    "train_model_args_unknown": (lambda t, e: TRAIN + ["--out", t / "m", "--model-args", '{"wings": 2}'], 2,
                                 "takes no argument"),
    "train_multiworker_no_tf_config": (lambda t, e: TRAIN + ["--out", t / "m", "--strategy", "multiworker"], 2,
                                       "TF_CONFIG"),
    "train_foreign_method_flag": (lambda t, e: TRAIN + ["--out", t / "m", "--replications", "5"], 2,
                                  "only apply to --method"),
    "train_truncated_idx": (lambda t, e: ["train", "--model", "test_mlp", "--dataset", "mnist", "--data-dir",
                                          truncated_mnist(t, gz=False), "--out", t / "m"], 2,
                            "train-images-idx3-ubyte is truncated"),
    "train_truncated_gzip": (lambda t, e: ["train", "--model", "test_mlp", "--dataset", "mnist", "--data-dir",
                                           truncated_mnist(t, gz=True), "--out", t / "m"], 2,
                             "idx3-ubyte.gz is truncated"),
    "sweep_inf": (lambda t, e: ["sweep", "--model", "test_mlp", "--train-stddevs", "0,inf", "--out", t / "s"], 2,
                  "finite"),
    "sweep_repeated": (lambda t, e: ["sweep", "--model", "test_mlp", "--train-stddevs", "0.1,0.10", "--out", t / "s"],
                       2, "repeated"),
    "sweep_into_file": (lambda t, e: ["sweep", "--model", "test_mlp", "--train-stddevs", "0", "--out", a_file(t)], 2,
                        "is a file"),
    "evaluate_dataset_mismatch": (
        lambda t, e: ["evaluate", relabel(e, "fashion_mnist"), "--suite", "clean", "--n", "20", "--out", t / "r"], 2,
        "--allow-dataset-mismatch"),
    "evaluate_over_another_models_report": (lambda t, e: ["evaluate", e, "--suite", "clean", "--out", other_report(t)], 2,
                                            "holds the report of other models (other)"),
    "evaluate_empty_suite": (lambda t, e: ["evaluate", e, "--suite", "", "--out", t / "r"], 2, "--suite names no suite"),
    "evaluate_comma_suite": (lambda t, e: ["evaluate", e, "--suite", ",", "--out", t / "r"], 2, "--suite names no suite"),
    "evaluate_out_inside_export": (lambda t, e: ["evaluate", e, "--suite", "clean", "--out", e / "report"], 2,
                                   "is inside the model"),
    "evaluate_eps_inf": (lambda t, e: ["evaluate", e, "--eps", "0.1,inf", "--out", t / "r"], 2, "--eps"),
    "evaluate_eps_big": (lambda t, e: ["evaluate", e, "--eps", "3", "--out", t / "r"], 2, "in [0, 1]"),
    "evaluate_votes_zero": (lambda t, e: ["evaluate", e, "--suite", "voting", "--votes", "0", "--out", t / "r"], 2,
                            "--grid-votes"),  # --votes: the flag's older name
    "evaluate_votes_huge": (lambda t, e: ["evaluate", e, "--grid-votes", "1,100000", "--out", t / "r"], 2,
                            "--grid-votes"),
    "evaluate_votes_float": (lambda t, e: ["evaluate", e, "--votes", "1.5", "--out", t / "r"], 2, "integers"),
    "evaluate_stddevs_nan": (lambda t, e: ["evaluate", e, "--stddevs", "0,nan", "--out", t / "r"], 2, "--stddevs"),
    "evaluate_stddevs_negative": (lambda t, e: ["evaluate", e, "--stddevs", "-1", "--out", t / "r"], 2, "--stddevs"),
    "evaluate_infer_inf": (lambda t, e: ["evaluate", e, "--infer-stddev", "inf", "--out", t / "r"], 2, "finite"),
    "evaluate_infer_huge": (lambda t, e: ["evaluate", e, "--infer-stddev", "1e9", "--out", t / "r"], 2, "<= 10"),
    "evaluate_predict_votes_zero": (lambda t, e: ["evaluate", e, "--predict-votes", "0", "--out", t / "r"], 2,
                                    "--predict-votes: must be an integer in [1, 10000], got 0"),
    "evaluate_step_size_inf": (lambda t, e: ["evaluate", e, "--step-size", "inf", "--out", t / "r"], 2, "finite"),
    "evaluate_alpha_nan": (lambda t, e: ["evaluate", e, "--abstain-alpha", "nan", "--out", t / "r"], 2, "finite"),
    "evaluate_into_file": (lambda t, e: ["evaluate", e, "--suite", "clean", "--out", a_file(t)], 2, "is a file"),
    "evaluate_into_user_folder": (lambda t, e: ["evaluate", e, "--suite", "clean", "--out", user_folder(t)], 2,
                                  "holds no report.json"),
    "evaluate_malformed_report": (
        lambda t, e: ["evaluate", e, "--suite", "clean", "--out", bad_report(t)], 2, "not a glrzoo report"),
    "evaluate_same_name_twice": (
        lambda t, e: ["evaluate", e, copy_to(e, t / "other" / e.name), "--suite", "clean", "--out", t / "r"], 2,
        "share the name"),
    "evaluate_not_an_export": (lambda t, e: ["evaluate", user_folder(t), "--out", t / "r"], 2, "not a glrzoo export"),
    "evaluate_unknown_suite": (lambda t, e: ["evaluate", e, "--suite", "clean,vibes", "--out", t / "r"], 2, "vibes"),
    "pretrained_show_missing": (lambda t, e: ["pretrained", "show", "nope", "--root", e.parent], 2, "no pretrained"),
    "pretrained_list_no_root": (lambda t, e: ["pretrained", "list", "--root", t / "absent"], 2, "does not exist"),
    "pretrained_verify_no_name": (lambda t, e: ["pretrained", "verify", "--root", e.parent], 2, "needs a NAME"),
    "pretrained_list_metadata_without_metrics": (lambda t, e: ["pretrained", "list", "--root", drop_metrics(e).parent],
                                                 2, "lacks a valid 'metrics'"),
    "serve_config_no_version": (lambda t, e: ["serve-config", no_version(e)], 2, "no version folder"),
    "serve_config_root_missing": (lambda t, e: ["serve-config", t / "absent"], 2, "is not a folder"),
    "serve_config_out_is_dir": (lambda t, e: ["serve-config", e.parent, "--out", user_folder(t)], 2, "is a folder"),
    "tune_into_user_folder": (lambda t, e: ["tune", "--model", "test_mlp", "--out", user_folder(t)], 2,
                              "not a glrzoo export"),
    "tune_validation_out_of_range": (lambda t, e: ["tune", "--model", "test_mlp", "--validation", "1.5", "--out",
                                                   t / "b"], 2, "--validation"),
    "tune_objective_stddev_inf": (lambda t, e: ["tune", "--model", "test_mlp", "--objective-stddev", "inf", "--out",
                                                t / "b"], 2, "finite"),
    "models_no_match": (lambda t, e: ["models", "zzz*"], 2, "no model matches"),
}


def relabel(e: Path, dataset: str) -> Path:
    """The export, claiming another training data set (metadata.json is not checksummed, so this stays valid)."""
    meta = read_metadata(e)
    update_metadata(e, dataset={**meta["dataset"], "name": dataset})
    return e


def drop_metrics(e: Path) -> Path:
    """The export with valid JSON metadata that lacks the 'metrics' entry."""
    meta = json.loads((e / "metadata.json").read_text())
    del meta["metrics"]
    (e / "metadata.json").write_text(json.dumps(meta))
    return e


def bad_report(t: Path) -> Path:
    d = t / "report"
    d.mkdir()
    (d / "report.json").write_text('{"rows": [1, 2')
    return d


def copy_to(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def no_version(e: Path) -> Path:
    shutil.rmtree(e / "1")
    return e.parent


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_bad_input(case, export, tmp_path, capsys):
    setup, code, needle = CLI_CASES[case]
    copy = shutil.copytree(export, tmp_path / "models" / "mlp")
    argv = setup(tmp_path, copy)
    before = snapshot(tmp_path)
    got, err = run_cli(argv, capsys)
    assert got == code, err
    line = one_error_line(err)
    assert needle in line, line
    assert snapshot(tmp_path) == before  # nothing written, nothing deleted


def test_sweep_leaves_users_folder_beside_it(tmp_path, capsys):
    """A user's folder inside the sweep's --out is neither deleted nor trained into."""
    (tmp_path / "s").mkdir()
    mine = user_folder(tmp_path / "s")  # tmp/s/mine/keep.txt
    assert main(["sweep", "--model", "test_mlp", "--epochs", "1", "--train-stddevs", "0", "--quiet",
                 "--out", str(tmp_path / "s")]) == 0
    assert (mine / "keep.txt").read_text() == "keep"
    assert main(["sweep", "--model", "test_mlp", "--epochs", "1", "--train-stddevs", "0", "--quiet", "--resume",
                 "--out", str(tmp_path / "s")]) == 0  # the finished model is skipped, not retrained
    capsys.readouterr()


@pytest.mark.parametrize("how", TAMPERS)
@pytest.mark.parametrize("command", ["evaluate", "verify", "serve-config"])
def test_tampered_export_refused_by_every_command(how, command, export, tmp_path, capsys):
    copy = tamper(shutil.copytree(export, tmp_path / "root" / "mlp"), how)
    argv = {"evaluate": ["evaluate", copy, "--suite", "clean", "--n", "20", "--out", tmp_path / "r"],
            "verify": ["pretrained", "verify", "mlp", "--root", tmp_path / "root"],
            "serve-config": ["serve-config", tmp_path / "root"]}[command]
    before = snapshot(tmp_path)
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    line = one_error_line(err)
    assert "re-export or re-download" in line, line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("how", TAMPERS)
def test_tampered_export_refused_by_load_pretrained(how, export, tmp_path):
    tamper(shutil.copytree(export, tmp_path / "mlp"), how)
    before = snapshot(tmp_path)
    with pytest.raises(ExportError, match="re-export or re-download"):
        zoo.load_pretrained("mlp", tmp_path)
    assert snapshot(tmp_path) == before


def test_dataset_mismatch_allowed_on_request(export, tmp_path, capsys):
    copy = relabel(shutil.copytree(export, tmp_path / "mlp"), "mnist")
    code, err = run_cli(["evaluate", copy, "--suite", "clean", "--n", "20", "--allow-dataset-mismatch",
                         "--out", tmp_path / "r"], capsys)
    assert code == 0, err
    assert (tmp_path / "r" / "report.md").is_file()


def test_report_rows_follow_their_settings(export, tmp_path, capsys):
    """A changed --n recomputes; a hand-edited row is dropped and recomputed, never published."""
    out = tmp_path / "r"
    base = ["evaluate", export, "--suite", "clean", "--out", out]
    assert run_cli(base + ["--n", "30"], capsys)[0] == 0
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert [r["n"] for r in rows] == [30]
    assert run_cli(base + ["--n", "40"], capsys)[0] == 0
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert [r["n"] for r in rows] == [40]
    report = json.loads((out / "report.json").read_text())
    report["rows"][0]["accuracy"] = 0.999  # a hand edit
    (out / "report.json").write_text(json.dumps(report))
    assert run_cli(base + ["--n", "40"], capsys)[0] == 0
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert len(rows) == 1 and rows[0]["accuracy"] != 0.999 and "| 99.9 [" not in (out / "report.md").read_text()
    assert run_cli(base + ["--n", "40"], capsys)[0] == 0  # unchanged settings: the row is reused
    assert json.loads((out / "report.json").read_text())["rows"] == rows


# ---- library


def digits_xy(n=20):
    from zoo.data import load_digits
    d = load_digits()
    return d.x_test[:n], d.y_test[:n]


LIBRARY_CASES = {
    "create_model_infer_inf": (lambda t, e: zoo.create_model("mlp", (8, 8, 1), 10, infer_stddev=math.inf),
                               UserInputError, "infer_stddev must be a finite number"),
    "create_model_train_nan": (lambda t, e: zoo.create_model("mlp", (8, 8, 1), 10, train_stddev=math.nan),
                               UserInputError, "train_stddev must be a finite number"),
    "set_noise_infer_inf": (lambda t, e: set_noise(zoo.create_model("test_mlp", (8, 8, 1), 10), infer_stddev=math.inf),
                            UserInputError, "infer_stddev must be a finite number"),
    "set_noise_train_inf": (lambda t, e: set_noise(zoo.create_model("test_mlp", (8, 8, 1), 10), train_stddev=math.inf),
                            UserInputError, "train_stddev must be a finite number"),
    "create_model_zero_width": (lambda t, e: zoo.create_model("mlp", (8, 8, 1), 10, hidden=(4, 0)), UserInputError,
                                "zero width"),
    "config_seed_negative": (lambda t, e: TrainConfig(model="test_mlp", seed=-3).validate(), UserInputError, "--seed"),
    "load_pretrained_escape": (lambda t, e: zoo.load_pretrained("../../etc/passwd"), DownloadError,
                               "refused the model name"),
    "load_strokes_nan": (lambda t, e: load_strokes(strokes_folder(t, "nan")), DataFileError, "NaN or infinite"),
    "create_model_1d_for_cnn": (lambda t, e: zoo.create_model("test_cnn6", (8,), 10), UserInputError,
                                "cannot be built for inputs of shape"),
    "create_model_tiny_image": (lambda t, e: zoo.create_model("cnn6", (2, 2, 1), 10), UserInputError,
                                "cannot be built"),
    "create_model_string_shape": (lambda t, e: zoo.create_model("mlp", "abc", 10), UserInputError, "input_shape"),
    "create_model_negative_dim": (lambda t, e: zoo.create_model("mlp", (8, -8, 1), 10), UserInputError, "input_shape"),
    "create_model_zero_classes": (lambda t, e: zoo.create_model("mlp", (8, 8, 1), 0), UserInputError, "num_classes"),
    "create_model_float_classes": (lambda t, e: zoo.create_model("mlp", (8, 8, 1), 2.5), UserInputError,
                                   "num_classes"),
    "config_infer_inf": (lambda t, e: TrainConfig(model="test_mlp", infer_stddev=math.inf).validate(), UserInputError,
                         "--infer-stddev must be a finite number"),
    "config_train_nan": (lambda t, e: TrainConfig(model="test_mlp", train_stddev=math.nan).validate(), UserInputError,
                         "--train-stddev must be a finite number"),
    "config_lr_inf": (lambda t, e: TrainConfig(model="test_mlp", lr=math.inf).validate(), UserInputError, "--lr"),
    "config_epochs_float": (lambda t, e: TrainConfig(model="test_mlp", epochs=1.5).validate(), UserInputError,
                            "--epochs must be an integer"),
    "config_weight_decay_negative": (lambda t, e: TrainConfig(model="test_mlp", weight_decay=-1.0).validate(),
                                     UserInputError, "--weight-decay"),
    "config_sigma_inf": (lambda t, e: TrainConfig(model="test_mlp", method="glr",
                                                  method_args={"sigma": math.inf}).validate(), UserInputError,
                         "--sigma must be a finite number"),
    "train_into_user_folder": (lambda t, e: train(TrainConfig(model="test_mlp", out=str(t / "mine"),
                                                              overwrite=True)), OutputExistsError,
                               "not a glrzoo export"),
    "sweep_nan": (lambda t, e: sweep(TrainConfig(model="test_mlp", out=str(t / "s")), [0.0, math.nan]),
                  UserInputError, "finite"),
    "export_into_user_folder": (lambda t, e: export_model(zoo.create_model("test_mlp", (8, 8, 1), 10),
                                                          t / "mine", {}, overwrite=True),
                                OutputExistsError, "not a glrzoo export"),
    "export_nonfinite_metadata": (lambda t, e: export_model(zoo.create_model("test_mlp", (8, 8, 1), 10),
                                                            t / "m", {"training": {"infer_stddev": math.inf}}),
                                  UserInputError, "training.infer_stddev=inf"),
    "update_metadata_nan": (lambda t, e: update_metadata(e, evaluation={"x": math.nan}), UserInputError,
                            "evaluation.x=nan"),
    "verify_no_files": (lambda t, e: verify_export(tamper(e, "no_files")), ExportError, "no list of file checksums"),
    "evaluate_eps_inf": (lambda t, e: evaluate_lib(e, eps_list=[math.inf]), UserInputError, "eps"),
    "evaluate_votes_zero": (lambda t, e: evaluate_lib(e, votes_list=[0]), UserInputError, "votes_list"),
    "evaluate_infer_nan": (lambda t, e: evaluate_lib(e, infer_stddev=math.nan), UserInputError, "infer_stddev"),
    "evaluate_steps_zero": (lambda t, e: evaluate_lib(e, steps=0), UserInputError,
                            "steps (--steps): must be an integer >= 1, got 0"),
    "evaluate_dataset_mismatch": (lambda t, e: evaluate_lib(e, dataset="mnist"), UserInputError,
                                  "was trained on 'digits'"),
    "evaluate_wrong_shape": (lambda t, e: evaluate_lib(e, x=np.zeros((4, 28, 28, 1), np.float32),
                                                       y=np.zeros(4, np.int32)), UserInputError,
                             "takes inputs of shape (8, 8, 1)"),
    "evaluate_nan_images": (lambda t, e: evaluate_lib(e, x=np.full((20, 8, 8, 1), np.nan, np.float32)),
                            UserInputError, "NaN"),
    "evaluate_label_count": (lambda t, e: evaluate_lib(e, y=np.zeros(3, np.int32)), UserInputError,
                             "as many labels"),
    "load_idx_truncated": (lambda t, e: __import__("zoo.data").data.load_idx(truncated_mnist(t, False) / "mnist"),
                           UserInputError, "truncated"),
}


def evaluate_lib(e, x=None, y=None, **kwargs):
    from evaluation.harness import evaluate
    xx, yy = digits_xy()
    return evaluate([str(e)], xx if x is None else x, yy if y is None else y, suites=("clean",), log=lambda s: None,
                    **kwargs)


@pytest.mark.parametrize("case", list(LIBRARY_CASES))
def test_library_bad_input(case, export, tmp_path):
    fn, error, needle = LIBRARY_CASES[case]
    copy = shutil.copytree(export, tmp_path / "models" / "mlp")
    user_folder(tmp_path)  # tmp/mine/keep.txt: a user's folder, which must survive every case
    before = snapshot(tmp_path)
    with pytest.raises(error) as info:
        fn(tmp_path, copy)
    message = str(info.value)
    assert needle in message and "\n" not in message, message
    after = snapshot(tmp_path)
    if case in ("verify_no_files",):  # the set-up itself edited the metadata
        after.pop("models/mlp/metadata.json"), before.pop("models/mlp/metadata.json")
    if case == "load_idx_truncated" or case.startswith("load_strokes"):
        after = {k: v for k, v in after.items() if not k.startswith(("data", "strokes"))}
    assert after == before


# ---- exported signatures


SIGNATURE_CASES = {
    "stddev_nan": (dict(stddev=math.nan), "stddev must be >= 0"),
    "stddev_inf": (dict(stddev=math.inf), "stddev must be <= 10"),
    "stddev_negative": (dict(stddev=-0.1), "stddev must be >= 0"),
    "votes_zero": (dict(votes=0), "votes must be >= 1"),
    "votes_negative": (dict(votes=-5), "votes must be >= 1"),
    "votes_huge": (dict(votes=10**6), "votes must be <= 10000"),
    "images_nan": (dict(fill=math.nan), "images must be in"),
    "images_inf": (dict(fill=math.inf), "images must be in"),
    "images_above_one": (dict(fill=1.5), "images must be in"),
    "images_negative": (dict(fill=-0.01), "images must be in"),
}


@pytest.fixture(scope="module")
def signatures(export):
    return load_signatures(export)


@pytest.mark.parametrize("case", list(SIGNATURE_CASES))
def test_noisy_vote_signature_refuses(case, signatures):
    kwargs, needle = SIGNATURE_CASES[case]
    images = np.full((2, 8, 8, 1), kwargs.get("fill", 0.5), np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match=needle):
        signatures["noisy_vote"](images=tf.constant(images), stddev=tf.constant(kwargs.get("stddev", 0.1), tf.float32),
                                 votes=tf.constant(kwargs.get("votes", 3), tf.int32))


@pytest.mark.parametrize("fill", [math.nan, 2.0])
def test_serving_default_signature_refuses(fill, signatures):
    with pytest.raises(tf.errors.InvalidArgumentError, match="images must be in"):
        signatures["serving_default"](images=tf.constant(np.full((1, 8, 8, 1), fill, np.float32)))


def test_signature_refuses_wrong_shape(signatures):
    with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError), match="shape"):
        signatures["serving_default"](images=tf.zeros((1, 28, 28, 1)))


# ---- what survives a failure


def test_overwrite_keeps_old_export_when_the_new_run_fails(export, digits, tmp_path):
    copy = shutil.copytree(export, tmp_path / "mlp")
    before = snapshot(tmp_path)
    config = TrainConfig(model="test_mlp", epochs=1, batch_size=64, out=str(copy), overwrite=True, verbose=0)
    with pytest.raises(TrainingDiverged, match="no epoch finished healthy, so nothing was kept") as info:
        train(config, data=digits, callbacks=[Poison(0)])
    assert "\n" not in str(info.value)
    assert snapshot(tmp_path) == before  # the old export, whole; no checkpoints, no hidden folder
    verify_export(copy)


class Poison(keras.callbacks.Callback):
    """Makes the weights NaN at batch 2 of ``epoch`` (a run that diverges late)."""

    def __init__(self, epoch):
        super().__init__()
        self.at, self.epoch = epoch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == self.at and batch == 1:
            for v in self.model.trainable_variables:
                v.assign(tf.fill(v.shape, np.nan))


def all_finite(group) -> bool:
    import h5py
    return all(all_finite(v) if isinstance(v, h5py.Group) else bool(np.all(np.isfinite(v[()])))
               for v in group.values())


def test_divergence_keeps_the_last_finite_epoch_and_resume_continues(digits, tmp_path):
    out = tmp_path / "m"
    config = TrainConfig(model="test_mlp", epochs=3, batch_size=128, lr=0.01, out=str(out), verbose=0)
    with pytest.raises(TrainingDiverged) as info:
        train(config, data=digits, callbacks=[Poison(1)])
    message = str(info.value)
    assert "after epoch 1" in message and "--resume --allow-recipe-change" in message and "\n" not in message
    assert completed_epochs(out / "checkpoints") == 1
    import h5py
    saved = list((out / "checkpoints").glob("*.weights.h5*"))
    assert saved
    for weights in saved:  # the checkpoint (and its backup) hold the last finite state only
        with h5py.File(weights) as f:
            assert all_finite(f), weights
    # the same recipe is refused without the flag; with it and a lower lr the run finishes
    with pytest.raises(UserInputError, match="lr: run has 0.01, now 0.001"):
        train(TrainConfig(**{**config.__dict__, "lr": 1e-3, "resume": True}), data=digits)
    meta = train(TrainConfig(**{**config.__dict__, "lr": 1e-3, "resume": True, "allow_recipe_change": True}),
                 data=digits)
    assert all(np.all(np.isfinite(w)) for w in meta["model"].get_weights())
    parts = read_metadata(out)["training"]["parts"]
    assert [p["start_epoch"] for p in parts] == [0, 1] and parts[1]["changed"] == {"lr": 1e-3}
    assert read_metadata(out)["training"]["resumed"] is True


def test_resumed_run_metadata_tells_the_whole_story(digits, tmp_path):
    class Stop(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    out = tmp_path / "m"
    config = TrainConfig(model="test_mlp", epochs=2, batch_size=128, out=str(out), verbose=0)
    with pytest.raises(KeyboardInterrupt):
        train(config, data=digits, callbacks=[Stop()])
    meta = train(TrainConfig(**{**config.__dict__, "resume": True}), data=digits)
    training, metrics = meta["training"], meta["metrics"]
    assert training["resumed"] is True and [(p["start_epoch"], p["end_epoch"]) for p in training["parts"]] == [(0, 1),
                                                                                                              (1, 2)]
    assert metrics["epochs_run"] == 2
    assert metrics["train_seconds"] == pytest.approx(sum(p["seconds"] for p in training["parts"]), abs=0.02)


def test_killed_export_leaves_no_hidden_folder_behind(tmp_path):
    """A temp folder left by a killed export (dead pid) is removed by the next export to the same name."""
    stale = tmp_path / ".m.tmp-999999999-abc"
    stale.mkdir()
    (stale / "model.keras").write_bytes(b"half")
    export_model(zoo.create_model("test_mlp", (8, 8, 1), 10), tmp_path / "m", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_train_into_the_current_folder_is_refused(tmp_path, monkeypatch, capsys):
    """An export replaces its folder as a whole: --out . (or ..) would swap out the user's working folder."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for out in (".", "..", str(work)):
        code, err = run_cli(TRAIN + ["--out", out], capsys)
        assert code == 2 and "is the current folder or one above it" in one_error_line(err)
    assert list(work.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_a_second_run_into_the_same_out_is_refused_while_the_first_holds_it(tmp_path, capsys):
    from training.files import output_lock

    out = tmp_path / "m"
    with output_lock(out):  # what a running 'glrzoo train --out m' holds
        before = snapshot(tmp_path)
        code, err = run_cli(TRAIN + ["--out", out], capsys)
        assert code == 2 and "in use by another glrzoo command" in one_error_line(err)
        assert snapshot(tmp_path) == before
    assert main([str(a) for a in TRAIN + ["--out", out]]) == 0  # released: the run goes ahead
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # and no lock file is left


def test_a_blown_up_run_keeps_nothing_unhealthy(digits, tmp_path):
    """lr 1e16 leaves finite but huge weights: no checkpoint of them is kept, and the message says so."""
    out = tmp_path / "m"
    config = TrainConfig(model="test_mlp", epochs=3, batch_size=64, lr=1e16, out=str(out), verbose=0)
    with pytest.raises(TrainingDiverged, match="nothing was kept") as info:
        train(config, data=digits)
    assert "\n" not in str(info.value)
    assert not out.exists()


def test_a_run_that_blows_up_later_keeps_its_last_healthy_epoch(digits, tmp_path):
    class Inflate(keras.callbacks.Callback):  # epoch 2 ends with weights of 1e8: finite, not healthy
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                for v in self.model.trainable_variables:
                    v.assign(tf.fill(v.shape, 1e8))

    out = tmp_path / "m"
    config = TrainConfig(model="test_mlp", epochs=3, batch_size=64, out=str(out), verbose=0)
    with pytest.raises(TrainingDiverged, match="last healthy state \\(after epoch 1\\)"):
        train(config, data=digits, callbacks=[Inflate()])
    from training.checkpoints import epochs_recorded
    assert epochs_recorded(out / "checkpoints") == [1]


def test_exports_are_readable_by_other_users(tmp_path):
    """mkdtemp makes 0700 folders; an export must get an ordinary folder's mode so that a model server
    running as another user can read it."""
    import os
    import stat
    umask = os.umask(0o022)
    try:
        export_model(zoo.create_model("test_mlp", (8, 8, 1), 10), tmp_path / "m", {})
    finally:
        os.umask(umask)
    for p in [tmp_path / "m", *(tmp_path / "m").rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode & 0o044 == 0o044, (p, oct(mode))  # group and others can read
        if p.is_dir():
            assert mode & 0o011 == 0o011, (p, oct(mode))


def test_a_model_file_with_python_code_is_refused_in_one_line(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda x: x * 2)])
    (tmp_path / "m").mkdir()
    model.save(tmp_path / "m" / "model.keras")
    from zoo.export import load_model
    with pytest.raises(ExportError, match="holds Python code") as info:
        load_model(tmp_path / "m", verify=False)
    assert "\n" not in str(info.value) and "safe_mode=False" not in str(info.value)
