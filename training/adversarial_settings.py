"""Adversarial training as settings: every rule about the ``adversarial`` dict in one place.

A run's ``TrainConfig.adversarial`` is ``None`` or a dict of one of three kinds:

``pgd``      Madry et al. (2018): part of each batch (``fraction``, 0.5) replaced by PGD examples
             (``eps``, ``step``, ``iterations``, ``random_start``) made against the current model.
``fgsm_rs``  Wong, Rice and Kolter (2020), "Fast is better than free", Algorithm 3: every example
             (``fraction`` 1) replaced by one FGSM step of 1.25 eps from a uniform random start.
``trades``   Zhang et al. (2019): ``kind: "trades"``, the objective ``CE + beta * KL`` with the KL's
             PGD (``eps``, ``step``, ``iterations``, ``beta``).

Any kind may add ``ramp_epochs`` (eps and step grow linearly from 0 over that many epochs). This
module turns command-line flags into such a dict (:func:`from_flags`), a dict back into flags
(:func:`to_flags`), merges the user's dict with a recipe row's (:func:`merge`), and builds the
estimator and batch transforms a run trains with (:func:`build`).
"""
from __future__ import annotations

from zoo.errors import UserInputError

KINDS = ("pgd", "fgsm_rs", "trades")
# Madry et al.'s PGD training (half of each batch adversarial); `--adversarial fgsm_rs` gives fraction 1.
ADVERSARIAL_DEFAULTS = {"eps": 0.3, "step": 0.01, "iterations": 40, "random_start": True, "fraction": 0.5}
# TRADES (Zhang et al. 2019): their MNIST attack settings; beta 6 is the paper's headline setting (1/lambda).
TRADES_DEFAULTS = {"kind": "trades", "eps": 0.3, "step": 0.01, "iterations": 40, "beta": 6.0}
FLAGS = {"eps": "--adv-eps", "step": "--adv-step", "iterations": "--adv-iters", "ramp_epochs": "--adv-ramp-epochs",
         "beta": "--trades-beta"}


def fgsm_rs_step(eps: float) -> float:
    """The step of fast adversarial training: 1.25 eps (Wong, Rice and Kolter 2020, Algorithm 3)."""
    return round(1.25 * eps, 10)


def adversarial_kind(settings: dict) -> str:
    """``"trades"`` for settings of the TRADES objective (``kind: "trades"``), ``"fgsm_rs"`` for ones
    that replace every example (``fraction`` 1), else ``"pgd"``."""
    if settings.get("kind") == "trades":
        return "trades"
    return "fgsm_rs" if settings.get("fraction", ADVERSARIAL_DEFAULTS["fraction"]) == 1.0 else "pgd"


def adversarial_defaults(kind: str) -> dict:
    """The generic settings of one kind of adversarial training (a copy)."""
    return dict(TRADES_DEFAULTS if kind == "trades" else ADVERSARIAL_DEFAULTS)


def asked_kind(mine: dict, theirs: dict) -> str:
    """The kind the user's settings ask for; settings that name no kind (neither ``kind`` nor
    ``fraction``) ask for the recipe row's."""
    if "kind" in mine or "fraction" in mine:
        return adversarial_kind(mine)
    return adversarial_kind(theirs)


def merge(mine: dict | None, theirs: dict | None) -> tuple[dict | None, dict | None]:
    """The user's settings ``mine`` over a recipe row's ``theirs`` over the kind's defaults.

    Returns ``(settings, supplied)``: the merged dict (``None`` when neither is given) and the row's
    values that were used (``None`` when the row gave nothing). Asking for another kind than the
    row's (``--adversarial pgd`` where the row trains TRADES) takes none of the row's keys. A row
    marked ``on_request: True`` applies only when the user asks for adversarial training (its model
    trains plainly by default, and ``--adversarial KIND`` gets the row's measured settings)."""
    if theirs is not None and theirs.get("on_request"):
        theirs = {k: v for k, v in theirs.items() if k != "on_request"} if mine is not None else None
    if mine is not None and theirs is not None and asked_kind(mine, theirs) != adversarial_kind(theirs):
        theirs = None
    if mine is None and theirs is None:
        return None, None
    kind = adversarial_kind({**(theirs or {}), **(mine or {})})
    settings = {**adversarial_defaults(kind), **(theirs or {}), **(mine or {})}
    supplied = {k: v for k, v in (theirs or {}).items() if k not in (mine or {})}
    return settings, (supplied if supplied or (mine is None and theirs is not None) else None)


def from_flags(kind: str | None, *, eps=None, step=None, iterations=None, no_random_start: bool = False,
               ramp_epochs=None, beta=None) -> dict | None:
    """The settings the command line gave (``--adversarial KIND --adv-eps ...``); ``None`` when
    ``--adversarial`` was not given. Flags that cannot apply are refused in one line."""
    values = {"eps": eps, "step": step, "iterations": iterations, "ramp_epochs": ramp_epochs, "beta": beta}
    if kind is None:
        given = [FLAGS[k] for k, v in values.items() if v is not None] + (["--adv-no-random-start"] if no_random_start
                                                                            else [])
        if given:
            raise UserInputError(f"{given[0]} needs --adversarial {', '.join(KINDS[:-1])} or {KINDS[-1]}")
        return None
    if beta is not None and kind != "trades":
        raise UserInputError("--trades-beta only applies to --adversarial trades")
    ramp = {"ramp_epochs": ramp_epochs} if ramp_epochs is not None else {}
    if kind == "trades":
        if no_random_start:
            raise UserInputError("--adversarial trades starts at x + 0.001 N(0, 1); drop --adv-no-random-start")
        given = {"kind": "trades", "eps": eps, "step": step, "iterations": iterations, "beta": beta, **ramp}
    elif kind == "fgsm_rs":
        if iterations not in (None, 1) or no_random_start:
            raise UserInputError("--adversarial fgsm_rs is one step from a random start; drop --adv-iters and "
                                 "--adv-no-random-start, or use --adversarial pgd")
        eps = eps if eps is not None else ADVERSARIAL_DEFAULTS["eps"]
        given = {"eps": eps, "step": step if step is not None else fgsm_rs_step(eps), "iterations": 1,
                 "random_start": True, "fraction": 1.0, **ramp}
    else:
        given = {"eps": eps, "step": step, "iterations": iterations, "random_start": False if no_random_start else None,
                 "fraction": ADVERSARIAL_DEFAULTS["fraction"], **ramp}
    return {k: v for k, v in given.items() if v is not None}


def to_flags(settings: dict) -> list[str]:
    """The ``glrzoo train`` flags that say ``settings`` (what :func:`from_flags` parses back):
    ``--adversarial fgsm_rs --adv-eps E`` (``--adv-step`` only where it is not 1.25 eps), or
    ``--adversarial trades|pgd`` with the keys given."""
    text = lambda v: repr(v) if isinstance(v, float) else str(v)  # noqa: E731
    kind = adversarial_kind(settings)
    if kind == "fgsm_rs":
        if settings.get("iterations", 1) != 1 or not settings.get("random_start", True):
            raise UserInputError("an adversarial recipe on every example (fraction 1) is fgsm_rs: one step from a "
                                 "random start; set iterations 1, or fraction 0.5 for PGD training")
        eps = settings.get("eps", ADVERSARIAL_DEFAULTS["eps"])
        flags = ["--adversarial", "fgsm_rs", "--adv-eps", text(eps)]
        step = settings.get("step", fgsm_rs_step(eps))
        flags += [] if step == fgsm_rs_step(eps) else ["--adv-step", text(step)]
        return flags + (["--adv-ramp-epochs", text(settings["ramp_epochs"])] if "ramp_epochs" in settings else [])
    if kind == "pgd" and settings.get("fraction", 0.5) != 0.5:
        raise UserInputError(f"adversarial fraction {settings['fraction']} has no flag; use 0.5 (pgd) or 1 (fgsm_rs)")
    flags = ["--adversarial", kind]
    for key, v in settings.items():
        if key == "random_start":
            flags += [] if v else ["--adv-no-random-start"]
        elif key not in ("fraction", "kind"):
            flags += [FLAGS[key], text(v)]
    return flags


def check(settings: dict | None, method: str) -> None:
    """Refuse settings no run can train with (one line naming the flag)."""
    if settings is None:
        return
    for key in ("ramp_epochs", "beta"):
        if key in settings and not settings[key] >= 0:
            raise UserInputError(f"{FLAGS[key]} must be >= 0, got {settings[key]}")
    if adversarial_kind(settings) == "trades" and method != "bp":
        raise UserInputError(f"--adversarial trades trains by backprop of its own objective; drop --method {method}")


def build(settings: dict | None, estimator, *, seed: int, steps_per_epoch: int, loss: str = "ce") -> tuple:
    """``(estimator, transforms)`` for ``settings``: PGD and fgsm_rs keep ``estimator`` and add a batch
    transform (:func:`training.adversarial.pgd_training`); TRADES replaces it by its own objective
    (:class:`training.adversarial.TradesBackprop`). ``ramp_epochs`` becomes optimizer steps."""
    if settings is None:
        return estimator, []
    from training.adversarial import TradesBackprop, pgd_training

    settings = dict(settings)
    ramp_steps = int(round(float(settings.pop("ramp_epochs", 0)) * steps_per_epoch))
    if adversarial_kind(settings) == "trades":
        keep = ("eps", "step", "iterations", "beta")
        return TradesBackprop(**{k: settings[k] for k in keep if k in settings}, seed=seed, ramp_steps=ramp_steps,
                              loss=loss), []
    return estimator, [pgd_training(seed=seed, ramp_steps=ramp_steps, **settings)]


__all__ = ["ADVERSARIAL_DEFAULTS", "KINDS", "TRADES_DEFAULTS", "adversarial_defaults", "adversarial_kind", "build",
           "check", "fgsm_rs_step", "from_flags", "merge", "to_flags"]
