"""Pieces shared by the model builders."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class NoiseArgs:
    """Noise settings given to every noisy layer of a model; layer ``i`` gets seed ``seed + 1000 i``
    (:meth:`layer`), so the layers' noise streams never overlap for any seed below 1000."""

    noise: str = "additive"
    train_stddev: float = 0.0
    infer_stddev: float = 0.0
    seed: int = 0

    def layer(self, index: int) -> dict:
        return dict(noise=self.noise, train_stddev=self.train_stddev, infer_stddev=self.infer_stddev,
                    seed=self.seed + 1000 * index)


class Counter:
    """Hands out consecutive layer indices (for names and seeds)."""

    def __init__(self):
        self.i = 0

    def __call__(self) -> int:
        self.i += 1
        return self.i

