"""A registry of model builders: register by name, create by name with overrides, list by pattern."""
from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import numbers
from typing import Callable

import keras

from zoo.errors import UserInputError


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., keras.Model]
    description: str
    defaults: dict


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(model_name: str, description: str, /, **defaults) -> Callable:
    """Decorator: register ``builder(input_shape, num_classes, **kwargs)`` under ``model_name``.

    ``defaults`` are keyword arguments bound for this name (so one builder can back several
    presets, e.g. ``mlp`` and ``glr_mlp``).
    """

    def wrap(builder):
        if model_name in _REGISTRY:
            raise ValueError(f"model {model_name!r} is already registered")
        _REGISTRY[model_name] = ModelEntry(model_name, builder, description, dict(defaults))
        return builder

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern`` (``"test_*"``), sorted."""
    _ensure_loaded()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_entry(name: str) -> ModelEntry:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise UserInputError(f"unknown model {name!r}; run 'glrzoo models' to list them (e.g. {', '.join(list_models()[:4])})")
    return _REGISTRY[name]


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


def _ensure_loaded() -> None:
    import zoo.models  # noqa: F401  (registers the families)


_IMPORTED: set[str] = set()


def import_submodules(package: str) -> None:
    """Import every module of ``package`` once (names starting with ``_`` excepted), so that each
    registers what it defines with its decorators: a new estimator, attack, corruption or suite is
    one new file, imported by no one. Used by the registries of ``training`` and ``evaluation``."""
    if package in _IMPORTED:
        return
    _IMPORTED.add(package)
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package}.{module.name}")
