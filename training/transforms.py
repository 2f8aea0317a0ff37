"""Registered batch transforms: a training option in one module.

A batch transform maps ``(model, x, y, step) -> (x, y)`` before the estimator sees the batch
(:class:`training.trainer.Trainer`; Gaussian input noise and adversarial examples are built-in
ones). Registering a factory with its flag makes the option a flag of ``glrzoo train`` and
``glrzoo sweep``, a field of the run's settings (``TrainConfig.transforms``, so ``--resume``
checks it and ``metadata.json`` records it) and part of every run that sets it::

    @register_transform("label_noise", Flag("--label-noise", "share of labels replaced at random", float))
    def label_noise(share: float, *, seed: int):
        return LabelNoise(share, seed) if share > 0 else None     # None: the option is off

The factory gets the flag's value and the run's seed; it checks the value (``UserInputError``:
one line naming the flag) and returns the transform, or ``None`` for "off".
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from training.flags import Flag
from zoo.registry import Registry


@dataclasses.dataclass(frozen=True)
class TransformEntry:
    """A registered batch transform: its name (the key in ``TrainConfig.transforms``), its flag
    (``None``: a :class:`training.config.TrainConfig` field of the same name declares it, as
    ``--input-noise``, which recipes fill) and ``make(value, *, seed) -> transform or None``."""

    name: str
    flag: Flag | None
    make: Callable[..., Any]


TRANSFORMS = Registry("batch transform", package="training",
                      unknown="unknown batch transform {name!r}; choose from {choices}")


def register_transform(name: str, flag: Flag | None) -> Callable:
    """Decorator: register ``make(value, *, seed)`` as batch transform ``name`` with its ``flag``."""
    return TRANSFORMS.decorator(name, lambda make: TransformEntry(name, flag, make))


def list_transforms() -> list[str]:
    """Registered batch-transform names, in registration order."""
    return TRANSFORMS.names()


def build_transforms(values: dict, seed: int) -> list:
    """The transforms of ``values`` (``{name: flag value}``, e.g. ``TrainConfig.transforms``), in
    registration order; those whose factory returns ``None`` are off."""
    out = []
    for name in list_transforms():
        if values.get(name) is not None:
            transform = TRANSFORMS.entry(name).make(values[name], seed=seed)
            if transform is not None:
                out.append(transform)
    unknown = sorted(set(values) - set(list_transforms()))
    if unknown:
        TRANSFORMS.entry(unknown[0])  # one line naming the choices
    return out


__all__ = ["TRANSFORMS", "TransformEntry", "build_transforms", "list_transforms", "register_transform"]
