"""Best-of-n outputs: metric-vs-n and metric-vs-KL plots (PNG), and W&B with custom x-axes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from syco.tracking import Report, flat_metrics, save_figure_atomic

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
    """Every metric per n with n, log2 n and nominal KL as x-axes (W&B define_metric); the plots, the
    selected samples' table; the other loggers a row per n."""
    kl = summary["kl_nominal"]
    return Report(
        rows=[{"bon/n": n, "bon/kl": kl[str(n)], **flat_at(summary, str(n))} for n in summary["n_grid"]],
        wandb_rows=[{"bon/n": n, "bon/log2_n": math.log2(n), "bon/kl": kl[str(n)], **flat_at(summary, str(n))}
                    for n in summary["n_grid"]],
        axes={"bon/n": None, "bon/log2_n": None, "bon/kl": None, "bon/*": "bon/kl"},
        images=list(plots),
        tables={"bon/selected": (["task", "pm", "n", "dataset", "template", "prompt", "selected_response",
                                  "verdicts"], table)})
