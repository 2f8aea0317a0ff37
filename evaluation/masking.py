"""The gradient-masking audit: one registered rule per symptom, run over a model's harness rows.

The checks follow the checklist of Carlini, Athalye, Papernot, Brendel, Rauber, Tsipras,
Goodfellow, Madry and Kurakin (2019), "On Evaluating Adversarial Robustness" (arXiv:1902.06705,
the sanity checks of its evaluation checklist), and the symptoms of obfuscated gradients in
Athalye, Carlini and Wagner (ICML 2018), section 3.1. A flag means the model's white-box numbers
are not evidence of robustness; real robustness (accuracy that stays up under the strongest attack
while every sanity check passes, as for PGD or TRADES adversarial training) raises none, however
high it stays at the largest eps.

A rule is a function ``rule(m: ModelRows) -> str | None`` (the flag with its reason, or ``None``)
registered with :func:`register_masking_rule` in any module of ``evaluation``; :func:`masking_flags`
runs every rule in registration order. "More" below means by over ``tolerance`` (2 points), so
sampling noise alone does not raise a flag.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from evaluation.attacks import get_attack, list_attacks
from evaluation.suites import get_suite, list_suites
from zoo.registry import Registry

MASKING_TOLERANCE = 0.02  # accuracy differences below 2 points are read as noise, not as a sign of masking
# APGD-CE leaving 15 points more than the whole ensemble: the cross-entropy gradient is saturated. A real
# adversarially trained model shows a smaller gap (mnist/madry_cnn_pgd at eps 0.3: 38.5% vs 25.0%, 200 points).
CE_GAP = 0.15

RULES = Registry("masking rule", package="evaluation")


@dataclasses.dataclass(frozen=True)
class ModelRows:
    """One model's harness rows, sorted out for the rules.

    Attributes:
        rows: every row of the model.
        clean: its ``clean`` row (``None`` if that suite did not run).
        whitebox: its eps-ball ``whitebox`` rows.
        single_step: names of the registered single-step attacks (FGSM).
        blackbox_suites: names of the suites registered with ``blackbox=True`` (transfer, gradient-free).
        stand_ins: attacks on a smoothed or surrogate gradient (``pgd_smoothed``, ``gradient="surrogate"``).
        tolerance: accuracy difference (a fraction) below which two numbers count as equal.
    """

    rows: list
    clean: dict | None
    whitebox: list
    single_step: frozenset
    blackbox_suites: frozenset
    stand_ins: frozenset
    tolerance: float

    @property
    def iterative(self) -> list:
        return [r for r in self.whitebox if r["attack"] not in self.single_step]


@dataclasses.dataclass(frozen=True)
class MaskingRule:
    name: str
    check: Callable[[ModelRows], str | None]
    description: str


def register_masking_rule(name: str, description: str) -> Callable:
    """Decorator: ``check(m: ModelRows) -> flag text or None`` becomes the audit's rule ``name``."""
    return RULES.decorator(name, lambda check: MaskingRule(name, check, description))


@register_masking_rule("blank_gradients", "some inputs have an exactly zero loss gradient (shattered gradients)")
def _blank_gradients(m: ModelRows) -> str | None:
    if m.clean and m.clean.get("blank_gradient_fraction", 0) > 0:
        return f"blank_gradients ({100 * m.clean['blank_gradient_fraction']:.0f}% of inputs)"
    return None


@register_masking_rule("flat_finite_differences", "over 5% of small random probes leave the output exactly unchanged, "
                                                  "so SPSA-style gradient-free numbers are not evidence either")
def _flat_finite_differences(m: ModelRows) -> str | None:
    if m.clean and m.clean.get("flat_probe_fraction", 0) > 0.05:
        return f"flat_finite_differences ({100 * m.clean['flat_probe_fraction']:.0f}% of probes)"
    return None


@register_masking_rule("unbounded_attack_fails", "the reference attack at eps >= 1 (any image reachable) leaves a "
                                                 "correctly classified point unbroken; it must reach 100% success")
def _unbounded_attack_fails(m: ModelRows) -> str | None:
    for r in sorted((r for r in m.iterative if r["eps"] >= 1.0), key=lambda r: r["eps"]):
        if r.get("success_rate", 0.0) < 1.0:
            return (f"unbounded_attack_fails (eps {r['eps']}: {r['attack']} {100 * r['success_rate']:.1f}% "
                    "success, not 100%)")
    return None


@register_masking_rule("single_step_beats_iterative", "at some eps an iterative white-box attack leaves more "
                                                      "accuracy than a single-step one")
def _single_step_beats_iterative(m: ModelRows) -> str | None:
    for r in m.iterative:
        worse = [o for o in m.whitebox if o["attack"] in m.single_step and o["eps"] == r["eps"]
                 and o["accuracy"] < r["accuracy"] - m.tolerance]
        if worse:
            return (f"single_step_beats_iterative (eps {r['eps']}: {r['attack']} {100 * r['accuracy']:.1f}% "
                    f"vs {worse[0]['attack']} {100 * worse[0]['accuracy']:.1f}%)")
    return None


@register_masking_rule("whitebox_above_blackbox", "an iterative white-box attack leaves more accuracy than a "
                                                  "black-box one (transfer, gradient-free) at the same eps")
def _whitebox_above_blackbox(m: ModelRows) -> str | None:
    for r in m.iterative:
        worse = [o for o in m.rows if o["suite"] in m.blackbox_suites and o.get("eps") == r["eps"]
                 and o["accuracy"] < r["accuracy"] - m.tolerance]
        if worse:
            o = worse[0]
            src = f" from {o['source']}" if o.get("source") else ""
            return (f"whitebox_above_blackbox (eps {r['eps']}: {r['attack']} {100 * r['accuracy']:.1f}% vs "
                    f"{o['suite']} {o['attack']}{src} {100 * o['accuracy']:.1f}%)")
    return None


@register_masking_rule("accuracy_rises_with_eps", "an attack leaves more accuracy at a larger eps than at a smaller one")
def _accuracy_rises_with_eps(m: ModelRows) -> str | None:
    for label in dict.fromkeys(r["attack"] for r in m.whitebox):
        curve = sorted((r["eps"], r["accuracy"]) for r in m.whitebox if r["attack"] == label)
        rise = next(((a, b) for i, a in enumerate(curve) for b in curve[i + 1:] if b[1] > a[1] + m.tolerance), None)
        if rise:
            (e0, a0), (e1, a1) = rise
            return f"accuracy_rises_with_eps ({label}: {100 * a0:.1f}% at eps {e0}, {100 * a1:.1f}% at eps {e1})"
    return None


@register_masking_rule("plain_gradient_weaker_than_smoothed", "(step-activation nets) PGD on the model's own gradient "
                                                              "leaves accuracy well above PGD on a smooth stand-in")
def _plain_gradient_weaker_than_smoothed(m: ModelRows) -> str | None:
    plain = {r["eps"]: r["accuracy"] for r in m.whitebox if r["attack"] == "pgd"}
    for r in m.whitebox:
        if r["attack"] in m.stand_ins and r["eps"] in plain and r["accuracy"] < plain[r["eps"]] - m.tolerance:
            return (f"plain_gradient_weaker_than_smoothed (eps {r['eps']}: pgd {100 * plain[r['eps']]:.0f}% "
                    f"vs {r['attack']} {100 * r['accuracy']:.0f}%)")
    return None


@register_masking_rule("ce_gradient_saturated", "the ensemble's APGD-CE member leaves at least 15 points more than the "
                                                "whole ensemble: the cross-entropy gradient vanishes (Croce and Hein "
                                                "2020, section 4)")
def _ce_gradient_saturated(m: ModelRows) -> str | None:
    for r in m.whitebox:
        after = r.get("accuracy_after") or {}
        if "apgd_ce" in after and len(after) > 1 and after["apgd_ce"] - min(after.values()) >= CE_GAP:
            return (f"ce_gradient_saturated (eps {r['eps']}: apgd_ce {100 * after['apgd_ce']:.1f}% vs "
                    f"{r['attack']} {100 * min(after.values()):.1f}%)")
    return None


def masking_flags(rows: list[dict], tolerance: float = MASKING_TOLERANCE) -> dict:
    """Gradient-masking audit per model: ``{model: [flag with its reason, ...]}`` (empty: none raised),
    every registered rule (:data:`RULES`) run on each model's rows."""
    blackbox = frozenset(name for name in list_suites() if get_suite(name).blackbox)
    single = frozenset(name for name in list_attacks() if get_attack(name).single_step)
    stand_ins = frozenset({"pgd_smoothed", *list_attacks(gradient="surrogate")})
    rules = [RULES[name] for name in RULES.names()]
    flags: dict[str, list[str]] = {}
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        m = ModelRows(rows=mine, clean=next((r for r in mine if r["suite"] == "clean"), None),
                      whitebox=[r for r in mine if r["suite"] == "whitebox" and r.get("eps") is not None],
                      single_step=single, blackbox_suites=blackbox, stand_ins=stand_ins, tolerance=tolerance)
        flags[name] = [flag for flag in (rule.check(m) for rule in rules) if flag]
    return flags


__all__ = ["CE_GAP", "MASKING_TOLERANCE", "ModelRows", "RULES", "masking_flags", "register_masking_rule"]
