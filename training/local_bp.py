"""Exact gradients of local GLR's objectives, by backprop: the ceiling of the local objective.

:mod:`training.glr_local` estimates, from forward passes only, the gradient of a *local*
objective: every layer ``l`` is trained on ``L_l = loss(H_l(phi(z_l)), y)`` with ``z_l`` computed
from the clean output of the layer below, by its own linear head ``H_l``; an LSTM on the mean of
its per-step losses with the previous state held fixed (one-step credit). When such a run falls
short of backprop, two things can be at fault: the estimator's variance, or the objective
itself. This estimator removes the first: it follows the *exact* gradient of the same objectives
(the noise-free limit of the group-wise losses, whose per-group gradients sum to the block
loss's gradient) with the same heads, so, at the same budget, a ``glr_local`` run that matches it
is limited by its objective, not by its variance.

It is Decoupled Greedy Learning (Belilovsky, Eickenberg and Oyallon, ICML 2020, "Decoupled
greedy learning of CNNs", eq. 2-3: each block and its auxiliary head minimise their own loss, no
gradient crosses blocks), with local GLR's heads (average pooling onto a ``k x k`` grid, then a
linear map) and, for an LSTM, truncated backprop through one step (Williams and Peng 1990,
"An efficient gradient-based algorithm for on-line training of recurrent network
trajectories", with truncation depth 1). It uses automatic differentiation and is a diagnostic
baseline, not a forward-only method.

Shapes: ``N`` examples, ``K`` classes; conv outputs ``[N, H, W, C]``, dense ``[N, D]``, LSTM gate
pre-activations ``[N, T, 4u]``.
"""
from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from training.estimators import Estimate
from training.glr_local import OPTIONS as GLR_LOCAL_OPTIONS
from training.glr_local import LocalHeads, carry_cell_change, check_heads, local_heads, similarity_loss, top_block_map
from training.losses import DIFFERENTIABLE, get_loss
from training.registry import register_estimator
from zoo.errors import UserInputError
from zoo.noise_context import record_local
from zoo.noisy_lstm import NoisyLSTM


@dataclasses.dataclass(frozen=True)
class LocalBackprop:
    """Backprop of local GLR's local objectives (module docstring); build it with :func:`local_bp`.

    Attributes:
        loss: per-example loss of every head and of the output layer (differentiable).
        grid: cells per side of a conv layer head's average pooling (as ``glr_local``'s ``grid``).
        lstm_steps: an LSTM's per-step losses at its last ``lstm_steps`` steps only (0: every step).
        lstm_credit: steps of credit through the cell state (``glr_local``'s ``lstm_credit``): the
            exact gradient of the same surrogate, the change at step ``t`` carried to the losses of
            steps ``t .. t + k - 1`` by :func:`training.glr_local.carry_cell_change`.
        top_only: train only the output layer (the random-features control).
        head_input: ``"output"`` or ``"concat"`` (heads read the layer's input too), as ``glr_local``'s.
        sim_weight: ``beta`` of Nøkland and Eidnes's (2019) "predsim" loss: a conv or dense layer's
            local objective is ``(1 - beta) * pred + beta * sim`` (:func:`similarity_loss` on the
            head's pooled features); 0 keeps the prediction loss alone.
        top_block: the last hidden layer is trained on the real loss through the output layer
            (whose weights it does not move), not by a head of its own (``glr_local``'s ``top_block``).
        head_hidden: ReLU units in a hidden layer of every conv and dense layer's head (0: linear
            heads; ``glr_local``'s ``head_hidden``).
    """

    loss: str = "ce"
    grid: int = 4
    lstm_steps: int = 0
    lstm_credit: int = 1
    top_only: bool = False
    head_input: str = "output"
    sim_weight: float = 0.0
    top_block: bool = False
    head_hidden: int = 0

    log_names = ()

    def __post_init__(self):
        get_loss(self.loss)
        if self.loss not in DIFFERENTIABLE:
            raise UserInputError(f"loss {self.loss!r} has zero gradient almost everywhere; use --method glr_local")
        if self.grid < 1 or self.lstm_steps < 0 or self.lstm_credit < 1:
            raise UserInputError(f"grid must be >= 1, lstm_steps >= 0 and lstm_credit >= 1, "
                                 f"got {self.grid}, {self.lstm_steps} and {self.lstm_credit}")
        check_heads(self.head_input, self.head_hidden)
        if not 0.0 <= self.sim_weight <= 1.0:
            raise UserInputError(f"sim_weight must be in [0, 1], got {self.sim_weight}")

    def config(self) -> dict:
        return {"method": "local_bp", **dataclasses.asdict(self)}

    def auxiliary(self, model: keras.Model) -> LocalHeads:
        """The heads (the same kind ``glr_local`` trains; owned by the trainer, never exported)."""
        return local_heads(model, self.grid, self.head_input, self.head_hidden)

    def _lstm_objective(self, layer: NoisyLSTM, record, aux: LocalHeads, fn, y) -> tuple[tf.Tensor, tf.Tensor]:
        """``(local, credit)``: the mean of the window's per-step head losses (the head's
        objective) and the surrogate whose gradient the layer follows, with the previous ``h``
        held fixed and a step's change carried ``lstm_credit - 1`` steps on through the cell state.

        ``credit`` has the value of ``local`` times the number of (step, later step) pairs per
        window step; only its gradient is used. Each change is written ``cell(z) - stop(cell(z))``:
        zero in value, the exact derivative in gradient, so the loss of the pair (t, s) is
        ``loss(head(h_s + dh_{t -> s}))`` with ``dh`` differentiable only through step ``t``."""
        steps = int(record.preactivation.shape[1])
        window = min(self.lstm_steps, steps) if self.lstm_steps else steps
        span = min(steps, window + self.lstm_credit - 1)
        first = span - window
        x = record.inputs["x"][:, steps - span:]
        h_prev = tf.stop_gradient(record.inputs["h_prev"][:, steps - span:])
        c_prev = tf.stop_gradient(record.inputs["c_prev"][:, steps - span:])
        z = (tf.einsum("ntd,dg->ntg", x, layer.kernel) + layer.bias
             + tf.einsum("ntu,ug->ntg", h_prev, layer.recurrent_kernel))
        h, c = layer.cell(z, c_prev)  # [N, M, u]
        h_clean, c_clean = tf.stop_gradient(h), tf.stop_gradient(c)
        k = aux.num_classes

        def mean_loss(feats):  # [N, S, u] -> summed over steps, mean over examples, / W
            head = aux.logits(layer, feats)
            labels = tf.broadcast_to(y[:, None], tf.shape(head)[:-1])
            return tf.reduce_sum(fn(tf.reshape(head, [-1, k]), tf.reshape(labels, [-1]))) / (
                tf.cast(tf.shape(head)[0], tf.float32) * float(window))

        local = mean_loss(h[:, first:])
        credit = local
        for s, lo, delta_h in carry_cell_change(c - c_clean, tf.stop_gradient(z), c_clean, window, self.lstm_credit):
            credit += mean_loss(h_clean[:, s:s + 1] + delta_h)  # [N, s - lo, u]: one pair (t, s) per row
        return local, credit

    def __call__(self, model, x, y, step=0, aux: LocalHeads | None = None) -> Estimate:
        if aux is None:
            raise UserInputError("local backprop needs its heads: pass aux=estimator.auxiliary(model) (Trainer does)")
        fn = get_loss(self.loss)
        y = tf.cast(y, tf.int32)
        per_var = {}
        with tf.GradientTape(persistent=True) as tape:
            with record_local() as records:
                logits = model(x, training=True)  # the clean pass; batch statistics from its rows
            if not records:
                raise UserInputError(f"model {model.name!r} has no noisy layers to attach local losses to")
            objectives = []
            for depth, record in enumerate(records):
                layer = record.layer
                if depth == len(records) - 1:  # the output layer: the real loss
                    objectives.append((layer.trainable_variables,
                                       tf.reduce_mean(fn(layer.activate(record.preactivation), y))))
                    continue
                if self.top_only:
                    continue
                if self.top_block and depth == len(records) - 2:  # credited through the output layer
                    out = records[-1].layer
                    v = tf.matmul(layer.activate(record.preactivation), tf.stop_gradient(top_block_map(records)))
                    v = v + tf.stop_gradient(out.bias) if out.bias is not None else v
                    objectives.append((layer.trainable_variables, tf.reduce_mean(fn(v, y))))
                    continue
                if isinstance(layer, NoisyLSTM):
                    local, credit = self._lstm_objective(layer, record, aux, fn, y)
                    objectives += [(layer.trainable_variables, credit), (aux.head_variables(layer), local)]
                    continue
                # a layer's weights reach its output only through its own pre-activation
                out, inp = layer.activate(record.preactivation), tf.stop_gradient(record.inputs["x"])
                local = tf.reduce_mean(fn(aux.logits(layer, out, inp), y))
                if self.sim_weight:
                    sim = similarity_loss(aux.sim_features(layer, out, inp), y, aux.num_classes)
                    local = (1.0 - self.sim_weight) * local + self.sim_weight * sim
                variables = layer.trainable_variables + aux.head_variables(layer)
                objectives.append((variables, local))
            loss = tf.reduce_mean(fn(logits, y))
        for variables, objective in objectives:
            for v, g in zip(variables, tape.gradient(objective, variables)):
                if g is not None:
                    per_var[id(v)] = g
        del tape
        grads = [per_var.get(id(v), tf.zeros_like(v)) for v in model.trainable_variables + aux.trainable_variables]
        return Estimate(grads, loss, logits, {})


@register_estimator("local_bp", options=tuple(o for o in GLR_LOCAL_OPTIONS if o.kwarg in ("grid", "lstm_steps",
                                                                                          "lstm_credit", "top_only",
                                                                                          "head_input",
                                                                                          "sim_weight", "top_block",
                                                                                          "head_hidden")),
                    description="Backprop of local GLR's local objectives (DGL): the ceiling of local training")
def local_bp(*, loss: str = "ce", grid: int = 4, lstm_steps: int = 0, lstm_credit: int = 1, top_only: bool = False,
             head_input: str = "output", sim_weight: float = 0.0, top_block: bool = False,
             head_hidden: int = 0) -> LocalBackprop:
    """Exact gradients of the local objectives ``glr_local`` estimates (see :class:`LocalBackprop`).

    Example:
        >>> model = zoo.create_model("cnn6", (28, 28, 1), 10)
        >>> trainer = Trainer(model, local_bp(grid=4))
    """
    return LocalBackprop(loss=loss, grid=grid, lstm_steps=lstm_steps, lstm_credit=lstm_credit, top_only=top_only,
                         head_input=head_input, sim_weight=sim_weight, top_block=top_block, head_hidden=head_hidden)
