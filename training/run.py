"""Train one model from a config, checkpointing every epoch, then evaluate and export it.

This is the library function behind ``glrzoo train``; the CLI only parses flags into
:class:`TrainConfig`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import platform
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import zoo
from training.pipeline import epoch_dataset
from training.registry import create_estimator
from training.trainer import Trainer
from zoo.data import Dataset, load_dataset
from zoo.errors import OutputExistsError, UserInputError
from zoo.export import export_model

OPTIMIZERS = ("adam", "sgd", "adagrad", "momentum")
CHECKPOINTS = "checkpoints"


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became non-finite; the message names the step and likely causes."""


@dataclasses.dataclass
class TrainConfig:
    """Everything ``glrzoo train`` needs; every field maps to one CLI flag."""

    model: str
    dataset: str = "digits"
    method: str = "bp"
    out: str | None = None
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"
    optimizer: str = "adam"
    weight_decay: float | None = None
    noise: str = "additive"
    train_stddev: float = 0.0
    infer_stddev: float = 0.0
    activation: str | None = None
    loss: str = "ce"
    seed: int = 0
    data_dir: str | None = None
    download: bool = False
    train_limit: int | None = None
    test_limit: int | None = None
    resume: bool = False
    overwrite: bool = False
    verbose: int = 2
    model_args: dict = dataclasses.field(default_factory=dict)
    method_args: dict = dataclasses.field(default_factory=dict)
    adversarial: dict | None = None  # e.g. {"eps": 0.3, "step": 0.01, "iterations": 40}: PGD training

    def validate(self) -> None:
        if self.epochs < 1:
            raise UserInputError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UserInputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise UserInputError(f"--lr must be > 0, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise UserInputError(f"unknown --lr-schedule {self.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise UserInputError(f"unknown --optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        for label, value in (("--train-stddev", self.train_stddev), ("--infer-stddev", self.infer_stddev)):
            if not value >= 0:
                raise UserInputError(f"{label} must be >= 0, got {value}")


LR_SCHEDULES = ("constant", "cosine")


def make_learning_rate(lr: float, schedule: str = "constant", total_steps: int = 1):
    """``lr`` itself, or Keras' cosine decay from ``lr`` to 0 over ``total_steps`` optimizer steps
    (Loshchilov and Hutter, ICLR 2017, SGDR, eq. 5 without restarts)."""
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, total_steps))
    return lr


def make_optimizer(name: str, lr, weight_decay: float | None = None) -> keras.optimizers.Optimizer:
    if name == "adam":
        return keras.optimizers.Adam(lr, weight_decay=weight_decay)
    if name == "sgd":
        return keras.optimizers.SGD(lr, weight_decay=weight_decay)
    if name == "momentum":
        return keras.optimizers.SGD(lr, momentum=0.9, weight_decay=weight_decay)
    return keras.optimizers.Adagrad(lr, weight_decay=weight_decay)


def build_model(config: TrainConfig, data: Dataset) -> keras.Model:
    return zoo.create_model(config.model, data.input_shape, data.num_classes, **_model_overrides(config))


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite batch loss with a message naming the step."""

    def __init__(self, hint: str):
        super().__init__()
        self.hint = hint
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDiverged(
                f"training diverged at epoch {self.epoch + 1}, step {batch + 1}: loss is {loss}; "
                f"{self.hint} (the last finished epoch stays saved; rerun with --resume after changing it)")


def _completed_epochs(ckpt_dir: Path) -> int:
    for name in ("training_metadata.json", "training_metadata.json.bkp"):
        path = ckpt_dir / name
        try:
            return int(json.loads(path.read_text())["epoch"])
        except (OSError, ValueError, KeyError):
            continue
    return 0


def versions() -> dict:
    import sklearn

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "scikit-learn": sklearn.__version__, "glrzoo": zoo.__version__}


def evaluate_accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    """Noise-free test accuracy (inference mode, every noisy layer at stddev 0)."""
    from zoo.noise_context import noise_override

    def predict(xb):  # eager: a tf.function made per call retraces every time (and warns)
        with noise_override(0.0):
            return tf.argmax(model(xb, training=False), -1, output_type=tf.int32)

    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int(np.sum(predict(tf.constant(x[i:i + batch_size])).numpy() == y[i:i + batch_size]))
    return correct / max(len(x), 1)


def train(config: TrainConfig, data: Dataset | None = None, argv: list[str] | None = None,
          callbacks: list | None = None, command: str | None = None,
          strategy: tf.distribute.Strategy | None = None) -> dict:
    """Train, evaluate and (when ``config.out`` is set) export. Returns the metadata dict.

    With ``config.out``, the state after every epoch is kept in ``<out>/checkpoints`` (weights,
    optimizer, noise generator states); ``resume=True`` continues from the last finished epoch
    with the same batches and noise as an uninterrupted run. The export replaces ``<out>`` only
    when everything succeeded.
    """
    config.validate()
    estimator = create_estimator(config.method, loss=config.loss, **config.method_args)
    if data is None:
        data = load_dataset(config.dataset, config.data_dir, config.download)
    data = data.subset(config.train_limit, config.test_limit)
    out = Path(config.out) if config.out else None
    ckpt = out / CHECKPOINTS if out else None
    if out is not None and out.exists():
        if (out / "metadata.json").exists() and not config.overwrite:
            raise OutputExistsError(f"{out} already holds an export; pass --overwrite or choose another --out")
        if ckpt.exists() and not (config.resume or config.overwrite):
            raise OutputExistsError(f"{out} holds an unfinished run; pass --resume to continue it or --overwrite to restart")
        if config.overwrite and not config.resume:
            shutil.rmtree(out)

    keras.utils.set_random_seed(config.seed)
    with (strategy.scope() if strategy is not None else contextlib.nullcontext()):
        model = build_model(config, data)
        transforms = []
        if config.adversarial is not None:
            from training.adversarial import pgd_training
            transforms.append(pgd_training(seed=config.seed, **config.adversarial))
        trainer = Trainer(model, estimator, transforms)
        steps_per_epoch = -(-len(data.x_train) // config.batch_size)
        lr = make_learning_rate(config.lr, config.lr_schedule, config.epochs * steps_per_epoch)
        trainer.compile(optimizer=make_optimizer(config.optimizer, lr, config.weight_decay))
        trainer.build((None, *data.input_shape))
        trainer.optimizer.build(model.trainable_variables + (trainer.aux.trainable_variables if trainer.aux else []))

    start_epoch = _completed_epochs(ckpt) if (ckpt is not None and config.resume) else 0
    callbacks = [DivergenceGuard("lower the learning rate (--lr) or the estimator noise (--sigma)"), *(callbacks or [])]
    if ckpt is not None:
        callbacks.append(keras.callbacks.BackupAndRestore(str(ckpt), double_checkpoint=True, delete_checkpoint=False))
    ds, steps = epoch_dataset(data.x_train, data.y_train, config.batch_size, config.seed, start_epoch, config.epochs)
    t0 = time.time()
    history = {}
    if start_epoch < config.epochs:
        history = trainer.fit(ds, epochs=config.epochs, steps_per_epoch=steps, initial_epoch=start_epoch,
                              callbacks=callbacks, verbose=config.verbose, shuffle=False).history
    train_seconds = time.time() - t0

    metrics = {"test_accuracy": evaluate_accuracy(model, data.x_test, data.y_test),
               "train_seconds": round(train_seconds, 2), "epochs_run": config.epochs - start_epoch,
               "final_train_loss": float(history["loss"][-1]) if history.get("loss") else None}
    if config.infer_stddev > 0:
        from zoo.voting import vote_predict
        pred = vote_predict(model, data.x_test, 1).numpy()
        metrics["test_accuracy_noisy"] = float(np.mean(pred == data.y_test))
    meta = {
        "schema": 1,
        "architecture": {"name": config.model, "args": _jsonable(zoo.model_arguments(config.model, **_model_overrides(config))),
                         "input_shape": list(data.input_shape), "num_classes": data.num_classes,
                         "parameters": int(sum(int(np.prod(v.shape)) for v in model.trainable_variables))},
        "dataset": {"name": data.name, "source": data.source, "value_range": list(data.value_range),
                    "train_examples": len(data.x_train),
                    "test_examples": len(data.x_test)},
        "training": {"method": estimator.config(), "transforms": [t.config() for t in transforms],
                     "epochs": config.epochs, "batch_size": config.batch_size,
                     "lr": config.lr, "lr_schedule": config.lr_schedule, "optimizer": config.optimizer,
                     "weight_decay": config.weight_decay,
                     "seed": config.seed, "noise": config.noise, "train_stddev": config.train_stddev,
                     "infer_stddev": config.infer_stddev},
        "metrics": metrics,
        "versions": versions(),
        "command": command or (" ".join(["glrzoo", *argv]) if argv is not None else None),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if out is not None and _is_chief(strategy):
        export_model(model, out, meta, overwrite=True, value_range=data.value_range)
    meta["model"] = model
    return meta


def sweep(config: TrainConfig, train_stddevs, data: Dataset | None = None, argv: list[str] | None = None) -> list[dict]:
    """Train one model per training noise stddev (all else equal), each exported to
    ``<config.out>/train_stddev_<s>``; the evaluation harness draws the train x inference grid from them."""
    stddevs = [float(s) for s in train_stddevs]
    if not stddevs or any(not s >= 0 for s in stddevs):
        raise UserInputError(f"--train-stddevs needs one or more values >= 0, got {train_stddevs}")
    if config.out is None:
        raise UserInputError("a sweep needs --out")
    if data is None:
        data = load_dataset(config.dataset, config.data_dir, config.download)
    metas = []
    for s in stddevs:
        run = dataclasses.replace(config, train_stddev=s, out=str(Path(config.out) / f"train_stddev_{s:g}"))
        metas.append(train(run, data=data, argv=argv))
    return metas


def _is_chief(strategy) -> bool:
    """Only one worker of a multi-worker run writes the export."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in ("chief", None) or (resolver.task_type == "worker" and resolver.task_id == 0
                                                     and "chief" not in resolver.cluster_spec().as_dict())


def _model_overrides(config: TrainConfig) -> dict:
    overrides = dict(config.model_args)
    overrides.update(noise=config.noise, train_stddev=config.train_stddev, infer_stddev=config.infer_stddev,
                     seed=config.seed)
    if config.activation is not None:
        overrides["activation"] = config.activation
    return overrides


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value

