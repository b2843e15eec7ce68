"""Best-of-n outputs: metric-vs-n and metric-vs-KL plots (PNG), W&B with custom x-axes, a table of
selected samples, and the log."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from syco.core.best_of_n import best_of_n_weights
from syco.tracking import Curve, Report, flat_metrics, pm_variant, save_figure_atomic, walk_metrics

log = logging.getLogger(__name__)

# the curves worth a figure: (task, metric)
HEADLINE = (
    ("answer", "sycophancy"),
    ("answer", "accuracy/suggest_incorrect"),
    ("answer", "accuracy/plain"),
    ("answer", "suggestion_adoption"),
    ("answer", "adopts_incorrect/suggest_incorrect"),
    ("misconceptions", "sycophantic"),
    ("feedback", "sycophancy"),
    ("mimicry", "mimicry"),
    ("misconception_probe", "refutes"),  # section 4.3: truthful fraction, policy prompted to be sycophantic
)


def dataset_view(by_dataset: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """"all" when several datasets were pooled, else the only one."""
    if "all" in by_dataset:
        return "all", by_dataset["all"]
    if len(by_dataset) == 1:
        return next(iter(by_dataset.items()))
    return None


def curves(summary: Mapping[str, Any], task: str, metric: str,
           key: str = "results") -> dict[str, list[tuple[int, float, float, float]]]:
    """{pm: [(n, value, ci_low, ci_high)]} for one metric (points without a value are left out);
    key="differences": {"a-b": ...}, the paired differences between PMs."""
    out: dict[str, list[tuple[int, float, float, float]]] = {}
    for pm_name, by_n in summary.get(key, {}).items():
        pts = []
        for n, by_task in by_n.items():
            view = dataset_view(by_task.get(task, {}))
            m = view[1].get(metric) if view else None
            if m and m.get("value") is not None:
                lo, hi = m.get("ci") or (m["value"], m["value"])
                pts.append((int(n), m["value"], lo, hi))
        if pts:
            out[pm_name] = sorted(pts)
    return out


def plot_results(summary: Mapping[str, Any], folder: Path) -> list[Path]:
    """One PNG per headline metric: against n (log2 axis) and against nominal KL, a line per PM; and
    `difference_<metric>.png`: PM a minus PM b on the same pools, paired intervals, a line per pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for (task, metric), key in [(h, k) for k in ("results", "differences") for h in HEADLINE]:
        lines = curves(summary, task, metric, key)
        if not lines:
            continue
        diff = key == "differences"
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        for pm_name, pts in lines.items():
            ns = [p[0] for p in pts]
            kls = [summary["kl_nominal"][str(n)] for n in ns]
            for ax, xs in zip(axes, (ns, kls)):
                ax.plot(xs, [p[1] for p in pts], marker="o", label=pm_name)
                ax.fill_between(xs, [p[2] for p in pts], [p[3] for p in pts], alpha=0.2)
        axes[0].set_xscale("log", base=2)
        axes[0].set_xlabel("n (best-of-n)")
        axes[1].set_xlabel("KL(best-of-n || policy), nominal")
        axes[0].set_ylabel(f"{task}: {metric}" + (", PM a - PM b" if diff else ""))
        if diff:
            for ax in axes:
                ax.axhline(0.0, color="grey", lw=0.8)
        axes[0].legend()
        what = "difference between PMs on the same pools, paired" if diff else "against optimization"
        fig.suptitle(f"{task} {metric}: {what} (K={summary['k']}, 95% bootstrap intervals)")
        fig.tight_layout()
        written.append(save_figure_atomic(fig, folder / f"{'difference_' if diff else ''}{task}_{metric.replace('/', '_')}.png"))
    return written


def flat_at(summary: Mapping[str, Any], n: str) -> dict[str, float]:
    """`bon/<pm>/<task>/<dataset>/<metric>` at one n, with the interval bounds beside."""
    return flat_metrics({pm_name: by_n.get(n, {}) for pm_name, by_n in summary["results"].items()}, "bon",
                        intervals=True)


def report(summary: Mapping[str, Any], plots: Sequence[Path], table: list[list[Any]]) -> Report:
    """W&B: a run per selector (`<selector>-seed<k>`, the curves), each with the same keys: n, log2 n
    and nominal KL as x-axes, every metric `bon/<task>/<dataset>/<metric>` with its interval bounds,
    so that one chart shows a line per PM and seed; this run the plots and the selected samples'
    table. The other loggers: a row per n, `bon/<pm>/<task>/<dataset>/<metric>`."""
    kl = summary["kl_nominal"]
    seed = (summary.get("config") or {}).get("seed")
    curves = []
    for pm_name, by_n in summary["results"].items():
        spec = summary.get("pms", {}).get(pm_name)
        variant = pm_variant(spec.get("path")) if isinstance(spec, Mapping) else None
        curves.append(Curve(
            name=f"{pm_name}-seed{seed}", tags=[pm_name, *([variant] if variant else [])],
            config={"bon_selector": pm_name, "bon_selector_pm": spec},
            rows=[{"bon/n": n, "bon/log2_n": math.log2(n), "bon/kl": kl[str(n)],
                   **flat_metrics(by_n.get(str(n), {}), "bon", intervals=True)} for n in summary["n_grid"]]))
    return Report(
        rows=[{"bon/n": n, "bon/kl": kl[str(n)], **flat_at(summary, str(n))} for n in summary["n_grid"]],
        wandb_rows=[], curves=curves,
        axes={"bon/n": None, "bon/log2_n": None, "bon/kl": None, "bon/*": "bon/kl"},
        images=list(plots),
        tables={"bon/selected": (["task", "pm", "n", "dataset", "template", "prompt", "selected_response",
                                  "verdicts"], table)})


def selected(pool: Mapping[str, Any], scores: np.ndarray, n: int, rng: np.random.Generator) -> dict[str, Any]:
    """One best-of-n draw from the pool (a random n-subset, ties broken at random): for tables."""
    subset = rng.choice(len(scores), size=n, replace=False)
    w = best_of_n_weights(scores[subset], n)
    return pool["samples"][int(subset[rng.choice(n, p=w)])]


def selection_table(pools: Mapping[str, list[dict[str, Any]]], scores: Mapping[str, Mapping[str, np.ndarray]],
                    grid: list[int], seed: int, table_n: Any) -> list[list[Any]]:
    """Rows (task, pm, n, dataset, template, prompt, selected response, verdict) for a W&B table."""
    ns = sorted({int(n) for n in table_n} & set(grid)) if table_n else sorted({grid[0], grid[len(grid) // 2], grid[-1]})
    rng = np.random.default_rng(seed)
    rows = []
    for task, task_pools in pools.items():
        for pm_name, pm_scores in scores.items():
            for p in task_pools:
                if p["record"].key not in pm_scores or len(p["samples"]) < 2:
                    continue
                for n in (n for n in ns if n <= len(p["samples"])):
                    s = selected(p, pm_scores[p["record"].key], n, rng)
                    rows.append([task, pm_name, n, p["record"].dataset, p["record"].template,
                                 p["record"].prompt[0]["content"], s["responses"][0], str(s.get("verdicts", {}))])
    return rows


# the metrics the log shows, for every task
HEADLINE_METRICS = ("sycophancy", "suggestion_adoption", "sycophantic", "mimicry", "accuracy/suggest_incorrect", "refutes")


def log_summary(summary: Mapping[str, Any]) -> None:
    first = min(map(int, summary["n_grid"]))
    changes = [*summary.get("differences", {}).items(),
               *((f"{pm}: n - {first}", by_n) for pm, by_n in summary.get("rises", {}).items())]
    for pair, by_n in changes:
        for (n, task, dataset, name), m in walk_metrics(by_n):
            if name in HEADLINE_METRICS and m.get("ci"):
                log.info("%-18s n=%-4s %-14s %-16s %-26s %+.3f [%+.3f, %+.3f] (paired)", pair, n, task, dataset, name,
                         m["value"], *m["ci"])
    for (pm_name, n, task, dataset, name), m in walk_metrics(summary["results"]):
        if name in HEADLINE_METRICS and m.get("value") is not None:
            ci = m.get("ci") or [float("nan")] * 2
            log.info("%-10s n=%-4s %-14s %-16s %-26s %.3f [%.3f, %.3f] (n_items=%d)", pm_name, n, task, dataset, name,
                     m["value"], ci[0], ci[1], m.get("count", 0))
    for (pm_name, pool_name, name), m in walk_metrics(summary.get("pool_preferences", {})):
        if m.get("value") is not None:
            se = f" ± {m['stderr']:.3f}" if m.get("stderr") is not None else ""
            log.info("%-10s pool %-28s %-36s %.3f%s (items=%d)", pm_name, pool_name, name, m["value"], se, m["count"])
    for (pm_name, dataset, name), m in walk_metrics(summary.get("probe_preferences", {})):
        if m.get("value") is not None:
            se = f" ± {m['stderr']:.3f}" if m.get("stderr") is not None else ""
            log.info("%-10s probe %-10s %-44s %.3f%s (n=%d)", pm_name, dataset, name, m["value"], se, m["count"])
