"""Best-of-n outputs: metric-vs-n and metric-vs-KL plots (PNG), and W&B with custom x-axes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from syco.tracking import build_loggers

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
        path = folder / f"{'difference_' if diff else ''}{task}_{metric.replace('/', '_')}.png"
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp, dpi=110)
        tmp.replace(path)
        plt.close(fig)
        written.append(path)
    return written


def flat_metrics(summary: Mapping[str, Any], n: str) -> dict[str, float]:
    """`bon/<pm>/<task>/<dataset>/<metric>` at one n, with the interval bounds beside."""
    flat: dict[str, float] = {}
    for pm_name, by_n in summary["results"].items():
        for task, by_dataset in by_n.get(n, {}).items():
            for dataset, metrics in by_dataset.items():
                for name, m in metrics.items():
                    if m.get("value") is None:
                        continue
                    key = f"bon/{pm_name}/{task}/{dataset}/{name}"
                    flat[key] = m["value"]
                    if m.get("ci"):
                        flat[f"{key}/ci_low"], flat[f"{key}/ci_high"] = m["ci"]
    return flat


def track(cfg: DictConfig, summary: Mapping[str, Any], plots: Sequence[Path], table: list[list[Any]]) -> None:
    """Every metric per n with n, log2 n and nominal KL as x-axes (W&B define_metric); CSV gets rows."""
    from lightning.pytorch.loggers import WandbLogger

    loggers = build_loggers(cfg)
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            import wandb

            run = lg.experiment
            for axis in ("bon/n", "bon/log2_n", "bon/kl"):
                run.define_metric(axis)
            run.define_metric("bon/*", step_metric="bon/kl")
            for n in summary["n_grid"]:
                run.log({"bon/n": n, "bon/log2_n": math.log2(n), "bon/kl": summary["kl_nominal"][str(n)],
                         **flat_metrics(summary, str(n))})
            run.log({f"plots/{p.stem}": wandb.Image(str(p)) for p in plots})
            columns = ["task", "pm", "n", "dataset", "template", "prompt", "selected_response", "verdicts"]
            run.log({"bon/selected": wandb.Table(columns=columns, data=table)})
        else:
            for step, n in enumerate(summary["n_grid"]):
                lg.log_metrics({"bon/n": n, "bon/kl": summary["kl_nominal"][str(n)], **flat_metrics(summary, str(n))},
                               step=step)
        lg.finalize("success")
