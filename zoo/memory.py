"""Memory budgets: how many rows one forward pass may hold, so replicated passes can be chunked."""
from __future__ import annotations

import math

import keras

DEFAULT_BUDGET_BYTES = 1 << 30  # 1 GiB of activations per chunk keeps every zoo model well under 4 GiB


def activation_floats_per_example(model: keras.Model) -> int:
    """Sum over layers of the number of output values one example produces (float32 each)."""
    total = 0
    for layer in model.layers:
        shapes = layer.output.shape if hasattr(layer, "output") else None
        if shapes is None:
            continue
        total += math.prod(d for d in shapes[1:] if d is not None)
        internal = getattr(layer, "internal_floats_per_example", None)
        if internal is not None:  # e.g. an LSTM keeps per-step gates, noise and states
            total += internal()
    return max(total, 1)


def rows_per_chunk(model: keras.Model, budget_bytes: int = DEFAULT_BUDGET_BYTES, overhead: float = 4.0) -> int:
    """Rows (examples times replications or votes) one forward pass may take within ``budget_bytes``.

    ``overhead`` covers intermediates a layer keeps besides its output (noise, pre-activation,
    batch-norm statistics, recorded inputs).
    """
    per_row = 4 * overhead * activation_floats_per_example(model)
    return max(1, int(budget_bytes // per_row))
