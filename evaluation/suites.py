"""The evaluation suites, one function each, registered by name and run by :func:`evaluation.harness.evaluate`.

A suite is ``fn(ctx: SuiteContext) -> None``: it reads the loaded models, the test points and the
settings from ``ctx``, and adds keyed rows with ``ctx.add`` (a row whose key is already done is
skipped, so an interrupted run resumes). A new suite is one decorated function in any module of
``evaluation/``::

    @register_suite("my_suite", note="What the rows mean, for report.md.")
    def my_suite(ctx: SuiteContext) -> None:
        for name, model in ctx.models.items():
            ...

``pixels=True`` marks suites that clip to [0, 1] pixels and ``images=True`` those that need
``[N, H, W, C]`` images (both refused up front for other data); ``blackbox=True`` marks suites
whose accuracy a white-box attack should never exceed (a gradient-masking check).
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
from evaluation.pass_score import mean_pass
from evaluation.surrogate import has_step_activations, smoothed_model
from zoo.errors import UserInputError
from zoo.export import load_model
from zoo.noise import noise_settings, restart_noise
from zoo.registry import Registry
from zoo.voting import smoothed_predict, vote_counts

if TYPE_CHECKING:
    from evaluation.harness import Evaluation

MEAN_EQ6 = "mean (eq. 6)"  # the GLR authors' summary over their four corruptions (Xiao et al. 2020, eq. 6)
MEAN_ALL = "mean (all)"  # the same mean over every corruption that ran


@dataclasses.dataclass(frozen=True)
class SuiteSettings:
    """Every setting of the suites, with its default: the one place they live. ``evaluate(...,
    **settings)`` takes any of these fields by name; :meth:`make` completes and checks them.

    Attributes:
        sources: exports that make transfer attacks (default: the evaluated models themselves).
        eps_list: L-inf radii (pixel units) for the attack suites.
        whitebox_attacks: eps-ball attacks of the white-box suite (``reference_attack`` is added if
            missing). Models with step activations also get ``pgd_smoothed`` (PGD on the sigmoid
            stand-in, scored on the real model) and every registered ``surrogate`` attack
            (``lr_pgd``: PGD on the likelihood-ratio input gradient).
        reference_attack: the white-box suite's reference number (``autoattack``: APGD-CE and APGD-T,
            Croce and Hein 2020; AutoAttack ``rand`` with ``eot`` draws for noisy models); ``None``: none.
        apgd_steps, apgd_restarts: iterations and restarts of every APGD run (AutoAttack: 100, 1).
        unbounded_eps: the reference attack also runs at this L-inf radius (1.0 covers the whole
            [0, 1] box), where it must succeed on every point (a masking check); ``None`` skips it.
        transfer_attacks: attacks the sources make.
        minimal_attacks: minimal-perturbation attacks (one row per model, no eps), with PASS
            (``None``: every registered ``minimal`` attack).
        corruptions: corruptions of the corruption suite (``None``: every registered one).
        steps, restarts, step_size: iterative attacks (step default ``2.5 * eps / steps``; Qin and
            Vucinic 2018's transfer setting is eps 0.3, step 0.05, 20 steps, 20 restarts).
        eot: noise draws per gradient for models with inference noise (white-box only).
        votes: noisy passes voted on for every prediction of a model whose inference noise is on
            (the prediction under attack is the voted one), in every suite.
        stddevs, votes_list, vote_repeats: the voting suite's grid (multiplicative or additive as
            each model was built) and how often each cell is repeated.
        abstain_alpha: level of the randomized-smoothing abstention rows of the voting suite
            (``None``: no abstention rows).
        distortion_stddevs, distortion_per_class, distortion_draws: BANG's random-distortion test.
        pass_limit: successful examples per row whose PASS is computed (0: none; images only).
        certify_sigmas, certify_n0, certify_n, certify_alpha, certify_radii, certify_max_points:
            the ``certify`` suite (Cohen, Rosenfeld and Kolter 2019): Gaussian stddevs (input units),
            selection and estimation samples, failure probability, L2 radii of the table (``None``:
            17 from 0 to 4 sigma) and how many of the test points are certified.
        seed: seed of the attacks' random starts and of the noise.
    """

    sources: tuple[str, ...] = ()
    eps_list: tuple[float, ...] = (0.1, 0.2, 0.3)
    whitebox_attacks: tuple[str, ...] = ("fgsm", "pgd", "autoattack")
    reference_attack: str | None = "autoattack"  # always in the white-box suite: its reference number
    apgd_steps: int = 100  # iterations of every APGD run (apgd_ce, apgd_dlr, autoattack members)
    apgd_restarts: int = 1
    unbounded_eps: float | None = 1.0  # the reference attack also runs here: it must reach 100% success
    transfer_attacks: tuple[str, ...] = ("fgsm", "pgd")
    minimal_attacks: tuple[str, ...] | None = None
    corruptions: tuple[str, ...] | None = None
    steps: int = 20
    restarts: int = 1
    step_size: float | None = None
    eot: int = 20
    votes: int = 20  # noisy passes voted on for every prediction of a model with inference noise
    stddevs: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    votes_list: tuple[int, ...] = (1, 5, 10, 20)  # the voting suite's grid (not the prediction votes above)
    vote_repeats: int = 3
    abstain_alpha: float | None = 0.05
    distortion_stddevs: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4)
    distortion_per_class: int = 10
    distortion_draws: int = 100
    pass_limit: int = 50
    certify_sigmas: tuple[float, ...] = (0.25,)  # the certify suite (evaluation.certify.certify_suite)
    certify_n0: int = 100
    certify_n: int = 10_000
    certify_alpha: float = 0.001
    certify_radii: tuple[float, ...] | None = None  # None: 17 radii from 0 to 4 sigma
    certify_max_points: int = 500
    seed: int = 0

    @classmethod
    def make(cls, suites: Sequence[str] = (), images: bool = True, **given) -> SuiteSettings:
        """The settings ``given`` (field names; an unknown name is a ``TypeError``) over the defaults,
        completed (sequences as tuples, every registered minimal attack and corruption where ``None``,
        ``""`` and 0 as "none") and checked for the chosen ``suites``; PASS only on ``images``."""
        s = cls(**given)
        tup = lambda v: tuple(v) if v is not None else None  # noqa: E731
        s = dataclasses.replace(
            s, sources=tuple(s.sources), eps_list=tuple(s.eps_list), whitebox_attacks=tuple(s.whitebox_attacks),
            transfer_attacks=tuple(s.transfer_attacks), stddevs=tuple(s.stddevs), votes_list=tuple(s.votes_list),
            distortion_stddevs=tuple(s.distortion_stddevs), certify_sigmas=tuple(s.certify_sigmas),
            certify_radii=tup(s.certify_radii), reference_attack=s.reference_attack or None,
            unbounded_eps=s.unbounded_eps or None, pass_limit=s.pass_limit if images else 0,
            minimal_attacks=tuple(list_attacks(kind="minimal") if s.minimal_attacks is None else s.minimal_attacks),
            corruptions=tuple(list_corruptions() if s.corruptions is None else s.corruptions))
        s.check(suites)
        return s

    def check(self, suites: Sequence[str]) -> None:
        """Refuse settings no suite can run with (one line each)."""
        for name in self.corruptions:
            get_corruption(name)
        if self.reference_attack:
            get_attack(self.reference_attack)
        if not (self.apgd_steps >= 1 and self.apgd_restarts >= 1):
            raise UserInputError(f"APGD needs steps and restarts >= 1, got {self.apgd_steps} and {self.apgd_restarts}")
        if "certify" in suites:
            if not (self.certify_sigmas and all(sg > 0 for sg in self.certify_sigmas)):
                raise UserInputError(f"certify sigmas must be > 0, got {list(self.certify_sigmas)}")
            if not (self.certify_n0 >= 1 and self.certify_n >= 1 and self.certify_max_points >= 1
                    and 0 < self.certify_alpha < 1):
                raise UserInputError("certify needs n0, n and max points >= 1 and alpha in (0, 1); got "
                                     f"{self.certify_n0}, {self.certify_n}, {self.certify_max_points} and "
                                     f"{self.certify_alpha}")
            if self.certify_radii is not None and any(not r >= 0 for r in self.certify_radii):
                raise UserInputError(f"certify radii must be >= 0, got {list(self.certify_radii)}")


@dataclasses.dataclass
class SuiteContext:
    """What every suite reads and writes: the models, the test points, the settings and the rows.

    Attributes:
        models: ``{export name: loaded model}`` (inference noise already set as asked).
        model_dirs: the export directories, in the order given.
        x, y: test points ``[N, ...]`` and labels ``[N]``.
        settings: :class:`SuiteSettings`.
        ev: the row store (:class:`evaluation.harness.Evaluation`): ``done``, ``add``, ``counters``.
    """

    models: dict[str, keras.Model]
    model_dirs: list[str]
    x: np.ndarray
    y: np.ndarray
    settings: SuiteSettings
    ev: Evaluation
    _clean: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def done(self, key: str) -> bool:
        return self.ev.done(key) is not None

    def add(self, row: dict) -> dict:
        return self.ev.add(row)

    def count(self, counter: str, n: int = 1) -> None:
        self.ev.counters[counter] += n

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


@dataclasses.dataclass(frozen=True)
class SuiteEntry:
    """A registered suite: its function, the note that heads its report section, and what it needs."""

    name: str
    run: Callable[[SuiteContext], None]
    note: str
    pixels: bool = False
    images: bool = False
    blackbox: bool = False


SUITES = Registry("suite", package="evaluation", unknown="unknown suite {name!r}; choose from {choices}")


def register_suite(name: str, *, note: str = "", pixels: bool = False, images: bool = False, blackbox: bool = False):
    """Decorator: register ``fn(ctx: SuiteContext) -> None`` as suite ``name`` (see the module docstring)."""
    return SUITES.decorator(name, lambda fn: SuiteEntry(name, fn, note, pixels, images, blackbox))


def list_suites(pattern: str = "*") -> list[str]:
    """Registered suite names matching ``pattern``, in registration order (the report's section order)."""
    return SUITES.names(pattern)


def get_suite(name: str) -> SuiteEntry:
    """The registered suite ``name``; :class:`UserInputError` naming the choices otherwise."""
    return SUITES.entry(name)


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


def attack_correct(name, fn, x, y, pred_clean, eps, **kwargs) -> np.ndarray:
    """``x`` with only the points ``pred_clean`` gets right attacked; the others are already wrong,
    so attacking them is wasted work (AutoAttack's saving, Croce and Hein 2020)."""
    idx = np.flatnonzero(pred_clean == y)
    adv = x.copy()
    if len(idx):
        adv[idx] = attack(name, fn, x[idx], y[idx], eps, **kwargs).numpy()
    return adv


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
def clean_suite(ctx: SuiteContext) -> None:
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


def _apgd_row_settings(budget: dict, n_attacked: int, n: int) -> dict:
    """Row fields of an APGD-family run: its budget, and the accuracy over all ``n`` points after
    each member (``budget["accuracy_after"]`` is over the ``n_attacked`` points it was given)."""
    after = {k: (v * n_attacked) / n if n else float("nan") for k, v in budget["accuracy_after"].items()}
    after.pop("clean", None)
    return {"steps": budget["n_iter"], "restarts": budget["restarts"], "eot": budget["eot"],
            "version": budget["version"], "members": list(budget["attacks"]), "accuracy_after": after}


@register_suite("whitebox", pixels=True,
                note="Gradient attacks on the model itself (EOT over noise draws for noisy models). `autoattack` is "
                     "the reference number: per point the worst case of APGD-CE and APGD-T (AutoAttack standard, "
                     "Croce and Hein 2020), or for noisy models APGD-CE and APGD-DLR with EOT (AutoAttack rand), "
                     "run only on points still correct; its row at eps 1.0 is the unbounded-attack sanity check "
                     "(must reach 100% success). Rows without eps are minimal-perturbation attacks: read success "
                     "with the size and PASS of the change. `pgd_smoothed` and `lr_pgd` attack step-activation nets "
                     "through a usable gradient.")
def whitebox_suite(ctx: SuiteContext) -> None:
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
    for name, model in ctx.models.items():
        noisy = noise_settings(model)["infer_stddev"] > 0
        eot = s.eot if noisy else 1
        fn = logits_fn(model, eot=eot)
        pred_clean = ctx.clean_pred(name, model)
        chosen = list(dict.fromkeys([*s.whitebox_attacks, *([s.reference_attack] if s.reference_attack else [])]))
        plan = [(att, fn, att) for att in chosen]
        if has_step_activations(model):  # zero gradients a.e.: give the attacker a usable gradient
            plan += [("pgd_smoothed", logits_fn(smoothed_model(model), eot=eot), "pgd")]
            plan += [(att, fn, att) for att in list_attacks(gradient="surrogate") if att not in chosen]
        runs = [(eps, item) for eps in s.eps_list for item in plan]
        if s.reference_attack and s.unbounded_eps and s.unbounded_eps not in s.eps_list:
            runs += [(s.unbounded_eps, (s.reference_attack, fn, s.reference_attack))]
        for eps, (label, attack_fn, att) in runs:
            key = f"{name}|whitebox|{label}|{eps}"
            if ctx.done(key):
                continue
            if att in APGD_FAMILY:
                idx = np.flatnonzero(pred_clean == y)
                adv = x.copy()
                adv[idx], budget = harness_attack(att, model, x[idx], y[idx], eps, n_iter=s.apgd_steps,
                                                  n_restarts=s.apgd_restarts, eot=eot, seed=s.seed,
                                                  predict=lambda a, m=model: ctx.predict(m, a))
                settings = {"eps": eps, "norm": "inf", **_apgd_row_settings(budget, len(idx), len(y))}
            else:
                adv = attack(att, attack_fn, x, y, eps, steps=s.steps, step_size=s.step_size, restarts=s.restarts,
                             seed=s.seed).numpy()
                settings = {"eps": eps, "norm": "inf", "steps": s.steps, "eot": eot}
                if att == "pgd":
                    settings["restarts"] = s.restarts
            ctx.count("attack_runs")
            ctx.add({"key": key, **attack_row(name, "whitebox", label, x, y, adv, ctx.predict(model, adv), settings,
                                              pred_clean=pred_clean)})
        for att in s.minimal_attacks:
            key = f"{name}|whitebox|{att}"
            if ctx.done(key):
                continue
            adv = attack_correct(att, fn, x, y, pred_clean, np.inf, steps=s.steps, seed=s.seed)
            ctx.count("attack_runs")
            ctx.add({"key": key, **attack_row(name, "whitebox", att, x, y, adv, ctx.predict(model, adv),
                                              {"eps": None, "norm": "2" if att == "cw_l2" else "inf", "eot": eot},
                                              pred_clean=pred_clean, pass_limit=s.pass_limit)})


@register_suite("transfer", pixels=True, blackbox=True,
                note="Adversarial examples made on the source, kept only where the source was right, fed to each "
                     "target.")
def transfer_suite(ctx: SuiteContext) -> None:
    """Examples made once per source (default: every evaluated model) and attack, from the points the
    source gets right (the GLR authors' protocol), fed to every other model."""
    s, x, y, models = ctx.settings, ctx.x, ctx.y, ctx.models
    for src_dir in list(s.sources) or list(ctx.model_dirs):
        src_name = Path(src_dir).name
        src = models.get(src_name) or load_model(src_dir)
        keep = ctx.clean_pred(src_name, src) == y
        xs, ys = x[keep], y[keep]
        for att in s.transfer_attacks:
            for eps in s.eps_list:
                keys = {name: f"{name}|transfer|{src_name}|{att}|{eps}" for name in models if name != src_name}
                if all(ctx.done(k) for k in keys.values()):
                    continue
                adv = attack(att, logits_fn(src, stddev=0.0), xs, ys, eps, steps=s.steps, step_size=s.step_size,
                             restarts=s.restarts, seed=s.seed).numpy()
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


@register_suite("gradfree", pixels=True, blackbox=True,
                note="SPSA: never uses the model's gradient, so blank gradients cannot stop it; a model whose output "
                     "is flat under small probes (step activations) starves it too, and is marked.")
def gradfree_suite(ctx: SuiteContext) -> None:
    """Every registered query-only attack (``gradient="none"``: SPSA) on the points each model gets right."""
    s, x, y = ctx.settings, ctx.x, ctx.y
    for name, model in ctx.models.items():
        for att in list_attacks(gradient="none"):
            for eps in s.eps_list:
                key = f"{name}|gradfree|{att}|{eps}"
                if ctx.done(key):
                    continue
                pred = ctx.clean_pred(name, model)
                adv = attack_correct(att, logits_fn(model), x, y, pred, eps, steps=s.steps, seed=s.seed)
                ctx.count("attack_runs")
                ctx.add({"key": key, **attack_row(name, "gradfree", att, x, y, adv, ctx.predict(model, adv),
                                                  {"eps": eps, "norm": "inf", "steps": s.steps}, pred_clean=pred)})


@register_suite("corruption", images=True)
def corruption_suite(ctx: SuiteContext) -> None:
    """Every chosen corruption (default: every registered one) at severities 1-5, each corrupted set
    made once and fed to every model; then the mean over the GLR authors' four (eq. 6 of Li et al.
    2021) and, when others ran too, the mean over all of them."""
    x, y, models = ctx.x, ctx.y, ctx.models
    for cname in ctx.settings.corruptions:
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


@register_suite("voting",
                note="Noisy inference, majority vote; mean over repeats with its spread. Abstention: "
                     "randomized-smoothing binomial test (answered & right = correct and not abstained, over all "
                     "points).")
def voting_suite(ctx: SuiteContext) -> None:
    """Accuracy over the grid of inference stddevs x vote counts (each cell repeated), with
    randomized-smoothing abstention (Cohen et al. 2019) when ``abstain_alpha`` is set."""
    s, x, y = ctx.settings, ctx.x, ctx.y
    for name, model in ctx.models.items():
        noise = noise_settings(model)
        for stddev in s.stddevs:
            for grid_votes in s.votes_list:
                key = f"{name}|voting|{stddev}|{grid_votes}"
                if ctx.done(key) or (stddev == 0 and grid_votes > 1):
                    continue
                accs, abstain, kept_acc = [], [], []
                for repeat in range(s.vote_repeats if stddev > 0 else 1):
                    restart_noise(model, zlib.crc32(f"{s.seed}|{key}|{repeat}".encode()))  # same draws after a resume
                    counts = vote_counts(model, tf.constant(x), grid_votes, stddev).numpy()  # all votes in one call
                    ctx.count("model_passes", grid_votes)
                    accs.append(float(np.mean(counts.argmax(-1) == y)))
                    if s.abstain_alpha is not None and grid_votes > 1:
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


@register_suite("distortion", pixels=True,
                note="BANG's random-distortion test: points every model gets right, Gaussian noise of the given "
                     "stddev, share of copies whose class changes (accuracy column = 1 - that; CI over images).")
def distortion_suite(ctx: SuiteContext) -> None:
    """BANG's random-distortion test (Rozsa, Gunther and Boult 2016, section 4): many Gaussian copies
    of points every model gets right; the share whose predicted class changes. Noisy models predict
    by the vote of ``settings.votes`` passes, as everywhere else."""
    s, x, y = ctx.settings, ctx.x, ctx.y
    preds = {name: ctx.clean_pred(name, model) for name, model in ctx.models.items()}
    idx = common_correct(preds, y, s.distortion_per_class)
    for name, model in ctx.models.items():
        for stddev in s.distortion_stddevs:
            key = f"{name}|distortion|{stddev}"
            if ctx.done(key) or not len(idx):
                continue
            rate, se = changed_fraction(lambda im, m=model: ctx.predict(m, im, batch=4096), x[idx], stddev,
                                        s.distortion_draws, s.seed)
            ctx.count("model_passes", s.distortion_draws)
            ctx.add({"key": key, "model": name, "suite": "distortion", "corruption": "gaussian (BANG test)",
                     "stddev": stddev, "draws": s.distortion_draws, "n": int(len(idx)), "changed_rate": rate,
                     "accuracy": 1.0 - rate,
                     "ci95": [max(0.0, 1 - rate - 1.96 * se), min(1.0, 1 - rate + 1.96 * se)]})


__all__ = ["SUITES", "SuiteContext", "SuiteEntry", "SuiteSettings", "get_suite", "list_suites", "predict_classes",
           "register_suite"]
