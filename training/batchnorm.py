"""Recompute the batch-norm statistics of a trained model on data, at a chosen inference noise.

A net trained with multiplicative noise collects its moving batch-norm statistics on noisy
activations (Qin and Vucinic 2018, section 3: "noise-injected training"); evaluated without noise it
then normalizes with the wrong mean and variance. The paper froze the statistics for additive noise
(``glrzoo train --freeze-bn-stats``); the other fix is to recompute them after training, the way
``torch.optim.swa_utils.update_bn`` does for weight averaging (Izmailov et al. 2018): run the data
through the net in training mode, each batch norm normalizing with its batch's statistics, and set
each layer's moving mean and variance to the average of its batch means and variances over the whole
pass (not an exponential average). ``stddev`` picks the noise the statistics are collected under: 0
for noise-free inference, the deployment's stddev for noisy inference.
"""
from __future__ import annotations

import os
import time

import numpy as np
import tensorflow as tf

from training.run import evaluate_accuracy
from zoo.data import Dataset
from zoo.errors import UserInputError
from zoo.export import export_model, load_model, output_kind, read_metadata
from zoo.noise import batchnorm_layers
from zoo.noise_context import noise_override


def recompute_batchnorm_statistics(model, x: np.ndarray, stddev: float = 0.0, batch_size: int = 500) -> int:
    """Set every batch norm's moving statistics to their average over ``x`` under noise ``stddev``.

    Args:
        model: a zoo model (its noisy layers hold the batch norms); changed in place.
        x: ``[N, ...]`` inputs in the model's input range, e.g. the first N training images.
        stddev: inference noise stddev the statistics are collected under (the model's own noise
            kind; 0: noise-free). The noise comes from each layer's own stream (its saved seed
            counter), so a given export recalibrates the same way every time. Layers that behave
            differently in training mode other than batch norm (dropout) are active during the
            pass, as in ``update_bn``; the zoo's batch-normed models (``cnn6``, ``densenet``) have none.
        batch_size: examples per pass; each pass's batch statistics count equally, so the last
            partial batch is dropped when N is not a multiple (N >= batch_size is required).

    Returns:
        The number of batch-norm layers recomputed.
    """
    layers = batchnorm_layers(model)
    if not layers:
        raise UserInputError(f"{model.name} has no batch norm; there are no statistics to recompute")
    if not np.isfinite(stddev) or stddev < 0:
        raise UserInputError(f"stddev must be a finite number >= 0, got {stddev}")
    batches = len(x) // batch_size
    if batches < 1:
        raise UserInputError(f"{len(x)} examples is fewer than one batch of {batch_size}; pass more examples")
    saved = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers]
    try:
        for k in range(batches):
            for layer in layers:  # moving = k/(k+1) moving + 1/(k+1) batch: the running mean of batches 0..k
                layer.bn_momentum = k / (k + 1)
            with noise_override(float(stddev)):
                model(tf.constant(x[k * batch_size:(k + 1) * batch_size]), training=True)
    except BaseException:
        for layer, (mean, var) in zip(layers, saved):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(var)
        raise
    finally:
        for layer in layers:
            if "bn_momentum" in vars(layer):
                del layer.bn_momentum  # back to the class's training momentum
    return len(layers)


def recalibrate_export(export: str | os.PathLike, out: str | os.PathLike, data: Dataset, stddev: float = 0.0,
                       examples: int = 20000, batch_size: int = 500, overwrite: bool = False,
                       command: str | None = None) -> dict:
    """Load an export, recompute its batch-norm statistics on the first ``examples`` training
    examples of ``data`` under noise ``stddev``, and export the result to ``out`` (atomically).

    The metadata is the source's, with ``batchnorm_statistics`` saying what was done (the source's
    command and ``model.keras`` checksum, stddev, examples, this command), and
    ``metrics.test_accuracy`` measured again without noise on the full test split (the source's
    value kept as ``test_accuracy_before_recalibration``); the source's harness summary is dropped.
    Returns the new metadata.
    """
    meta = read_metadata(export)
    if meta["dataset"]["name"] != data.name:
        raise UserInputError(f"{export} was trained on {meta['dataset']['name']}, not {data.name}; "
                             f"pass --dataset {meta['dataset']['name']}")
    if output_kind(out) == "export" and not overwrite:
        raise UserInputError(f"{out} already holds an export; pass --overwrite or choose another --out")
    if not 0 < examples <= len(data.x_train):
        raise UserInputError(f"examples must be in [1, {len(data.x_train)}] (the training split), got {examples}")
    model = load_model(export)
    start = time.time()
    layers = recompute_batchnorm_statistics(model, data.x_train[:examples], stddev, batch_size)
    metrics = dict(meta.get("metrics", {}))
    if "test_accuracy" in metrics:
        metrics["test_accuracy_before_recalibration"] = metrics["test_accuracy"]
    metrics["test_accuracy"] = evaluate_accuracy(model, data.x_test, data.y_test)
    source = {"command": meta.get("command"), "model.keras sha256": meta.get("files", {}).get("model.keras")}
    for stale in ("files", "signatures", "evaluation"):  # export_model writes the first two anew
        meta.pop(stale, None)
    meta.update(metrics=metrics, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                batchnorm_statistics={"source": source, "stddev": float(stddev),
                                      "examples": int(examples), "split": "train", "batch_size": int(batch_size),
                                      "layers": layers, "seconds": round(time.time() - start, 1),
                                      "command": command})
    export_model(model, out, meta, overwrite=overwrite, value_range=tuple(meta["dataset"]["value_range"]))
    return meta


__all__ = ["recalibrate_export", "recompute_batchnorm_statistics"]
