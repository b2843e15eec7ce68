"""Experiment tracking: loggers (W&B offline when there is no API key, CSV), atomic result files.

Every W&B run carries the resolved config, a group (the experiment or sweep), a job type (the task or
method), tags and a name that tells runs apart (`run_identity`); PPO rows are plotted against the PPO
step and the measured KL; a report's `curves` become one W&B run each (e.g. best-of-n per selector)."""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, WandbLogger

from syco.tracking.wandb_runs import (  # noqa: F401 - re-exported
    PPO_AXES,
    RunLogger,
    build_loggers,
    define_axes,
    pm_variant,
    ppo_label,
    resolved,
    run_identity,
    wandb_base_url,
    wandb_has_credentials,
    wandb_logger,
    wandb_unreachable,
)

log = logging.getLogger(__name__)


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
class Curve:
    """One W&B run of its own beside the report's run (same group, job type and config), e.g. one
    best-of-n selector: runs with the same keys share every W&B chart, a line each."""

    name: str
    rows: list[dict[str, Any]]
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # added to the run's config


@dataclass
class Report:
    """What a run sends to its loggers (`send`)."""

    summary: dict[str, Any] = field(default_factory=dict)  # W&B run summary; one row for the others (without rows)
    rows: list[dict[str, Any]] = field(default_factory=list)  # one logged row each (a step each for the others)
    wandb_rows: list[dict[str, Any]] | None = None  # what W&B logs instead of `rows` (e.g. with more x-axes)
    # W&B x-axes (define_metric per logged key, first match wins): metric glob -> the metric it is
    # plotted against (None: an x-axis itself); for the rows and the curves
    axes: dict[str, str | None] = field(default_factory=dict)
    tables: dict[str, tuple[list[str], list[list[Any]]]] = field(default_factory=dict)  # W&B: name -> (columns, rows)
    images: list[Path] = field(default_factory=list)  # W&B: logged as plots/<file stem>
    curves: list[Curve] = field(default_factory=list)  # W&B: a run each (RunLogger only)


def send(loggers: list[Logger], report: Report, finalize: bool = True) -> None:
    """Send a report to every logger: W&B gets the x-axes (define_metric), rows, images, tables, the
    run summary and a run per curve; the others the rows, one step each, or else the summary's
    numbers as one row. `finalize`: close each logger (W&B: finish its run; else only flush the others)."""
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            import wandb

            run = lg.experiment
            rows = report.rows if report.wandb_rows is None else report.wandb_rows
            define_axes(run, report.axes, {k for row in rows for k in row}, set())
            for row in rows:
                run.log(row)
            if report.images:
                run.log({f"plots/{p.stem}": wandb.Image(str(p)) for p in report.images})
            for name, (columns, data) in report.tables.items():
                run.log({name: wandb.Table(columns=columns, data=data)})
            if report.summary:
                run.summary.update(report.summary)
            for curve in report.curves if isinstance(lg, RunLogger) else []:
                sibling = lg.sibling(curve.name, curve.tags, curve.config)
                define_axes(sibling, report.axes, {k for row in curve.rows for k in row}, set())
                for row in curve.rows:
                    sibling.log(row)
                sibling.finish()
        elif report.rows:
            for step, row in enumerate(report.rows):
                lg.log_metrics(row, step=step)
        elif report.summary:
            lg.log_metrics({k: v for k, v in report.summary.items() if isinstance(v, (int, float))})
        if finalize:
            lg.finalize("success")
            if isinstance(lg, RunLogger):
                lg.finish()
        elif not isinstance(lg, WandbLogger):
            lg.save()


def log_summary(loggers: list[Logger], metrics: Mapping[str, Any]) -> None:
    """Final results ({name: metric}): W&B run summary, and one row for the others."""
    flat = {k: v["value"] if isinstance(v, Mapping) else v for k, v in metrics.items()}
    flat = {k: v for k, v in flat.items() if isinstance(v, (int, float)) and not math.isnan(v)}
    send(loggers, Report(summary=flat), finalize=False)


class DiskFullError(OSError):
    """A result could not be written: no space (or no quota) left where it goes."""


FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def naming_full_disk(path: str | Path) -> Iterator[None]:
    """Turn "no space left" while writing `path` into an error naming the folder and what to do."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as err:
        if err.errno not in FULL_DISK:
            raise
        path = Path(path)
        raise DiskFullError(
            err.errno,
            f"the disk is full (or the quota used up) where {path} goes: no space left in {path.parent} "
            f"({err.strerror}). Nothing there was replaced: any earlier {path.name} is as it was. Free some "
            f"space there, or run with hydra.run.dir (or the option naming that folder) on a disk with room",
            str(path),
        ) from err


def umask() -> int:
    """The process umask, read without changing it (os.umask can only be read by setting it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share(path: str | Path) -> Path:
    """Give a file (or every file and folder under a folder) the usual permissions, 0666/0777 less
    the umask (0644/0755 by default), as if written with plain open/mkdir: temporary files and
    folders (tempfile) and safetensors weights are private (0600/0700), but results are meant to be shared."""
    path = Path(path)
    mask = umask()
    if path.is_dir():
        path.chmod(0o777 & ~mask)
        for root, dirs, files in os.walk(path):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o777 & ~mask)
            for f in files:
                if not os.path.islink(os.path.join(root, f)):
                    os.chmod(os.path.join(root, f), 0o666 & ~mask)
    else:
        path.chmod(0o666 & ~mask)
    return path


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write JSON through a temp file and rename: readers see the old file or the new, never half.
    Written with the usual permissions; a full disk raises DiskFullError and keeps the old file."""
    path = Path(path)
    text = json.dumps(_finite(obj), indent=2, default=_json_default, allow_nan=False) + "\n"
    tmp = None
    with naming_full_disk(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(text)
            share(tmp)
            os.replace(tmp, path)
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
    return path


def publish_dir(tmp: str | Path, path: str | Path) -> Path:
    """Move a fully written folder `tmp` to `path` (same filesystem), replacing any folder there:
    readers see the old folder or the new one, never a half-written one. The folder gets the usual
    permissions (`share`); when the move fails, the old folder stays in place."""
    tmp, path = Path(tmp), Path(path)
    with naming_full_disk(path):
        share(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)  # put the old folder back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    return path


def save_figure_atomic(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure through a temp file and rename, then close it (usual permissions;
    a full disk raises DiskFullError and keeps the old file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    import matplotlib.pyplot as plt

    try:
        with naming_full_disk(path):
            fig.savefig(tmp, dpi=dpi)
            share(tmp)
            tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
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
