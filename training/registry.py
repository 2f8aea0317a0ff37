"""Gradient estimators by name, in the shape of timm's model registry.

An estimator factory becomes a ``--method`` of ``glrzoo train``, ``glrzoo sweep`` and ``glrzoo
tune`` with one decorator in its own module under ``training/``::

    @register_estimator("my_method", options=(Option("--my-sigma", "sigma", float, help="..."),),
                        search_space=lambda hp: {"sigma": hp.Float("my_sigma", 0.1, 2.0)})
    def my_method(*, loss: str = "ce", sigma: float = 1.0) -> MyEstimator:
        ...

Every module of the ``training`` package is imported the first time the registry is read, so the
new file needs no import anywhere else. ``options`` become command-line flags (a flag two
estimators share is one flag); ``search_space(hp)`` maps a ``keras_tuner.HyperParameters`` to the
factory's keyword arguments. Factories take keyword arguments only, ``loss`` among them.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

from zoo.errors import UserInputError
from zoo.registry import Registry


@dataclasses.dataclass(frozen=True)
class Option:
    """One factory argument exposed as a command-line flag.

    Attributes:
        flag: the flag, e.g. ``"--replications"``.
        kwarg: the factory's keyword argument it sets, e.g. ``"replications"``.
        type: converts the flag's text (``int``, ``float``; ``None`` for a switch).
        choices: allowed values, if a closed set.
        switch: a flag without a value that sets ``True``.
        help: one line for ``--help``.
    """

    flag: str
    kwarg: str
    type: Callable[[str], Any] | None = None
    choices: tuple | None = None
    switch: bool = False
    help: str = ""

    @property
    def dest(self) -> str:
        """The attribute name argparse gives the flag (``--bang-beta`` -> ``bang_beta``)."""
        return self.flag.lstrip("-").replace("-", "_")


@dataclasses.dataclass(frozen=True)
class EstimatorEntry:
    """A registered estimator: its factory, description, flags and tuning search space."""

    name: str
    factory: Callable[..., Any]
    description: str
    options: tuple[Option, ...] = ()
    search_space: Callable[[Any], dict] | None = None

    def hyperparameters(self, hp) -> dict:
        """The factory keyword arguments a keras-tuner trial ``hp`` stands for (``{}``: nothing tuned)."""
        return dict(self.search_space(hp)) if self.search_space is not None else {}


ESTIMATORS = Registry("--method", package="training", unknown="unknown --method {name!r}; choose one of {choices}")


def register_estimator(name: str, *, options=(), search_space: Callable[[Any], dict] | None = None,
                       description: str | None = None):
    """Decorator: register ``factory(*, loss, **kwargs) -> estimator`` under ``name``.

    Args:
        name: the ``--method`` value.
        options: :class:`Option` s, the factory arguments that get command-line flags.
        search_space: ``hp -> {kwarg: value}`` for ``glrzoo tune``.
        description: one line for listings (default: the first line of the factory's docstring).
    """
    def decorator(factory):
        if name in ESTIMATORS:
            raise ValueError(f"estimator {name!r} is already registered")
        params = inspect.signature(factory).parameters
        if "loss" not in params:
            raise TypeError(f"estimator factory {factory.__qualname__} needs a 'loss' keyword argument")
        for option in options:
            if option.kwarg not in params:
                raise TypeError(f"option {option.flag} sets {option.kwarg!r}, which {factory.__qualname__} does not take")
        doc = description or (inspect.getdoc(factory) or name).splitlines()[0]
        ESTIMATORS.add(name, EstimatorEntry(name, factory, doc, tuple(options), search_space))
        return factory
    return decorator


def list_estimators(pattern: str = "*") -> list[str]:
    """Registered estimator names matching the shell-style ``pattern``, in registration order."""
    return ESTIMATORS.names(pattern)


def get_estimator(name: str) -> EstimatorEntry:
    """The registry entry of ``name``; :class:`UserInputError` naming the choices otherwise."""
    return ESTIMATORS.entry(name)


def create_estimator(name: str, *, loss: str = "ce", **kwargs):
    """Build estimator ``name`` from keyword arguments (``training.run.TrainConfig.method_args``).

    Arguments the factory does not take, and values its validation refuses, are bad user input.
    """
    entry = get_estimator(name)
    params = inspect.signature(entry.factory).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise UserInputError(f"method {name!r} takes no option(s) {unknown}"
                                 + (f"; it takes {sorted(set(params) - {'loss'})}" if len(params) > 1 else ""))
    try:
        return entry.factory(loss=loss, **kwargs)
    except UserInputError:
        raise
    except ValueError as e:  # a factory's validation of its arguments: the user chose them
        raise UserInputError(f"--method {name}: {e}") from e


__all__ = ["ESTIMATORS", "EstimatorEntry", "Option", "create_estimator", "get_estimator", "list_estimators",
           "register_estimator"]
