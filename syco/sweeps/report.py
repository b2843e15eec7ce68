"""seeds.json's curves drawn and logged: one PNG per metric (against n or PPO step, and against
KL), a line per selector / PM with its band across seeds; W&B: one run per line in one group, all
with the same keys, so that one chart shows one line per selector / PM."""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from syco.tracking import Curve, Report, save_figure_atomic, send, wandb_logger

log = logging.getLogger(__name__)


def file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")


def metric_keys(group: Mapping[str, Any], patterns: Sequence[str] = ()) -> list[str]:
    keys = sorted({k for line in group["lines"].values() for k in line["metrics"]})
    return [k for k in keys if not patterns or any(fnmatch.fnmatch(k, p) for p in patterns)]


def plot_group(group: Mapping[str, Any], folder: Path, level: float, patterns: Sequence[str] = ()) -> list[Path]:
    """<folder>/<kind>_<task>_<dataset>_<metric>.png for each metric of the group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key in metric_keys(group, patterns):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        seeds = set()
        for line, data in group["lines"].items():
            m = data["metrics"].get(key)
            if m is None:
                continue
            seeds.add(len(data["seeds"]))
            pts = [(p, k) for p, k in zip(m["points"], data["kl"]) if p["mean"] is not None]
            if not pts:
                continue
            for ax, xs in zip(axes, ([p["x"] for p, _ in pts], [k["mean"] for _, k in pts])):
                (drawn,) = ax.plot(xs, [p["mean"] for p, _ in pts], marker="o", label=f"{line} ({len(data['seeds'])} seeds)")
                band = [(x, *p["ci"]) for x, (p, _) in zip(xs, pts) if p["ci"]]
                if band:
                    ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band], alpha=0.2,
                                    color=drawn.get_color())
        if group["kind"] == "bon":
            axes[0].set_xscale("log", base=2)
            axes[0].set_xlabel("n (best-of-n)")
            axes[1].set_xlabel("KL(best-of-n || policy), nominal")
        else:
            axes[0].set_xlabel("PPO step")
            axes[1].set_xlabel("KL to the reference (nats), measured, mean across seeds")
        axes[0].set_ylabel(key)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{group['name']}: {key}, mean across seeds, {level:.0%} t-interval across seeds")
        fig.tight_layout()
        written.append(save_figure_atomic(fig, folder / f"{file_name(group['kind'] + '_' + key)}.png"))
    return written


def rows(line: Mapping[str, Any], patterns: Sequence[str] = ()) -> list[dict[str, float]]:
    """One W&B row per x: the axes seeds/x and seeds/kl, each metric's mean, interval and sd as
    seeds/<task>/<dataset>/<metric>[/ci_low|/ci_high|/sd] (against KL) and seeds_x/... (against x)."""
    out = []
    for i, x in enumerate(line["x"]):
        row: dict[str, float] = {"seeds/x": float(x)}
        if line["kl"][i]["mean"] is not None:
            row["seeds/kl"] = line["kl"][i]["mean"]
        for key, m in line["metrics"].items():
            if patterns and not any(fnmatch.fnmatch(key, p) for p in patterns):
                continue
            p = m["points"][i]
            if p["mean"] is None:
                continue
            vals = {key: p["mean"]}
            if p["ci"]:
                vals.update({f"{key}/ci_low": p["ci"][0], f"{key}/ci_high": p["ci"][1], f"{key}/sd": p["sd"]})
            row.update({f"seeds/{k}": v for k, v in vals.items()})
            row.update({f"seeds_x/{k}": v for k, v in vals.items()})
        out.append(row)
    return out


AXES: dict[str, str | None] = {"seeds/x": None, "seeds/kl": "seeds/x", "seeds_x/*": "seeds/x", "seeds/*": "seeds/kl"}


def log_wandb(summary: Mapping[str, Any], plots: Mapping[str, Sequence[Path]], save_dir: Path, project: str,
              group: str, mode: str = "auto", patterns: Sequence[str] = ()) -> list[str]:
    """One W&B run per (group of runs, line), named `seeds-<group>-<line>`, all in W&B group `group`
    with job type `seeds` and the same keys (the group's first line is the run that also carries its
    PNGs, the others are its curves). Returns the run names."""
    names = []
    for g in summary["groups"]:
        lines = list(g["lines"].items())
        name = {line: file_name(f"seeds-{g['name']}-{line}") for line, _ in lines}
        config = {line: {"line": line, "seeds": data["seeds"], "files": data["files"]} for line, data in lines}
        first, data = lines[0]
        lg = wandb_logger(project=project, mode=mode, save_dir=str(save_dir), name=name[first], group=group,
                          one_run_per_folder=False,  # one run per group of runs, all in one folder
                          job_type="seeds", tags=["seeds", g["kind"], first], axes=AXES,
                          config={"kind": g["kind"], "group": g["name"], "config": g["config"],
                                  "interval": summary["interval"], **config[first]})
        send([lg], Report(rows=rows(data, patterns), images=list(plots.get(g["name"], [])), axes=AXES,
                          summary={"seeds/n_seeds": len(data["seeds"])},
                          curves=[Curve(name[line], rows(d, patterns), tags=[line], config=config[line])
                                  for line, d in lines[1:]]))
        names += [name[line] for line, _ in lines]
    return names
