"""keras-tuner HyperModels for the zoo: search training recipes for robustness, not only accuracy.

:class:`ZooHyperModel` maps a ``keras_tuner.HyperParameters`` to a :class:`training.run.TrainConfig`
(so the best trial is re-trained and exported by the same code as ``glrzoo train``), builds the
:class:`training.trainer.Trainer`, fits it on the training split and scores it on a validation
split held out of the training data (the test set is never looked at). Search space per method (each estimator's
``search_space`` in :mod:`training.registry`; ``adv`` is defined here):

==========  =====================================================================================
method      hyperparameters
==========  =====================================================================================
all         ``lr`` (log 1e-4..1e-2), ``train_stddev`` (0..1, noise injection)
``glr``     ``replications`` {10, 30, 100}, ``sigma`` (log 0.25..2), ``baseline``, ``antithetic``,
            ``layerwise``, ``qmc`` (switches)
``bang``    ``bang_epsilon`` (0.78..0.86), ``bang_beta`` (0.4..1.6)
``adv``     backprop + PGD adversarial training, ``adv_eps`` (0.05..0.3)
==========  =====================================================================================

Objectives (all maximized, all on the validation split): ``val_accuracy``; ``val_noisy_vote``
(accuracy under inference noise of stddev ``objective_stddev`` with ``objective_votes`` votes);
``val_transfer`` (accuracy on FGSM examples at ``objective_eps`` made once on a backprop
substitute, :func:`training.substitute.train_substitute`, trained on the same training split);
``val_robust`` (the mean of the three). The noisy vote is :func:`evaluation.metrics.vote_accuracy`.
Every trial reports all of them; the tuner optimizes the chosen one.

Distributed tuning: keras-tuner runs one chief (the oracle) and many workers from the same script,
chosen by environment variables: ``KERASTUNER_TUNER_ID`` (``chief`` or ``tuner0``, ``tuner1``, ...),
``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT`` (where the chief listens). Start
``glrzoo tune`` with the same ``--out`` (a shared file system) on every machine, the chief first.
"""
from __future__ import annotations

import dataclasses
import json
import os

import keras
import keras_tuner as kt
import numpy as np
import tensorflow as tf

from evaluation.attacks import attack, logits_fn
from evaluation.metrics import vote_accuracy
from training.pipeline import epoch_dataset
from training.registry import create_estimator, get_estimator, list_estimators
from training.run import TrainConfig, build_model, estimator_and_transforms, initialize_from, make_optimizer
from training.substitute import train_substitute
from training.trainer import Trainer
from zoo.errors import UserInputError
from zoo.noise import noisy_layers

ADVERSARIAL = "adv"  # backprop + PGD adversarial training: a recipe, not an estimator


def methods() -> tuple[str, ...]:
    """Tunable methods: every registered estimator (its ``search_space``) and ``adv``."""
    return (*list_estimators(), ADVERSARIAL)


OBJECTIVES = ("val_accuracy", "val_noisy_vote", "val_transfer", "val_robust")


class ZooHyperModel(kt.HyperModel):
    """Search space, build and fit for one zoo family and training method.

    Args:
        model: registered family name (``glrzoo models``).
        method: one of :func:`methods` (a registered estimator, or ``adv``).
        data: a :class:`zoo.data.Dataset`; its training split is cut into train / validation.
        base: fixed settings (epochs, batch size, activation, model_args, ...) that are not tuned.
        validation: share of the training split held out for the objectives.
        objective_stddev, objective_votes: the noisy-vote objective's inference noise and votes.
        objective_eps: L-inf radius of the transfer objective's FGSM examples (pixel units).
    """

    def __init__(self, model: str, method: str, data, base: TrainConfig | None = None, validation: float = 0.2,
                 objective_stddev: float = 0.5, objective_votes: int = 10, objective_eps: float = 0.1, seed: int = 0):
        if method not in methods():
            raise UserInputError(f"unknown tuning method {method!r}; choose one of {', '.join(methods())}")
        if not 0 < validation < 1:
            raise UserInputError(f"validation share must be in (0, 1), got {validation}")
        super().__init__(name=f"{model}_{method}")
        self.model_name, self.method, self.seed = model, method, seed
        self.base = base or TrainConfig(model=model, dataset=data.name, epochs=3, verbose=0)
        n_val = max(1, int(len(data.x_train) * validation))
        order = np.random.default_rng(seed).permutation(len(data.x_train))
        val, train = order[:n_val], order[n_val:]
        self.data = dataclasses.replace(data, x_train=data.x_train[train], y_train=data.y_train[train],
                                        x_test=data.x_train[val], y_test=data.y_train[val])
        self.objective_stddev, self.objective_votes, self.objective_eps = objective_stddev, objective_votes, objective_eps
        # transfer attacks clip to [0, 1] pixels: only defined for image data
        self.pixels = tuple(float(v) for v in data.value_range) == (0.0, 1.0)
        self._transfer_set = None

    def config(self, hp: kt.HyperParameters) -> TrainConfig:
        """The :class:`TrainConfig` that ``hp`` stands for (the best one is re-trained from it)."""
        method_args, adversarial, method = {}, None, self.method
        if self.method == "adv":
            method = "bp"
            eps = hp.Float("adv_eps", 0.05, 0.3)
            adversarial = {"eps": eps, "step": eps / 4, "iterations": 7, "random_start": True, "fraction": 0.5}
        else:
            method_args = get_estimator(self.method).hyperparameters(hp)
        return dataclasses.replace(self.base, method=method, method_args=method_args, adversarial=adversarial,
                                   lr=hp.Float("lr", 1e-4, 1e-2, sampling="log"),
                                   train_stddev=hp.Float("train_stddev", 0.0, 1.0, step=0.25), seed=self.seed)

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        config = self.config(hp)
        config.validate()
        keras.utils.set_random_seed(config.seed)
        steps = -(-len(self.data.x_train) // config.batch_size)
        estimator, transforms = estimator_and_transforms(
            config, create_estimator(config.method, loss=config.loss, **config.method_args), steps)
        model = build_model(config, self.data)
        if config.init_from:
            initialize_from(model, config.init_from)  # fine-tuning search: each trial starts from these weights
        trainer = Trainer(model, estimator, transforms)
        trainer.compile(optimizer=make_optimizer(config.optimizer, config.lr, config.weight_decay))
        trainer.build((None, *self.data.input_shape))
        return trainer

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args, callbacks=None, verbose: int = 0, **kwargs) -> dict:
        """Train on the train split, then return every objective on the validation split."""
        config = self.config(hp)
        ds, steps = epoch_dataset(self.data.x_train, self.data.y_train, config.batch_size, config.seed, 0, config.epochs)
        user = [c for c in (callbacks or []) if not type(c).__module__.startswith("keras_tuner")]
        model.fit(ds, epochs=config.epochs, steps_per_epoch=steps, callbacks=user, verbose=verbose)
        return self.objectives(model.net)

    def objectives(self, net: keras.Model) -> dict:
        """Every objective of the trained ``net`` on the validation split (transfer ones only for pixel data)."""
        x, y = self.data.x_test, self.data.y_test
        clean = float(np.mean(np.argmax(net.predict(x, verbose=0, batch_size=512), -1) == y))
        noisy = vote_accuracy(net, x, y, self.objective_votes, self.objective_stddev) if noisy_layers(net) else clean
        if not self.pixels:
            return {"val_accuracy": clean, "val_noisy_vote": noisy}
        xt, yt = self.transfer_set()
        transfer = float(np.mean(np.argmax(net.predict(xt, verbose=0, batch_size=512), -1) == yt))
        return {"val_accuracy": clean, "val_noisy_vote": noisy, "val_transfer": transfer,
                "val_robust": (clean + noisy + transfer) / 3}

    def transfer_set(self):
        """FGSM examples at ``objective_eps`` from a backprop substitute, made once and reused."""
        if self._transfer_set is None:
            # trained on the train split only (self.data's test split is the validation split)
            sub = train_substitute(self.data, epochs=max(3, self.base.epochs), lr=1e-3, batch_size=128,
                                   seed=self.seed + 1)
            x, y = self.data.x_test, self.data.y_test
            adv = attack("fgsm", logits_fn(sub), x, y, self.objective_eps).numpy()
            self._transfer_set = (adv, y)
        return self._transfer_set


def _write_json_atomically(path: str, state: dict) -> None:
    """Write ``state`` to ``path`` through a temporary file and a rename: a kill mid-write leaves the previous
    complete file (or none), never a torn one that the next run cannot read."""
    tmp = f"{path}.tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(state))
    tf.io.gfile.rename(tmp, path, overwrite=True)


def _check_readable(path: str) -> None:
    if not tf.io.gfile.exists(path):
        return
    try:
        with tf.io.gfile.GFile(path) as f:
            json.loads(f.read())
    except ValueError as e:
        raise UserInputError(f"the search state file {path} is unreadable ({e}); delete its trial directory to "
                             "rerun that trial, or pass --overwrite to start the search again") from None


class _AtomicRandomSearchOracle(kt.oracles.RandomSearchOracle):
    """keras-tuner's random search, with its state files (``oracle.json``, each ``trial.json``) written atomically,
    so a search killed at any point continues on rerun without losing or repeating a trial."""

    def save(self) -> None:
        _write_json_atomically(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial) -> None:
        _write_json_atomically(os.path.join(self._get_trial_dir(trial.trial_id), "trial.json"), trial.get_state())

    def reload(self) -> None:
        for path in [*tf.io.gfile.glob(os.path.join(self._project_dir, "trial_*", "trial.json")),
                     self._get_oracle_fname()]:
            _check_readable(path)
        super().reload()


class _AtomicTuner(kt.Tuner):
    """:class:`keras_tuner.Tuner` whose own state file (``<tuner_id>.json``) is written atomically too."""

    def save(self) -> None:
        if not self._is_worker():
            self.oracle.save()
        _write_json_atomically(self._get_tuner_fname(), self.get_state())


def tune(hypermodel: ZooHyperModel, objective: str = "val_robust", max_trials: int = 10, directory: str = "tuning",
         overwrite: bool = False, seed: int = 0) -> tuple[kt.Tuner, TrainConfig]:
    """Random search over ``hypermodel``; returns the tuner and the best trial's :class:`TrainConfig`."""
    if objective not in OBJECTIVES:
        raise UserInputError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if objective in ("val_transfer", "val_robust") and not hypermodel.pixels:
        raise UserInputError(f"objective {objective!r} needs pixel data in [0, 1] (transfer attacks); "
                         "use val_accuracy or val_noisy_vote")
    oracle = _AtomicRandomSearchOracle(objective=kt.Objective(objective, "max"), max_trials=max_trials, seed=seed)
    tuner = _AtomicTuner(oracle, hypermodel, directory=directory, project_name=hypermodel.name, overwrite=overwrite)
    tuner.search(verbose=0)
    best = tuner.get_best_hyperparameters(1)[0]
    return tuner, hypermodel.config(best)


__all__ = ["ADVERSARIAL", "OBJECTIVES", "ZooHyperModel", "methods", "tune"]
