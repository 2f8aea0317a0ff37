"""Tabled voting noise (zoo.noise_table): every row's noise is exactly standard normal, rows read
distinct table entries, votes keep the vote distribution of independent noise, and the tabled,
XLA-compiled voting path counts exactly what the plain graph counts."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.errors import UserInputError
from zoo.noise import noisy_layers
from zoo.noise_table import TABLE_SIZE, block_size, draw_table, fits, table_normal, table_size
from zoo.voting import vote_counts


def test_table_holds_a_thousand_rows_of_the_widest_layer_within_bounds():
    assert table_size(50) == 1 << 16  # the MLP: 256 KiB, not 16 MiB
    assert table_size(288) == 1 << 19
    assert table_size(28 * 28 * 32) == TABLE_SIZE == table_size(None)
    assert fits(table_size(28 * 28 * 32), (28, 28, 32))


def test_block_is_one_map_row_or_the_whole_vector():
    assert block_size((28, 28, 32)) == 28 * 32
    assert block_size((200,)) == 200
    assert fits(1 << 22, (28, 28, 32)) and not fits(1000, (28, 28, 32)) and not fits(1 << 22, (None, 4))


def test_rows_are_distinct_table_runs_and_standard_normal():
    table = draw_table(tf.constant([3, 4], tf.int64), size=1 << 16)
    shape = (6, 5, 4)  # 120 values per row, blocks of 20
    noise = table_normal(table, tf.constant(400), shape, tf.constant([5, 6], tf.int64)).numpy()
    assert noise.shape == (400, *shape)
    values = table.numpy()
    flat = noise.reshape(400, -1)
    for row in flat[:50]:  # each row: a contiguous run of table blocks (wrapping), all entries distinct
        start = np.flatnonzero(values == row[0])
        assert len(start) == 1 and start[0] % 20 == 0
        index = (start[0] + np.arange(120)) % (len(values) // 20 * 20)
        np.testing.assert_array_equal(row, values[index])
    # marginally N(0, 1): 48,000 values, mean within 4.5 standard errors, variance within 4.5 of its SE
    n = flat.size
    assert abs(flat.mean()) < 4.5 / np.sqrt(n)
    assert abs(flat.var() - 1.0) < 4.5 * np.sqrt(2.0 / n)
    # offsets uniform over the K = 3,276 blocks: 400 rows hit K (1 - (1 - 1/K)^400) = 376.4 distinct
    # blocks on average (birthday collisions), standard deviation about 4.6
    starts = {int(np.flatnonzero(values == r[0])[0]) for r in flat}
    k = (1 << 16) // 20
    expected = k * (1 - (1 - 1 / k) ** 400)
    assert abs(len(starts) - expected) < 4.5 * 4.6


@pytest.mark.large  # slow here (5-20 s); .ci/run runs it
def test_tabled_votes_have_the_vote_distribution_of_independent_noise():
    """Per example, the share of votes for its top class under the table equals the share under
    exact independent draws, within 4.5 standard errors of the difference of two proportions."""
    keras.utils.set_random_seed(0)
    model = zoo.create_model("test_cnn6", (12, 12, 1), 10, noise="multiplicative", infer_stddev=1.0)
    x = tf.random.uniform((6, 12, 12, 1), seed=7)
    votes = 1500
    tabled = vote_counts(model, x, votes, noise_source="table").numpy()
    exact = vote_counts(model, x, votes, noise_source="exact").numpy()
    top = exact.argmax(1)
    p1, p2 = tabled[np.arange(6), top] / votes, exact[np.arange(6), top] / votes
    pooled = (p1 + p2) / 2
    se = np.sqrt(np.maximum(pooled * (1 - pooled), 1e-12) * 2 / votes)
    assert (np.abs(p1 - p2) < 4.5 * se + 1e-9).all(), (p1, p2, se)
    assert (pooled < 0.99).any()  # the noise really changes votes


@pytest.mark.parametrize("name, shape, kwargs", [
    ("test_cnn6", (12, 12, 1), {"noise": "multiplicative"}),
    ("test_mlp", (8, 8, 1), {}),
])
@pytest.mark.large  # slow here (5-20 s); .ci/run runs it
def test_xla_and_plain_graph_count_the_same_tabled_votes(name, shape, kwargs):
    keras.utils.set_random_seed(0)
    model = zoo.create_model(name, shape, 10, infer_stddev=0.7, **kwargs)
    x = tf.random.uniform((9, *shape), seed=1)
    states = [layer.rng_state.numpy().copy() for layer in noisy_layers(model)]
    results = []
    for jit, reuse in ((True, True), (False, True), (True, False)):
        for layer, state in zip(noisy_layers(model), states):
            layer.rng_state.assign(state)
        results.append(vote_counts(model, x, 11, max_rows=40, noise_source="table", jit=jit,
                                   reuse_prefix=reuse).numpy())
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])
    assert results[0].sum(1).tolist() == [11] * 9 and (results[0].max(1) < 11).any()


def test_lstm_keeps_exact_noise_and_bad_source_is_refused():
    model = zoo.create_model("test_lstm", (5, 2), 10, infer_stddev=0.7)
    x = tf.random.uniform((3, 5, 2), seed=1)
    states = [layer.rng_state.numpy().copy() for layer in noisy_layers(model)]
    default = vote_counts(model, x, 7).numpy()
    for layer, state in zip(noisy_layers(model), states):
        layer.rng_state.assign(state)
    np.testing.assert_array_equal(default, vote_counts(model, x, 7, noise_source="exact", jit=False).numpy())
    with pytest.raises(UserInputError, match="noise_source must be one of table, exact"):
        vote_counts(model, x, 7, noise_source="fast")
