"""The evaluation suites, one function each, registered by name and run by :func:`evaluation.harness.evaluate`.

A suite is ``fn(ctx: SuiteContext, settings) -> None``: it reads the loaded models, the test points
and the shared settings from ``ctx`` and its own settings (an instance of the dataclass it
registered) from ``settings``, and adds keyed rows with ``ctx.add`` (a row whose key is already
done is skipped, so an interrupted run resumes). A new suite is one decorated function in any
module of ``evaluation/`` or of a plugin (:func:`zoo.registry.load_plugins`)::

    @dataclasses.dataclass(frozen=True)
    class MySettings:
        my_draws: int = option(10, "draws per point", **integer(1))   # becomes --my-draws

    @register_suite("my_suite", settings=MySettings, note="What the rows mean, for report.md.")
    def my_suite(ctx: SuiteContext, s: MySettings) -> None:
        for name, model in ctx.models.items():
            ...

``pixels=True`` marks suites that clip to [0, 1] pixels and ``images=True`` those that need
``[N, H, W, C]`` images (both refused up front for other data); ``blackbox=True`` marks suites
whose accuracy a white-box attack should never exceed (a gradient-masking check); ``figures``
draw the report's pictures of its rows (:mod:`evaluation.plots`).
"""
from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from evaluation.attacks import attack, blank_gradient_fraction, flat_probe_fraction, get_attack, list_attacks, logits_fn
from evaluation.corruptions import corrupt, get_corruption, list_corruptions, mean_corruption_accuracy
from evaluation.distortion import changed_fraction, common_correct
from evaluation.metrics import accuracy_row
from evaluation.options import (
    NoSettings,
    check_unique,
    choice_list,
    integer,
    integers,
    make,
    number,
    one_of,
    option,
    owner_of,
    real,
    reals,
)
from evaluation.pass_score import mean_pass
from evaluation.plots import accuracy_vs_eps, accuracy_vs_severity, accuracy_vs_stddev
from evaluation.surrogate import has_step_activations, smoothed_model
from zoo.errors import UserInputError
from zoo.export import MAX_STDDEV, load_model
from zoo.noise import noise_settings, restart_noise
from zoo.registry import Registry
from zoo.voting import VOTES_CAP, smoothed_predict, vote_counts

if TYPE_CHECKING:
    from evaluation.harness import Evaluation

MEAN_EQ6 = "mean (eq. 6)"  # the GLR authors' summary over their four corruptions (Xiao et al. 2020, eq. 6)
MEAN_ALL = "mean (all)"  # the same mean over every corruption that ran


@dataclasses.dataclass(frozen=True)
class SuiteSettings:
    """The settings every suite shares (each suite's own are its ``settings`` class, below and in
    its module). ``evaluate(..., **settings)`` takes any of these fields by name; the CLI's flags
    are derived from them (:mod:`evaluation.options`)."""

    eps_list: tuple[float, ...] = option((0.1, 0.2, 0.3), "comma-separated L-inf radii (pixel units) of the attack "
                                         "suites", flag="--eps", **reals(0, 1))
    steps: int = option(20, "iterations of iterative attacks", **integer(1))
    restarts: int = option(1, "PGD random restarts", **integer(1))
    step_size: float | None = option(None, "step of iterative attacks", shown="2.5 eps / steps, Madry et al. 2018",
                                     **real(0, above=True, optional=True))
    eot: int = option(20, "noise draws per gradient for noisy models (expectation over transformation)",
                      **integer(1, VOTES_CAP))
    votes: int = option(20, "noisy passes voted on for every prediction of a model whose inference noise is on (the "
                        "prediction under attack is the voted one)", flag="--predict-votes", **integer(1, VOTES_CAP))
    seed: int = option(0, "seed of the attacks' random starts and of the noise", **integer())


@dataclasses.dataclass(frozen=True)
class WhiteboxSettings:
    """Gradient attacks on each model itself, with AutoAttack (Croce and Hein 2020) as the reference number."""

    whitebox_attacks: tuple[str, ...] = option(
        ("fgsm", "pgd"), "white-box eps-ball attacks (the reference attack is added)", flag="--attacks",
        **choice_list(lambda: list_attacks()))
    reference_attack: str | None = option(
        "autoattack", "the white-box reference number: autoattack is APGD-CE + APGD-T (Croce and Hein 2020), "
        "AutoAttack rand with EOT for noisy models; '' for none",
        parse=lambda t: t or None, check=one_of(lambda: list_attacks(kind="ball")))
    apgd_steps: int = option(100, "iterations of every APGD run", **integer(1))
    apgd_restarts: int = option(1, "restarts of every APGD run", **integer(1))
    unbounded_eps: float | None = option(1.0, "the reference attack also runs at this L-inf radius, where it must "
                                         "succeed on every point (a masking check; 0: skip)", **real(0, optional=True))
    minimal_attacks: tuple[str, ...] | None = option(
        None, "minimal-perturbation attacks (one row per model, no eps)", shown="every registered one",
        **choice_list(lambda: list_attacks(kind="minimal")))
    pass_limit: int = option(50, "successful examples per minimal-attack row whose PASS is computed (images only; "
                             "0: none)", **integer(0))


@dataclasses.dataclass(frozen=True)
class TransferSettings:
    """Adversarial examples made on source models and fed to each evaluated model (black-box)."""

    sources: tuple[str, ...] = option((), "exports (or pretrained names) that make the transfer attacks",
                                      shown="the evaluated models", parse=tuple, nargs="*")
    transfer_attacks: tuple[str, ...] = option(("fgsm", "pgd"), "attacks the sources make (e.g. fgsm,lbfgs)",
                                               **choice_list(lambda: list_attacks()))


@dataclasses.dataclass(frozen=True)
class CorruptionSettings:
    """Natural corruptions at five severities (Hendrycks and Dietterich 2019; Xiao et al. 2020, eq. 6)."""

    corruptions: tuple[str, ...] | None = option(None, "corruptions to run", shown="every registered one",
                                                 **choice_list(lambda: list_corruptions()))


def _level(alpha: float | None) -> None:
    """A test's level: ``None`` or 0 (no test), else in (0, 1)."""
    if alpha is not None and not (isinstance(alpha, (int, float)) and 0 <= alpha < 1):
        raise UserInputError(f"must be a number in [0, 1), got {alpha!r}")


@dataclasses.dataclass(frozen=True)
class VotingSettings:
    """The ``voting`` suite's grid: inference stddevs (the noise of each model's own kind) x vote counts."""

    stddevs: tuple[float, ...] = option((0.0, 0.2, 0.4, 0.6, 0.8, 1.0), "inference stddevs of the voting grid",
                                        **reals(0, MAX_STDDEV))
    votes_list: tuple[int, ...] = option((1, 5, 10, 20), "vote counts of the voting grid (--votes is its older name)",
                                         flag=("--grid-votes", "--votes"),
                                         **integers(1, VOTES_CAP))
    vote_repeats: int = option(3, "repeats of each noisy cell of the voting grid", **integer(1))
    abstain_alpha: float | None = option(0.05, "level of the randomized-smoothing abstention rows (Cohen et al. "
                                         "2019; 0: none)", parse=number(float, 0, 1), check=_level)


@dataclasses.dataclass(frozen=True)
class DistortionSettings:
    """BANG's random-distortion test (Rozsa, Gunther and Boult 2016, section 4)."""

    distortion_stddevs: tuple[float, ...] = option((0.1, 0.2, 0.3, 0.4), "Gaussian stddevs (pixel units) of the "
                                                   "random-distortion test", **reals(0, MAX_STDDEV))
    distortion_per_class: int = option(10, "points per class every model gets right", **integer(1))
    distortion_draws: int = option(100, "noisy copies per point", **integer(1))


@dataclasses.dataclass
class SuiteContext:
    """What every suite reads and writes: the models, the test points, the settings and the rows.

    Attributes:
        models: ``{export name: loaded model}`` (inference noise already set as asked).
        model_dirs: the export directories, in the order given.
        x, y: test points ``[N, ...]`` and labels ``[N]``.
        settings: :class:`SuiteSettings`, shared by every suite (each suite gets its own settings
            as its second argument).
        ev: the row store (:class:`evaluation.harness.Evaluation`): ``done``, ``add``, ``counters``.
        attack_settings: ``{attack name: its settings}`` for the attacks that have some.
    """

    models: dict[str, keras.Model]
    model_dirs: list[str]
    x: np.ndarray
    y: np.ndarray
    settings: SuiteSettings
    ev: Evaluation
    attack_settings: dict = dataclasses.field(default_factory=dict)
    _clean: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def done(self, key: str) -> bool:
        return self.ev.done(key) is not None

    def add(self, row: dict) -> dict:
        return self.ev.add(row)

    def count(self, counter: str, n: int = 1) -> None:
        self.ev.counters[counter] += n

    def attack(self, name: str, fn, x, y, eps: float, **kwargs) -> np.ndarray:
        """Attack ``name`` (:func:`evaluation.attacks.attack`) with its own settings; numpy out."""
        return attack(name, fn, x, y, eps, options=self.attack_settings.get(name), **kwargs).numpy()

    def attack_correct(self, name: str, fn, pred_clean: np.ndarray, eps: float, **kwargs) -> np.ndarray:
        """``x`` with only the points ``pred_clean`` gets right attacked; the others are already
        wrong, so attacking them is wasted work (AutoAttack's saving, Croce and Hein 2020)."""
        idx = np.flatnonzero(pred_clean == self.y)
        adv = self.x.copy()
        if len(idx):
            adv[idx] = self.attack(name, fn, self.x[idx], self.y[idx], eps, **kwargs)
        return adv

    def predict(self, model: keras.Model, images: np.ndarray, batch: int = 1000) -> np.ndarray:
        """Predicted classes: noise-free, or the vote of ``settings.votes`` noisy passes if the model's
        inference noise is on."""
        return predict_classes(model, images, self.settings.votes, batch)

    def clean_pred(self, name: str, model: keras.Model) -> np.ndarray:
        """Each model's predictions on the clean ``x``, computed once and shared by every suite."""
        if name not in self._clean:
            self.count("model_passes")
            self._clean[name] = self.predict(model, self.x)
        return self._clean[name]


Figure = Callable[[list, Path], list]  # (all rows, output folder) -> markdown lines of the pictures it wrote


@dataclasses.dataclass(frozen=True)
class SuiteEntry:
    """A registered suite.

    Attributes:
        run: ``run(ctx: SuiteContext, settings) -> None``; ``settings`` is an instance of ``settings``.
        note: heads the suite's section of ``report.md``.
        settings: the suite's own settings class (:mod:`evaluation.options`), whose fields become
            ``glrzoo evaluate`` flags.
        figures: ``fig(rows, out) -> markdown lines``: the report's pictures of this suite's rows
            (a figure shared by several suites is drawn once).
        pixels, images: needs pixels in [0, 1], or images ``[N, H, W, C]`` (refused up front otherwise).
        blackbox: a white-box attack should never do worse than this suite (a masking check).
    """

    name: str
    run: Callable[[SuiteContext, object], None]
    note: str
    settings: type = NoSettings
    figures: tuple[Figure, ...] = ()
    pixels: bool = False
    images: bool = False
    blackbox: bool = False


@dataclasses.dataclass(frozen=True)
class Suite:
    """A configured suite: its registry entry and its settings (:func:`configure`)."""

    entry: SuiteEntry
    settings: object

    @property
    def name(self) -> str:
        return self.entry.name


SUITES = Registry("suite", package="evaluation", unknown="unknown suite {name!r}; choose from {choices}")


def register_suite(name: str, *, note: str = "", settings: type = NoSettings, figures: Sequence[Figure] = (),
                   pixels: bool = False, images: bool = False, blackbox: bool = False):
    """Decorator: register ``fn(ctx: SuiteContext, settings) -> None`` as suite ``name`` (see the
    module docstring); ``settings`` is its settings class, whose field names must be new."""
    return SUITES.decorator(name, lambda fn: SuiteEntry(name, fn, note, settings, tuple(figures), pixels, images,
                                                        blackbox))


def list_suites(pattern: str = "*") -> list[str]:
    """Registered suite names matching ``pattern``, in registration order (the report's section order)."""
    return SUITES.names(pattern)


def get_suite(name: str) -> SuiteEntry:
    """The registered suite ``name``; :class:`UserInputError` naming the choices otherwise."""
    return SUITES.entry(name)


def configure(name: str, **settings) -> Suite:
    """Suite ``name`` with its settings: ``settings`` over its defaults, checked (one line naming a
    bad value; an unknown name is a ``TypeError``).

    Example:
        >>> evaluate(models, x, y, suites=["clean", configure("certify", certify_sigmas=(0.5,))])
    """
    entry = get_suite(name)
    return Suite(entry, make(entry.settings, **settings))


def settings_classes() -> list[type]:
    """Every settings class: the shared one, each suite's and each attack's, checked for unique
    field names (a programming error otherwise)."""
    classes = list(dict.fromkeys([SuiteSettings, *(SUITES.entry(n).settings for n in list_suites()),
                                  *(get_attack(n).settings for n in list_attacks())]))
    for cls in classes:
        check_unique(cls, classes, cls.__name__)
    return classes


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one evaluation runs: the configured suites in registry order, the shared settings and
    each attack's own settings (:func:`plan`)."""

    suites: tuple[Suite, ...]
    shared: SuiteSettings
    attacks: dict

    def of(self, name: str):
        """The settings of suite ``name`` if it is in the plan, else ``None``."""
        return next((s.settings for s in self.suites if s.name == name), None)

    def replace(self, name: str, **changes) -> Plan:
        """This plan with suite ``name``'s settings changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, suites=tuple(
            dataclasses.replace(s, settings=dataclasses.replace(s.settings, **changes)) if s.name == name else s
            for s in self.suites))

    def record(self) -> dict:
        """Every setting of the plan by field name (names are unique): what a report depends on."""
        out = dataclasses.asdict(self.shared)
        for part in [*(s.settings for s in self.suites), *self.attacks.values()]:
            out.update(dataclasses.asdict(part))
        return out


def plan(suites: Sequence[str | Suite], **settings) -> Plan:
    """The :class:`Plan` of ``suites`` (names or :func:`configure` results): each of ``settings``
    (any field of any settings class, by name) goes to its owner, over that owner's defaults, and
    is checked (one line naming a bad value; an unknown name is a ``TypeError``). Values for a
    suite that is not run are checked too, then unused."""
    classes = settings_classes()
    given: dict[type, dict] = {}
    for key, value in settings.items():
        owner = owner_of(key, classes)
        if owner is None:
            raise TypeError(f"unknown evaluation setting {key!r}")
        given.setdefault(owner, {})[key] = value
    parts = {cls: make(cls, **values) for cls, values in given.items()}
    chosen = {}
    for item in suites:
        if isinstance(item, Suite):  # configured: the flat values go over its own
            cls = item.entry.settings
            chosen[item.name] = Suite(item.entry, make(cls, **{**dataclasses.asdict(item.settings),
                                                               **given.get(cls, {})}))
        else:
            entry = get_suite(item)
            chosen[entry.name] = Suite(entry, parts.get(entry.settings) or entry.settings())
    ordered = tuple(chosen[n] for n in list_suites() if n in chosen)
    attack_classes = {n: get_attack(n).settings for n in list_attacks()}
    attacks = {n: parts.get(cls) or cls() for n, cls in attack_classes.items() if cls is not NoSettings}
    return Plan(ordered, parts.get(SuiteSettings) or SuiteSettings(), attacks)


def predict_classes(model, x, votes: int = 1, batch: int = 1000) -> np.ndarray:
    """Predictions in inference mode: noise-free if the model's infer stddev is 0, else the
    majority of ``votes`` noisy passes (one batched call per chunk)."""
    noisy = noise_settings(model)["infer_stddev"] > 0
    out = []
    for i in range(0, len(x), batch):
        xb = tf.constant(x[i:i + batch])
        if noisy:
            out.append(tf.argmax(vote_counts(model, xb, votes), -1).numpy())
        else:
            out.append(tf.argmax(model(xb, training=False), -1).numpy())
    return np.concatenate(out) if out else np.zeros([0], np.int64)


def attack_row(name, suite, attack_name, x, y, adv, pred_adv, settings, source=None, pred_clean=None,
               pass_limit: int = 0) -> dict:
    """Accuracy on ``adv``; success rate = share of the points classified correctly on clean input
    that the attack flips; L2 / L-inf sizes of those successful perturbations, and their mean PASS
    (over the first ``pass_limit`` of them; 0 skips it)."""
    n = len(y)
    correct = int(np.sum(pred_adv == y))
    delta = (adv - x).reshape(n, -1)
    was_right = np.ones(n, bool) if pred_clean is None else pred_clean == y
    fooled = (pred_adv != y) & was_right
    row = {"model": name, "suite": suite, "attack": attack_name, **settings, "source": source,
           **accuracy_row(correct, n), "success_rate": float(fooled.sum() / max(was_right.sum(), 1)),
           "mean_l2": float(np.linalg.norm(delta[fooled], axis=1).mean()) if fooled.any() else 0.0,
           "mean_linf": float(np.abs(delta[fooled]).max(axis=1).mean()) if fooled.any() else 0.0}
    if pass_limit:
        row["mean_pass"] = mean_pass(adv[fooled], x[fooled], pass_limit)
    return row


@register_suite("clean")
def clean_suite(ctx: SuiteContext, _: NoSettings) -> None:
    """Clean accuracy, with the gradient-masking probes: the share of inputs with an exactly zero loss
    gradient and the share of small random probes that leave the output unchanged."""
    x, y, seed = ctx.x, ctx.y, ctx.settings.seed
    for name, model in ctx.models.items():
        key = f"{name}|clean"
        if ctx.done(key):
            continue
        pred = ctx.clean_pred(name, model)
        ctx.add({"key": key, "model": name, "suite": "clean", **accuracy_row(int(np.sum(pred == y)), len(y)),
                 "blank_gradient_fraction": blank_gradient_fraction(logits_fn(model, stddev=0.0), x[:500], y[:500]),
                 "flat_probe_fraction": flat_probe_fraction(logits_fn(model, stddev=0.0), x[:500], y[:500], seed=seed)})


def _apgd_row_settings(budget: dict) -> dict:
    """Row fields of an APGD-family run: its budget, and the accuracy over all points after each member."""
    after = {k: v for k, v in budget["accuracy_after"].items() if k != "clean"}
    return {"steps": budget["n_iter"], "restarts": budget["restarts"], "eot": budget["eot"],
            "version": budget["version"], "members": list(budget["attacks"]), "accuracy_after": after}


@register_suite("whitebox", pixels=True, settings=WhiteboxSettings, figures=(accuracy_vs_eps,),
                note="Gradient attacks on the model itself (EOT over noise draws for noisy models). `autoattack` is "
                     "the reference number: per point the worst case of APGD-CE and APGD-T (AutoAttack standard, "
                     "Croce and Hein 2020), or for noisy models APGD-CE and APGD-DLR with EOT (AutoAttack rand), "
                     "run only on points still correct (for noisy models on every point); its row at eps 1.0 is the "
                     "unbounded-attack sanity check "
                     "(must reach 100% success). Rows without eps are minimal-perturbation attacks: read success "
                     "with the size and PASS of the change. `pgd_smoothed` and `lr_pgd` attack step-activation nets "
                     "through a usable gradient.")
def whitebox_suite(ctx: SuiteContext, w: WhiteboxSettings) -> None:
    """Eps-ball attacks on each model's own gradient (EOT for noisy models), plus, for step nets, the
    registered ``surrogate`` attacks and PGD on the smooth stand-in; then the minimal attacks.

    The APGD family (``apgd_ce``, ``apgd_dlr``, ``autoattack``; :func:`evaluation.apgd.harness_attack`)
    runs on the model itself with ``apgd_steps`` iterations, EOT over ``eot`` passes for noisy
    models, only on the points still classified correctly, success judged by the harness's own
    prediction (the vote for noisy models). ``reference_attack`` always runs, at every eps and at
    ``unbounded_eps`` (Carlini et al. 2019, section 5.2: an unbounded attack must reach 100%)."""
    from evaluation.apgd import ATTACKS as APGD_FAMILY
    from evaluation.apgd import harness_attack

    s, x, y = ctx.settings, ctx.x, ctx.y
    minimal = list_attacks(kind="minimal") if w.minimal_attacks is None else w.minimal_attacks
    pass_limit = w.pass_limit if np.ndim(x) == 4 else 0
    for name, model in ctx.models.items():
        noisy = noise_settings(model)["infer_stddev"] > 0
        eot = s.eot if noisy else 1
        fn = logits_fn(model, eot=eot)
        pred_clean = ctx.clean_pred(name, model)
        chosen = list(dict.fromkeys([*w.whitebox_attacks, *([w.reference_attack] if w.reference_attack else [])]))
        plan = [(att, fn, att) for att in chosen]
        if has_step_activations(model):  # zero gradients a.e.: give the attacker a usable gradient
            plan += [("pgd_smoothed", logits_fn(smoothed_model(model), eot=eot), "pgd")]
            plan += [(att, fn, att) for att in list_attacks(gradient="surrogate") if att not in chosen]
        runs = [(eps, item) for eps in s.eps_list for item in plan]
        if w.reference_attack and w.unbounded_eps and w.unbounded_eps not in s.eps_list:
            runs += [(w.unbounded_eps, (w.reference_attack, fn, w.reference_attack))]
        for eps, (label, attack_fn, att) in runs:
            key = f"{name}|whitebox|{label}|{eps}"
            if ctx.done(key):
                continue
            if att in APGD_FAMILY:  # it skips the points already wrong itself (a noisy model's: none)
                adv, budget = harness_attack(att, model, x, y, eps, n_iter=w.apgd_steps, n_restarts=w.apgd_restarts,
                                             eot=eot, seed=s.seed, predict=lambda a, m=model: ctx.predict(m, a))
                settings = {"eps": eps, "norm": "inf", **_apgd_row_settings(budget)}
            else:
                adv = ctx.attack(att, attack_fn, x, y, eps, steps=s.steps, step_size=s.step_size,
                                 restarts=s.restarts, seed=s.seed)
                settings = {"eps": eps, "norm": "inf", "steps": s.steps, "eot": eot}
                if att == "pgd":
                    settings["restarts"] = s.restarts
            ctx.count("attack_runs")
            ctx.add({"key": key, **attack_row(name, "whitebox", label, x, y, adv, ctx.predict(model, adv), settings,
                                              pred_clean=pred_clean)})
        for att in minimal:
            key = f"{name}|whitebox|{att}"
            if ctx.done(key):
                continue
            adv = ctx.attack_correct(att, fn, pred_clean, np.inf, steps=s.steps, seed=s.seed)
            ctx.count("attack_runs")
            ctx.add({"key": key, **attack_row(name, "whitebox", att, x, y, adv, ctx.predict(model, adv),
                                              {"eps": None, "norm": "2" if att == "cw_l2" else "inf", "eot": eot},
                                              pred_clean=pred_clean, pass_limit=pass_limit)})


@register_suite("transfer", pixels=True, blackbox=True, settings=TransferSettings, figures=(accuracy_vs_eps,),
                note="Adversarial examples made on the source, kept only where the source was right, fed to each "
                     "target.")
def transfer_suite(ctx: SuiteContext, t: TransferSettings) -> None:
    """Examples made once per source (default: every evaluated model) and attack, from the points the
    source gets right (the GLR authors' protocol), fed to every other model."""
    s, x, y, models = ctx.settings, ctx.x, ctx.y, ctx.models
    for src_dir in list(t.sources) or list(ctx.model_dirs):
        src_name = Path(src_dir).name
        src = models.get(src_name) or load_model(src_dir)
        keep = ctx.clean_pred(src_name, src) == y
        xs, ys = x[keep], y[keep]
        for att in t.transfer_attacks:
            for eps in s.eps_list:
                keys = {name: f"{name}|transfer|{src_name}|{att}|{eps}" for name in models if name != src_name}
                if all(ctx.done(k) for k in keys.values()):
                    continue
                adv = ctx.attack(att, logits_fn(src, stddev=0.0), xs, ys, eps, steps=s.steps, step_size=s.step_size,
                                 restarts=s.restarts, seed=s.seed)
                ctx.count("attack_runs")
                for name, key in keys.items():
                    if ctx.done(key):
                        continue
                    target = models[name]
                    ctx.count("model_passes", 2)
                    noisy = noise_settings(target)["infer_stddev"] > 0
                    ctx.add({"key": key, **attack_row(name, "transfer", att, xs, ys, adv, ctx.predict(target, adv),
                                                      {"eps": eps, "norm": "inf", "steps": s.steps,
                                                       "restarts": s.restarts, "step_size": s.step_size,
                                                       "votes": s.votes if noisy else None},
                                                      source=src_name, pred_clean=ctx.predict(target, xs))})


@register_suite("gradfree", pixels=True, blackbox=True, figures=(accuracy_vs_eps,),
                note="SPSA: never uses the model's gradient, so blank gradients cannot stop it; a model whose output "
                     "is flat under small probes (step activations) starves it too, and is marked.")
def gradfree_suite(ctx: SuiteContext, _: NoSettings) -> None:
    """Every registered query-only attack (``gradient="none"``: SPSA) on the points each model gets right."""
    s, x, y = ctx.settings, ctx.x, ctx.y
    for name, model in ctx.models.items():
        for att in list_attacks(gradient="none"):
            for eps in s.eps_list:
                key = f"{name}|gradfree|{att}|{eps}"
                if ctx.done(key):
                    continue
                pred = ctx.clean_pred(name, model)
                adv = ctx.attack_correct(att, logits_fn(model), pred, eps, steps=s.steps, seed=s.seed)
                ctx.count("attack_runs")
                ctx.add({"key": key, **attack_row(name, "gradfree", att, x, y, adv, ctx.predict(model, adv),
                                                  {"eps": eps, "norm": "inf", "steps": s.steps}, pred_clean=pred)})


@register_suite("corruption", images=True, settings=CorruptionSettings, figures=(accuracy_vs_severity,))
def corruption_suite(ctx: SuiteContext, c: CorruptionSettings) -> None:
    """Every chosen corruption (default: every registered one) at severities 1-5, each corrupted set
    made once and fed to every model; then the mean over the GLR authors' four (Xiao et al. 2020, eq. 6)
    and, when others ran too, the mean over all of them."""
    x, y, models = ctx.x, ctx.y, ctx.models
    for cname in list_corruptions() if c.corruptions is None else c.corruptions:
        for severity in range(1, 6):
            keys = {name: f"{name}|corruption|{cname}|{severity}" for name in models}
            if all(ctx.done(k) for k in keys.values()):
                continue
            xc = corrupt(x, cname, severity, ctx.settings.seed)
            for name, key in keys.items():
                if not ctx.done(key):
                    pred = ctx.predict(models[name], xc)
                    ctx.add({"key": key, "model": name, "suite": "corruption", "corruption": cname,
                             "severity": severity, **accuracy_row(int(np.sum(pred == y)), len(y))})
    for name in models:
        accs = {(r["corruption"], r["severity"]): r["accuracy"] for r in ctx.ev.rows
                if r["model"] == name and r["suite"] == "corruption" and r.get("severity")}
        paper = {k: v for k, v in accs.items() if get_corruption(k[0]).paper}
        for label, suffix, chosen in ((MEAN_EQ6, "mean", paper), (MEAN_ALL, "mean_all", accs if len(accs) > len(paper) else {})):
            key = f"{name}|corruption|{suffix}"
            if chosen and not ctx.done(key):
                ctx.add({"key": key, "model": name, "suite": "corruption", "corruption": label,
                         "n": len(y), "accuracy": mean_corruption_accuracy(chosen), "ci95": None})


@register_suite("voting", settings=VotingSettings, figures=(accuracy_vs_stddev,),
                note="Noisy inference, majority vote; mean over repeats with its spread. Abstention: "
                     "randomized-smoothing binomial test (answered & right = correct and not abstained, over all "
                     "points).")
def voting_suite(ctx: SuiteContext, s: VotingSettings) -> None:
    """Accuracy over the grid of inference stddevs x vote counts (each cell repeated), with
    randomized-smoothing abstention (Cohen et al. 2019) when ``abstain_alpha`` is set."""
    x, y, seed = ctx.x, ctx.y, ctx.settings.seed
    for name, model in ctx.models.items():
        noise = noise_settings(model)
        for stddev in s.stddevs:
            for grid_votes in s.votes_list:
                key = f"{name}|voting|{stddev}|{grid_votes}"
                if ctx.done(key) or (stddev == 0 and grid_votes > 1):
                    continue
                accs, abstain, kept_acc = [], [], []
                for repeat in range(s.vote_repeats if stddev > 0 else 1):
                    restart_noise(model, zlib.crc32(f"{seed}|{key}|{repeat}".encode()))  # same draws after a resume
                    counts = vote_counts(model, tf.constant(x), grid_votes, stddev).numpy()  # all votes in one call
                    ctx.count("model_passes", grid_votes)
                    accs.append(float(np.mean(counts.argmax(-1) == y)))
                    if s.abstain_alpha and grid_votes > 1:
                        pred = smoothed_predict(counts, s.abstain_alpha)
                        abstain.append(float(np.mean(pred < 0)))
                        kept_acc.append(float(np.mean(pred == y)))
                row = accuracy_row(int(round(np.mean(accs) * len(y))), len(y))
                extra = {}
                if abstain:
                    extra = {"abstain_alpha": s.abstain_alpha, "abstain_rate": float(np.mean(abstain)),
                             "smoothed_accuracy": float(np.mean(kept_acc))}
                ctx.add({"key": key, "model": name, "suite": "voting", "stddev": stddev, "votes": grid_votes,
                         "noise": noise["noise"], "train_stddev": noise["train_stddev"], **row,
                         "accuracy": float(np.mean(accs)), "spread": float(np.std(accs)), "repeats": len(accs),
                         **extra})


@register_suite("distortion", pixels=True, settings=DistortionSettings,
                note="BANG's random-distortion test: points every model gets right, Gaussian noise of the given "
                     "stddev, share of copies whose class changes (accuracy column = 1 - that; CI over images).")
def distortion_suite(ctx: SuiteContext, s: DistortionSettings) -> None:
    """BANG's random-distortion test (Rozsa, Gunther and Boult 2016, section 4): many Gaussian copies
    of points every model gets right; the share whose predicted class changes. Noisy models predict
    by the vote of ``settings.votes`` passes, as everywhere else."""
    x, y = ctx.x, ctx.y
    preds = {name: ctx.clean_pred(name, model) for name, model in ctx.models.items()}
    idx = common_correct(preds, y, s.distortion_per_class)
    for name, model in ctx.models.items():
        for stddev in s.distortion_stddevs:
            key = f"{name}|distortion|{stddev}"
            if ctx.done(key) or not len(idx):
                continue
            rate, se = changed_fraction(lambda im, m=model: ctx.predict(m, im, batch=4096), x[idx], stddev,
                                        s.distortion_draws, ctx.settings.seed)
            ctx.count("model_passes", s.distortion_draws)
            ctx.add({"key": key, "model": name, "suite": "distortion", "corruption": "gaussian (BANG test)",
                     "stddev": stddev, "draws": s.distortion_draws, "n": int(len(idx)), "changed_rate": rate,
                     "accuracy": 1.0 - rate,
                     "ci95": [max(0.0, 1 - rate - 1.96 * se), min(1.0, 1 - rate + 1.96 * se)]})


__all__ = ["SUITES", "CorruptionSettings", "DistortionSettings", "Suite", "SuiteContext", "SuiteEntry", "SuiteSettings",
           "TransferSettings", "VotingSettings", "WhiteboxSettings", "Plan", "configure", "plan", "get_suite", "list_suites",
           "predict_classes", "register_suite", "settings_classes"]
