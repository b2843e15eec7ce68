"""How many optimizer steps a training run takes: what a learning-rate schedule spans."""

from __future__ import annotations

import math


def optimizer_steps(batches_per_epoch: int, max_epochs: int | None, max_steps: int = -1, accumulate: int = 1) -> int:
    """Optimizer steps of a Lightning fit: `max_epochs` epochs of `ceil(batches / accumulate)` steps,
    capped by `max_steps` (-1: no cap; `max_epochs` -1 or None: `max_steps` alone), as Lightning's
    `estimated_stepping_batches` counts them. Computed from sizes, not by building the loaders, so a
    resumed run builds its loader only after its checkpoint (and position in the epoch) is restored."""
    if batches_per_epoch < 0 or accumulate < 1:
        raise ValueError(f"batches_per_epoch={batches_per_epoch}, accumulate={accumulate}: expected >= 0 and >= 1")
    if max_epochs is None or max_epochs == -1:
        if max_steps == -1:
            raise ValueError("max_epochs=-1 with max_steps=-1 never stops: set one of them")
        return max_steps
    per_epoch = math.ceil(batches_per_epoch / accumulate)
    total = per_epoch * max(max_epochs, 1)
    return min(total, max_steps) if max_steps != -1 else total


def batches_per_epoch(items: int, batch_size: int, world_size: int = 1, limit: int | float = 1.0) -> int:
    """Batches of one rank in one epoch: `items` split over `world_size` ranks (the distributed sampler
    pads to equal shares), `batch_size` per batch, the last one partial, then Lightning's
    `limit_train_batches` (a fraction, or a count)."""
    per_rank = math.ceil(items / world_size)
    batches = math.ceil(per_rank / batch_size)
    if isinstance(limit, float):
        return int(batches * limit) if limit < 1.0 else batches
    return min(batches, int(limit))
