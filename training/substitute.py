"""The backprop substitute that makes transfer (black-box) attacks: one function for every caller.

Transfer attacks (Papernot et al. 2017, "Practical black-box attacks against machine learning",
section 4; Xiao et al. 2020, section 3) craft adversarial examples on a separately trained model
and hand them to the model under test. The substitute here is the GLR authors' one: the
``substitute_mlp`` family (784-100-50-10 ReLU MLP on MNIST, the same shape for other data),
trained by backprop with Adam and cross-entropy through :func:`training.run.train`, so it is built,
seeded, batched and (optionally) exported exactly like ``glrzoo train --model substitute_mlp``.
Used by ``glrzoo tune`` (the ``val_transfer`` objective), the pretrained builder and the
benchmarks.
"""
from __future__ import annotations

import os
from pathlib import Path

import keras

from training.run import TrainConfig, train
from zoo.data import Dataset
from zoo.export import load_model

SUBSTITUTE_MODEL = "substitute_mlp"


def substitute_config(dataset: str, *, epochs: int, lr: float = 1e-3, batch_size: int = 128, seed: int = 0,
                      out: str | os.PathLike | None = None) -> TrainConfig:
    """The :class:`TrainConfig` of a substitute for ``dataset``: backprop, Adam at constant ``lr``,
    no noise, the model's own activation; ``out`` (an export folder) is replaced if it holds one.

    Equivalent to ``glrzoo train --model substitute_mlp --dataset DATASET --method bp --epochs EPOCHS
    --lr LR --batch-size BATCH_SIZE --seed SEED --no-recipe --quiet --overwrite --out OUT``.
    """
    return TrainConfig(model=SUBSTITUTE_MODEL, dataset=dataset, method="bp", epochs=epochs, lr=lr,
                       batch_size=batch_size, seed=seed, out=str(out) if out is not None else None, overwrite=True,
                       verbose=0)


def train_substitute(data: Dataset, *, epochs: int, lr: float = 1e-3, batch_size: int = 128, seed: int = 0,
                     out: str | os.PathLike | None = None, reuse: bool = True, command: str | None = None) -> keras.Model:
    """Train (or reuse) a backprop substitute on ``data``'s training split; returns the model.

    Args:
        data: the data set; the substitute sees ``data.x_train`` ``[N, *input_shape]`` and
            ``data.y_train`` ``[N]`` (int class indices) only. Its test split is only scored
            (``metrics.test_accuracy`` of the export).
        epochs: passes over the training split.
        lr: Adam learning rate (constant).
        batch_size: examples per optimizer step.
        seed: seed of the weights and the batch order (``keras.utils.set_random_seed``).
        out: export folder (``glrzoo train --out`` layout); ``None`` keeps the model in memory only.
        reuse: with ``out`` holding an export already, load it instead of training again (a
            substitute is made once and shared by every run that attacks with it).
        command: the equivalent command line recorded in the export's metadata (``None``: none).

    Returns:
        The trained ``keras.Model``: inputs ``[N, *data.input_shape]``, logits ``[N, data.num_classes]``.
    """
    if out is not None and reuse and (Path(out) / "metadata.json").is_file():
        return load_model(out)
    config = substitute_config(data.name, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, out=out)
    return train(config, data=data, command=command)["model"]


__all__ = ["SUBSTITUTE_MODEL", "substitute_config", "train_substitute"]
