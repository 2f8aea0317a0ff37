"""The one exception type for bad user input.

Raise :class:`UserInputError` (or a subclass) wherever the problem is in what the user asked for: an
unknown name, an out-of-range number, a path that is not an export. Its message is one line that
names the problem and the fix. The console script prints it as ``glrzoo: error: <message>`` and
exits with code 2; every other exception is a bug or an environment failure and keeps its
traceback (exit code 1).

It subclasses ``ValueError``, so code that caught ``ValueError`` before keeps working.
"""
from __future__ import annotations


class UserInputError(ValueError):
    """Bad input from the user: reported as one line, exit code 2."""


class OutputExistsError(UserInputError, FileExistsError):
    """The chosen output already exists (and neither ``--overwrite`` nor ``--resume`` was given)."""


__all__ = ["OutputExistsError", "UserInputError"]
