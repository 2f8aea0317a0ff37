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
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import zoo
from training import adversarial_settings
from training.adversarial_settings import adversarial_kind
from training.checkpoints import EpochCheckpoint, completed_epochs, restore_checkpoint
from training.config import TrainConfig
from training.files import output_lock, write_json
from training.optim import (  # noqa: F401  (LR_SCHEDULES, InverseDecay, TriangularCycle: re-exported)
    LR_SCHEDULES,
    OPTIMIZERS,
    SCHEDULES,
    InverseDecay,
    TriangularCycle,
    make_learning_rate,
    make_optimizer,
)
from training.pipeline import epoch_dataset
from training.registry import create_estimator
from training.trainer import Trainer
from training.transforms import build_transforms
from zoo.data import Dataset, load_dataset
from zoo.errors import OutputExistsError, UserInputError
from zoo.export import export_model, output_kind, read_metadata
from zoo.noise import batchnorm_layers

CHECKPOINTS = "checkpoints"
RUN_LOG = "run.json"  # in <out>/checkpoints: the recipe and the parts (start/end epoch, seconds) of the run
CHANGEABLE_ON_RESUME = ("lr", "epochs", "method_args")  # with --allow-recipe-change


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became non-finite; the message names the step and likely causes."""


PROBE_EXAMPLES = 512  # training examples the fgsm_rs overfitting guard attacks after every epoch


def build_model(config: TrainConfig, data: Dataset) -> keras.Model:
    model = zoo.create_model(config.model, data.input_shape, data.num_classes, **_model_overrides(config))
    if config.freeze_bn_stats:
        frozen = batchnorm_layers(model)
        if not frozen:
            raise UserInputError(f"--freeze-bn-stats: model {config.model!r} has no batch-normalized layer")
        for layer in frozen:
            layer.bn_frozen = True
    return model


NOT_COPIED = ("train_stddev", "infer_stddev", "rng_state")  # the run's own noise settings and noise stream


def init_source(spec: str) -> Path:
    """The export folder ``--init-from`` names: a folder holding an export, else a pretrained name."""
    from zoo.pretrained import model_path
    return model_path(spec, log=lambda m: print(f"glrzoo: --init-from {m}", file=sys.stderr))


def initialize_from(model: keras.Model, spec: str) -> dict:
    """Copy the weights of the export ``spec`` (folder or pretrained name) into ``model``, layer by
    layer and variable by variable (matched by name and shape), except the noise settings and noise
    streams (:data:`NOT_COPIED`), which stay the run's own. Returns what to record: the source's
    data set, architecture and ``model.keras`` sha256. Refuses a source of another architecture."""
    from zoo.export import KERAS_FILE, load_model
    path = init_source(spec)
    meta = read_metadata(path)
    source = load_model(path)
    theirs = {layer.name: layer for layer in source._flatten_layers(include_self=False)}
    copied = 0
    for layer in model._flatten_layers(include_self=False):
        mine = [v for v in layer.weights if v.name not in NOT_COPIED]
        if not mine:
            continue
        other = theirs.get(layer.name)
        other_vars = {v.name: v for v in (other.weights if other is not None else [])}
        for v in mine:
            src = other_vars.get(v.name)
            if src is None or tuple(src.shape) != tuple(v.shape):
                raise UserInputError(f"--init-from {spec}: its architecture differs from this run's ({layer.name}/"
                                     f"{v.name} {'missing' if src is None else tuple(src.shape)} vs {tuple(v.shape)}); "
                                     "pass the same --model and --model-args as the source")
            v.assign(src.value)
            copied += 1
    from zoo.data import file_sha256
    return {"source": str(spec), "dataset": meta.get("dataset", {}).get("name"),
            "model_keras_sha256": file_sha256(path / KERAS_FILE), "variables_copied": copied,
            "source_test_accuracy": meta.get("metrics", {}).get("test_accuracy")}


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training when the run stops being healthy, before that epoch's checkpoint is saved (it
    is placed before the checkpoint callback), so the last checkpoint is always a healthy state:

    - at the first non-finite batch loss;
    - at the end of an epoch whose weights or optimizer state are not all finite;
    - at the end of an epoch whose largest weight exceeds :attr:`MAX_WEIGHT` in magnitude, or whose
      mean training loss exceeds :attr:`LOSS_GROWTH` times the first batch's loss of this part of
      the run (at least 0.1): finite but blown up, e.g. weights near 1e16 after a learning rate of
      1e16, which no later epoch recovers from.
    """

    MAX_WEIGHT = 1e4
    LOSS_GROWTH = 100.0

    def __init__(self):
        super().__init__()
        self.epoch, self.first_loss = 0, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDiverged(f"training diverged at epoch {self.epoch + 1}, step {batch + 1}: loss is {loss}")
        if loss is not None and self.first_loss is None:
            self.first_loss = float(loss)

    def on_epoch_end(self, epoch, logs=None):
        variables = list(self.model.weights) + list(getattr(self.model.optimizer, "variables", []))
        bad = next((v for v in variables if not np.all(np.isfinite(np.asarray(v)))), None)
        if bad is not None:
            raise TrainingDiverged(f"training diverged in epoch {epoch + 1}: {getattr(bad, 'path', bad.name)} "
                                   "holds non-finite values")
        sizes = [(float(np.max(np.abs(np.asarray(v)), initial=0.0)), v) for v in self.model.weights
                 if "float" in str(v.dtype)]
        size, big = max(sizes, key=lambda pair: pair[0], default=(0.0, None))
        if size > self.MAX_WEIGHT:
            raise TrainingDiverged(f"training diverged in epoch {epoch + 1}: {getattr(big, 'path', big.name)} "
                                   f"holds a weight of magnitude {size:.3g} (> {self.MAX_WEIGHT:g})")
        loss = (logs or {}).get("loss")
        bound = self.LOSS_GROWTH * max(self.first_loss or 0.0, 0.1)
        if loss is not None and float(loss) > bound:
            raise TrainingDiverged(f"training diverged in epoch {epoch + 1}: mean loss {float(loss):.3g} is over "
                                   f"{self.LOSS_GROWTH:g}x the first batch's ({self.first_loss:.3g})")


class _ApplyRecipe(keras.callbacks.Callback):
    """After the checkpoint is restored (it holds the old learning rate), set the configured one."""

    def __init__(self, lr: float):
        super().__init__()
        self.lr = lr

    def on_train_begin(self, logs=None):
        var = getattr(self.model.optimizer, "_learning_rate", None)
        if isinstance(var, keras.Variable):
            var.assign(self.lr)


class _RunLog(keras.callbacks.Callback):
    """Keeps ``<out>/checkpoints/run.json`` up to date after every epoch: the recipe and the parts of the run."""

    def __init__(self, path: Path, log: dict):
        super().__init__()
        self.path, self.log, self.t0 = path, log, time.time()

    def on_epoch_end(self, epoch, logs=None):
        part = self.log["parts"][-1]
        part.update(end_epoch=epoch + 1, seconds=round(time.time() - self.t0, 2))
        write_json(self.path, self.log)


def _read_run_log(ckpt: Path) -> dict | None:
    try:
        log = json.loads((ckpt / RUN_LOG).read_text())
    except (OSError, ValueError):
        return None
    return log if isinstance(log, dict) and isinstance(log.get("recipe"), dict) else None


def _recipe_diff(old: dict, new: dict) -> dict:
    """``{field: (old, new)}`` where the recipes differ; a field a run recorded before it existed
    counts as its default."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    old = {**{k: v for k, v in defaults.items() if k in new and k not in old}, **old}
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def _check_out(config: TrainConfig, out: Path, ckpt: Path) -> tuple[dict | None, dict]:
    """Refuse what would lose the user's data or mislead; returns (the run log to continue or None, changes)."""
    kind = output_kind(out)  # a file, or a folder holding anything but an export or a run: refused
    has_run = ckpt.is_dir()
    if config.resume:
        if not has_run:
            if kind == "export":
                raise OutputExistsError(f"--resume: {out} holds a finished export and no unfinished run; "
                                        "drop --resume (and pass --overwrite to train it again)")
            raise UserInputError(f"--resume: {out} holds no unfinished run (no {CHECKPOINTS}/); drop --resume to start one")
        if kind == "export" and not config.overwrite:
            raise OutputExistsError(f"{out} holds an export and an unfinished run that would replace it; "
                                    "pass --resume --overwrite to continue the run")
        log = _read_run_log(ckpt)
        if log is None:
            raise UserInputError(f"--resume: {ckpt / RUN_LOG} is missing or unreadable, so the run's recipe is "
                                 "unknown; start over with --overwrite")
        diff = _recipe_diff(log["recipe"], config.recipe())
        fixed = {k: v for k, v in diff.items() if k not in CHANGEABLE_ON_RESUME or not config.allow_recipe_change}
        if fixed:
            listed = "; ".join(f"{k}: run has {old!r}, now {new!r}" for k, (old, new) in fixed.items())
            hint = ("" if all(k in CHANGEABLE_ON_RESUME for k in fixed) else
                    "; only " + ", ".join(CHANGEABLE_ON_RESUME) + " may change on resume, with --allow-recipe-change")
            raise UserInputError(f"--resume with a different recipe ({listed}); rerun with the run's settings"
                                 f"{hint or ', or pass --allow-recipe-change to continue with the new ones'}, "
                                 "or start over with --overwrite")
        return log, diff
    if kind == "export" and not config.overwrite:
        raise OutputExistsError(f"{out} already holds an export; pass --overwrite or choose another --out")
    if has_run and not config.overwrite:
        raise OutputExistsError(f"{out} holds an unfinished run; pass --resume to continue it or --overwrite to restart")
    return None, {}


def _diverged_message(error: TrainingDiverged, ckpt: Path | None, out: Path | None, config: TrainConfig) -> str:
    hint = "lower --lr" + (" or --sigma" if "sigma" in config.method_args or config.method == "glr" else "")
    done = completed_epochs(ckpt) if ckpt is not None else 0
    if ckpt is None:
        return f"{error}; {hint} and train again"
    if done == 0:
        if not config.resume:  # nothing worth keeping: leave no half-written run behind
            shutil.rmtree(ckpt, ignore_errors=True)
            if out.is_dir() and not any(out.iterdir()):
                out.rmdir()
        return f"{error}; no epoch finished healthy, so nothing was kept; {hint} and train again"
    return (f"{error}; the last healthy state (after epoch {done}) is kept in {ckpt}: continue from it by rerunning "
            f"the same command with --resume --allow-recipe-change and a {hint.removeprefix('lower ')} lower than "
            "before, or start over with --overwrite")


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


def estimator_and_transforms(config: TrainConfig, estimator, steps_per_epoch: int) -> tuple:
    """``(estimator, transforms)``: the registered batch transforms (:mod:`training.transforms`;
    Gaussian input noise, ``config.input_noise``, is the built-in one, then those of
    ``config.transforms``), then the adversarial settings' transforms, or the estimator they
    replace (:func:`training.adversarial_settings.build`)."""
    registered = build_transforms({"input_noise": config.input_noise, **config.transforms}, config.seed)
    estimator, transforms = adversarial_settings.build(config.adversarial, estimator, seed=config.seed,
                                                       steps_per_epoch=steps_per_epoch, loss=config.loss)
    return estimator, [*registered, *transforms]


def train(config: TrainConfig, data: Dataset | None = None, argv: list[str] | None = None,
          callbacks: list | None = None, command: str | None = None,
          strategy: tf.distribute.Strategy | None = None) -> dict:
    """Train, evaluate and (when ``config.out`` is set) export. Returns the metadata dict.

    With ``config.out``, the state after every epoch is kept in ``<out>/checkpoints`` (weights,
    optimizer, noise generator states); ``resume=True`` continues from the last finished epoch
    with the same batches and noise as an uninterrupted run. The export replaces ``<out>`` only
    when everything succeeded. A second run into the same ``<out>`` while this one holds it is
    refused (:func:`training.files.output_lock`).
    """
    config.validate()
    if config.out is None:
        return _train(config, data, argv, callbacks, command, strategy)
    output_kind(config.out)  # a file or the user's own folder is refused before the lock file is made
    with output_lock(Path(config.out)):
        return _train(config, data, argv, callbacks, command, strategy)


def build_trainer(config: TrainConfig, data: Dataset, estimator, strategy) -> tuple:
    """``(model, trainer, estimator, transforms, init record)``: the network (with ``--init-from``
    weights), the estimator and batch transforms of the adversarial and noise settings, and the
    compiled, built :class:`Trainer` (inside ``strategy``'s scope)."""
    with (strategy.scope() if strategy is not None else contextlib.nullcontext()):
        model = build_model(config, data)
        init = initialize_from(model, config.init_from) if config.init_from else None
        steps_per_epoch = -(-len(data.x_train) // config.batch_size)
        estimator, transforms = estimator_and_transforms(config, estimator, steps_per_epoch)
        trainer = Trainer(model, estimator, transforms)
        lr = make_learning_rate(config.lr, config.lr_schedule, config.epochs * steps_per_epoch)
        trainer.compile(optimizer=make_optimizer(config.optimizer, lr, config.weight_decay))
        trainer.build((None, *data.input_shape))
        trainer.optimizer.build(model.trainable_variables + (trainer.aux.trainable_variables if trainer.aux else []))
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Keras 3's fit "symbolically builds" the model from the first batch by reducing it across
        # replicas (strategy.reduce("MEAN", batch)), which fails under MultiWorkerMirroredStrategy
        # ("Attempt to convert a value (PerReplica ...) to a Tensor"). The trainer, its model and its
        # optimizer are already built above, so that step has nothing to do: skip it.
        trainer._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
        # ... and it reduces every logged value with strategy.reduce("MEAN", v, axis=0), which fails on
        # a scalar ("Invalid reduction dimension 0 for input with 0 dimensions"): log shape-[1] values.
        step = trainer.train_step
        trainer.train_step = lambda batch: {k: tf.reshape(v, [1]) for k, v in step(batch).items()}

    return model, trainer, estimator, transforms, init


def _callbacks(config: TrainConfig, model, data: Dataset, ckpt: Path | None, run_log: dict | None, changed: dict,
               start_epoch: int, callbacks: list | None) -> tuple[list, object, dict | None]:
    """``(callbacks, fgsm_rs guard or None, run log)``: the user's callbacks, the divergence guard
    (right before each epoch is saved), the checkpoint, the recipe and the run log (this part
    appended) when there is an ``--out``, and the fgsm_rs overfitting guard."""
    callbacks = [*(callbacks or []), DivergenceGuard()]  # the guard checks each epoch right before it is saved
    if ckpt is not None:
        if not config.resume and ckpt.exists():  # --overwrite: our own stale run state; an old export stays
            shutil.rmtree(ckpt)                  # in place until the new one is complete
        if run_log is None:
            run_log = {"recipe": config.recipe(), "parts": []}
        run_log["parts"].append({"start_epoch": start_epoch, "end_epoch": start_epoch, "seconds": 0.0,
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                 **({"changed": {k: new for k, (_, new) in changed.items()}} if changed else {})})
        run_log["recipe"] = config.recipe()
        callbacks.append(EpochCheckpoint(ckpt))
        callbacks.append(_ApplyRecipe(config.lr))
        callbacks.append(_RunLog(ckpt / RUN_LOG, run_log))  # every worker: each resumes from its own backup
        write_json(ckpt / RUN_LOG, run_log)
    guard = None
    if config.adversarial is not None and adversarial_kind(config.adversarial) == "fgsm_rs":
        from training.adversarial import OverfittingGuard
        guard = OverfittingGuard(model, data.x_train[:PROBE_EXAMPLES], data.y_train[:PROBE_EXAMPLES],
                                 config.adversarial["eps"], seed=config.seed, state_dir=ckpt)
        callbacks.append(guard)
    return callbacks, guard, run_log


def _metrics(config: TrainConfig, model, data: Dataset, seconds: float, history: dict, stopped) -> dict:
    """Noise-free test accuracy (and one noisy pass's when inference noise is on), training time, epochs."""
    metrics = {"test_accuracy": evaluate_accuracy(model, data.x_test, data.y_test),
               "train_seconds": round(seconds, 2),
               "epochs_run": config.epochs if stopped is None else stopped + 1,
               "final_train_loss": float(history["loss"][-1]) if history.get("loss") else None}
    if config.infer_stddev > 0:
        from zoo.voting import vote_predict
        pred = vote_predict(model, data.x_test, 1).numpy()
        metrics["test_accuracy_noisy"] = float(np.mean(pred == data.y_test))
    return metrics


def _transform_config(transform) -> dict:
    """A batch transform as metadata: its own ``config()``, else its class name (a plugin's may have none)."""
    return transform.config() if hasattr(transform, "config") else {"transform": type(transform).__name__}


def _metadata(config: TrainConfig, model, data: Dataset, estimator, transforms, parts: list, init, guard,
              metrics: dict, command: str | None, argv: list[str] | None) -> dict:
    """The export's ``metadata.json``: architecture, data set, training (the recipe and how the run
    went), metrics, versions and the command that reproduces it."""
    return {
        "schema": 1,
        "architecture": {"name": config.model, "args": _jsonable(zoo.model_arguments(config.model, **_model_overrides(config))),
                         "input_shape": list(data.input_shape), "num_classes": data.num_classes,
                         "parameters": int(sum(int(np.prod(v.shape)) for v in model.trainable_variables))},
        "dataset": {"name": data.name, "source": data.source, "files": dict(data.files),
                    "value_range": list(data.value_range), "train_examples": len(data.x_train),
                    "test_examples": len(data.x_test)},
        "training": {"method": estimator.config(), "transforms": [_transform_config(t) for t in transforms],
                     "epochs": config.epochs, "batch_size": config.batch_size,
                     "lr": config.lr, "lr_schedule": config.lr_schedule, "optimizer": config.optimizer,
                     "weight_decay": config.weight_decay,
                     "seed": config.seed, "noise": config.noise, "train_stddev": config.train_stddev,
                     "infer_stddev": config.infer_stddev, "resumed": len(parts) > 1, "parts": parts,
                     "init_from": init, "freeze_bn_stats": config.freeze_bn_stats,
                     **({"overfitting_guard": guard.record()} if guard is not None else {}),
                     "recipe": config.recipe(), "recipe_defaults": config.recipe_defaults},
        "metrics": metrics,
        "versions": versions(),
        "command": command or (" ".join(["glrzoo", *portable_argv(argv)]) if argv is not None else None),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _train(config: TrainConfig, data: Dataset | None, argv: list[str] | None, callbacks: list | None,
           command: str | None, strategy: tf.distribute.Strategy | None) -> dict:
    estimator = create_estimator(config.method, loss=config.loss, **config.method_args)
    out = Path(config.out) if config.out else None
    ckpt = out / CHECKPOINTS if out else None
    if out is None and config.resume:
        raise UserInputError("--resume needs --out (the folder of the run to continue)")
    run_log, changed = _check_out(config, out, ckpt) if out is not None else (None, {})
    if data is None:
        data = load_dataset(config.dataset, config.data_dir, config.download)
    data = data.subset(config.train_limit, config.test_limit)

    keras.utils.set_random_seed(config.seed)
    model, trainer, estimator, transforms, init = build_trainer(config, data, estimator, strategy)

    start_epoch = restore_checkpoint(trainer, ckpt) if (ckpt is not None and config.resume) else 0
    chief = _is_chief(strategy)
    callbacks, guard, run_log = _callbacks(config, model, data, ckpt, run_log, changed, start_epoch, callbacks)
    ds, steps = epoch_dataset(data.x_train, data.y_train, config.batch_size, config.seed, start_epoch, config.epochs)
    t0 = time.time()
    history = {}
    if start_epoch < config.epochs:
        try:
            history = trainer.fit(ds, epochs=config.epochs, steps_per_epoch=steps, initial_epoch=start_epoch,
                                  callbacks=callbacks, verbose=config.verbose, shuffle=False).history
        except TrainingDiverged as e:
            raise TrainingDiverged(_diverged_message(e, ckpt, out, config)) from None
    train_seconds = time.time() - t0
    parts = (run_log or {}).get("parts") or [{"start_epoch": 0, "end_epoch": config.epochs}]
    stopped = guard.stopped_epoch if guard is not None else None
    parts[-1].update(end_epoch=config.epochs if stopped is None else stopped + 1, seconds=round(train_seconds, 2))
    total_seconds = sum(float(p.get("seconds", 0.0)) for p in parts)

    metrics = _metrics(config, model, data, total_seconds, history, stopped)
    meta = _metadata(config, model, data, estimator, transforms, parts, init, guard, metrics, command, argv)
    if out is not None and chief:
        export_model(model, out, meta, overwrite=True, value_range=data.value_range)
    meta["model"] = model
    return meta


def sweep(config: TrainConfig, train_stddevs, data: Dataset | None = None, argv: list[str] | None = None) -> list[dict]:
    """Train one model per training noise stddev (all else equal), each exported to
    ``<config.out>/train_stddev_<s>``; the evaluation harness draws the train x inference grid from them."""
    try:
        stddevs = [float(s) for s in train_stddevs]
    except (TypeError, ValueError):
        raise UserInputError(f"--train-stddevs must be numbers, got {train_stddevs!r}") from None
    if not stddevs or any(not (s >= 0 and math.isfinite(s)) for s in stddevs):
        raise UserInputError(f"--train-stddevs needs one or more finite values >= 0, got {train_stddevs}")
    names = [f"train_stddev_{s:g}" for s in stddevs]
    if len(set(names)) < len(names):
        repeated = sorted({n.removeprefix("train_stddev_") for n in names if names.count(n) > 1})
        raise UserInputError(f"--train-stddevs has repeated values ({', '.join(repeated)}); list each once")
    if config.out is None:
        raise UserInputError("a sweep needs --out")
    root = Path(config.out)
    if root.exists() and not root.is_dir():
        raise OutputExistsError(f"{root} is a file, not a folder; choose another --out (nothing was changed)")
    runs = [dataclasses.replace(config, train_stddev=s, out=str(root / n)) for s, n in zip(stddevs, names)]
    plan = []
    for run in runs:  # every sub-run checked before any trains: a bad one fails the sweep up front
        run.validate()
        finished = None
        if run.resume:
            kind = output_kind(run.out)
            if kind == "export" and not (Path(run.out) / CHECKPOINTS).exists():
                finished = read_metadata(run.out)
                diff = _recipe_diff(finished.get("training", {}).get("recipe", {}), run.recipe())
                if diff:
                    listed = "; ".join(f"{k}: export has {old!r}, now {new!r}" for k, (old, new) in diff.items())
                    raise UserInputError(f"--resume: {run.out} was trained with a different recipe ({listed}); "
                                         "rerun with its settings or pass --overwrite without --resume")
            elif kind in ("missing", "empty"):
                run = dataclasses.replace(run, resume=False)
            else:
                _check_out(run, Path(run.out), Path(run.out) / CHECKPOINTS)
        else:
            _check_out(run, Path(run.out), Path(run.out) / CHECKPOINTS)
        plan.append((run, finished))
    if data is None:
        data = load_dataset(config.dataset, config.data_dir, config.download)
    return [finished if finished is not None else train(run, data=data, argv=argv) for run, finished in plan]


MACHINE_FLAGS = ("--data-dir",)  # where the data lies on this machine: not part of the recorded command


def portable_argv(argv: list[str]) -> list[str]:
    """``argv`` without the flags that name paths of this machine (``--data-dir X``, ``--data-dir=X``):
    the metadata names the data set and its files' checksums instead."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in MACHINE_FLAGS:
            skip = True
        elif not arg.startswith(tuple(f + "=" for f in MACHINE_FLAGS)):
            out.append(arg)
    return out


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

