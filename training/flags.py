"""Command-line value types and the declaration of a training setting.

Each :class:`training.config.TrainConfig` field that has a flag is declared once, with
:func:`setting`: its default, its help, its flag and its value type; ``glrzoo train`` builds its
flags from those declarations, :mod:`training.recipes` reads which fields a recipe may fill, and
the metadata records the fields. The value types raise ``argparse.ArgumentTypeError``, so a bad
value is one ``glrzoo: error:`` line naming the flag.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from typing import Any, Callable


def finite(text: str) -> float:
    """A finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def non_negative(text: str) -> float:
    """A finite number >= 0 (a stddev, a radius, a decay)."""
    value = finite(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive(text: str) -> float:
    """A finite number > 0."""
    value = finite(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def json_object(text: str) -> dict:
    """A JSON object of finite values, e.g. ``'{"hidden": [100, 50]}'``."""
    def refuse(name):
        raise argparse.ArgumentTypeError(f"{name} is not a finite number; give finite values")

    try:
        value = json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e.msg}); e.g. '{{\"hidden\": [100, 50]}}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object such as '{\"hidden\": [100, 50]}'")
    return value


@dataclasses.dataclass(frozen=True)
class Flag:
    """How a setting appears on the command line.

    Attributes:
        flag: the option, e.g. ``"--lr"``.
        help: one line, or a callable returning it (read when the parser is built, like ``choices``);
            the default is appended by the CLI.
        type: converts the text (:func:`positive`, ...); ``None`` for text.
        choices: the allowed values, or a callable returning them (read when the parser is built,
            so a registry's names include entries registered since).
        metavar: the placeholder in ``--help``.
        switch: a ``--flag/--no-flag`` pair (``argparse.BooleanOptionalAction``).
        recipe: a training recipe may fill it (:data:`training.recipes.RECIPE_FIELDS`): unset on the
            command line means "not given", and the help names the recipe.
        shown_default: the default as ``--help`` prints it (default: the field's default).
    """

    flag: str
    help: str | Callable[[], str]
    type: Callable[[str], Any] | None = None
    choices: Any = None
    metavar: str | None = None
    switch: bool = False
    recipe: bool = True
    shown_default: Any = None


def setting(default=dataclasses.MISSING, *, default_factory=dataclasses.MISSING, flag: Flag | None = None,
            recipe: bool | None = None):
    """A :class:`TrainConfig` field: its default and, if it has one, its :class:`Flag`. ``recipe``
    marks a field a recipe may set that has no flag of its own (``method_args``, ``adversarial``:
    their flags are the estimators' options and the adversarial group)."""
    metadata = {"flag": flag, "recipe": flag.recipe if flag is not None and recipe is None else bool(recipe)}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)



def registry_help(what: str, registry) -> str:
    """``"what: name: description; ..."`` over the entries registered now (argparse's ``%`` escaped)."""
    entries = "; ".join(f"{n}: {registry.entry(n).description}" for n in registry.names())
    return f"{what}: {entries}".replace("%", "%%")


__all__ = ["Flag", "finite", "json_object", "non_negative", "positive", "positive_int", "registry_help", "setting"]
