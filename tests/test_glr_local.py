"""Statistical tests of the local, group-wise likelihood-ratio estimator (training/glr_local.py).

The reference is the pathwise (backprop) gradient of the same local objectives on the same noisy
network, written here independently of the estimator's einsum bookkeeping: for every group of
units, the layer's output is the clean output with only that group replaced by its noisy value
(a mask), pushed through the head; the tape is used only inside these tests. Bounds come from the
standard errors of the two sample means (fixed seeds).
"""
import ast
import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

import training.glr_local as local_module
import zoo
from training.glr_local import glr_local
from training.losses import cross_entropy
from training.trainer import Trainer
from zoo.noise_context import record_local
from zoo.noisy_conv2d import NoisyConv2D
from zoo.noisy_lstm import NoisyLSTM

SIGMA, HEAD_SIGMA = 0.4, 0.7


def small_model(kind):
    keras.utils.set_random_seed(3)
    if kind == "dense":
        return zoo.create_model("mlp", (5,), 3, hidden=(4,), activation="sigmoid")
    if kind == "conv_bn":
        i = keras.Input((4, 4, 1))
        h = NoisyConv2D(4, 3, batchnorm=True, activation="sigmoid", seed=1, name="conv")(i)
        h = keras.layers.MaxPooling2D(2)(h)
        h = keras.layers.Flatten()(h)
        return keras.Model(i, zoo.NoisyDense(3, seed=2, name="logits")(h))
    if kind == "lstm":
        return zoo.create_model("lstm", (3, 2), 3, units=2)
    raise ValueError(kind)


def batch(kind):
    rng = np.random.default_rng(0)
    shape = {"dense": (5,), "conv_bn": (4, 4, 1), "lstm": (3, 2)}[kind]
    return tf.constant(rng.random((6, *shape), dtype=np.float32)), tf.constant([0, 1, 2, 0, 1, 2])


def group_masks(record, estimator, last):
    """One 0/1 mask per loss group over a layer's per-example output (LSTM: hidden units x steps)."""
    layer = record.layer
    if isinstance(layer, NoisyLSTM):
        steps, units = record.preactivation.shape[1], layer.units
        first = steps - (min(estimator.lstm_steps, steps) if estimator.lstm_steps else steps)
        return [(t, np.eye(units, dtype=np.float32)[j]) for t in range(first, steps) for j in range(units)]
    shape = tuple(record.preactivation.shape[1:])
    if isinstance(layer, NoisyConv2D) and not last and estimator.grouping != "unit":
        h, w, c = shape
        size = c if estimator.grouping == "patch" else estimator.group_size
        masks = []
        for p in range(h * w):
            for g in range(c // size):
                m = np.zeros(shape, np.float32)
                m[p // w, p % w, g * size:(g + 1) * size] = 1.0
                masks.append(m)
        return masks
    return [m.reshape(shape) for m in np.eye(int(np.prod(shape)), dtype=np.float32)]


def window(record, estimator):
    """The number of trailing LSTM steps that carry local losses."""
    steps = record.preactivation.shape[1]
    return min(estimator.lstm_steps, steps) if estimator.lstm_steps else steps


def pathwise(model, heads, estimator, x, y):
    """Tape gradient of every local objective at one noise draw, flattened in estimator order ``[P]``."""
    grads = []
    with tf.GradientTape(persistent=True) as tape:
        with record_local() as records:
            model(x, training=True)
        objectives, head_objectives = [], []
        for depth, rec in enumerate(records):
            layer, z = rec.layer, rec.preactivation
            last = depth == len(records) - 1
            e = SIGMA * tf.random.normal(tf.shape(z))
            if isinstance(layer, NoisyLSTM):
                # one-step local objective: the previous state is an input, not a function of the weights
                h_prev, c_prev = tf.stop_gradient(rec.inputs["h_prev"]), tf.stop_gradient(rec.inputs["c_prev"])
                z = (tf.einsum("ntd,dg->ntg", rec.inputs["x"], layer.kernel) + layer.bias
                     + tf.einsum("ntu,ug->ntg", h_prev, layer.recurrent_kernel))
                clean = tf.stop_gradient(layer.cell(z, c_prev)[0])  # [N, T, u]
                noisy = layer.cell(z + e, c_prev)[0]
            else:
                clean = tf.stop_gradient(layer.activate(z))
                noisy = layer.activate(z + e)
            total = 0.0
            for mask in group_masks(rec, estimator, last):
                if isinstance(layer, NoisyLSTM):
                    t, m = mask
                    h_t = clean[:, t] + m * (noisy[:, t] - clean[:, t])
                    total += tf.reduce_sum(cross_entropy(heads.logits(layer, h_t), y)) / window(rec, estimator)
                    continue
                out = clean + mask * (noisy - clean)
                logits = out if last else heads.logits(layer, out, rec.inputs["x"])
                total += tf.reduce_sum(cross_entropy(logits, y))
            objectives.append((layer, total / x.shape[0]))
            if not last:
                feats = clean[:, z.shape[1] - window(rec, estimator):] if isinstance(layer, NoisyLSTM) else clean
                logits = heads.logits(layer, feats, None if isinstance(layer, NoisyLSTM) else rec.inputs["x"])
                k = logits.shape[-1]
                e_h = HEAD_SIGMA * tf.random.normal(tf.shape(logits))
                ht = 0.0
                fixed = tf.stop_gradient(logits)
                for j in range(k):  # logit j's loss: only logit j noisy, and only logit j carries its gradient
                    one = tf.one_hot(j, k)
                    ht += cross_entropy(tf.reshape(fixed + one * (logits + e_h - fixed), [-1, k]),
                                        tf.reshape(tf.broadcast_to(tf.reshape(y, [-1] + [1] * (len(logits.shape) - 2)),
                                                          tf.shape(logits)[:-1]), [-1]))
                norm = x.shape[0] * (window(rec, estimator) if isinstance(layer, NoisyLSTM) else 1)
                head_objectives.append((layer, tf.reduce_sum(ht) / norm))
    per_var = {}
    for layer, obj in objectives:
        for v, g in zip(layer.trainable_variables, tape.gradient(obj, layer.trainable_variables)):
            per_var[id(v)] = g
    for layer, obj in head_objectives:
        hv = heads.head_variables(layer)
        for v, g in zip(hv, tape.gradient(obj, hv)):
            per_var[id(v)] = g
    del tape
    for v in model.trainable_variables + heads.trainable_variables:
        grads.append(tf.reshape(per_var[id(v)], [-1]) if id(v) in per_var else tf.zeros([int(np.prod(v.shape))]))
    return tf.concat(grads, 0)


def glr_estimates(estimator, model, heads, x, y, k):
    fn = tf.function(lambda: estimator(model, x, y, 0, aux=heads).grads)
    return np.stack([np.concatenate([np.ravel(g) for g in fn()]) for _ in range(k)])


def compare(kind, k, **options):
    model = small_model(kind)
    x, y = batch(kind)
    estimator = glr_local(sigma=SIGMA, head_sigma=HEAD_SIGMA, grid=2, **options)
    heads = estimator.auxiliary(model)
    tf.random.set_seed(7)
    g = glr_estimates(estimator, model, heads, x, y, k)
    reference = tf.function(lambda: pathwise(model, heads, estimator, x, y))  # loops unrolled once
    p = np.stack([reference().numpy() for _ in range(k)])
    return g, p


def assert_same_mean(g, p, z_max=4.5):
    diff = g.mean(0) - p.mean(0)
    se = np.sqrt(g.var(0, ddof=1) / len(g) + p.var(0, ddof=1) / len(p))
    live = se > 1e-9
    assert live.sum() > 10
    z = np.abs(diff[live]) / se[live]
    assert z.max() < z_max, f"max |z| = {z.max():.2f} over {live.sum()} coordinates"
    assert np.all(np.abs(diff[~live]) < 1e-6)  # exactly-zero coordinates agree exactly
    # jointly too: the mean squared z-score is ~1 (chi-square per degree of freedom) when the means agree
    assert np.mean(z**2) < 2.0


LARGE = pytest.mark.large


@pytest.mark.parametrize("kind,options", [
    ("dense", {}),  # the default suite's case; the others are large (over 4 s each here)
    pytest.param("conv_bn", {"grouping": "patch"}, marks=LARGE),
    pytest.param("conv_bn", {"grouping": "channels", "group_size": 2}, marks=LARGE),
    pytest.param("conv_bn", {"grouping": "channels", "group_size": 2, "head_input": "concat"}, marks=LARGE),
    pytest.param("dense", {"head_input": "concat"}, marks=LARGE),
    pytest.param("conv_bn", {"grouping": "unit"}, marks=LARGE),
    pytest.param("lstm", {}, marks=LARGE),
    pytest.param("lstm", {"lstm_steps": 2}, marks=LARGE),
])
def test_local_glr_mean_matches_backprop_of_local_objective(kind, options):
    g, p = compare(kind, 200, replications=2, dense_replications=4, **options)
    assert_same_mean(g, p)


@LARGE
def test_error_shrinks_as_samples_grow():
    g, p = compare("conv_bn", 400, replications=2, dense_replications=4, grouping="channels", group_size=2)
    target = p.mean(0)
    err_small = np.mean([np.linalg.norm(g[i:i + 25].mean(0) - target) for i in range(0, 400, 25)])
    err_large = np.mean([np.linalg.norm(g[i:i + 100].mean(0) - target) for i in range(0, 400, 100)])
    assert err_large < err_small / 1.5  # 1/sqrt(n): a factor 2 expected


@pytest.mark.parametrize("antithetic,replications", [pytest.param(True, 8, marks=LARGE),  # 5-20 s each here
                                                     pytest.param(False, 3, marks=LARGE)])
def test_replications_and_pairs_keep_the_mean(antithetic, replications):
    g, p = compare("dense", 200, replications=replications, dense_replications=replications, antithetic=antithetic)
    assert_same_mean(g, p)


@LARGE
def test_smaller_groups_cut_variance():
    """Fewer units per loss, less variance (Ren et al. 2023): unit < channels < patch for the conv kernel."""
    model = small_model("conv_bn")
    x, y = batch("conv_bn")
    kernel = model.get_layer("conv").kernel
    idx = [i for i, v in enumerate(model.trainable_variables) if v is kernel][0]
    spread = {}
    for grouping in ("patch", "channels", "unit"):
        est = glr_local(sigma=SIGMA, grid=2, grouping=grouping, group_size=2)
        heads = est.auxiliary(model)
        fn = tf.function(lambda: est(model, x, y, 0, aux=heads).grads[idx])
        s = np.stack([np.ravel(fn()) for _ in range(100)])
        spread[grouping] = s.var(0).sum()
    assert spread["unit"] < spread["channels"] < spread["patch"]


def test_top_only_control_trains_only_the_output_layer():
    model = small_model("conv_bn")
    x, y = batch("conv_bn")
    est = glr_local(top_only=True)
    heads = est.auxiliary(model)
    grads = est(model, x, y, 0, aux=heads).grads
    names = [v.path for v in model.trainable_variables] + [v.path for v in heads.trainable_variables]
    for name, g in zip(names, grads):
        assert (np.count_nonzero(g.numpy()) > 0) == name.startswith("logits/"), name


def test_local_glr_uses_no_autodiff(monkeypatch):
    tree = ast.parse(inspect.getsource(local_module))
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} | {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not names & {"GradientTape", "gradients", "jacobian", "batch_jacobian", "custom_gradient", "stop_gradient"}

    def refuse(*args, **kwargs):
        raise AssertionError("the local GLR step used automatic differentiation")

    monkeypatch.setattr(tf.GradientTape, "__enter__", refuse)
    monkeypatch.setattr(tf.autodiff.ForwardAccumulator, "__enter__", refuse)
    monkeypatch.setattr(tf, "gradients", refuse)
    for kind in ("conv_bn", "lstm"):
        model = small_model(kind)
        x, y = batch(kind)
        est = glr_local()
        grads = est(model, x, y, 0, aux=est.auxiliary(model)).grads
        assert all(np.all(np.isfinite(g.numpy())) for g in grads)
        assert all(np.count_nonzero(g.numpy()) > 0 for g in grads)


@LARGE
def test_heads_live_in_the_trainer_not_the_export(digits):
    model = zoo.create_model("test_cnn6", digits.input_shape, digits.num_classes)
    trainer = Trainer(model, glr_local())
    trainer.compile(optimizer="adam")
    trainer.fit(digits.x_train[:64], digits.y_train[:64], epochs=1, batch_size=32, verbose=0)
    head_ids = {id(v) for v in trainer.aux.trainable_variables}
    assert head_ids and not head_ids & {id(v) for v in model.weights}
    assert {id(v) for v in trainer.aux.trainable_variables} <= {id(v) for v in trainer.trainable_variables}


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="sigma"):
        glr_local(sigma=float("inf"))
    with pytest.raises(ValueError, match="replications"):
        glr_local(replications=3)
    with pytest.raises(ValueError, match="grouping"):
        glr_local(grouping="rows")
    with pytest.raises(ValueError, match="lstm_steps"):
        glr_local(lstm_steps=-1)
    with pytest.raises(ValueError, match="sim_weight"):
        glr_local(sim_weight=1.5)
    with pytest.raises(ValueError, match="sim_partners"):
        glr_local(sim_weight=0.5, sim_partners=0)
    from training.local_bp import local_bp
    with pytest.raises(ValueError, match="sim_weight"):
        local_bp(sim_weight=-0.1)
    for make in (glr_local, local_bp):
        with pytest.raises(ValueError, match="head_hidden"):
            make(head_hidden=-1)
    with pytest.raises(ValueError, match="drop --head-hidden"):
        glr_local(head_hidden=4).auxiliary(small_model("lstm"))
    with pytest.raises(ValueError, match="group_size"):
        model = small_model("conv_bn")
        est = glr_local(grouping="channels", group_size=3)
        x, y = batch("conv_bn")
        est(model, x, y, 0, aux=est.auxiliary(model))


@pytest.mark.parametrize("kind,options", [
    pytest.param("dense", {}, marks=LARGE),  # 4 s here; the conv case stays in the default suite
    ("conv_bn", {"grouping": "channels", "group_size": 2}),
    pytest.param("conv_bn", {"grouping": "channels", "group_size": 2, "head_input": "concat"}, marks=LARGE),
    pytest.param("lstm", {"lstm_steps": 2}, marks=LARGE),
    # credit through the cell state, over a span that reaches the sequence's first step
    pytest.param("lstm", {"lstm_steps": 2, "lstm_credit": 3}, marks=LARGE),
    # predsim (Nøkland and Eidnes 2019): the row decomposition, the closed-form centred norms and
    # 3 random partners per row (of 5) must still average to the full similarity matrix's gradient
    ("conv_bn", {"grouping": "channels", "group_size": 2, "sim_weight": 0.7, "sim_partners": 3}),
    pytest.param("conv_bn", {"grouping": "channels", "group_size": 2, "head_input": "concat", "sim_weight": 0.7},
                 marks=LARGE),
    pytest.param("dense", {"sim_weight": 0.7, "sim_partners": 3}, marks=LARGE),
    # the last hidden layer credited through the output layer by the real loss (no head of its own)
    ("dense", {"top_block": True}),
    # heads with a hidden ReLU layer (Belilovsky et al. 2019): a group's change passes through it,
    # the head's first layer is trained from noise on its hidden pre-activations
    ("conv_bn", {"grouping": "channels", "group_size": 2, "head_hidden": 6}),
    pytest.param("dense", {"head_input": "concat", "head_hidden": 6}, marks=LARGE),
])
def test_local_backprop_is_the_small_noise_limit_of_local_glr(kind, options):
    """``local_bp`` (tape) is the exact gradient of the objectives local GLR estimates: the mean of
    GLR estimates at small noise (sigma 0.02, whose smoothing bias is O(sigma^2)) equals it
    within 4.5 standard errors plus 2% of its scale, heads included."""
    from training.local_bp import local_bp

    model = small_model(kind)
    x, y = batch(kind)
    options = dict(options)  # the parameter's dict is shared by every run of the test: do not change it
    lstm_steps = options.pop("lstm_steps", 0)
    lstm_credit = options.pop("lstm_credit", 1)
    estimator = glr_local(sigma=0.02, head_sigma=0.02, grid=2, replications=2, dense_replications=4,
                          lstm_steps=lstm_steps, lstm_credit=lstm_credit, **options)
    heads = estimator.auxiliary(model)
    tf.random.set_seed(11)
    g = glr_estimates(estimator, model, heads, x, y, 150)
    exact = local_bp(grid=2, lstm_steps=lstm_steps, lstm_credit=lstm_credit, sim_weight=options.get("sim_weight", 0.0),
                     top_block=options.get("top_block", False))(
        model, x, y, 0, aux=heads).grads
    e = np.concatenate([np.ravel(v) for v in exact])
    se = g.std(0, ddof=1) / np.sqrt(len(g))
    assert np.abs(e).max() > 1e-3 and (np.abs(e) > 1e-6).sum() > 10
    bound = 4.5 * se + 0.02 * np.abs(e).max() + 1e-7
    worst = np.argmax(np.abs(g.mean(0) - e) - bound)
    assert np.all(np.abs(g.mean(0) - e) < bound), (
        f"coordinate {worst}: GLR mean {g.mean(0)[worst]:.5f} vs exact {e[worst]:.5f}, SE {se[worst]:.5f}")


@pytest.mark.parametrize("loss", ["ce", "hinge"])
def test_unit_loss_change_is_the_general_loss_change(loss):
    """The closed form of an LSTM unit's rank-one cross-entropy change equals the general one
    (and other losses go through the general one), including a single broadcast time step."""
    rng = np.random.default_rng(5)
    est = glr_local(loss=loss)
    a, y = tf.constant(rng.normal(size=(4, 3)).astype(np.float32)), tf.constant([0, 2, 1, 1, 0])
    for steps in (1, 3):
        clean = tf.constant(rng.normal(size=(5, steps, 3)).astype(np.float32))
        delta_h = tf.constant(rng.uniform(-2, 2, size=(5, 2, 3, 4)).astype(np.float32))
        np.testing.assert_allclose(est._unit_loss_change(clean, delta_h, a, y).numpy(),
                                   est._loss_change(clean, delta_h[..., None] * a, y).numpy(), atol=2e-5)


@pytest.mark.parametrize("lstm_steps,credit", [(0, 5), (2, 5), (3, 2), (0, 3)])
def test_cell_credit_is_truncated_backprop_through_the_cell_state(lstm_steps, credit):
    """``local_bp``'s LSTM gradient with ``lstm_credit = k`` is an independent tape reference: for
    every window step ``s``, backprop of its head loss through a scan that starts ``k - 1`` steps
    earlier from the recorded (fixed) cell state, the recurrent input ``h`` held fixed at its
    recorded values (the cell state carries the gradient back ``k - 1`` steps, the recurrent
    weights do not). With one step of credit it differs (the memory path is dropped)."""
    from training.local_bp import local_bp
    from zoo.noise_context import record_local

    keras.utils.set_random_seed(3)
    steps = 5
    x = tf.constant(np.random.default_rng(1).normal(size=(6, steps, 2)).astype(np.float32))
    y = batch("lstm")[1]
    model = zoo.create_model("lstm", (steps, 2), 3, units=2)
    layer = model.get_layer("lstm")
    exact = local_bp(grid=2, lstm_steps=lstm_steps, lstm_credit=credit)
    heads = exact.auxiliary(model)
    with record_local() as records:
        model(x, training=True)
    h_prev, c_prev = records[0].inputs["h_prev"], records[0].inputs["c_prev"]
    window = lstm_steps or steps
    with tf.GradientTape() as tape:
        xz = tf.einsum("ntd,dg->ntg", x, layer.kernel) + layer.bias
        objective = 0.0
        for target in range(steps - window, steps):
            c = c_prev[:, max(0, target - credit + 1)]  # fixed: no credit beyond k - 1 steps back
            for t in range(max(0, target - credit + 1), target + 1):
                h, c = layer.cell(xz[:, t] + tf.matmul(h_prev[:, t], layer.recurrent_kernel), c)
            objective += tf.reduce_mean(cross_entropy(heads.logits(layer, h), y)) / window
    reference = tape.gradient(objective, layer.trainable_variables)
    n = len(layer.trainable_variables)
    got = exact(model, x, y, 0, aux=heads).grads[:n]
    one_step = local_bp(grid=2, lstm_steps=lstm_steps, lstm_credit=1)(model, x, y, 0, aux=heads).grads[:n]
    for g, r in zip(got, reference):
        np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=1e-5, atol=1e-6)
    assert max(float(tf.reduce_max(tf.abs(g - o))) for g, o in zip(got, one_step)) > 1e-4


def test_top_block_credits_the_hidden_layer_through_the_output_layer():
    """With ``top_block`` the hidden layer's unused head gets no update, its own gradient differs
    from the head-credited one, and a model whose output layer does not read a dense layer is refused."""
    from training.local_bp import local_bp
    from zoo.errors import UserInputError

    model = small_model("dense")
    x, y = batch("dense")
    heads = glr_local().auxiliary(model)
    through, own = (local_bp(grid=2, top_block=flag)(model, x, y, 0, aux=heads).grads for flag in (True, False))
    n = len(model.trainable_variables)
    assert all(float(tf.reduce_max(tf.abs(g))) == 0.0 for g in through[n:])  # the head: nothing
    assert any(float(tf.reduce_max(tf.abs(g))) > 1e-4 for g in own[n:])
    hidden = model.trainable_variables[0]
    assert float(tf.reduce_max(tf.abs(through[0] - own[0]))) > 1e-4 * float(tf.reduce_max(tf.abs(own[0])) + 1e-6)
    assert hidden.shape == through[0].shape
    conv = small_model("conv_bn")
    xc, yc = batch("conv_bn")
    for estimator in (glr_local(top_block=True), local_bp(top_block=True)):
        with pytest.raises(UserInputError, match="top_block needs a dense output layer"):
            estimator(conv, xc, yc, 0, aux=estimator.auxiliary(conv))
