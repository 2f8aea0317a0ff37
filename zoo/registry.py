"""Registries: :class:`Registry`, the one generic registry every pluggable part of glrzoo uses
(models here; estimators, optimizers and learning-rate schedules in ``training``; attacks,
corruptions and suites in ``evaluation``), and the model registry built on it: register a builder
by name, create by name with overrides, list by pattern.

The pattern is timm's: a decorator in the file that defines an entry registers it, and the
registry imports every module of its package before it is first read, so a new entry is one new
file imported by no one (:func:`import_submodules`). Code outside glrzoo's packages registers the
same way from a plugin module (:func:`load_plugins`): named in ``$GLRZOO_PLUGINS``, or declared by
an installed package under the entry-point group ``glrzoo.plugins``.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import functools
import inspect
import numbers
from typing import Callable

import keras

from zoo.errors import UserInputError

_IMPORTED: set[str] = set()
PLUGINS_ENV = "GLRZOO_PLUGINS"
PLUGIN_GROUP = "glrzoo.plugins"


@functools.cache
def _entry_point_plugins() -> tuple[str, ...]:
    """The modules installed packages declare under :data:`PLUGIN_GROUP`, read once per process
    (scanning every installed distribution costs milliseconds, and every registry read asks)."""
    from importlib import metadata

    return tuple(ep.value.split(":")[0] for ep in metadata.entry_points(group=PLUGIN_GROUP))


def load_plugins() -> None:
    """Import every plugin module once, so that its decorators register its entries (models,
    estimators, batch transforms, attacks, corruptions, suites...): the modules named in
    ``$GLRZOO_PLUGINS`` (comma-separated, importable from ``sys.path``) and those installed
    packages declare under the entry-point group ``glrzoo.plugins``::

        [project.entry-points."glrzoo.plugins"]
        my_attacks = "my_package.attacks"

    A plugin that cannot be imported is refused in one line naming it."""
    import importlib
    import os

    modules = [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    for module in [*modules, *_entry_point_plugins()]:
        key = f"plugin:{module}"
        if key in _IMPORTED:
            continue
        _IMPORTED.add(key)
        try:
            importlib.import_module(module)
        except ImportError as e:
            _IMPORTED.discard(key)
            raise UserInputError(f"glrzoo plugin {module!r} (from ${PLUGINS_ENV} or the {PLUGIN_GROUP!r} entry "
                                 f"points) cannot be imported ({e}); fix its name or put it on the Python path") from None


def import_submodules(package: str) -> None:
    """Import every module of ``package`` once (names starting with ``_`` excepted), so that each
    registers what it defines with its decorators: a new model, estimator, attack, corruption or
    suite is one new file, imported by no one."""
    if package in _IMPORTED:
        return
    _IMPORTED.add(package)
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package}.{module.name}")


class Registry(dict):
    """Entries by name, in registration order (a ``dict`` of name -> entry).

    Args:
        kind: what an entry is, for messages (``"attack"``).
        package: the package whose modules register the entries; imported before the first read.
        unknown: the message for an unknown name, formatted with ``kind``, ``name`` and ``choices``.

    Example:
        >>> ATTACKS = Registry("attack", package="evaluation")
        >>> ATTACKS.add("fgsm", entry)      # what a module's decorator does; a second "fgsm" is refused
        >>> ATTACKS.names("apgd_*")         # ['apgd_ce', 'apgd_dlr']
        >>> ATTACKS.entry("pgd")            # the entry, or one line naming the choices
    """

    def __init__(self, kind: str, *, package: str | None = None,
                 unknown: str = "unknown {kind} {name!r}; choose one of {choices}"):
        super().__init__()
        self.kind, self.package, self.unknown = kind, package, unknown

    def copy(self) -> Registry:
        """A registry with the same entries and settings (tests register into a copy)."""
        other = Registry(self.kind, package=self.package, unknown=self.unknown)
        other.update(self)
        return other

    def add(self, name: str, entry):
        """Register ``entry`` under ``name``; a name registered twice is a programming error (ValueError)."""
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self[name] = entry
        return entry

    def decorator(self, name: str, make_entry: Callable) -> Callable:
        """A decorator registering ``make_entry(fn)`` under ``name`` and returning ``fn`` unchanged
        (what each kind's ``register_*`` decorator is built from)."""
        def wrap(fn):
            self.add(name, make_entry(fn))
            return fn
        return wrap

    def load(self) -> None:
        """Import the package's modules and the plugins (each once), so that every entry is registered."""
        if self.package is not None:
            import_submodules(self.package)
        load_plugins()

    def names(self, pattern: str = "*", where: Callable | None = None) -> list[str]:
        """Names matching the shell-style ``pattern`` whose entry satisfies ``where``, in registration order."""
        self.load()
        return [n for n, e in self.items() if fnmatch.fnmatch(n, pattern) and (where is None or where(e))]

    def entry(self, name: str):
        """The entry of ``name``; :class:`UserInputError` (one line naming the choices) otherwise."""
        self.load()
        if name not in self:
            raise UserInputError(self.unknown.format(kind=self.kind, name=name, choices=", ".join(self)))
        return self[name]


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., keras.Model]
    description: str
    defaults: dict


MODELS = Registry("model", package="zoo.models",
                  unknown="unknown model {name!r}; run 'glrzoo models' to list them (e.g. {choices})")


def register_model(model_name: str, description: str, /, **defaults) -> Callable:
    """Decorator: register ``builder(input_shape, num_classes, **kwargs)`` under ``model_name``.

    ``defaults`` are keyword arguments bound for this name (so one builder can back several
    presets, e.g. ``mlp`` and ``glr_mlp``).
    """
    return MODELS.decorator(model_name, lambda builder: ModelEntry(model_name, builder, description, dict(defaults)))


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern`` (``"test_*"``), sorted."""
    return sorted(MODELS.names(pattern))


def get_entry(name: str) -> ModelEntry:
    """The registry entry of model ``name``; one line naming some choices otherwise."""
    MODELS.load()
    if name not in MODELS:
        raise UserInputError(MODELS.unknown.format(kind="model", name=name, choices=", ".join(list_models()[:4])))
    return MODELS[name]


def model_arguments(name: str, **overrides) -> dict:
    """The full keyword arguments ``create_model(name, ...)`` would use (defaults + overrides)."""
    entry = get_entry(name)
    params = inspect.signature(entry.builder).parameters
    args = {k: p.default for k, p in params.items()
            if p.default is not inspect.Parameter.empty and p.kind == p.KEYWORD_ONLY}
    args.update(entry.defaults)
    unknown = set(overrides) - set(args)
    if unknown:
        raise UserInputError(f"model {name!r} takes no argument(s) {sorted(unknown)}; it takes {sorted(args)}")
    args.update(overrides)
    return args


def create_model(name: str, input_shape, num_classes: int, **overrides) -> keras.Model:
    """Build the registered model ``name`` for inputs ``input_shape`` and ``num_classes`` outputs.

    The model outputs logits ``[batch, num_classes]``; every matrix multiply is a noisy layer.

    Example:
        >>> model = create_model("cnn6", (28, 28, 1), 10, noise="multiplicative", train_stddev=0.5)
    """
    entry = get_entry(name)
    args = model_arguments(name, **overrides)
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if (not shape or isinstance(input_shape, str)
            or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in shape)):
        raise UserInputError(f"input_shape must be a tuple of positive integers such as (28, 28, 1), "
                             f"got {input_shape!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 2:
        raise UserInputError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    shape = tuple(int(d) for d in shape)
    try:
        model = entry.builder(shape, int(num_classes), **args)
    except (ValueError, IndexError, TypeError) as e:
        if isinstance(e, UserInputError):
            raise
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise UserInputError(f"model {name!r} cannot be built for inputs of shape {shape} ({first[:160]}); "
                             f"give it inputs it was designed for (see 'glrzoo models {name}') or other "
                             "--model-args") from e
    empty = next((v for v in model.weights if 0 in tuple(v.shape)), None)
    if empty is not None:  # oneDNN aborts the process on a zero-width layer: refuse it here
        raise UserInputError(f"model {name!r} with these arguments has a layer of zero width ({empty.path} has shape "
                             f"{tuple(empty.shape)}); every width and filter count must be >= 1 (--model-args)")
    return model
