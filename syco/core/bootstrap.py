"""The paired percentile bootstrap over items (pure; no Lightning, no files).

Every interval syco reports for a resampled statistic comes from here: best-of-n metrics and
their differences between selectors, rises along PPO checkpoints, and PM score rises. Each round
draws n items with replacement once, and every statistic of the round reads that same draw:
paired, so a difference of two statistics carries no between-item variance twice.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping

import numpy as np


def bootstrap_intervals(statistics: Callable[[np.ndarray], Mapping[Hashable, float | None]], n: int, *,
                        rounds: int, level: float = 0.95, seed: int = 0) -> dict[Hashable, list[float]]:
    """{name: [low, high]}: percentile intervals of the statistics over `rounds` resamples of n items.

    `statistics(indices)` gets one round's draw (n indices into the items, with replacement) and
    returns {name: value}; a None value (undefined on that draw) is left out of that name's draws.
    A name with no draw gets no interval."""
    if n < 1 or rounds < 1:
        raise ValueError(f"need n >= 1 items and rounds >= 1, got n={n}, rounds={rounds}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    draws: dict[Hashable, list[float]] = {}
    for indices in np.random.default_rng(seed).integers(0, n, size=(rounds, n)):
        for name, value in statistics(indices).items():
            if value is not None:
                draws.setdefault(name, []).append(value)
    tail = (1 - level) / 2
    return {name: [float(x) for x in np.quantile(values, [tail, 1 - tail])] for name, values in draws.items()}
