"""The gradient-masking audit (Carlini et al. 2019's checklist; Athalye, Carlini and Wagner 2018):
each rule on hand-made rows, then on trained digits models: PGD adversarial training comes out
unflagged however much accuracy it keeps at the largest eps, a BANG net and a threshold net are
flagged, each with its reason."""
import numpy as np
import pytest

from evaluation.harness import masking_flags


def _row(suite, attack, eps, accuracy, model="m", **extra):
    return {"model": model, "suite": suite, "attack": attack, "eps": eps, "accuracy": accuracy, **extra}


def robust_rows(model="m"):
    """A model that keeps real robustness: attacks ordered as they should be, 100% success unbounded."""
    rows = [{"model": model, "suite": "clean", "accuracy": 0.98, "blank_gradient_fraction": 0.0,
             "flat_probe_fraction": 0.0}]
    for eps, (fgsm, pgd, aa, spsa, transfer) in {0.1: (0.93, 0.90, 0.89, 0.94, 0.95),
                                                 0.3: (0.60, 0.30, 0.27, 0.55, 0.78)}.items():
        rows += [_row("whitebox", "fgsm", eps, fgsm, model), _row("whitebox", "pgd", eps, pgd, model),
                 _row("whitebox", "autoattack", eps, aa, model, accuracy_after={"apgd_ce": aa + 0.02, "apgd_t": aa}),
                 _row("gradfree", "spsa", eps, spsa, model), _row("transfer", "pgd", eps, transfer, model, source="s")]
    rows.append(_row("whitebox", "autoattack", 1.0, 0.0, model, success_rate=1.0))
    return rows


def _with(rows, suite, attack, eps, **changes):
    out = [dict(r) for r in rows]
    row = next(r for r in out if r["suite"] == suite and r.get("attack") == attack and r.get("eps") == eps)
    row.update(changes)
    return out


def _names(flags):
    return [f.split(" ")[0] for f in flags]


def test_real_robustness_is_not_flagged():
    # 27% left at eps 0.3 used to raise no_collapse_at_large_eps; every checklist item passes here
    assert masking_flags(robust_rows()) == {"m": []}


@pytest.mark.parametrize("change, flag, reason", [
    (("whitebox", "autoattack", 1.0, {"accuracy": 0.03, "success_rate": 0.97}), "unbounded_attack_fails",
     "eps 1.0: autoattack 97.0% success, not 100%"),
    (("whitebox", "fgsm", 0.3, {"accuracy": 0.20}), "single_step_beats_iterative", "eps 0.3: pgd 30.0% vs fgsm 20.0%"),
    (("gradfree", "spsa", 0.3, {"accuracy": 0.10}), "whitebox_above_blackbox", "pgd 30.0% vs gradfree spsa 10.0%"),
    (("transfer", "pgd", 0.3, {"accuracy": 0.12}), "whitebox_above_blackbox", "transfer pgd from s 12.0%"),
    (("whitebox", "fgsm", 0.3, {"accuracy": 0.96}), "accuracy_rises_with_eps", "fgsm: 93.0% at eps 0.1, 96.0% at eps 0.3"),
    (("whitebox", "autoattack", 0.3, {"accuracy_after": {"apgd_ce": 0.45, "apgd_t": 0.27}}), "ce_gradient_saturated",
     "apgd_ce 45.0% vs autoattack 27.0%"),
    (("clean", None, None, {"blank_gradient_fraction": 0.4}), "blank_gradients", "40% of inputs"),
])
def test_each_checklist_item_flags_with_its_reason(change, flag, reason):
    suite, attack, eps, values = change
    rows = robust_rows()
    if suite == "clean":
        rows[0].update(values)
    else:
        rows = _with(rows, suite, attack, eps, **values)
    flags = masking_flags(rows)["m"]
    assert _names(flags) == [flag], flags
    assert reason in flags[0]


def test_differences_within_tolerance_are_noise():
    rows = _with(robust_rows(), "gradfree", "spsa", 0.3, accuracy=0.285)  # 1.5 points under pgd: not a flag
    rows = _with(rows, "whitebox", "fgsm", 0.3, accuracy=0.29)
    assert masking_flags(rows) == {"m": []}


def test_unbounded_check_reads_only_rows_at_eps_one_or_more():
    rows = [r for r in robust_rows() if r.get("eps") != 1.0]
    assert masking_flags(rows) == {"m": []}  # not run: nothing to judge
    rows.append(_row("whitebox", "fgsm", 1.0, 0.5, success_rate=0.5))  # single-step rows do not count
    assert "unbounded_attack_fails" not in " ".join(masking_flags(rows)["m"])


# --------------------------------------------------------------------------- trained models
@pytest.fixture(scope="module")
def audited():
    """PGD-trained, BANG-trained and GLR threshold MLPs on sklearn digits, audited by the white-box
    (FGSM, PGD-20, AutoAttack) and gradient-free (SPSA) suites on 150 test points at eps 0.05-0.15."""
    import keras

    import zoo
    from evaluation.harness import Evaluation
    from evaluation.suites import SuiteContext, plan
    from training.adversarial import pgd_training
    from training.bang import bang
    from training.estimators import bp
    from training.glr import glr
    from training.trainer import Trainer
    from zoo.data import load_digits

    d = load_digits()

    def train(est, epochs, activation, transforms=()):
        keras.utils.set_random_seed(0)
        model = zoo.create_model("mlp", d.input_shape, 10, hidden=(64,), activation=activation)
        trainer = Trainer(model, est, transforms=list(transforms))
        trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
        trainer.fit(d.x_train, d.y_train, epochs=epochs, batch_size=64, verbose=0)
        return model

    models = {"pgd_trained": train(bp(), 15, "relu", [pgd_training(eps=0.1, step=0.025, iterations=7, fraction=1.0)]),
              "bang": train(bang(epsilon=0.815), 30, "relu"),
              "threshold": train(glr(replications=50, baseline=True), 6, "threshold")}
    ev = Evaluation(None, log=lambda line: None)
    chosen = plan(("clean", "whitebox", "gradfree"), eps_list=(0.05, 0.1, 0.15), minimal_attacks=())
    ctx = SuiteContext(models, [], d.x_test[:150], d.y_test[:150], chosen.shared, ev, chosen.attacks)
    for suite in chosen.suites:
        suite.entry.run(ctx, suite.settings)
    return ev.rows, masking_flags(ev.rows)


def _acc(rows, model, attack, eps):
    return next(r["accuracy"] for r in rows if r["model"] == model and r.get("attack") == attack and r.get("eps") == eps)


@pytest.mark.large  # ~100 s with the two below: three trainings, AutoAttack and SPSA on 150 points
def test_adversarially_trained_model_is_not_flagged(audited):
    rows, flags = audited
    assert _acc(rows, "pgd_trained", "autoattack", 0.15) > 0.3  # real robustness at the largest eps ...
    assert flags["pgd_trained"] == [], flags["pgd_trained"]  # ... is not reported as masking
    assert _acc(rows, "pgd_trained", "autoattack", 1.0) == 0.0  # and the unbounded attack breaks everything


@pytest.mark.large
def test_bang_net_is_flagged_with_the_reason(audited):
    """BANG saturates the softmax around the training points: the cross-entropy gradient all but
    vanishes, so PGD and APGD-CE stall where SPSA and the scale-invariant DLR loss do not."""
    rows, flags = audited
    names = _names(flags["bang"])
    assert "whitebox_above_blackbox" in names and "ce_gradient_saturated" in names, flags["bang"]
    assert any("gradfree spsa" in f for f in flags["bang"])
    assert _acc(rows, "bang", "autoattack", 0.15) < _acc(rows, "bang", "pgd", 0.15) - 0.1


@pytest.mark.large
def test_threshold_net_is_flagged_with_the_reason(audited):
    rows, flags = audited
    names = _names(flags["threshold"])
    assert {"blank_gradients", "flat_finite_differences", "plain_gradient_weaker_than_smoothed"} <= set(names), names
    assert "blank_gradients (100% of inputs)" in flags["threshold"]
    assert np.isfinite(_acc(rows, "threshold", "pgd_smoothed", 0.15))
