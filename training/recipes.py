"""Training recipes: the settings a (model, data set, method) trains with when the user does not say.

:data:`RECIPES` has one row per measured combination. ``glrzoo train`` and ``glrzoo sweep`` fill
every setting the user did not pass from the row of ``(--model, --dataset, --method)``, then from
the generic defaults (the :class:`training.run.TrainConfig` field defaults); ``--no-recipe`` skips
the row. The export's metadata records what was filled (``training.recipe_defaults``: the row's
name and the values it supplied; ``null`` when no row applied).

A row is a dict of :class:`~training.config.TrainConfig` fields (:data:`RECIPE_FIELDS`, declared with
their flags in :mod:`training.config`). Scalar fields
are taken only when the flag was not given. ``model_args``, ``method_args`` and ``adversarial``
are merged key by key: a key the user gave (``--model-args '{"hidden": [64]}'``, ``--sigma 0.5``,
``--adv-eps 0.1``) wins, the row's other keys stay. An ``adversarial`` entry turns adversarial
training on by default for that combination; asking for the other kind (``--adversarial pgd`` where
the row trains ``fgsm_rs``, told apart by ``fraction``) takes none of the row's adversarial keys.

Adding a recipe is one entry: measure it (test accuracy and wall time on the full test set, with
the exact command), then add the row with the result in a comment, e.g.::

    ("cnn6", "mnist", "bp"): dict(epochs=..., lr=..., model_args={...}),  # 99.3%, N min, 2-core CPU

and, when it reproduces a shipped model, check that ``glrzoo train --model M --dataset D --method X
--out DIR`` records the same settings as that model's ``metadata.json`` (``training``).

Only measured rows belong here: a combination without a row trains with the generic defaults.
``tests/test_recipes.py`` checks every row is well formed and (large) that the digits rows reach 90%.
"""
from __future__ import annotations

import copy
import dataclasses

from training import adversarial_settings
from training.adversarial_settings import (  # noqa: F401  (re-exported: where recipes were read before)
    ADVERSARIAL_DEFAULTS,
    TRADES_DEFAULTS,
    adversarial_defaults,
    adversarial_kind,
    fgsm_rs_step,
)
from training.config import TrainConfig, recipe_fields
from zoo.errors import UserInputError

# One row per measured (model, dataset, method); the comment gives the result and how it was measured.
RECIPES: dict[tuple[str, str, str], dict] = {
    # digits, `glrzoo train --model mlp --dataset digits --method M --out DIR`, seed 0, 360 test points, a 2-core
    # CPU shared with another job: test accuracy, training seconds, wall seconds of the whole command.
    # bp: 97.8%, 6 s, 19 s wall (5 epochs of the generic defaults gave 65.8%)
    ("mlp", "digits", "bp"): dict(epochs=20, batch_size=32, lr=3e-3, model_args={"hidden": [128], "activation": "relu"}),
    # bang: 97.5%, 6 s, 19 s wall
    ("mlp", "digits", "bang"): dict(epochs=20, batch_size=32, lr=3e-3, model_args={"hidden": [128], "activation": "relu"}),
    # glr (sigmoid units, R = 10 with the leave-one-out baseline): 94.2%, 11 s, 24 s wall; seeds 1, 2: 93.6%, 94.2%
    ("mlp", "digits", "glr"): dict(epochs=20, batch_size=32, lr=1e-2, model_args={"hidden": [64], "activation": "sigmoid"},
                                   method_args={"replications": 10, "baseline": True}),
    # Full data sets, full test sets, batch 128 (the generic default), seed 0. The shipped models in saved_models/
    # (same names) were trained by exactly these rows.
    # cnn6 on MNIST, local GLR: 98.89%, 100 min on a shared 2-core CPU (97.51% after epoch 2 of 6, at 47 min)
    ("cnn6", "mnist", "glr_local"): dict(epochs=6, lr=3e-3, lr_schedule="cosine"),
    # its backprop twin: 99.40% (8 min on 3 cores of a 16-core machine)
    ("cnn6", "mnist", "bp"): dict(epochs=6, lr=1e-3, lr_schedule="cosine"),
    # stroke LSTM, 64 units, backprop: 95.05% (9 min on 2 cores of a 16-core machine)
    ("lstm", "mnist_strokes", "bp"): dict(epochs=8, lr=3e-3, lr_schedule="cosine", model_args={"units": 64}),
    # its local-GLR version, local losses on the last 16 of 117 steps, each unit's noise credited along the cell state
    # by the losses of the next 4 steps, estimator noise sigma 0.1: 90.29% (24 epochs, 38 min on a 2-core CPU shared
    # with another job; 16 epochs: 88.69%; exact gradients of the same objective, `--method local_bp`, 12 epochs:
    # 91.17%). One-step credit: 85.68% (exact: 88.12%); sigma 0.5 and 4 epochs: 53.79%; every step's loss: 43.39%
    ("lstm", "mnist_strokes", "glr_local"): dict(epochs=24, lr=3e-3, lr_schedule="cosine", model_args={"units": 64},
                                                 method_args={"lstm_steps": 16, "lstm_credit": 4, "sigma": 0.1}),
    # BANG's LeNet at the paper's budget: 10,318 iterations (11 epochs) of batch 64, SGD with momentum 0.9 from
    # lr 0.01 with Caffe's inverse decay, weight decay 5e-4, epsilon 0.815, beta 1: 99.27% (20 min on a shared
    # 2-core CPU; paper 99.22%)
    ("lenet", "mnist", "bang"): dict(epochs=11, batch_size=64, optimizer="momentum", lr=0.01, lr_schedule="inverse",
                                     weight_decay=0.0005, method_args={"epsilon": 0.815, "beta": 1.0}),
    # Madry et al.'s MNIST CNN (fc 256 instead of 1024) by PGD training, half of each batch PGD-10 (step 0.075) at eps 0.3:
    # 99.12% clean, PGD-40 at eps 0.3 45.8% on the first 500 test images (62 min on a 2-core CPU shared with another
    # job). Fast adversarial training (`--adversarial fgsm_rs`, 10 epochs, cyclic lr 5e-3) reached 99.02% clean but
    # overfit catastrophically: FGSM 92.2%, PGD-40 0.0% at eps 0.3.
    ("madry_cnn", "mnist", "bp"): dict(epochs=5, batch_size=100, lr=1e-3, lr_schedule="cosine", model_args={"dense": 256},
                                       adversarial={"eps": 0.3, "step": 0.075, "iterations": 10, "fraction": 0.5}),
    # DenseNet depth 10, growth 12 on Fashion-MNIST, backprop: 88.54% (7 min on 2 cores of a 16-core machine)
    ("densenet", "fashion_mnist", "bp"): dict(epochs=4, lr=1e-3, lr_schedule="cosine",
                                              model_args={"depth": 10, "growth_rate": 12}),
    # its grid read-out variant by local GLR, heads reading the layer's input too and with a hidden layer of 64 ReLU
    # units (Belilovsky et al. 2019), estimator noise sigma 0.1: 90.37% (8 epochs, 113 min on a 2-core CPU;
    # linear heads: 87.94%). Under a converged linear probe its features 91.32% against random ones' 89.60%
    # (only these right on 410 test images, only random ones on 238; McNemar p = 1.4e-11)
    ("densenet_gridpool", "fashion_mnist", "glr_local"): dict(epochs=8, lr=3e-3, lr_schedule="cosine",
                                                              model_args={"depth": 10, "growth_rate": 12},
                                                              method_args={"head_input": "concat", "sigma": 0.1,
                                                                           "head_hidden": 64}),
    # TRADES' SmallCNN on MNIST (Zhang et al. 2019's architecture and loss, beta 6; their PGD on the KL with 10 steps
    # of 0.075 instead of 40 of 0.01; eps ramped 0 -> 0.3 over 2 epochs; Adam 1e-3 cosine, 30 epochs). The
    # adversarial settings apply on request (--adversarial trades); plain runs of smallcnn train without them.
    # `glrzoo train --model smallcnn --dataset mnist --adversarial trades --out DIR`: 99.16% clean; AutoAttack at eps 0.3
    # 94.34% on the full test set (APGD-CE 94.64%, foolbox PGD-40 97.12%, no masking flag); 100 min on a 2-core CPU
    # shared with other jobs (30 epochs of 120-320 s)
    ("smallcnn", "mnist", "bp"): dict(epochs=30, lr=1e-3, lr_schedule="cosine",
                                      adversarial={"on_request": True, "kind": "trades", "eps": 0.3, "step": 0.075,
                                                   "iterations": 10, "beta": 6.0, "ramp_epochs": 2.0}),
    # The same on Fashion-MNIST at eps 0.1 (TRADES beta 3, PGD-10 of 0.025 on the KL, eps ramp over 2 epochs, no
    # dropout; Adam 1e-3 cosine, 12 epochs), on request (--adversarial trades): 86.09% clean on the full test set,
    # AutoAttack 71.5% on the first 1,000 (PGD-20 74.9%; no masking flag); 58 min on a 2-core CPU shared with other
    # jobs. With beta 6, dropout 0.5 and 20 epochs: 80.73% clean and PGD-20 69.8% after 14 epochs.
    ("smallcnn", "fashion_mnist", "bp"): dict(epochs=12, lr=1e-3, lr_schedule="cosine", model_args={"dropout": 0},
                                              adversarial={"on_request": True, "kind": "trades", "eps": 0.1,
                                                           "step": 0.025, "iterations": 10, "beta": 3.0,
                                                           "ramp_epochs": 2.0}),
    # Croce, Andriushchenko and Hein (2019)'s Fashion-MNIST adversarial-training anchor at eps 0.1: Wong and Kolter's
    # small CNN, half of each batch PGD-40 (step 0.005), Adam 1e-3 with step decay, 100 epochs; on request
    # (--adversarial pgd). 88.64% clean on the full test set (published: 88.46%), AutoAttack 73.7% on the first 1,000
    # (PGD-20 76.1%; no masking flag); 3.6 h on a 2-core CPU (84-150 s per epoch), resumed over three sessions
    ("wong_cnn", "fashion_mnist", "bp"): dict(epochs=100, lr=1e-3, lr_schedule="step",
                                              adversarial={"on_request": True, "eps": 0.1, "step": 0.005,
                                                           "iterations": 40}),
    # its backprop twin: 92.79% (8 epochs, 45 min on a shared 2-core CPU)
    ("densenet_gridpool", "fashion_mnist", "bp"): dict(epochs=8, lr=1e-3, lr_schedule="cosine",
                                                       model_args={"depth": 10, "growth_rate": 12}),
}

RECIPE_FIELDS = recipe_fields()  # declared in training/config.py (flags with recipe=True, method_args, adversarial)
MERGED_FIELDS = ("model_args", "method_args", "adversarial")


def recipe_name(model: str, dataset: str, method: str) -> str:
    return f"{model}/{dataset}/{method}"


def get_recipe(model: str, dataset: str, method: str) -> dict | None:
    """The row of ``(model, dataset, method)`` (a copy), or ``None`` when there is none."""
    row = RECIPES.get((model, dataset, method))
    return copy.deepcopy(row) if row is not None else None


def generic_defaults() -> dict:
    """The settings used where neither the user nor a recipe says: ``TrainConfig``'s field defaults."""
    out = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name in RECIPE_FIELDS:
            out[f.name] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return out


def fill_settings(model: str, dataset: str, method: str, given: dict, use_recipe: bool = True) -> tuple[dict, dict | None]:
    """Complete the user's settings ``given`` (``{field: value}``, ``None`` or absent = not given).

    Returns ``(settings, applied)``: every field of :data:`RECIPE_FIELDS` with a value (user's, else
    the recipe's, else the generic default), and ``{"name": "model/dataset/method", "filled": {...}}``
    naming the recipe and the values it supplied, or ``None`` when no recipe applied.
    """
    unknown = sorted(set(given) - set(RECIPE_FIELDS))
    if unknown:
        raise UserInputError(f"not a recipe setting: {', '.join(unknown)}; choose from {', '.join(RECIPE_FIELDS)}")
    row = get_recipe(model, dataset, method) if use_recipe else None
    generic = generic_defaults()
    settings, filled = {}, {}
    for field in RECIPE_FIELDS:
        mine, theirs = given.get(field), (row or {}).get(field)
        if field == "adversarial":
            settings[field], supplied = adversarial_settings.merge(mine, theirs)
            if supplied is not None:
                filled[field] = supplied
        elif field in MERGED_FIELDS:
            settings[field] = {**(theirs or {}), **(mine or {})}
            supplied = {k: v for k, v in (theirs or {}).items() if k not in (mine or {})}
            if supplied:
                filled[field] = supplied
        elif mine is not None:
            settings[field] = mine
        elif row is not None and field in row:
            settings[field] = filled[field] = theirs
        else:
            settings[field] = generic[field]
    applied = {"name": recipe_name(model, dataset, method), "filled": filled} if row is not None else None
    return settings, applied


__all__ = [
    "ADVERSARIAL_DEFAULTS",
    "RECIPES",
    "RECIPE_FIELDS",
    "TRADES_DEFAULTS",
    "adversarial_defaults",
    "adversarial_kind",
    "fgsm_rs_step",
    "fill_settings",
    "generic_defaults",
    "get_recipe",
    "recipe_name",
]
