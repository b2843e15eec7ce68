"""Experiment tracking: loggers (W&B offline when there is no API key, CSV), atomic result files."""

from __future__ import annotations

import json
import math
import netrc
import os
import shutil
import tempfile
from collections.abc import Mapping
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


def log_summary(loggers: list[Logger], metrics: Mapping[str, Any]) -> None:
    """Final results: W&B run summary, and one row for the others."""
    flat = {k: v["value"] if isinstance(v, Mapping) else v for k, v in metrics.items()}
    flat = {k: v for k, v in flat.items() if isinstance(v, (int, float)) and not math.isnan(v)}
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.experiment.summary.update(flat)
        else:
            lg.log_metrics(flat)
            lg.save()


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
