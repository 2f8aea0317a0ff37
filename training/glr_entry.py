"""Registers the likelihood-ratio estimator :func:`training.glr.glr` as ``--method glr``.

This is the decorator :mod:`training.registry` asks for, applied as a call because ``glr.py`` was
being changed by someone else when the registry arrived; it can move onto ``glr()`` itself as
``@register_estimator("glr", options=OPTIONS, search_space=search_space)``.
"""
from __future__ import annotations

from training.glr import glr
from training.registry import Option, register_estimator

OPTIONS = (
    Option("--replications", "replications", int, help="noise draws per example (R)"),
    Option("--estimator-noise", "distribution", choices=("gaussian", "laplace"), help="estimator noise distribution"),
    Option("--sigma", "sigma", float, help="estimator noise scale"),
    Option("--baseline", "baseline", switch=True, help="subtract a leave-one-out baseline"),
    Option("--antithetic", "antithetic", switch=True, help="antithetic noise pairs (e, -e)"),
    Option("--layerwise", "layerwise", switch=True, help="noise in one layer per step, cycling"),
    Option("--qmc", "qmc", switch=True, help="stratified quasi-Monte Carlo noise"),
)


def search_space(hp) -> dict:
    """GLR's tuning space: replications, sigma and the four variance-reduction switches."""
    return {"replications": hp.Choice("replications", [10, 30, 100]),
            "sigma": hp.Float("sigma", 0.25, 2.0, sampling="log"),
            "baseline": hp.Boolean("baseline", default=True),
            "antithetic": hp.Boolean("antithetic", default=False),
            "layerwise": hp.Boolean("layerwise", default=False),
            "qmc": hp.Boolean("qmc", default=False)}


register_estimator("glr", options=OPTIONS, search_space=search_space,
                   description="Likelihood-ratio (GLR) gradients from forward passes only")(glr)
