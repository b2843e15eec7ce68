"""The interval across seeds: a Student-t interval of the seed values (n_seeds - 1 degrees of
freedom), with the t quantile computed exactly for integer degrees of freedom (no scipy)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

INTERVAL = ("t-interval across seeds: mean ± t_{(1+level)/2, n_seeds-1} · sd / √n_seeds, sd the sample standard "
            "deviation of the seeds' values (n_seeds - 1 degrees of freedom); each seed is one value (its own "
            "item-level interval is not used); no interval with one seed")


def t_central(t: float, dof: int) -> float:
    """P(|T| <= t) for Student's t with integer `dof` (Abramowitz & Stegun 26.7.3 / 26.7.4)."""
    if t <= 0:
        return 0.0
    theta = math.atan(t / math.sqrt(dof))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if dof % 2:  # odd: (2/π)(θ + sinθ cosθ (1 + 2/3 cos²θ + ... ))
        term, total = 1.0, 1.0 if dof > 1 else 0.0
        for k in range(1, (dof - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        return 2 / math.pi * (theta + s * math.cos(theta) * total)
    term, total = 1.0, 1.0  # even: sinθ (1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + ...)
    for k in range(1, dof // 2):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def t_quantile(level: float, dof: int) -> float:
    """The t with P(|T| <= t) = level (e.g. level 0.95, dof 2: 4.3027), by bisection."""
    if not 0 < level < 1 or dof < 1:
        raise ValueError(f"t_quantile needs 0 < level < 1 and dof >= 1, got level={level}, dof={dof}")
    lo, hi = 0.0, 1.0
    while t_central(hi, dof) < level:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_central(mid, dof) < level else (lo, mid)
    return (lo + hi) / 2


def across_seeds(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """{mean, ci, sd, n_seeds, t}: the mean of the seed values and its t-interval (ci, sd and t None
    with fewer than 2 values; mean None with none)."""
    n = len(values)
    if n == 0:
        return {"mean": None, "ci": None, "sd": None, "n_seeds": 0, "t": None}
    mean = math.fsum(values) / n
    if n == 1:
        return {"mean": mean, "ci": None, "sd": None, "n_seeds": 1, "t": None}
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    t = t_quantile(level, n - 1)
    half = t * sd / math.sqrt(n)
    return {"mean": mean, "ci": [mean - half, mean + half], "sd": sd, "n_seeds": n, "t": t}
