"""Experiment tracking: loggers (W&B offline when there is no API key, CSV), atomic result files."""

from __future__ import annotations

import json
import math
import netrc
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, WandbLogger


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(project: str = "syco", mode: str = "auto", save_dir: str = ".", **kwargs: Any) -> WandbLogger:
    """W&B logger; `mode=auto` logs online with credentials and offline without (sync later with
    `wandb sync <save_dir>/wandb/offline-run-*`)."""
    if mode not in ("auto", "online", "offline", "disabled"):
        raise ValueError(f"logger.mode must be auto, online, offline or disabled, got {mode!r}")
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_has_credentials() else "offline")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return WandbLogger(project=project, save_dir=save_dir, offline=mode == "offline", mode=mode, **kwargs)


def build_loggers(cfg: Mapping[str, Any]) -> list[Logger]:
    """The configured loggers (`cfg.logger`: name -> instantiable config; null entries are off)."""
    from hydra.utils import instantiate

    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]


Metric = Mapping[str, Any]  # {value, stderr, count, ci, ...}


def walk_metrics(tree: Mapping[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Metric]]:
    """(keys from the root, metric) for every metric of a nested results tree, in order. A metric is
    a mapping with a "value"; the tree is e.g. an evaluation's {task: {judge: {dataset: {metric: m}}}},
    best-of-n's {pm: {n: {task: {dataset: {metric: m}}}}} or a PM's {metric: m}."""
    for key, node in tree.items():
        if isinstance(node, Mapping):
            if "value" in node:
                yield (*path, str(key)), node
            else:
                yield from walk_metrics(node, (*path, str(key)))


def flat_metrics(tree: Mapping[str, Any], prefix: str = "", intervals: bool = False) -> dict[str, Any]:
    """{"<prefix>/<key>/.../<metric>": value} for every metric of the tree with a value; with
    `intervals`, the interval bounds beside it (`.../ci_low`, `.../ci_high`)."""
    flat: dict[str, Any] = {}
    for path, m in walk_metrics(tree):
        if m.get("value") is None:
            continue
        key = "/".join((prefix, *path) if prefix else path)
        flat[key] = m["value"]
        if intervals and m.get("ci"):
            flat[f"{key}/ci_low"], flat[f"{key}/ci_high"] = m["ci"]
    return flat


@dataclass
class Report:
    """What a run sends to its loggers (`send`)."""

    summary: dict[str, Any] = field(default_factory=dict)  # W&B run summary; one row for the others (without rows)
    rows: list[dict[str, Any]] = field(default_factory=list)  # one logged row each (a step each for the others)
    wandb_rows: list[dict[str, Any]] | None = None  # what W&B logs instead of `rows` (e.g. with more x-axes)
    # W&B define_metric, in order: metric glob -> the metric it is plotted against (None: an x-axis itself)
    axes: dict[str, str | None] = field(default_factory=dict)
    tables: dict[str, tuple[list[str], list[list[Any]]]] = field(default_factory=dict)  # W&B: name -> (columns, rows)
    images: list[Path] = field(default_factory=list)  # W&B: logged as plots/<file stem>


def send(loggers: list[Logger], report: Report, finalize: bool = True) -> None:
    """Send a report to every logger: W&B gets the x-axes (define_metric), rows, images, tables and
    the run summary; the others the rows, one step each, or else the summary's numbers as one row.
    `finalize`: close each logger (else only flush the others)."""
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            import wandb

            run = lg.experiment
            for pattern, axis in report.axes.items():
                if axis is None:
                    run.define_metric(pattern)
                else:
                    run.define_metric(pattern, step_metric=axis)
            for row in report.rows if report.wandb_rows is None else report.wandb_rows:
                run.log(row)
            if report.images:
                run.log({f"plots/{p.stem}": wandb.Image(str(p)) for p in report.images})
            for name, (columns, data) in report.tables.items():
                run.log({name: wandb.Table(columns=columns, data=data)})
            if report.summary:
                run.summary.update(report.summary)
        elif report.rows:
            for step, row in enumerate(report.rows):
                lg.log_metrics(row, step=step)
        elif report.summary:
            lg.log_metrics({k: v for k, v in report.summary.items() if isinstance(v, (int, float))})
        if finalize:
            lg.finalize("success")
        elif not isinstance(lg, WandbLogger):
            lg.save()


def log_summary(loggers: list[Logger], metrics: Mapping[str, Any]) -> None:
    """Final results ({name: metric}): W&B run summary, and one row for the others."""
    flat = {k: v["value"] if isinstance(v, Mapping) else v for k, v in metrics.items()}
    flat = {k: v for k, v in flat.items() if isinstance(v, (int, float)) and not math.isnan(v)}
    send(loggers, Report(summary=flat), finalize=False)


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write JSON through a temp file and rename: readers see the old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_finite(obj), f, indent=2, default=_json_default, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def publish_dir(tmp: str | Path, path: str | Path) -> Path:
    """Move a fully written folder `tmp` to `path` (same filesystem), replacing any folder there:
    readers see the old folder or the new one, never a half-written one."""
    tmp, path = Path(tmp), Path(path)
    if path.exists():
        old = path.with_name(f".{path.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
    return path


def save_figure_atomic(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure through a temp file and rename, then close it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=dpi)
    tmp.replace(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _finite(obj: Any) -> Any:
    """NaN/inf become null: an undefined metric must not read as a number."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
