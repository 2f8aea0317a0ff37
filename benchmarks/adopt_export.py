"""Copy a finished ``glrzoo train`` export made on another machine into ``saved_models/``.

    python benchmarks/adopt_export.py RUN_DIR NAME --machine "16-core x86-64 CPU, TF 2.21 (CPU), 7 jobs at once"

``RUN_DIR`` is the ``--out`` folder of a finished run (``1/``, ``model.keras``, ``metadata.json``);
``NAME`` is ``dataset/model_name`` under ``saved_models/``. The model files are copied unchanged
(their sha256 in the metadata still hold; ``glrzoo pretrained verify`` checks them). The metadata
is made machine-independent as this checkout's writer does: the data set by name, how it was read
and the sha256 of its files (hashed here from ``$GLRZOO_DATA_DIR``, so a different copy of the data
would show), and the recorded command gets ``--out saved_models/NAME``. Where it was trained goes
under ``training.machine``. Training checkpoints are not copied.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from common import REPO, data_dir

from zoo.data import load_dataset
from zoo.errors import UserInputError
from zoo.export import verify_export

EXPORT_FILES = ("1", "model.keras", "metadata.json")


def adopt(run_dir: Path, name: str, machine: str) -> Path:
    meta = json.loads((run_dir / "metadata.json").read_text())
    dest = REPO / "saved_models" / name
    if dest.exists():
        raise UserInputError(f"{dest} exists; remove it first (git rm -r) to replace it")
    data = load_dataset(meta["dataset"]["name"], data_dir())
    if (len(data.y_train), len(data.y_test)) != (meta["dataset"]["train_examples"], meta["dataset"]["test_examples"]):
        raise UserInputError(f"{run_dir}: trained on a different split than the local {data.name}")
    meta["dataset"].update(source=data.source, files=dict(data.files))
    meta["command"] = re.sub(r"--out \S+", f"--out saved_models/{name}", meta["command"])
    meta.setdefault("training", {})["machine"] = machine
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in EXPORT_FILES[:-1]:
        src = run_dir / f
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp / f)
    (tmp / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    verify_export(tmp)
    tmp.rename(dest)
    return dest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("name", help="dataset/model_name under saved_models/")
    p.add_argument("--machine", required=True, help="where it was trained (recorded in the metadata)")
    a = p.parse_args()
    try:
        print(adopt(a.run_dir, a.name, a.machine))
    except UserInputError as e:
        raise SystemExit(f"adopt_export: {e}") from None


if __name__ == "__main__":
    main()
