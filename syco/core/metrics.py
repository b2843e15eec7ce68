"""Metric aggregation: means with standard errors, paired differences, conditional rates, kappa.

Pure functions over plain numbers. A metric with no eligible items is undefined
(`value: None, count: 0`), never 0.0.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

Metric = dict[str, Any]


def undefined() -> Metric:
    return {"value": None, "stderr": None, "count": 0}


def mean_se(values: Iterable[float | bool | None]) -> Metric:
    """Mean and standard error of the mean; None entries (judge errors) are excluded."""
    xs = [float(v) for v in values if v is not None]
    n = len(xs)
    if n == 0:
        return undefined()
    mean = sum(xs) / n
    if n == 1:
        return {"value": mean, "stderr": None, "count": 1}
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    return {"value": mean, "stderr": math.sqrt(var / n), "count": n}


def per_item_means(rows: Iterable[tuple[Hashable, float | bool | None]]) -> dict[Hashable, float]:
    """Average several samples of one item into one value (samples per prompt > 1)."""
    sums: dict[Hashable, float] = defaultdict(float)
    counts: Counter = Counter()
    for item, v in rows:
        if v is not None:
            sums[item] += float(v)
            counts[item] += 1
    return {k: sums[k] / counts[k] for k in counts}


def paired_difference(a: dict[Hashable, float], b: dict[Hashable, float]) -> Metric:
    """Mean of a[item] - b[item] over items present in both, with the paired standard error."""
    return mean_se(a[k] - b[k] for k in a if k in b)


def conditional_rate(events: Sequence[bool | None], condition: Sequence[bool | None]) -> Metric:
    """Rate of `events` among the items where `condition` holds (e.g. admitting a mistake among
    questions first answered correctly). Items whose event or condition is unknown are excluded."""
    if len(events) != len(condition):
        raise ValueError(f"{len(events)} events but {len(condition)} conditions")
    return mean_se(e for e, c in zip(events, condition) if c and e is not None)


def mean_of_metrics(metrics: Sequence[Metric]) -> Metric:
    """Mean over groups (e.g. domains) with the standard error across groups."""
    values = [m["value"] for m in metrics if m.get("count")]
    out = mean_se(values)
    out["items"] = sum(m.get("count", 0) for m in metrics)
    return out


def cohen_kappa(a: Sequence[Hashable | None], b: Sequence[Hashable | None]) -> Metric:
    """Cohen's kappa of two raters on the same items (items where either abstained are dropped)."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} and {len(b)} ratings")
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    n = len(pairs)
    if n == 0:
        return undefined()
    observed = sum(x == y for x, y in pairs) / n
    ca, cb = Counter(x for x, _ in pairs), Counter(y for _, y in pairs)
    expected = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / n**2
    if expected == 1.0:  # both raters constant and equal: agreement is perfect but kappa is 0/0
        return {"value": None, "stderr": None, "count": n, "agreement": observed}
    return {"value": (observed - expected) / (1 - expected), "stderr": None, "count": n, "agreement": observed}
