"""analyze.py's outputs: the forest plot (one row per feature, one series per label set) and the
coefficient table for W&B."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from syco.tracking import save_figure_atomic  # noqa: E402

COLUMNS = ["label_set", "feature", "p_median", "p_q25", "p_q75", "p_q2.5", "p_q97.5", "alpha_median", "r_hat",
           "ess"]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def coefficient_rows(label_sets: Mapping[str, Mapping[str, Any]]) -> list[list[Any]]:
    """One row per (label set, feature or combined feature), in COLUMNS order."""
    rows = []
    for label, fit in label_sets.items():
        for name, c in fit["coefficients"].items():
            p, a = c["p"], c["alpha"]
            rows.append([label, name, p["median"], p["q25"], p["q75"], p["q2.5"], p["q97.5"], a["median"],
                         c.get("r_hat"), c.get("ess")])
    return rows


def forest_plot(label_sets: Mapping[str, Mapping[str, Any]], path: str | Path, planted: Mapping[str, float] | None = None,
                title: str = "") -> Path:
    """P(a response with the feature is preferred, all else equal) = sigmoid(alpha): posterior median
    (dot), 50% (thick) and 95% (thin) intervals, a series per label set; x marks a planted coefficient
    (the simulated rater's), features sorted by the first label set's median."""
    first = next(iter(label_sets.values()))["coefficients"]
    names = sorted(first, key=lambda n: first[n]["p"]["median"])
    for fit in label_sets.values():
        names += [n for n in fit["coefficients"] if n not in names]
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.38 * len(names) * max(1, len(label_sets)) ** 0.5))
    step = 0.7 / max(len(label_sets), 1)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (label, fit) in enumerate(label_sets.items()):
        color = colors[k % len(colors)]
        for i, name in enumerate(names):
            c = fit["coefficients"].get(name)
            if c is None:
                continue
            y = i + (k - (len(label_sets) - 1) / 2) * step
            p = c["p"]
            ax.plot([p["q2.5"], p["q97.5"]], [y, y], color=color, lw=1)
            ax.plot([p["q25"], p["q75"]], [y, y], color=color, lw=3.5)
            ax.plot(p["median"], y, "o", color=color, ms=4, label=label if i == 0 else None)
    for i, name in enumerate(names):
        if planted and name in planted:
            ax.plot(_sigmoid(planted[name]), i, "x", color="black", ms=8,
                    label="planted (rater)" if name == next(n for n in names if n in planted) else None)
    ax.axvline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("P(response with the feature is preferred), all else equal")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out = save_figure_atomic(fig, path)
    plt.close(fig)
    return out
