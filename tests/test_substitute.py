"""The one backprop substitute of transfer attacks (training.substitute): the config ``glrzoo train``
would build, trained in memory or exported, and an export reused instead of retrained."""
import pytest

import training.substitute as substitute
from glrzoo.cli import _train_config, build_parser
from training.substitute import substitute_config, train_substitute
from zoo.export import read_metadata


def test_config_is_the_one_glrzoo_train_builds(tmp_path):
    out = str(tmp_path / "sub")
    cli = _train_config(build_parser().parse_args(
        ["train", "--model", "substitute_mlp", "--dataset", "mnist", "--epochs", "5", "--lr", "0.001", "--quiet",
         "--overwrite", "--out", out]))
    mine = substitute_config("mnist", epochs=5, lr=1e-3, out=out)
    assert mine.recipe() == cli.recipe()
    assert (mine.out, mine.overwrite, mine.verbose) == (cli.out, cli.overwrite, cli.verbose)


@pytest.mark.large  # over 4 s here; the default suite stays under 3 min
def test_trains_in_memory_or_exports_and_reuses(digits, tmp_path, monkeypatch):
    digits = digits.subset(256, 64)
    model = train_substitute(digits, epochs=1, batch_size=64, seed=3)
    assert model.name == "substitute_mlp" and model.output_shape == (None, digits.num_classes)
    out = tmp_path / "sub"
    train_substitute(digits, epochs=1, out=out, command="glrzoo train --model substitute_mlp ...")
    meta = read_metadata(out)
    assert meta["architecture"]["name"] == "substitute_mlp" and meta["command"].startswith("glrzoo train")
    assert (meta["training"]["epochs"], meta["training"]["lr"], meta["training"]["batch_size"]) == (1, 1e-3, 128)

    def no_training(*args, **kwargs):
        raise AssertionError("an existing substitute was trained again")

    monkeypatch.setattr(substitute, "train", no_training)
    assert train_substitute(digits, epochs=1, out=out).output_shape == (None, digits.num_classes)
    with pytest.raises(AssertionError, match="trained again"):
        train_substitute(digits, epochs=1, out=out, reuse=False)
