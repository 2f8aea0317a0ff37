"""The models shipped in saved_models/ load, pass their checksums, and reproduce their recorded accuracy."""
from pathlib import Path

import numpy as np
import pytest

from zoo.export import load_model, read_metadata

ROOT = Path(__file__).resolve().parents[1] / "saved_models"
EXPORTS = sorted(p.parent for p in ROOT.rglob("metadata.json"))


def test_every_recipe_ships_and_the_index_lists_exactly_the_exports():
    """The pretrained builder's recipes and the GLR table are all shipped, and index.json lists
    exactly the exports present (a model added or removed without regenerating it fails)."""
    import json

    from glrzoo.pretrained_build import GLR_TABLE, PRETRAINED_RECIPES

    names = {p.relative_to(ROOT).as_posix() for p in EXPORTS}
    assert set(json.loads((ROOT / "index.json").read_text())["models"]) == names
    missing = (set(PRETRAINED_RECIPES) | set(GLR_TABLE)) - names
    assert not missing, f"recipes without a shipped export: {sorted(missing)}"


@pytest.mark.large  # real MNIST / stroke data, 2-10 s per shipped model
@pytest.mark.parametrize("export", EXPORTS, ids=lambda p: p.name)
def test_shipped_model_reproduces_recorded_accuracy(export, data_dir):
    from zoo.data import load_dataset

    meta = read_metadata(export)
    model = load_model(export)  # verifies every sha256
    data = load_dataset(meta["dataset"]["name"], data_dir)
    n = meta["dataset"]["test_examples"]
    acc = np.mean(np.argmax(model.predict(data.x_test[:n], verbose=0, batch_size=1000), -1) == data.y_test[:n])
    assert acc == pytest.approx(meta["metrics"]["test_accuracy"], abs=1e-4)
    assert meta["command"] and meta["versions"]["tensorflow"]
