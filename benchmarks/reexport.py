"""Rewrite the SavedModel of shipped exports with this checkout's exporter; the weights stay as they are.

    python benchmarks/reexport.py [NAME ...]     # default: every export under saved_models/

For a change in how exports are written, not in what they hold: the Keras model is read from the
export's ``model.keras`` (after its checksums are verified) and written again with
:func:`zoo.export.export_model` under the same metadata, with the same input range its serving
signature already accepts; the file checksums are renewed. The script checks that the new
``serving_default`` gives the same probabilities as the old one on 64 random inputs before it
replaces anything. First used when exports stopped storing every weight twice (keras-team/keras#23553).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from common import REPO, data_dir

from zoo.data import load_dataset
from zoo.export import export_model, load_model, load_signatures, read_metadata
from zoo.pretrained import write_index
from zoo.pretrained_docs import write_readme

ROOT = REPO / "saved_models"


def value_range(meta: dict) -> tuple[float, float]:
    """The ``(low, high)`` range serving inputs must lie in: the data set's as recorded in the
    metadata, else as the signature's description says, else read from the data set itself."""
    recorded = meta["dataset"].get("value_range")
    if recorded:
        return float(recorded[0]), float(recorded[1])
    text = meta["signatures"]["serving_default"]["inputs"]["images"]
    match = re.search(r"in \[([-0-9.e+]+), ([-0-9.e+]+)\]$", text)
    if match:
        return float(match.group(1)), float(match.group(2))
    return tuple(load_dataset(meta["dataset"]["name"], data_dir()).value_range)


def reexport(path: Path) -> tuple[int, int]:
    """Rewrite ``path``'s SavedModel; returns its size in bytes before and after."""
    before = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    meta = read_metadata(path)
    low, high = value_range(meta)
    model = load_model(path)
    shape = [64, *model.input_shape[1:]]
    x = tf.constant(np.random.default_rng(0).uniform(low, high, shape).astype(np.float32))
    old = load_signatures(path)["serving_default"](images=x)["probabilities"].numpy()
    fresh = {k: v for k, v in meta.items() if k not in ("files", "signatures")}
    export_model(model, path, fresh, overwrite=True, value_range=(low, high))
    new = load_signatures(path)["serving_default"](images=x)["probabilities"].numpy()
    np.testing.assert_allclose(new, old, atol=1e-5, err_msg=f"{path}: the new export predicts differently")
    return before, sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="exports under saved_models/ (dataset/name); default: all")
    args = p.parse_args()
    paths = [ROOT / n for n in args.names] or sorted(m.parent for m in ROOT.glob("*/*/metadata.json"))
    total = [0, 0]
    for path in paths:
        before, after = reexport(path)
        total[0] += before
        total[1] += after
        print(f"{path.relative_to(ROOT)}: {before / 2**20:.2f} -> {after / 2**20:.2f} MiB", flush=True)
    write_readme(ROOT)
    write_index(ROOT)
    print(f"all: {total[0] / 2**20:.1f} -> {total[1] / 2**20:.1f} MiB", file=sys.stderr)


if __name__ == "__main__":
    main()
