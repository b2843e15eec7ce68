"""`python scripts/aggregate_seeds.py <results files | run folders | multirun folder>... --out <dir>`:
seeds.json, one PNG per metric (plots/, a subfolder per group when there are several), and W&B
(`--logger wandb`) with the sweep's seeds aggregated."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from syco.sweeps.aggregate import aggregate, load
from syco.sweeps.inputs import SweepInputError
from syco.sweeps.report import file_name, log_wandb, plot_group
from syco.tracking import write_json_atomic

log = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aggregate_seeds.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="best-of-n results.json / checkpoints.json files, or folders to search "
                   "(run folders, a PPO run, a Hydra multirun folder)")
    p.add_argument("--out", required=True, type=Path, help="where seeds.json and plots/ go")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the t-interval across seeds")
    p.add_argument("--ignore", action="append", default=[], metavar="KEY",
                   help="a config key (and its children) that may differ between seeds of one group, beside the seed "
                        "and file locations (repeatable); e.g. --ignore bon.bootstrap_rounds")
    p.add_argument("--metric", action="append", default=[], metavar="GLOB",
                   help="only these metrics in plots and W&B (task/dataset/metric globs, repeatable), e.g. "
                        "'answer/*/sycophancy'; seeds.json keeps every metric")
    p.add_argument("--logger", choices=("none", "wandb"), default="none")
    p.add_argument("--wandb-mode", default="auto", choices=("auto", "online", "offline", "disabled"))
    p.add_argument("--project", default="syco")
    p.add_argument("--group", default=None, help="W&B group (default: seeds-<out folder name>)")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    summary = aggregate(load(args.inputs, args.ignore, skip=args.out), args.level)
    write_json_atomic(args.out / "seeds.json", summary)
    several = len(summary["groups"]) > 1
    plots = {g["name"]: plot_group(g, args.out / "plots" / (file_name(g["name"]) if several else ""), args.level,
                                   args.metric) for g in summary["groups"]}
    for g in summary["groups"]:
        log.info("%s: lines %s, seeds %s, %d metrics, %d plots", g["name"], list(g["lines"]),
                 {k: v["seeds"] for k, v in g["lines"].items()}, len({m for v in g["lines"].values()
                                                                       for m in v["metrics"]}), len(plots[g["name"]]))
    if args.logger == "wandb":
        log_wandb(summary, plots, args.out, args.project, args.group or f"seeds-{args.out.resolve().name}",
                  args.wandb_mode, args.metric)
    log.info("wrote %s", args.out / "seeds.json")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parser().parse_args(argv)
    try:
        run(args)
    except SweepInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
