"""Noisy voting: the part before the first noise computed once gives exactly the counts of full
passes; vote counts are validated; the graph works symbolically (SavedModel signatures)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.errors import UserInputError
from zoo.noise import noisy_layers
from zoo.voting import VOTES_CAP, vote_counts, vote_predict


def _reset(model, states):
    for layer, state in zip(noisy_layers(model), states):
        layer.rng_state.assign(state)


@pytest.mark.parametrize("name, shape, kwargs", [
    ("test_mlp", (8, 8, 1), {}),
    ("test_cnn6", (12, 12, 1), {"noise": "multiplicative"}),  # batch norm before the first noise
    ("test_lenet", (16, 16, 1), {}),
    ("test_densenet", (16, 16, 1), {}),  # concatenations after the first noisy layer
    ("test_lstm", (5, 2), {}),  # noise inside the recurrence: only the (empty) prefix is shared
])
@pytest.mark.large  # over 4 s here; the default suite stays under 3 min
def test_shared_prefix_gives_the_counts_of_full_passes(name, shape, kwargs):
    keras.utils.set_random_seed(0)
    model = zoo.create_model(name, shape, 10, infer_stddev=0.7, **kwargs)
    x = tf.random.uniform((13, *shape), seed=1)
    states = [layer.rng_state.numpy().copy() for layer in noisy_layers(model)]
    for votes, rows in ((20, 50), (7, 1000), (30, 4)):  # blocks of examples, one example over several chunks
        _reset(model, states)
        shared = vote_counts(model, x, votes, max_rows=rows).numpy()
        _reset(model, states)
        full = vote_counts(model, x, votes, max_rows=rows, reuse_prefix=False).numpy()
        np.testing.assert_array_equal(shared, full)  # same rows, same seeds: the same noise
        assert shared.sum(1).tolist() == [votes] * 13
    assert (shared.max(1) < 30).any()  # the noise is really on


def test_noise_free_model_votes_once_and_agrees_with_predict():
    keras.utils.set_random_seed(0)
    model = zoo.create_model("test_cnn6", (12, 12, 1), 10)
    x = tf.random.uniform((9, 12, 12, 1), seed=2)
    counts = vote_counts(model, x, 25).numpy()
    pred = np.argmax(model(x, training=False), -1)
    assert (counts.max(1) == 25).all() and np.array_equal(counts.argmax(1), pred)
    np.testing.assert_array_equal(vote_counts(model, x, 25, 0.0).numpy(), counts)


@pytest.mark.parametrize("votes, match", [
    (0, r"votes must be >= 1.*votes=1"),
    (-3, r"votes must be >= 1"),
    (VOTES_CAP + 1, r"cap of 10,000.*votes <= 10,000"),
    (10**9, r"cap of 10,000"),
    (2.5, r"whole number.*votes=20"),
    (True, r"whole number"),
    ("20", r"whole number"),
])
def test_bad_vote_counts_are_refused_naming_the_fix(votes, match):
    model = zoo.create_model("test_mlp", (8, 8, 1), 10, infer_stddev=0.5)
    x = np.zeros((2, 8, 8, 1), np.float32)
    with pytest.raises(UserInputError, match=match):
        vote_predict(model, x, votes=votes)
    with pytest.raises(UserInputError, match=match):
        vote_counts(model, x, votes)


def test_good_vote_counts_in_any_integer_form():
    model = zoo.create_model("test_mlp", (8, 8, 1), 10, infer_stddev=0.5)
    x = np.zeros((2, 8, 8, 1), np.float32)
    for votes in (1, np.int64(3), 3.0, tf.constant(3), VOTES_CAP):
        assert vote_counts(model, x, votes).numpy().sum(1).tolist() == [int(votes)] * 2
    with pytest.raises(UserInputError, match="stddev"):
        vote_counts(model, x, 3, stddev=-1.0)
    with pytest.raises(UserInputError, match="stddev"):
        vote_counts(model, x, 3, stddev=float("nan"))


def test_symbolic_votes_inside_tf_function():
    """The SavedModel signature's case: votes and stddev are tensors, traced once for any value."""
    model = zoo.create_model("test_cnn6", (12, 12, 1), 10)
    x = tf.random.uniform((4, 12, 12, 1), seed=3)

    @tf.function(input_signature=[tf.TensorSpec([None, 12, 12, 1]), tf.TensorSpec([], tf.int32),
                                  tf.TensorSpec([], tf.float32)])
    def signature(images, votes, stddev):
        return vote_counts(model, images, votes, stddev)

    for votes in (1, 6):
        assert signature(x, votes, 0.8).numpy().sum(1).tolist() == [votes] * 4


@pytest.mark.parametrize("name, shape", [("test_cnn6", (12, 12, 1)), ("test_densenet", (16, 16, 1))])
def test_votes_fold_batch_norm_into_the_kernel_with_the_same_outputs(name, shape):
    """Inside folded_batchnorm a layer's inference output equals batch norm applied after its
    product (float rounding only), with trained-looking (non-trivial) moving statistics."""
    from zoo.noise_context import folded_batchnorm

    keras.utils.set_random_seed(0)
    model = zoo.create_model(name, shape, 10)
    rng = np.random.default_rng(0)
    for layer in noisy_layers(model):
        if layer.batchnorm_enabled:
            c = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 2.0, c))
            layer.beta.assign(rng.normal(0, 0.5, c))
            layer.moving_mean.assign(rng.normal(0, 0.5, c))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, c))
    x = tf.random.uniform((7, *shape), seed=3)
    plain = model(x, training=False).numpy()
    with folded_batchnorm():
        folded = model(x, training=False).numpy()
        trained = model(x, training=True).numpy()  # training uses batch statistics: never folded
    np.testing.assert_allclose(folded, plain, rtol=1e-4, atol=1e-4 * np.abs(plain).max())
    assert np.abs(trained - plain).max() > 1e-2
    assert any(layer.batchnorm_enabled for layer in noisy_layers(model))
