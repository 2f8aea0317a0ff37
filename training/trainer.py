"""The one training seam: a Keras model whose ``train_step`` asks an estimator for gradients.

``model.fit`` keeps working (callbacks, progress bars, checkpoints, TensorBoard, distribution
strategies); the estimator decides how gradients are computed and batch transforms (e.g.
adversarial examples) rewrite each batch before that.
"""
from __future__ import annotations

from typing import Callable, Sequence

import keras
import tensorflow as tf

from training.losses import get_loss


class Trainer(keras.Model):
    """Wraps ``model`` (the network that gets exported) with an estimator.

    Args:
        model: a Keras model mapping inputs to logits.
        estimator: see :mod:`training.estimators`.
        transforms: callables ``(model, x, y, step) -> (x, y)`` applied to each training batch.

    Example:
        >>> trainer = Trainer(model, bp())
        >>> trainer.compile(optimizer="adam")
        >>> trainer.fit(x, y, epochs=2)
    """

    def __new__(cls, *args, **kwargs):
        # keras.Model treats two positional arguments as (inputs, outputs) of a functional model.
        kwargs.update(zip(("model", "estimator", "transforms"), args))
        return super().__new__(cls, **kwargs)

    def __init__(self, model: keras.Model, estimator, transforms: Sequence[Callable] = (), **kwargs):
        super().__init__(**kwargs)
        self.net = model
        self.estimator = estimator
        # Estimators that train parameters of their own (local GLR's heads) declare them here; they
        # live in the trainer (and its checkpoints), never in the exported network.
        make_aux = getattr(estimator, "auxiliary", None)
        self.aux = make_aux(model) if make_aux is not None else None
        self.transforms = tuple(transforms)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.acc_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        # Keras forbids creating state inside train_step, so the estimator declares its logs up front.
        self.extra_trackers = {name: keras.metrics.Mean(name=name) for name in getattr(estimator, "log_names", ())}

    def call(self, x, training=False):
        return self.net(x, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker, self.acc_tracker, *self.extra_trackers.values()]

    def train_step(self, data):
        x, y = data[0], data[1]
        step = tf.convert_to_tensor(self.optimizer.iterations)
        for transform in self.transforms:
            x, y = transform(self.net, x, y, step)
        variables = self.net.trainable_variables
        if self.aux is None:
            estimate = self.estimator(self.net, x, y, step)
        else:
            estimate = self.estimator(self.net, x, y, step, aux=self.aux)
            variables = variables + self.aux.trainable_variables
        grads = estimate.grads
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            # Keras sums gradients over replicas; each estimate is a mean over its local batch.
            grads = [g / ctx.num_replicas_in_sync for g in grads]
        self.optimizer.apply(grads, variables)
        self.loss_tracker.update_state(estimate.loss)
        self.acc_tracker.update_state(y, estimate.logits)
        for name, value in estimate.logs.items():
            self.extra_trackers[name].update_state(value)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y = data[0], data[1]
        logits = self.net(x, training=False)
        self.loss_tracker.update_state(tf.reduce_mean(get_loss(self.estimator.loss)(logits, y)))
        self.acc_tracker.update_state(y, logits)
        return {m.name: m.result() for m in (self.loss_tracker, self.acc_tracker)}
