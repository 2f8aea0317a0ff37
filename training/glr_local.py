"""Local likelihood-ratio (GLR) training: every layer's noise is credited only by a loss computed next to it.

Why. A likelihood-ratio estimate ``E[L * dz/dtheta * score(e)]`` has a variance that grows with
the number of noisy units whose noise one scalar loss has to credit (Ren, Kornblith, Liao and
Hinton, ICLR 2023, "Scaling forward gradient with local losses", sec. 3 and Prop. 1): 60 per
example in the 784-50-10 MLP, about 75,000 in ``cnn6``. This estimator cuts that number to a
few dozen per loss by three changes, each keeping the estimate unbiased for its own objective:

1. **Block-local objectives** (Ren et al. 2023, sec. 4; Belilovsky, Eickenberg and Oyallon, ICML
   2020, "Decoupled greedy learning of CNNs"). Layer ``l`` gets a small linear head ``H_l``
   (average pooling onto a ``k x k`` grid for a conv layer, then a linear map to the classes;
   shared over time for an LSTM) and is trained on ``L_l = loss(H_l(y_l), y)``, where ``y_l`` is
   its output on the *clean* output of the layer below. No signal crosses layers, so each
   layer's noise is credited by its own head only. The last noisy layer produces the logits; its
   local loss is the real loss (identity head). Heads are not part of the exported model.
   A head may instead have one hidden ReLU layer (``head_hidden``, :class:`LocalHeads`).
2. **Group-wise losses** (Ren et al. 2023, "patch-wise" and "channel-group" losses). The head
   is linear, so the noise of one group of units (a spatial position of a conv layer, or a
   group of channels at it; one hidden unit of a dense layer; one hidden unit's four gates at one
   time step of an LSTM) changes the head's logits by ``A_g . (phi(z_g + e_g) - phi(z_g))`` with
   every other group clean. Each group gets its own loss ``L_g = loss(l_clean + A_g delta_g)``;
   the noise of group ``g`` is scored with ``L_g`` only. Because the objective is a smooth
   function of the pooled features, the sum over groups of the per-group gradients is the
   gradient of the block loss (chain rule), and each per-group term is estimated from that
   group's own noise: a few dozen units per loss instead of tens of thousands.
3. **Clean baseline, antithetic pairs, clean prefix computed once** (Salimans et al. 2017;
   Jiang et al., ICLR 2024, "One forward is enough"). The clean pass gives every layer's input
   and pre-activation ``z`` once; only the cheap part after the matrix multiply (activation, head,
   loss) is replicated ``R`` times. ``L_g - L_clean`` is the score-function term with a baseline
   independent of the noise; antithetic ``(e, -e)`` pairs halve the draws.

The estimate for layer ``l``'s weights is, with ``s(e) = e / sigma^2`` (Gaussian)::

    grad theta_l = 1 / (N R) * sum_{n, r} sum_g (L_g(n, r) - L_clean(n)) * dz_g/dtheta_l . s(e_g(n, r))

(Li et al., "Gradient-free training of neural networks with likelihood ratios", push-out LR,
eq. 5, applied to the local objective). The heads train by GLR too: noise ``e_h`` on the head's
logits, ``grad W_h = mean((L(l + e_h) - L(l)) * pooled^T s(e_h))``. Batch statistics come from
the clean pass (no coupling of replicated rows; Jiang et al. 2024 report batch statistics over
noisy replicas costing 30 points). No automatic differentiation is used on this path.

Shapes: ``N`` examples, ``R`` replications, ``K`` classes; conv outputs ``[N, H, W, C]``,
dense ``[N, D]``, LSTM gate pre-activations ``[N, T, 4u]``.
"""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from training.estimators import Estimate
from training.losses import get_loss
from training.registry import Option, register_estimator
from zoo.errors import UserInputError
from zoo.noise import noisy_layers
from zoo.noise_context import LocalRecord, NoiseRecord, record_local
from zoo.noisy_conv2d import NoisyConv2D
from zoo.noisy_dense import NoisyDense
from zoo.noisy_lstm import NoisyLSTM

GROUPINGS = ("patch", "channels", "unit")
HEAD_INPUTS = ("output", "concat")


class LocalHeads(keras.layers.Layer):
    """The linear heads of a :class:`LocalGLR` run, one per noisy layer except the output layer.

    Trained alongside the model (by GLR) and saved in training checkpoints, never exported.
    For a conv layer with output ``[H, W, C]`` the head averages the output over a ``k x k`` grid
    of cells (``k = min(grid, H)``) and maps the ``k * k * C`` averages to the classes; for a
    dense layer ``[D]`` and an LSTM's hidden state ``[u]`` (at every step) it is a plain linear map.

    With ``with_input`` (``head_input="concat"``), a conv or dense layer's head also reads the
    layer's *input* (pooled the same way, its own kernel in :attr:`input_kernels`): the logits are
    ``A_x . pool(x) + A_y . pool(y) + b``. The layer is then trained to add what the features it
    is given lack, as a boosting stage does, instead of relearning them: the natural objective for
    a DenseNet layer, whose output is concatenated to its input.

    With ``hidden = D > 0`` a conv or dense layer's head has one hidden layer of ``D`` ReLU units
    (Belilovsky, Eickenberg and Oyallon, ICML 2019, "Greedy layerwise learning can scale to
    ImageNet", sec. 3: auxiliary problems of more than one layer make better features for the layers
    above): the pooled features map to ``u = A . pool(y) (+ A_x . pool(x)) + b`` ``[N, D]`` (the
    :attr:`kernels`, :attr:`biases`, :attr:`input_kernels`, of width ``D``), and the logits are
    ``relu(u) . W + c`` (:attr:`out_kernels` ``[D, K]``, :attr:`out_biases`). LSTM heads stay linear.
    """

    def __init__(self, model: keras.Model, num_classes: int, grid: int = 2, seed: int = 0, with_input: bool = False,
                 hidden: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.grid = int(grid)
        self.num_classes = int(num_classes)
        self.hidden = int(hidden)
        width = self.hidden or self.num_classes  # the width of the linear map from the pooled features
        self.kernels: dict[str, tf.Variable] = {}
        self.biases: dict[str, tf.Variable] = {}
        self.input_kernels: dict[str, tf.Variable] = {}
        self.out_kernels: dict[str, tf.Variable] = {}
        self.out_biases: dict[str, tf.Variable] = {}
        self.pool: dict[str, tuple] = {}
        self.input_pool: dict[str, tuple] = {}
        for i, layer in enumerate(noisy_layers(model)[:-1]):
            shape = tuple(layer.output.shape[1:])
            in_shape = tuple(layer.input.shape[1:])
            kin = None
            if isinstance(layer, NoisyConv2D):
                h, w, c = shape
                ph, pw = _cell_matrix(h, self.grid), _cell_matrix(w, self.grid)
                self.pool[layer.name] = (tf.constant(ph), tf.constant(pw))
                kshape = (ph.shape[1], pw.shape[1], c, width)
                if with_input:
                    qh, qw = _cell_matrix(in_shape[0], self.grid), _cell_matrix(in_shape[1], self.grid)
                    self.input_pool[layer.name] = (tf.constant(qh), tf.constant(qw))
                    kin = (qh.shape[1], qw.shape[1], in_shape[-1], width)
            elif isinstance(layer, NoisyLSTM) and self.hidden:
                raise UserInputError(f"hidden-layer heads are for conv and dense layers; {layer.name} is an LSTM: "
                                     f"drop --head-hidden")
            elif isinstance(layer, (NoisyDense, NoisyLSTM)):
                kshape = (shape[-1], width)
                if with_input and isinstance(layer, NoisyDense):
                    kin = (in_shape[-1], width)
            else:
                raise TypeError(f"local GLR has no head for {type(layer).__name__} ({layer.name})")
            fan_in = int(np.prod(kshape[:-1])) + (int(np.prod(kin[:-1])) if kin else 0)
            self.kernels[layer.name] = self.add_weight(
                name=f"{layer.name}_head_kernel", shape=kshape,
                initializer=keras.initializers.RandomNormal(stddev=fan_in ** -0.5, seed=seed + i))
            self.biases[layer.name] = self.add_weight(
                name=f"{layer.name}_head_bias", shape=(width,), initializer="zeros")
            if kin is not None:
                self.input_kernels[layer.name] = self.add_weight(
                    name=f"{layer.name}_head_input_kernel", shape=kin,
                    initializer=keras.initializers.RandomNormal(stddev=fan_in ** -0.5, seed=seed + 1000 + i))
            if self.hidden:  # He initialisation of the ReLU layer's read-out
                self.out_kernels[layer.name] = self.add_weight(
                    name=f"{layer.name}_head_out_kernel", shape=(self.hidden, self.num_classes),
                    initializer=keras.initializers.RandomNormal(stddev=(2.0 / self.hidden) ** 0.5, seed=seed + 2000 + i))
                self.out_biases[layer.name] = self.add_weight(
                    name=f"{layer.name}_head_out_bias", shape=(self.num_classes,), initializer="zeros")

    def head_variables(self, layer) -> list:
        """The variables of ``layer``'s head: kernel, bias, (with the input) the input kernel and
        (with a hidden layer) the read-out's kernel and bias."""
        extra = [self.input_kernels[layer.name]] if layer.name in self.input_kernels else []
        if layer.name in self.out_kernels:
            extra += [self.out_kernels[layer.name], self.out_biases[layer.name]]
        return [self.kernels[layer.name], self.biases[layer.name], *extra]

    def pooled_input(self, layer, x: tf.Tensor) -> tf.Tensor:
        """The head's view of the layer's input: ``[N, k, k, C_in]`` cell means, or ``x`` itself."""
        if layer.name in self.input_pool:
            qh, qw = self.input_pool[layer.name]
            return tf.einsum("nhwc,hi,wj->nijc", x, qh, qw)
        return x

    def pooled(self, layer, y: tf.Tensor) -> tf.Tensor:
        """Head input: ``[N, k, k, C]`` cell means for conv outputs, else ``y`` itself."""
        if layer.name in self.pool:
            ph, pw = self.pool[layer.name]
            return tf.einsum("nhwc,hi,wj->nijc", y, ph, pw)
        return y

    def sim_features(self, layer, y: tf.Tensor, x: tf.Tensor | None = None) -> tf.Tensor:
        """``[N, D]``: what the similarity loss compares, the head's pooled view of the output ``y``
        (and, for a head that reads it, of the input ``x``), flattened."""
        n = tf.shape(y)[0]
        parts = [tf.reshape(self.pooled(layer, y), [n, -1])]
        if layer.name in self.input_kernels:
            parts.append(tf.reshape(self.pooled_input(layer, x), [n, -1]))
        return tf.concat(parts, -1)

    def linear_map(self, layer) -> tf.Tensor:
        """``A`` with ``u = sum(y * A) + b`` (:meth:`preactivation`; the logits for a linear head):
        ``[H, W, C, D]`` for conv, ``[C, D]`` otherwise, ``D`` the hidden width or ``K``."""
        w = self.kernels[layer.name]
        if layer.name in self.pool:
            ph, pw = self.pool[layer.name]
            return tf.einsum("hi,wj,ijck->hwck", ph, pw, w)
        return w

    def logits(self, layer, y: tf.Tensor, x: tf.Tensor | None = None) -> tf.Tensor:
        """Head logits ``[N, (T,) K]`` from the layer's output ``y`` (and, with an input kernel, its input ``x``)."""
        return self.readout(layer, self.preactivation(layer, y, x))

    def readout(self, layer, u: tf.Tensor) -> tf.Tensor:
        """Logits from the head's linear part ``u`` (:meth:`preactivation`): ``u`` itself for a
        linear head, ``relu(u) . W + c`` with a hidden layer."""
        if layer.name in self.out_kernels:
            return tf.nn.relu(u) @ self.out_kernels[layer.name] + self.out_biases[layer.name]
        return u

    def logit_change(self, layer, u: tf.Tensor, du: tf.Tensor) -> tf.Tensor:
        """The logits' change ``[N, ..., K]`` when the head's linear part moves from ``u`` ``[N, D]``
        by ``du`` ``[N, ..., D]`` (the groups' own changes): ``du`` itself for a linear head,
        ``(relu(u + du) - relu(u)) . W`` through a hidden layer."""
        if layer.name not in self.out_kernels:
            return du
        u = tf.reshape(u, tf.concat([tf.shape(u)[:1], tf.ones([len(du.shape) - 2], tf.int32), tf.shape(u)[-1:]], 0))
        return (tf.nn.relu(u + du) - tf.nn.relu(u)) @ self.out_kernels[layer.name]

    def preactivation(self, layer, y: tf.Tensor, x: tf.Tensor | None = None) -> tf.Tensor:
        """The head's linear part ``u = A . pool(y) (+ A_x . pool(x)) + b``: the logits of a linear
        head, the hidden layer's pre-activation ``[N, D]`` otherwise."""
        w, b = self.kernels[layer.name], self.biases[layer.name]
        p = self.pooled(layer, y)
        if layer.name in self.pool:
            out = tf.einsum("nijc,ijcd->nd", p, w) + b
        else:
            out = tf.einsum("...c,cd->...d", p, w) + b
        if layer.name in self.input_kernels:
            if x is None:
                raise ValueError(f"the head of {layer.name} reads the layer's input too: pass x")
            q, wx = self.pooled_input(layer, x), self.input_kernels[layer.name]
            out = out + (tf.einsum("nijc,ijcd->nd", q, wx) if layer.name in self.input_pool else tf.matmul(q, wx))
        return out


def cosine_similarity(features: tf.Tensor) -> tf.Tensor:
    """``[N, D] -> [N, N]``: cosine similarity of the examples' features, each centred on its own mean.

    Nøkland and Eidnes (ICML 2019, "Training neural networks with local error signals", sec. 3.2,
    the similarity matrix ``S(X)``): ``S_ij = c_i . c_j / (|c_i| |c_j|)`` with ``c_i = x_i - mean(x_i)``.
    """
    c = features - tf.reduce_mean(features, -1, keepdims=True)
    c = c * tf.math.rsqrt(tf.reduce_sum(tf.square(c), -1, keepdims=True) + 1e-8)
    return tf.matmul(c, c, transpose_b=True)


def similarity_loss(features: tf.Tensor, y: tf.Tensor, num_classes: int) -> tf.Tensor:
    """The "sim" local loss of Nøkland and Eidnes (2019, eq. 2): ``mean_ij (S(f)_ij - S(onehot(y))_ij)^2``.

    ``features`` ``[N, D]`` (a layer's pooled output), ``y`` ``[N]`` integer labels; a scalar. It asks
    examples of one class to look alike and examples of different classes to differ, in every
    direction of the features, where a linear prediction head asks only for what separates the
    classes along ``K`` directions; they report that adding it ("predsim") brings local learning
    close to backprop.
    """
    target = cosine_similarity(tf.one_hot(y, num_classes))
    return tf.reduce_mean(tf.square(cosine_similarity(features) - target))


def check_heads(head_input: str, head_hidden: int) -> None:
    """Refuse a ``head_input`` other than :data:`HEAD_INPUTS` or a negative ``head_hidden`` (one line each)."""
    if head_input not in HEAD_INPUTS:
        raise UserInputError(f"head_input must be one of {HEAD_INPUTS}, got {head_input!r}")
    if head_hidden < 0:
        raise UserInputError(f"head_hidden must be >= 0 (0: linear heads), got {head_hidden}")


def local_heads(model: keras.Model, grid: int, head_input: str, hidden: int = 0) -> LocalHeads:
    """The heads a local estimator (``glr_local``, ``local_bp``) trains beside ``model``."""
    return LocalHeads(model, model.output_shape[-1], grid=grid, with_input=head_input == "concat", hidden=hidden,
                      name="local_heads")


def _cell_matrix(size: int, grid: int) -> np.ndarray:
    """``[size, cells]`` averaging matrix: row ``h`` has ``1 / |cell|`` in column ``h // cell``."""
    cell = -(-size // max(1, min(grid, size)))
    cells = -(-size // cell)
    m = np.zeros((size, cells), np.float32)
    for h in range(size):
        i = h // cell
        m[h, i] = 1.0 / min(cell, size - i * cell)
    return m


def top_block_map(records: list) -> tf.Tensor:
    """``[D, K]``: the output layer's kernel, the linear map from the last hidden layer's output to the logits.

    With ``top_block`` the last hidden layer's noise is credited through it by the real loss:
    a unit's output change ``d`` moves the logits by ``d * W_out[j]`` (the output layer is
    linear in its input), so each hidden unit gets its own loss, as with a head, and the
    estimate is unbiased for the loss of the two-layer block. Refused (one line) when the
    output layer is not a plain linear dense layer on that output."""
    if len(records) < 2:
        raise UserInputError("top_block needs a hidden layer below the output layer")
    out, below = records[-1].layer, records[-2].layer
    plain = (isinstance(out, NoisyDense) and not out.batchnorm_enabled and out.activation in (None, "linear")
             and isinstance(below, NoisyDense) and out.kernel.shape[0] == below.units)
    if not plain:
        raise UserInputError(f"top_block needs a dense output layer without batch norm or activation reading the "
                             f"last hidden dense layer; {out.name} after {below.name} is not; drop --top-block")
    return out.kernel


def carry_cell_change(delta_c: tf.Tensor, z: tf.Tensor, c: tf.Tensor, window: int, horizon: int):
    """Carry changes of an LSTM's cell state forward along the cell's own path to later steps.

    A change ``delta_c`` of unit ``j``'s cell state at step ``t`` reaches step ``s > t`` through
    ``c_s = f_s * c_{s-1} + i_s * g_s`` with every gate held at its clean value, so it arrives
    scaled by ``f_{t+1} * ... * f_s`` (computed as ``exp`` of a difference of cumulative
    ``log f``), and changes that step's output by ``o_s * (tanh(c_s + delta) - tanh(c_s))``. This
    is the diagonal (per-unit) approximation of the state's forward influence used by e-prop
    (Bellec et al. 2020, "A solution to the learning dilemma for recurrent networks of spiking
    neurons", eq. 4-5) and SnAp-1 (Menick et al., ICLR 2021, "Practical real time recurrent
    learning with a sparse approximation", sec. 3): the path through ``h`` and the recurrent weights
    is dropped, the memory path (the cell state, scaled by the forget gate) is kept. Unit ``j``'s
    change stays in unit ``j``, so the group-wise losses keep one hidden unit per loss.

    Args:
        delta_c: ``[..., M, u]`` change of the cell state at each of ``M`` consecutive steps.
        z: ``[..., M, 4u]`` clean gate pre-activations at those steps (broadcastable to ``delta_c``).
        c: ``[..., M, u]`` clean cell states at those steps.
        window: the last ``window`` steps carry losses (targets).
        horizon: steps of credit ``k``: a change at step ``t`` reaches targets ``t + 1 .. t + k - 1``.

    Yields:
        ``(s, lo, delta_h)`` for each target step ``s`` with earlier steps in reach: ``delta_h``
        ``[..., s - lo, u]`` is the output change at step ``s`` caused by the change at step ``t``,
        for ``t = lo .. s - 1``.
    """
    _, f, _, o = tf.split(z, 4, axis=-1)
    log_f = tf.cumsum(tf.math.log_sigmoid(f), axis=-2)  # [..., M, u]
    o = tf.sigmoid(o)
    steps = int(delta_c.shape[-2])
    for s in range(steps - window, steps):
        lo = max(0, s - horizon + 1)
        if lo == s:
            continue
        carried = delta_c[..., lo:s, :] * tf.exp(log_f[..., s:s + 1, :] - log_f[..., lo:s, :])
        c_s = c[..., s:s + 1, :]
        yield s, lo, o[..., s:s + 1, :] * (tf.tanh(c_s + carried) - tf.tanh(c_s))


@dataclasses.dataclass(frozen=True)
class LocalGLR:
    """Local, group-wise likelihood-ratio estimator (module docstring); build it with :func:`glr_local`.

    Attributes:
        loss: per-example loss name (``ce``, ``hinge``, ``zero_one``), used by every local head.
        replications: ``R``, noise draws per example for conv and LSTM layers (even when ``antithetic``).
        dense_replications: noise draws per example for dense layers, the output layer and the heads,
            whose replicated tensors are small (``[N, R, units, K]``).
        sigma: stddev of the Gaussian estimator noise on the pre-activations.
        head_sigma: stddev of the noise on the heads' logits (their own GLR estimate).
        grouping: how a conv layer's units are grouped into losses: ``patch`` (all channels at
            one position; ``C`` units per loss), ``channels`` (``group_size`` channels at one
            position), ``unit`` (one unit per loss; memory ``x K``). Dense and LSTM layers always
            use one hidden unit per loss.
        group_size: channels per group for ``grouping="channels"``.
        grid: cells per side of the average pooling in a conv layer's head.
        antithetic: noise in ``(e, -e)`` pairs.
        top_only: train only the output layer (the others stay at their initialisation): the
            random-features control against which a local-GLR result is judged.
        head_input: ``"output"``: a head reads its layer's output only; ``"concat"``: its input
            too (:class:`LocalHeads`; conv and dense layers), so the layer learns what its input lacks.
        lstm_steps: an LSTM's per-step local losses are taken at its last ``lstm_steps`` time steps
            only (0: every step). Early steps of a stroke sequence are padding or a fraction of the
            digit, so their per-step targets are mostly noise; noise at steps outside the window is
            not drawn and gets no credit (the estimate stays unbiased for the windowed objective).
        lstm_credit: ``k``, steps of credit through an LSTM's cell state: the noise at step ``t``
            is scored with the losses of steps ``t .. t + k - 1`` in the window, its effect carried
            forward by :func:`carry_cell_change` (1: one-step credit, the previous state held fixed).
            Noise is drawn at the window's steps and the ``k - 1`` before it.
        sim_weight: ``beta`` of the "predsim" local loss (Nøkland and Eidnes 2019): a conv or dense
            layer's objective is ``(1 - beta) * pred + beta * sim`` with :func:`similarity_loss` on
            its head's pooled features (0: the prediction loss alone). See :meth:`LocalGLR._sim_change`.
        sim_partners: ``M``, the batch examples each example's similarity row is compared with per
            step, drawn at random (an unbiased estimate of the row; cost and memory grow with ``M``).
        top_block: the last hidden layer is credited through the output layer by the real loss
            (the output layer is its head, and the two form one block) instead of by a head of its
            own: the output layer no longer lags behind features trained for another read-out.
            Needs a dense output layer without batch norm and with no activation, reading the last
            hidden dense layer's output (every CNN and MLP of the zoo). See :func:`top_block_map`.
        head_hidden: ``D``, ReLU units in the hidden layer of every conv and dense layer's head
            (0: linear heads; :class:`LocalHeads`). A group's noise then changes the head's hidden
            pre-activation by ``A_g . delta_g`` and the logits by ``(relu(u + A_g delta_g) - relu(u)) . W``
            (:meth:`LocalHeads.logit_change`): still one loss per group, now ``D`` times the work. The
            head's first layer is trained by GLR from noise of stddev ``sigma`` on its hidden
            pre-activations (one loss per hidden unit), its read-out from noise on its logits.
    """

    loss: str = "ce"
    replications: int = 2
    dense_replications: int = 16
    sigma: float = 0.5
    head_sigma: float = 1.0
    grouping: str = "channels"
    group_size: int = 4
    grid: int = 4
    antithetic: bool = True
    top_only: bool = False
    lstm_steps: int = 0
    lstm_credit: int = 1
    head_input: str = "output"
    sim_weight: float = 0.0
    sim_partners: int = 16
    top_block: bool = False
    head_hidden: int = 0

    log_names = ()

    def __post_init__(self):
        get_loss(self.loss)
        for label in ("replications", "dense_replications"):
            r = getattr(self, label)
            if r < 1 or (self.antithetic and r % 2):
                raise UserInputError(f"{label} must be >= 1 (and even with antithetic pairs), got {r}")
        for label in ("sigma", "head_sigma"):
            value = getattr(self, label)
            if not (value > 0 and np.isfinite(value)):
                raise UserInputError(f"{label} must be a finite number > 0, got {value}")
        if self.grouping not in GROUPINGS:
            raise UserInputError(f"grouping must be one of {GROUPINGS}, got {self.grouping!r}")
        if self.lstm_steps < 0:
            raise UserInputError(f"lstm_steps must be >= 0 (0: every step), got {self.lstm_steps}")
        if self.lstm_credit < 1:
            raise UserInputError(f"lstm_credit must be >= 1 (1: one-step credit), got {self.lstm_credit}")
        check_heads(self.head_input, self.head_hidden)
        if not 0.0 <= self.sim_weight <= 1.0 or self.sim_partners < 1:
            raise UserInputError(f"sim_weight must be in [0, 1] and sim_partners >= 1, "
                                 f"got {self.sim_weight} and {self.sim_partners}")
        if self.group_size < 1 or self.grid < 1:
            raise UserInputError(f"group_size and grid must be >= 1, got {self.group_size} and {self.grid}")

    def config(self) -> dict:
        return {"method": "glr_local", **dataclasses.asdict(self)}

    def auxiliary(self, model: keras.Model) -> LocalHeads:
        """The heads this estimator trains beside ``model`` (owned by the trainer, not exported)."""
        return local_heads(model, self.grid, self.head_input, self.head_hidden)

    # ------------------------------------------------------------------ estimate
    def __call__(self, model, x, y, step=0, aux: LocalHeads | None = None) -> Estimate:
        if aux is None:
            raise UserInputError("local GLR needs its heads: pass aux=estimator.auxiliary(model) (Trainer does)")
        y = tf.cast(y, tf.int32)
        with record_local() as records:
            logits = model(x, training=True)  # clean pass, [N, K]
        if not records:
            raise UserInputError(f"model {model.name!r} has no noisy layers; GLR needs noise on its pre-activations")
        variables = model.trainable_variables
        index = {id(v): i for i, v in enumerate(variables)}
        grads = [tf.zeros_like(v) for v in variables]
        head_vars = aux.trainable_variables
        head_index = {id(v): i for i, v in enumerate(head_vars)}
        head_grads = [tf.zeros_like(v) for v in head_vars]
        n = tf.cast(tf.shape(x)[0], tf.float32)
        top = top_block_map(records) if self.top_block and not self.top_only else None
        for depth, record in enumerate(records):
            last = depth == len(records) - 1
            if self.top_only and not last:
                continue
            through_top = top is not None and depth == len(records) - 2
            seed = tf.random.experimental.stateless_fold_in(record.layer.next_seed(), depth)
            g = self._layer_score(record, y, None if last else aux, seed, top=(top, logits) if through_top else None) / n
            for key, value in record.layer.glr_gradients(
                    NoiseRecord(record.layer, record.inputs, None, False, self.sigma), g, 1).items():
                grads[index[key]] += value
            if not last and not through_top:
                head_seed = tf.random.experimental.stateless_fold_in(seed, 1)
                for v, grad in zip(aux.head_variables(record.layer), self._head_gradients(record, y, aux, head_seed)):
                    # the head's share of the layer's objective (1 - beta) pred + beta sim
                    head_grads[head_index[id(v)]] += grad * (1.0 - self.sim_weight) / n
        loss = tf.reduce_mean(get_loss(self.loss)(logits, y))
        return Estimate(grads + head_grads, loss, logits, {})

    # ------------------------------------------------------------------ pieces
    def _lstm_window(self, z) -> tuple[int, int]:
        """``(T, W)``: an LSTM record's steps and the trailing window that carries local losses."""
        steps = int(z.shape[1])
        return steps, (min(self.lstm_steps, steps) if self.lstm_steps else steps)

    def _replications(self, layer) -> int:
        return self.replications if isinstance(layer, (NoisyConv2D, NoisyLSTM)) else self.dense_replications

    def _noise(self, shape, seed, sigma, replications) -> tf.Tensor:
        """``[N, R, *shape[1:]]`` Gaussian noise of stddev ``sigma``, antithetic along ``R``."""
        draws = replications // 2 if self.antithetic else replications
        e = tf.random.stateless_normal(tf.concat([shape[:1], [draws], shape[1:]], 0), seed)
        if self.antithetic:
            e = tf.concat([e, -e], axis=1)
        return sigma * e

    def _loss_change(self, clean_logits, delta_logits, y):
        """``loss(l + d) - loss(l)`` for ``l``: ``[N, *T, K]`` and ``d``: ``[N, R, *T, *G, K]`` -> ``[N, R, *T, *G]``.

        Cross-entropy uses the exact, cancellation-free form
        ``logsumexp(log_softmax(l) + d) - d_y``.
        """
        extra = len(delta_logits.shape) - len(clean_logits.shape) - 1  # group axes
        time_axes = len(clean_logits.shape) - 2
        lab = tf.reshape(y, [-1] + [1] * (1 + time_axes + extra))  # [N, 1, ...]
        expand = lambda t: tf.reshape(t, tf.concat([tf.shape(t)[:1], [1], tf.shape(t)[1:-1],  # noqa: E731
                                                    tf.ones([extra], tf.int32), tf.shape(t)[-1:]], 0))
        if self.loss == "ce":
            logp = expand(tf.nn.log_softmax(clean_logits))
            d_y = tf.reduce_sum(delta_logits * tf.one_hot(lab, tf.shape(delta_logits)[-1]), -1)
            return tf.reduce_logsumexp(logp + delta_logits, -1) - d_y
        fn = get_loss(self.loss)
        full = expand(clean_logits) + delta_logits
        k = tf.shape(full)[-1]
        labels = tf.broadcast_to(lab, tf.shape(full)[:-1])
        noisy = tf.reshape(fn(tf.reshape(full, [-1, k]), tf.reshape(labels, [-1])), tf.shape(full)[:-1])
        clean_labels = tf.broadcast_to(tf.reshape(y, [-1] + [1] * time_axes), tf.shape(clean_logits)[:-1])
        clean = tf.reshape(fn(tf.reshape(clean_logits, [-1, k]), tf.reshape(clean_labels, [-1])),
                           tf.shape(clean_logits)[:-1])  # once per example (and step), not per row and group
        return noisy - expand(clean[..., None])[..., 0]

    def _unit_loss_change(self, clean_logits, delta_h, a, y) -> tf.Tensor:
        """``loss(l + d_j a_j) - loss(l)`` for each unit ``j`` alone: ``l`` ``[N, T, K]`` (``T`` may
        be 1 and broadcast), ``delta_h`` ``[N, R, T, u]``, ``a`` ``[u, K]`` -> ``[N, R, T, u]``.

        For cross-entropy the rank-one change has the closed form
        ``log sum_k softmax(l)_k exp(d_j a_jk) - d_j a_jy``, about twice as fast as the general
        :meth:`_loss_change` (no one-hot tensor, one exp). The exponent stays small for an LSTM's
        outputs (``|d_j| <= 2``), so no max is subtracted."""
        if self.loss != "ce":
            return self._loss_change(clean_logits, delta_h[..., None] * a, y)
        p = tf.nn.softmax(clean_logits)[:, None, :, None, :]  # [N, 1, T, 1, K]
        a_y = tf.transpose(tf.gather(a, y, axis=1))[:, None, None, :]  # [N, 1, 1, u]
        return tf.math.log(tf.reduce_sum(p * tf.exp(delta_h[..., None] * a), -1)) - delta_h * a_y

    def _layer_score(self, record: LocalRecord, y, aux, seed, top=None) -> tf.Tensor:
        """``sum_r (L_g - L_clean) * e / sigma^2`` on the shape of ``z`` (``[N, ...]``), not yet divided by ``N``.

        ``top``: ``(W_out, clean logits)`` when the layer is credited through the output layer
        (``top_block``); else its head ``aux`` (or, for the output layer, ``aux=None``) credits it."""
        layer, z = record.layer, record.preactivation
        if isinstance(layer, NoisyLSTM):
            return self._lstm_score(record, y, aux, seed)
        e = self._noise(tf.shape(z), seed, self.sigma, self._replications(layer))  # [N, R, ...]
        y_clean = layer.activate(z)
        delta = layer.activate(z[:, None] + e) - y_clean[:, None]
        if aux is None:  # output layer: the real loss, one loss per output unit
            k = delta.shape[-1]
            change = self._loss_change(y_clean, delta[..., None] * tf.eye(k), y)  # [N, R, K]
        elif top is not None:  # last hidden layer: the real loss through the output layer, one loss per unit
            w_out, clean_logits = top
            change = self._loss_change(clean_logits, delta[..., None] * w_out, y)  # [N, R, D]
        else:
            a = aux.linear_map(layer)  # to the head's hidden pre-activation (its logits if linear)
            u = aux.preactivation(layer, y_clean, record.inputs["x"])  # [N, D]
            clean_logits = aux.readout(layer, u)
            size = 1  # units per loss along the last axis
            if isinstance(layer, NoisyConv2D) and self.grouping != "unit":
                c = delta.shape[-1]
                size = c if self.grouping == "patch" else min(self.group_size, c)
                if c % size:
                    raise UserInputError(f"group_size {size} does not divide the {c} channels of {layer.name}")
                shape = tf.concat([tf.shape(delta)[:-1], [c // size, size]], 0)
                a_g = tf.reshape(a, [a.shape[0], a.shape[1], c // size, size, a.shape[-1]])
                du = tf.einsum("nrhwgs,hwgsd->nrhwgd", tf.reshape(delta, shape), a_g)
                change = self._loss_change(clean_logits, aux.logit_change(layer, u, du), y)  # [N, R, H, W, G]
            else:  # one unit per loss
                change = self._loss_change(clean_logits, aux.logit_change(layer, u, delta[..., None] * a), y)
            if self.sim_weight:
                sim = self._sim_change(record, aux, y_clean, delta, size, y, seed)
                change = (1.0 - self.sim_weight) * change + self.sim_weight * sim
            if size > 1:
                change = tf.repeat(change, size, axis=-1)  # every unit of a group gets its group's loss
        return tf.reduce_mean(change * e, axis=1) / self.sigma**2

    def _lstm_score(self, record: LocalRecord, y, aux: LocalHeads, seed) -> tf.Tensor:
        """An LSTM's score ``[N, T, 4u]``: each hidden unit's four gates at step ``t`` share one
        loss per window step ``t .. t + k - 1`` (``k = lstm_credit``), the change of that unit's
        output there (:func:`carry_cell_change` beyond step ``t``) read by the head; the objective
        is the mean of the window's per-step losses. No credit before the noise span."""
        layer, z_all = record.layer, record.preactivation
        steps, window = self._lstm_window(z_all)
        span = min(steps, window + self.lstm_credit - 1)  # steps that carry noise
        first = span - window  # the window's first step within the span
        z, c_prev = z_all[:, steps - span:], record.inputs["c_prev"][:, steps - span:]
        e = self._noise(tf.shape(z), seed, self.sigma, self._replications(layer))  # [N, R, M, 4u]
        h_clean, c_clean = layer.cell(z, c_prev)  # [N, M, u]
        h_noisy, c_noisy = layer.cell(z[:, None] + e, c_prev[:, None])  # [N, R, M, u]
        a = aux.linear_map(layer)  # [u, K]
        clean_logits = aux.logits(layer, h_clean[:, first:])  # [N, W, K]

        # one step: the noise at each window step, read by that step's head
        change = tf.pad(self._unit_loss_change(clean_logits, (h_noisy - h_clean[:, None])[:, :, first:], a, y),
                        [[0, 0], [0, 0], [first, 0], [0, 0]])  # [N, R, M, u]
        for s, lo, delta_h in carry_cell_change(c_noisy - c_clean[:, None], z[:, None], c_clean[:, None],
                                                window, self.lstm_credit):  # later steps: the cell state's path
            later = self._unit_loss_change(clean_logits[:, s - first:s - first + 1], delta_h, a, y)
            change += tf.pad(later, [[0, 0], [0, 0], [lo, span - s], [0, 0]])  # filed under the noise's step
        change = tf.concat([change] * 4, axis=-1) / float(window)  # a unit's four gates share its losses
        score = tf.reduce_mean(change * e, axis=1) / self.sigma**2  # [N, M, 4u]
        return tf.pad(score, [[0, 0], [steps - span, 0], [0, 0]])

    def _sim_change(self, record: LocalRecord, aux: LocalHeads, y_clean, delta, size: int, y, seed) -> tf.Tensor:
        """Per-group change of the similarity loss, ``[N, R, *groups]``, for the noise in ``delta``.

        The similarity loss (:func:`similarity_loss`, Nøkland and Eidnes 2019, eq. 2) couples the
        examples of a batch: ``L = 1/N^2 sum_ij (S_ij - T_ij)^2``. Its gradient with respect to
        example ``i``'s features ``f_i`` equals ``1/N`` times that of the row loss
        ``l_i = 2/N sum_{j != i} (S_ij - T_ij)^2`` with every other example held clean (``S`` is
        symmetric, ``S_ii = 1``), so ``l_i`` is the per-example loss whose change each group's noise
        is scored with, as the prediction loss's is. The sum over ``j`` is estimated from ``M``
        partners ``j = (i + o_m) mod N`` with offsets ``o_m`` uniform on ``1..N-1``, scaled by
        ``(N - 1) / M``: unbiased, as the estimator is linear in the loss.

        A group's noise moves ``f_i`` by ``u`` in the group's slots of its cell (``u`` = the output
        change times the cell's averaging weight). With ``c = f - mean(f)`` (each ``c_j`` sums to
        zero) the centred dot products and norms update in closed form::

            c_i' . c_j = c_i . c_j + u . c_j[slots]
            |c_i'|^2   = |c_i|^2 + 2 u . c_i[slots] + |u|^2 - (sum u)^2 / D

        so no replicated feature vector is ever built: the cost is ``M`` elementwise products
        over the ``[N, R, ...]`` output change.

        Args:
            y_clean: the layer's clean output ``[N, ...]``; ``delta``: noisy minus clean,
                ``[N, R, ...]``; ``size``: units per group along the last axis (1 for dense
                layers and ``unit`` grouping).
        """
        layer = record.layer
        feats = aux.sim_features(layer, y_clean, record.inputs["x"])  # [N, D]
        n_int = tf.shape(feats)[0]
        n = tf.cast(n_int, tf.float32)
        dim = tf.cast(tf.shape(feats)[1], tf.float32)
        c = feats - tf.reduce_mean(feats, -1, keepdims=True)
        nu2 = tf.reduce_sum(tf.square(c), -1)  # [N]
        nu = tf.sqrt(nu2 + 1e-8)
        dots = tf.matmul(c, c, transpose_b=True)  # [N, N]
        target = cosine_similarity(tf.one_hot(y, aux.num_classes))
        out_dim = int(np.prod(y_clean.shape[1:]))
        if layer.name in aux.pool:  # the output's slots, spread back over the positions of their cells
            ph, pw = aux.pool[layer.name]
            pooled_shape = (ph.shape[1], pw.shape[1], y_clean.shape[-1])  # [k, k, C], as aux.pooled gives
            c_out = tf.reshape(c[:, :int(np.prod(pooled_shape))], [-1, *pooled_shape])
            spread = tf.einsum("nijc,hi,wj->nhwc", c_out, ph, pw)  # [N, H, W, C]
            weight = (tf.reduce_sum(ph, 1)[:, None] * tf.reduce_sum(pw, 1)[None, :])[:, :, None]  # [H, W, 1]
        else:
            spread, weight = c[:, :out_dim], tf.ones([1])
        units = delta.shape[-1]
        grouped = lambda t: tf.reshape(t, tf.concat([tf.shape(t)[:-1], [units // size, size]], 0))  # noqa: E731
        d = grouped(delta)  # [N, R, ..., G, S]
        u = grouped(delta * weight)
        self_dot = tf.reduce_sum(d * grouped(spread)[:, None], -1)  # [N, R, ..., G]
        extra = len(self_dot.shape) - 2
        col = lambda t: tf.reshape(t, tf.concat([tf.shape(t), tf.ones([1 + extra], tf.int32)], 0))  # noqa: E731
        nu2_new = col(nu2) + 2.0 * self_dot + tf.reduce_sum(tf.square(u), -1) - tf.square(tf.reduce_sum(u, -1)) / dim
        nu_new = tf.sqrt(tf.maximum(nu2_new, 0.0) + 1e-8)
        offsets = tf.random.stateless_uniform([self.sim_partners], tf.random.experimental.stateless_fold_in(seed, 2),
                                              minval=1, maxval=tf.maximum(n_int, 2), dtype=tf.int32)
        rows = tf.range(n_int)
        total = tf.zeros_like(self_dot)
        for m in range(self.sim_partners):
            partner = tf.math.floormod(rows + offsets[m], n_int)
            pick = tf.stack([rows, partner], 1)
            base, t = tf.gather_nd(dots, pick), tf.gather_nd(target, pick)  # [N]
            nu_j = tf.gather(nu, partner)
            cross = tf.reduce_sum(d * grouped(tf.gather(spread, partner))[:, None], -1)  # [N, R, ..., G]
            new = (col(base) + cross) / (nu_new * col(nu_j))
            old = base / (nu * nu_j)
            total += tf.square(new - col(t)) - col(tf.square(old - t))
        return total * (2.0 * (n - 1.0) / (n * self.sim_partners))

    def _head_gradients(self, record: LocalRecord, y, aux: LocalHeads, seed) -> list:
        """GLR gradients of a head's variables (:meth:`LocalHeads.head_variables`: kernel, bias,
        input kernel, read-out kernel and bias) from noise on its logits (summed over examples); with
        a hidden layer, its first layer's from noise on the hidden pre-activations, each hidden
        unit's change read out by its own row of the read-out kernel (one loss per hidden unit)."""
        layer, z = record.layer, record.preactivation
        if isinstance(layer, NoisyLSTM):
            steps, window = self._lstm_window(z)
            feats, _ = layer.cell(z[:, steps - window:], record.inputs["c_prev"][:, steps - window:])  # [N, W, u]
        else:
            feats = layer.activate(z)
        u = aux.preactivation(layer, feats, record.inputs["x"])  # [N, (T,) D]; an LSTM head ignores x
        clean = aux.readout(layer, u)  # [N, (T,) K]
        e = self._noise(tf.shape(clean), seed, self.head_sigma, self.dense_replications)  # [N, R, (T,) K]
        k = clean.shape[-1]
        change = self._loss_change(clean, e[..., None] * tf.eye(k), y)  # one loss per logit: [N, R, (T,) K]
        gl = tf.reduce_mean(change * e, axis=1) / self.head_sigma**2  # [N, (T,) K]
        read_out = []
        if layer.name in aux.out_kernels:  # the read-out on relu(u); then the hidden layer is the linear part
            w_out = aux.out_kernels[layer.name]
            hidden = tf.nn.relu(u)
            read_out = [tf.matmul(hidden, gl, transpose_a=True), tf.reduce_sum(gl, 0)]
            e = self._noise(tf.shape(u), tf.random.experimental.stateless_fold_in(seed, 3), self.sigma,
                            self.dense_replications)  # [N, R, D]
            delta = tf.nn.relu(u[:, None] + e) - hidden[:, None]
            change = self._loss_change(clean, delta[..., None] * w_out, y)  # one loss per hidden unit: [N, R, D]
            gl = tf.reduce_mean(change * e, axis=1) / self.sigma**2  # [N, D]
        pooled = aux.pooled(layer, feats)
        if layer.name in aux.pool:
            gk = tf.einsum("nijc,nk->ijck", pooled, gl)
        else:
            d = pooled.shape[-1]
            gk = tf.matmul(tf.reshape(pooled, [-1, d]), tf.reshape(gl, [-1, gl.shape[-1]]), transpose_a=True)
        gb = tf.reduce_sum(tf.reshape(gl, [-1, gl.shape[-1]]), 0)
        if isinstance(layer, NoisyLSTM):  # mean over the window's steps, as the per-step losses are averaged
            gk, gb = gk / float(window), gb / float(window)
        grads = [gk, gb]
        if layer.name in aux.input_kernels:
            q = aux.pooled_input(layer, record.inputs["x"])
            conv = layer.name in aux.input_pool
            grads.append(tf.einsum("nijc,nk->ijck", q, gl) if conv else tf.matmul(q, gl, transpose_a=True))
        return grads + read_out


OPTIONS = (
    Option("--replications", "replications", int, help="noise draws per example (R)"),
    Option("--dense-replications", "dense_replications", int,
           help="local GLR: noise draws per example for dense layers, the output layer and the heads (default 16)"),
    Option("--sigma", "sigma", float, help="estimator noise scale"),
    Option("--head-sigma", "head_sigma", float, help="local GLR: noise stddev on the heads' logits (default 1.0)"),
    Option("--grouping", "grouping", choices=GROUPINGS,
           help="local GLR: units per loss in conv layers: patch (all channels at a position), channels, unit"),
    Option("--group-size", "group_size", int, help="local GLR: channels per group with --grouping channels (default 4)"),
    Option("--head-grid", "grid", int, help="local GLR: cells per side of a conv head's average pooling (default 4)"),
    Option("--lstm-steps", "lstm_steps", int,
           help="local GLR: an LSTM's per-step local losses at its last N steps only (0: every step)"),
    Option("--lstm-credit", "lstm_credit", int,
           help="local GLR: steps of credit through an LSTM's cell state (1: one step, the default)"),
    Option("--top-only", "top_only", switch=True,
           help="local GLR: train only the output layer (the random-features control)"),
    Option("--head-input", "head_input", choices=("output", "concat"),
           help="local GLR: a conv or dense layer's head reads its output only, or its input too (concat)"),
    Option("--sim-weight", "sim_weight", float,
           help="local GLR: beta of the predsim local loss, (1 - beta) pred + beta sim (default 0: pred only)"),
    Option("--sim-partners", "sim_partners", int,
           help="local GLR: batch examples each similarity row is compared with per step (default 16)"),
    Option("--top-block", "top_block", switch=True,
           help="local GLR: credit the last hidden layer through the output layer by the real loss (no head of its own)"),
    Option("--head-hidden", "head_hidden", int,
           help="local GLR: ReLU units in a hidden layer of every conv and dense layer's head (default 0: linear heads)"),
)


def search_space(hp) -> dict:
    """Local GLR's tuning space: noise scale, conv grouping and head grid."""
    return {"sigma": hp.Float("sigma", 0.1, 1.0, sampling="log"),
            "grouping": hp.Choice("grouping", list(GROUPINGS)),
            "grid": hp.Choice("grid", [2, 4])}


@register_estimator("glr_local", options=OPTIONS, search_space=search_space,
                    description="Local, group-wise likelihood-ratio gradients (forward passes only; conv, dense, LSTM)")
def glr_local(*, loss: str = "ce", replications: int = 2, dense_replications: int = 16, sigma: float = 0.5,
              head_sigma: float = 1.0, grouping: str = "channels", group_size: int = 4, grid: int = 4, antithetic: bool = True,
              top_only: bool = False, lstm_steps: int = 0, lstm_credit: int = 1, head_input: str = "output",
              sim_weight: float = 0.0, sim_partners: int = 16, top_block: bool = False, head_hidden: int = 0) -> LocalGLR:
    """Local, group-wise likelihood-ratio estimator (see :class:`LocalGLR`).

    Example:
        >>> model = zoo.create_model("cnn6", (28, 28, 1), 10)
        >>> trainer = Trainer(model, glr_local(replications=2, sigma=0.5))
    """
    return LocalGLR(loss=loss, replications=replications, dense_replications=dense_replications, sigma=sigma,
                    head_sigma=head_sigma, grouping=grouping, group_size=group_size, grid=grid, antithetic=antithetic,
                    top_only=top_only, lstm_steps=lstm_steps, lstm_credit=lstm_credit, head_input=head_input,
                    sim_weight=sim_weight, sim_partners=sim_partners, top_block=top_block, head_hidden=head_hidden)
