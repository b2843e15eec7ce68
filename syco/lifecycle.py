"""How a run starts, stops and resumes: its status file, preemption signals and resume checkpoints.

A run folder always says where the run stands in `status.json` (`running`, `interrupted`, `failed`,
`finished`); `metrics.json` / `results.json` appear only when a run finishes, so a folder without
them (or with a status other than `finished`) is never read as a result.

Preemption: SIGTERM (a cluster stopping the job, `kill`, `scancel`) and, under SLURM, the pre-timeout
signal that Lightning's auto-requeue listens for. A Lightning run saves `checkpoints/last.ckpt` after
the step in progress and exits with status 143 (128 + SIGTERM), so `train.py ... && evaluate.py ...`
stops there; `ckpt_path=last` with the same run folder resumes it exactly. Under SLURM, Lightning
also writes `hpc_ckpt_<n>.ckpt` and requeues the job; `resolve_ckpt_path` resumes from the newest of
the two. A run without a Lightning trainer (evaluate.py) stops at the next sample boundary: every
finished sample is already on disk, and a rerun with the same run folder goes on from there.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
PREEMPTED_EXIT = 128 + signal.SIGTERM  # the shell's status for a process stopped by SIGTERM


class Preempted(SystemExit):
    """Raised when the run was asked to stop (SIGTERM): exits with status 143 after saving state."""

    def __init__(self, message: str = "stopped by SIGTERM"):
        super().__init__(PREEMPTED_EXIT)
        self.message = message


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file that cannot be a torch checkpoint (truncated, empty, not a zip archive)."""


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """The run folder's status.json ({} when there is none: a folder older than status files)."""
    path = Path(run_dir) / STATUS_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as err:
        return {"status": "unknown", "error": f"{path} unreadable: {err}"}


def write_status(run_dir: str | Path, status: str, **info: Any) -> None:
    """Atomically record where the run stands (`running`, `interrupted`, `failed`, `finished`)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    entry = {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(),
             "pid": os.getpid(), "argv": sys.argv, **info}
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        if os.environ.get(key):
            entry[key.lower()] = os.environ[key]
    tmp = run_dir / f".{STATUS_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(entry, indent=2, default=str) + "\n")
    os.replace(tmp, run_dir / STATUS_FILE)


def _rank_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) or 0) == 0


@contextmanager
def run_status(run_dir: str | Path, what: str, signals: bool = False, resume: str = "ckpt_path=last",
               slurm_requeue: bool = False) -> Iterator[None]:
    """Keep `<run_dir>/status.json` true while the body runs: `running`, then `finished`, `failed`
    (with the error) or `interrupted` (with how to resume: the same command with the run folder and
    `resume`). A SIGTERM inside the body exits with status 143 rather than 0.

    `signals=True`: SIGTERM outside a Lightning fit raises `Preempted` at the next Python instruction
    (files being appended stay whole, the rerun resumes from them); inside a fit Lightning's handler
    lets the step finish and SaveOnPreemption saves. `slurm_requeue=True` (runs with no Lightning fit,
    whose auto-requeue would otherwise handle it): under SLURM the pre-timeout signal (SIGUSR1) requeues
    the job with `scontrol requeue` and stops the run the same way."""
    run_dir = Path(run_dir)
    previous: dict[int, Any] = {}
    if signals:
        def stop(signum: int, _frame: Any) -> None:
            # inside trainer.fit Lightning's own handler has noted the signal: the step in progress
            # finishes, SaveOnPreemption saves, and SIGTERMException ends the fit
            if not _FITTING:
                raise Preempted(f"stopped by signal {signal.Signals(signum).name}")

        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, stop)
        if slurm_requeue and os.environ.get("SLURM_JOB_ID"):
            def requeue(signum: int, _frame: Any) -> None:
                raise Preempted(f"SLURM pre-timeout signal: {requeue_slurm_job()}")

            previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, requeue)
    if _rank_zero():
        write_status(run_dir, "running", what=what)
    try:
        yield
    except (SIGTERMException, Preempted) as err:
        reason = getattr(err, "message", "stopped by SIGTERM")
        if _rank_zero():
            write_status(run_dir, "interrupted", what=what, reason=reason,
                         resume=f"rerun the same command with hydra.run.dir={run_dir} {resume}".strip())
        log.error("%s: %s; what it finished is saved in %s (status.json says how to resume)", what, reason, run_dir)
        raise Preempted(reason) from None
    except BaseException as err:
        if _rank_zero():
            write_status(run_dir, "failed", what=what, error=f"{type(err).__name__}: {err}"[:2000])
        raise
    else:
        if _rank_zero():
            write_status(run_dir, "finished", what=what)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def requeue_slurm_job() -> str:
    """`scontrol requeue` this SLURM job (array task included); says what happened."""
    job = os.environ.get("SLURM_JOB_ID", "")
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    if not re.fullmatch(r"[0-9_]+", job):
        return f"not requeued (SLURM job id {job!r})"
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"requeue of job {job} failed ({err})"
    if done.returncode:
        return f"requeue of job {job} failed ({done.stderr.strip()[:200] or done.returncode})"
    return f"job {job} requeued"


_FITTING: set[int] = set()  # ids of the SaveOnPreemption callbacks whose fit is running


class SaveOnPreemption(L.Callback):
    """On SIGTERM (Lightning stops after the step in progress) save the full training state to
    `<dirpath>/last.ckpt`, where `ckpt_path=last` finds it."""

    def __init__(self, dirpath: str | Path):
        self.path = Path(dirpath) / "last.ckpt"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            _FITTING.add(id(self))

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        _FITTING.discard(id(self))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        _FITTING.discard(id(self))
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path)
            log.warning("SIGTERM: saved the state after global step %d to %s", trainer.global_step, self.path)


def trainer_overrides(trainer_cfg: Any) -> dict[str, Any]:
    """What every syco trainer adds to `cfg.trainer`: the data modules shard their own data (they
    lay batches out for exact resume and exact held-out counts), and a GPU config run on the CPU
    (`trainer=ddp trainer.accelerator=cpu`) computes in fp32, as CPUs do best (gloo for DDP)."""
    out: dict[str, Any] = {"use_distributed_sampler": False}
    if str(trainer_cfg.get("accelerator")) == "cpu" and "16" in str(trainer_cfg.get("precision")):
        log.info("trainer.precision=%s on the CPU: using 32-true", trainer_cfg.get("precision"))
        out["precision"] = "32-true"
    return out


def rng_states() -> dict[str, Any]:
    """Every random generator a training step draws from (dropout, sampling): saved in checkpoints
    so that a resumed run draws what the uninterrupted run would have."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    # plain tensors, ints and lists only: checkpoints load with torch.load(weights_only=True)
    states: dict[str, Any] = {"torch": torch.random.get_rng_state(), "python": random.getstate(),
                              "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.random.set_rng_state(states["torch"])
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def check_checkpoint(path: str | Path) -> Path:
    """`path` if it can be a torch checkpoint (a whole zip archive with a pickle), else a
    CorruptCheckpointError naming it. Reads only the archive's directory, not the tensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise CorruptCheckpointError(
            f"checkpoint {path} is corrupt ({path.stat().st_size} bytes, {err}): it was cut while being written or is "
            "not a Lightning checkpoint. Move it away to resume from an older one (or pass ckpt_path=null to start "
            "over)") from None
    if not any(n.endswith("data.pkl") for n in names):
        raise CorruptCheckpointError(f"checkpoint {path} is corrupt: the archive holds no data.pkl (not a torch "
                                     "checkpoint). Move it away, or pass ckpt_path=null to start over")
    return path


def _hpc_checkpoints(run_dir: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in run_dir.glob("hpc_ckpt_*.ckpt") if (m := re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", p.name))]
    return [p for _, p in sorted(found)]


def resolve_ckpt_path(ckpt_path: str | None, run_dir: str | Path) -> str | None:
    """The checkpoint to resume from. `last`: the newest of this run folder's `checkpoints/last.ckpt`
    (periodic saves, SIGTERM) and Lightning's SLURM `hpc_ckpt_<n>.ckpt` (pre-timeout signal), or None
    when there is none (a fresh start). A path: that file. Either is checked to be a whole checkpoint."""
    if ckpt_path in (None, "", "null"):
        return None
    run_dir = Path(run_dir)
    if ckpt_path == "last":
        candidates = [p for p in [run_dir / "checkpoints" / "last.ckpt", *_hpc_checkpoints(run_dir)] if p.is_file()]
        if not candidates:
            return None
        newest = max(candidates, key=lambda p: p.stat().st_mtime_ns)
        return str(check_checkpoint(newest))
    return str(check_checkpoint(ckpt_path))
