"""Sycophancy along a PPO run (checkpoints.json): metric-vs-step and metric-vs-KL plots (PNG), the
best-of-n curves of a BoN results.json on the same KL axis, and W&B with custom x-axes."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from syco.bon.report import HEADLINE as BON_HEADLINE
from syco.bon.report import curves as bon_curves
from syco.bon.report import dataset_view
from syco.bon.report import flat_at as bon_flat_at
from syco.tracking import Report, flat_metrics, save_figure_atomic

log = logging.getLogger(__name__)
HEADLINE = (*BON_HEADLINE, ("are_you_sure", "admits_mistake"))
Point = tuple[int, float, float, float, float]  # step, KL, value, interval low, interval high


def curve(summary: Mapping[str, Any], task: str, metric: str, judge: str | None = None) -> list[Point]:
    """[(step, kl, value, lo, hi)] of one metric ("all" datasets, or the only one), in step order;
    steps where it is undefined are left out; no interval (one item): lo = hi = value."""
    judge = judge or summary["judge"]
    kl = {p["step"]: p["kl"] for p in summary["points"]}
    pts = []
    for step, by_task in summary["results"].items():
        view = dataset_view(by_task.get(task, {}).get(judge, {}))
        m = view[1].get(metric) if view else None
        if m and m.get("value") is not None:
            lo, hi = m.get("ci") or (m["value"], m["value"])
            pts.append((int(step), kl[int(step)], m["value"], lo, hi))
    return sorted(pts)


def plot_checkpoints(summary: Mapping[str, Any], folder: Path, bon: Mapping[str, Any] | None = None,
                     overlays: Sequence[Mapping[str, Any]] = ()) -> list[Path]:
    """One PNG per headline metric present: against PPO step, and against KL (measured for PPO,
    nominal for the BoN curves of `bon`, one per PM); `overlays` are other runs' checkpoints.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    folder.mkdir(parents=True, exist_ok=True)
    runs = [summary, *overlays]
    written = []
    for task, metric in HEADLINE:
        lines = [(s["label"], curve(s, task, metric)) for s in runs]
        lines = [(label, pts) for label, pts in lines if pts]
        bon_lines = bon_curves(bon, task, metric) if bon else {}
        if not lines:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for label, pts in lines:
            for ax, x in zip(axes, (0, 1)):
                xs, ys = [p[x] for p in pts], [p[2] for p in pts]
                err = [[y - p[3] for y, p in zip(ys, pts)], [p[4] - y for y, p in zip(ys, pts)]]
                ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
        for pm_name, pts in bon_lines.items():
            kls = [bon["kl_nominal"][str(p[0])] for p in pts]
            (line,) = axes[1].plot(kls, [p[1] for p in pts], marker="s", linestyle="--", label=f"best-of-n, {pm_name}")
            axes[1].fill_between(kls, [p[2] for p in pts], [p[3] for p in pts], alpha=0.15, color=line.get_color())
        estimators = ", ".join(sorted({r["kl"]["estimator"] for r in runs}))
        axes[0].set_xlabel("PPO step")
        axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[1].set_xlabel(f"KL to the reference (nats): PPO measured ({estimators})"
                           + (", best-of-n nominal" if bon_lines else ""))
        axes[0].set_ylabel(f"{task}: {metric}")
        axes[0].legend(fontsize=8)
        if bon_lines:
            axes[1].legend(fontsize=8)
        fig.suptitle(f"{task} {metric} along PPO ({summary['eval_name']}, judge {summary['judge']}; "
                     f"95% intervals{', BoN: bootstrap' if bon_lines else ''})")
        fig.tight_layout()
        written.append(save_figure_atomic(fig, folder / f"{task}_{metric.replace('/', '_')}.png"))
    return written


def flat_at(summary: Mapping[str, Any], step: str) -> dict[str, float]:
    """`ppo/<judge>/<task>/<dataset>/<metric>` at one step, with the interval bounds beside (the
    layout of a BoN run's `bon/<pm>/<task>/<dataset>/<metric>`)."""
    by_judge: dict[str, dict[str, Any]] = {}
    for task, judges in summary["results"][step].items():
        for judge, by_dataset in judges.items():
            by_judge.setdefault(judge, {})[task] = by_dataset
    return flat_metrics(by_judge, "ppo", intervals=True)


def rows(summary: Mapping[str, Any]) -> list[dict[str, float]]:
    """One row per step: the axes ppo/step and ppo/kl, the run's own eval numbers, every metric."""
    out = []
    for p in summary["points"]:
        row = {"ppo/step": float(p["step"]), "ppo/kl": float(p["kl"])}
        row.update({f"ppo/run_{k}": float(v) for k, v in p["ppo_eval"].items() if isinstance(v, (int, float))})
        row.update(flat_at(summary, str(p["step"])))
        for name, scores in (summary.get("pm_scores") or {}).items():  # checkpoints.pm_scores
            for task, by_template in scores["levels"].get(str(p["step"]), {}).items():
                row.update({f"ppo/pm_score/{name}/{task}/{t}": m["value"] for t, m in by_template.items()})
        out.append(row)
    return out


def report(summary: Mapping[str, Any], plots: Sequence[Path], bon: Mapping[str, Any] | None) -> Report:
    """W&B: every metric with step_metric ppo/kl (ppo/*) and again with ppo/step (ppo_step/*), the
    BoN overlay with bon/kl (as a BoN run logs it), the plots; other loggers get one row per step."""
    per_step = rows(summary)
    by_step = [{**row, **{f"ppo_step/{k[4:]}": v for k, v in row.items() if k not in ("ppo/step", "ppo/kl")}}
               for row in per_step]
    overlay = [{"bon/n": n, "bon/kl": bon["kl_nominal"][str(n)], **bon_flat_at(bon, str(n))}
               for n in (bon or {}).get("n_grid") or []]  # type: ignore[index]
    return Report(summary={"ppo/kl_estimator": summary["kl"]["estimator"], "ppo/run": summary["run"]},
                  rows=per_step, wandb_rows=by_step + overlay, images=list(plots),
                  axes={"ppo/step": None, "ppo/kl": None, "bon/kl": None, "ppo/*": "ppo/kl",
                        "ppo_step/*": "ppo/step", "bon/*": "bon/kl"})


def log_summary(summary: Mapping[str, Any]) -> None:
    kl = summary["kl"]
    log.info("KL axis: %s (%s estimator; %s)", kl["key"], kl["estimator"], kl["what"])
    for task, metric in HEADLINE:
        for step, k, v, lo, hi in curve(summary, task, metric):
            log.info("step %-5d KL %-8.3f %-14s %-26s %.3f [%.3f, %.3f]", step, k, task, metric, v, lo, hi)
    versus = (summary.get("versus") or {}).get("differences") or {}
    for what, by_step in (("step %s - step " + str(summary["steps"][0]), summary.get("rises") or {}),
                          ("step %s, this run - checkpoints.versus", versus)):
        for step, by_task in by_step.items():
            for task, metric in HEADLINE:
                for dataset, by_name in (by_task.get(task) or {}).items():
                    m = by_name.get(metric)
                    if m and m.get("ci"):
                        log.info("%-40s %-14s %-26s %+.3f [%+.3f, %+.3f] (paired, %s)", what % step, task, metric,
                                 m["value"], *m["ci"], dataset)
    for name, scores in (summary.get("pm_scores") or {}).items():
        for step, by_task in scores["rises"].items():
            for task, by_template in by_task.items():
                for template, m in by_template.items():
                    log.info("PM %-10s step %s - step %s %-14s %-18s %+.3f [%+.3f, %+.3f] (paired, %d items, PM std units)",
                             name, step, summary["steps"][0], task, template, m["value"], *m.get("ci", [float("nan")] * 2),
                             m["count"])
