"""Optimizers and learning-rate schedules by name: every built-in one does what its name says, and
a new one registered in a module becomes a choice of the command line."""
import keras
import numpy as np
import pytest

from training import optim
from training.optim import OPTIMIZERS, SCHEDULES, make_learning_rate, make_optimizer


def test_cosine_decays_from_lr_to_zero_over_the_run():
    schedule = make_learning_rate(0.1, "cosine", 100)
    values = [float(schedule(t)) for t in (0, 50, 100)]
    np.testing.assert_allclose(values, [0.1, 0.05, 0.0], atol=1e-6)  # 0.1 * (1 + cos(pi t / 100)) / 2


def test_constant_is_the_number_itself():
    assert make_learning_rate(0.01, "constant", 100) == 0.01


@pytest.mark.parametrize("name", ["adam", "sgd", "adagrad", "momentum"])
def test_every_optimizer_lowers_a_quadratic(name):
    """Minimize ||w - 3||^2 from w = 0 for 50 steps: each optimizer moves w toward 3."""
    w = keras.Variable(np.zeros(4, np.float32))
    opt = make_optimizer(name, 0.05)
    for _ in range(50):
        opt.apply([2 * (w - 3.0)], [w])
    assert float(np.max(np.abs(np.asarray(w) - 3.0))) < 2.9, np.asarray(w)
    expected = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "adagrad": keras.optimizers.Adagrad,
                "momentum": keras.optimizers.SGD}[name]
    assert isinstance(opt, expected) and (name != "momentum" or opt.momentum == 0.9)


@pytest.fixture
def scratch_schedules():
    """Registrations made by a test end with it."""
    before = dict(SCHEDULES)
    yield
    SCHEDULES.clear()
    SCHEDULES.update(before)


def test_a_new_schedule_is_a_command_line_choice(scratch_schedules, tmp_path):
    @optim.register_schedule("halving", "lr / 2 at half of the run (a test schedule)")
    def halving(lr, total_steps):
        return keras.optimizers.schedules.PiecewiseConstantDecay([total_steps // 2], [lr, lr / 2])

    import glrzoo.cli as cli
    out = tmp_path / "m"
    assert cli.main(["train", "--model", "test_mlp", "--epochs", "1", "--lr-schedule", "halving", "--quiet",
                     "--out", str(out)]) == 0
    with pytest.raises(ValueError, match="already registered"):
        optim.register_schedule("halving", "again")(halving)
    assert "momentum" in OPTIMIZERS.names() and OPTIMIZERS.entry("momentum").description
