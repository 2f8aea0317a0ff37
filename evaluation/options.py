"""Declared settings of the evaluation's parts: each suite and each attack owns a small frozen
dataclass of its settings, every field declared once with :func:`option` (default, help, how the
command line's text becomes a value, and the check), as ART's ``attack_params`` and
``_check_params`` do for its attacks.

From those declarations come the ``glrzoo evaluate`` flags (:func:`add_flags`, :func:`given`), the
checks of values passed from Python (:func:`make`) and the settings recorded with each report.
Field names are unique over all settings classes, so ``evaluate(..., certify_n=1000)`` finds its
owner by name (:func:`owner_of`).

Example, the settings of a new suite (its own module)::

    @dataclasses.dataclass(frozen=True)
    class ToySettings:
        toy_scale: float = option(1.0, "scale of the toy suite's noise", parse=number(low=0))

    @register_suite("toy", settings=ToySettings)
    def toy_suite(ctx, s: ToySettings) -> None: ...

gives ``glrzoo evaluate --suite toy --toy-scale 2``.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any, Callable, Iterable, Sequence

from zoo.errors import UserInputError


@dataclasses.dataclass(frozen=True)
class NoSettings:
    """The settings of a part that has none."""


def option(default: Any, help: str, *, flag: str | tuple[str, ...] | None = None, parse: Callable[[str], Any] | None = None,
           check: Callable[[Any], None] | None = None, shown: str | None = None, nargs: str | None = None):
    """A settings field: its ``default``, one line of ``help``, its ``flag`` (default: ``--`` and
    the field name with dashes; a tuple: the flag, then older names it still answers to), ``parse``
    (command-line text -> value; default: the text), ``check`` (value -> ``None``, or
    :class:`UserInputError`), the default as ``--help`` shows it and argparse's ``nargs`` (``"*"``:
    ``parse`` gets the list of words)."""
    metadata = {"help": help, "flag": flag, "parse": parse, "check": check, "shown": shown, "nargs": nargs}
    if isinstance(default, (list, dict, set)):
        raise TypeError("option defaults must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata=metadata)


def flags_of(field: dataclasses.Field) -> tuple[str, ...]:
    """The field's flag and the older names it still answers to."""
    flag = field.metadata.get("flag") or "--" + field.name.replace("_", "-")
    return (flag,) if isinstance(flag, str) else tuple(flag)


def flag_of(field: dataclasses.Field) -> str:
    return flags_of(field)[0]


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type) -> None:
    """One flag per field of ``cls``; unset flags stay ``None`` ("not given": the dataclass default)."""
    for f in dataclasses.fields(cls):
        shown = f.metadata.get("shown") or _text(f.default)
        extra = {"nargs": f.metadata["nargs"]} if f.metadata.get("nargs") else {}
        text = f"{f.metadata['help']} (default: {shown})".replace("%", "%%")
        parser.add_argument(*flags_of(f), dest=f.name, default=None, help=text, **extra)


def given(classes: Iterable[type], args: argparse.Namespace) -> dict:
    """``{field: value}`` of every flag of ``classes`` set on the command line, parsed (one line
    naming the flag for a bad value)."""
    out = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            text = getattr(args, f.name, None)
            if text is None:
                continue
            parse = f.metadata.get("parse")
            try:
                out[f.name] = parse(text) if parse else text
            except UserInputError as e:
                raise UserInputError(f"{flag_of(f)}: {e}") from None
    return out


def make(cls: type, **values):
    """``cls(**values)`` with sequences turned into tuples, each field checked (one line naming the
    setting otherwise); an unknown name is a ``TypeError``."""
    values = {k: tuple(v) if isinstance(v, (list, range)) else v for k, v in values.items()}
    settings = cls(**values)
    for f in dataclasses.fields(cls):
        check = f.metadata.get("check")
        if check is not None:
            try:
                check(getattr(settings, f.name))
            except UserInputError as e:
                raise UserInputError(f"{f.name} ({flag_of(f)}): {e}") from None
    return settings


def owner_of(name: str, classes: Sequence[type]) -> type | None:
    """The settings class among ``classes`` that declares field ``name`` (``None`` if none does)."""
    return next((cls for cls in classes if name in {f.name for f in dataclasses.fields(cls)}), None)


def check_unique(cls: type, others: Iterable[type], owner: str) -> None:
    """Refuse (ValueError: a programming error) a settings class whose field names another class
    already declares: names are global so that a flat ``evaluate(**settings)`` finds the owner."""
    taken = {f.name: o for o in others if o is not cls for f in dataclasses.fields(o)}
    clash = sorted(f.name for f in dataclasses.fields(cls) if f.name in taken)
    if clash:
        raise ValueError(f"{owner}: settings {clash} are already declared by {taken[clash[0]].__name__}")


def _text(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(_text(v) for v in value) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------- parsers and checks
def numbers(kind: type = float, low: float | None = None, high: float | None = None,
            above: bool = False) -> Callable[[str], tuple]:
    """Parser of comma-separated finite numbers in ``[low, high]`` (``(low, high]`` when ``above``; at least one)."""
    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(v) for v in str(text).split(",") if v.strip())
        except ValueError:
            raise UserInputError(f"must be comma-separated {'integers' if kind is int else 'numbers'}, "
                                 f"got {text!r}") from None
        if not values:
            raise UserInputError(f"needs at least one value, got {text!r}")
        within(low, high, above=above, integer=kind is int)(values)
        return values
    return parse


def number(kind: type = float, low: float | None = None, high: float | None = None,
           above: bool = False) -> Callable[[str], Any]:
    """Parser of one finite number in ``[low, high]`` (``(low, high]`` when ``above``)."""
    def parse(text: str):
        values = numbers(kind)(text)
        if len(values) != 1:
            raise UserInputError(f"must be one number, got {text!r}")
        within(low, high, above=above, integer=kind is int)(values[0])
        return values[0]
    return parse


def within(low: float | None = None, high: float | None = None, *, integer: bool = False,
           optional: bool = False, above: bool = False) -> Callable[[Any], None]:
    """Check: a number, or each number of a sequence, is finite and in ``[low, high]`` (``(low,
    high]`` when ``above``; ``None`` passes when ``optional``)."""
    def check(value) -> None:
        if value is None and optional:
            return
        many = isinstance(value, (tuple, list))
        for v in value if many else (value,):
            ok = (not isinstance(v, bool) and isinstance(v, (int, float)) or hasattr(v, "dtype")) \
                and math.isfinite(v) and (not integer or int(v) == v)
            if not ok or (low is not None and (v <= low if above else v < low)) or (high is not None and v > high):
                bounds = (f"in {'(' if above else '['}{low:g}, {high:g}]" if high is not None and low is not None
                          else f"{'>' if above else '>='} {low:g}" if low is not None
                          else f"<= {high:g}" if high is not None else "")
                what = f"{'an integer' if integer else 'a finite number'} {bounds}".strip()
                raise UserInputError(f"{'each value ' if many else ''}must be {what}, got {v!r}")
    return check


def names(choices: Callable[[], Sequence[str]], *, empty: bool = True) -> Callable[[str], tuple]:
    """Parser of comma-separated names, each one of ``choices()`` (read when parsing, so entries
    registered by plugins count); ``""`` is no name when ``empty``."""
    def parse(text: str) -> tuple:
        chosen = tuple(v.strip() for v in str(text).split(",") if v.strip())
        one_of(choices)(chosen)
        if not chosen and not empty:
            raise UserInputError(f"names none; choose from {', '.join(choices())}")
        return chosen
    return parse


def one_of(choices: Callable[[], Sequence[str]], *, optional: bool = True) -> Callable[[Any], None]:
    """Check: every name (a string or a sequence of them) is one of ``choices()`` (``None`` and
    ``""`` pass when ``optional``)."""
    def check(value) -> None:
        if not value and optional:
            return
        allowed = list(choices())
        bad = [v for v in ((value,) if isinstance(value, str) else value) if v not in allowed]
        if bad:
            raise UserInputError(f"unknown {', '.join(map(str, bad))}; choose from {', '.join(allowed)}")
    return check


# ``option(..., **kind)`` shorthands: the parser and the check of one kind of value
def integer(low: int | None = None, high: int | None = None) -> dict:
    """An integer in ``[low, high]``."""
    return {"parse": number(int, low, high), "check": within(low, high, integer=True)}


def real(low: float | None = None, high: float | None = None, *, above: bool = False, optional: bool = False) -> dict:
    """A finite number in ``[low, high]`` (``(low, high]`` when ``above``; ``None`` allowed when ``optional``)."""
    return {"parse": number(float, low, high, above), "check": within(low, high, above=above, optional=optional)}


def reals(low: float | None = None, high: float | None = None, *, above: bool = False, optional: bool = False) -> dict:
    """Comma-separated finite numbers in ``[low, high]`` (a tuple; ``None`` allowed when ``optional``)."""
    return {"parse": numbers(float, low, high, above), "check": within(low, high, above=above, optional=optional)}


def integers(low: int | None = None, high: int | None = None) -> dict:
    """Comma-separated integers in ``[low, high]`` (a tuple)."""
    return {"parse": numbers(int, low, high), "check": within(low, high, integer=True)}


def choice_list(choices: Callable[[], Sequence[str]]) -> dict:
    """Comma-separated names, each one of ``choices()`` (a tuple; ``None`` allowed: the field's own meaning)."""
    return {"parse": names(choices), "check": one_of(choices)}


__all__ = ["NoSettings", "add_flags", "check_unique", "choice_list", "given", "integer", "integers", "make", "names",
           "number", "numbers", "one_of", "option", "owner_of", "real", "reals", "within"]
