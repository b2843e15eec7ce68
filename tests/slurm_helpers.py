"""Helpers that run inside SLURM jobs of tests/test_slurm.py (importable there through PYTHONPATH=tests)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L


class HoldAt(L.Callback):
    """At optimizer step `step`, on the run's first attempt only, write `marker` (this SLURM job's id)
    and hold the fit for up to `seconds`: the test sends the pre-timeout signal while the job is
    certainly inside `trainer.fit`, where Lightning's requeue handler is installed. The hold ends
    as soon as the job is stopped (SIGTERM), so the step finishes and the run saves its state."""

    def __init__(self, step: int, marker: str, seconds: float = 120.0):
        self.step, self.marker, self.seconds = int(step), Path(marker), float(seconds)

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step != self.step or self.marker.exists():
            return
        job = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        self.marker.write_text(f"{job[0]}_{job[1]}" if all(job) else os.environ.get("SLURM_JOB_ID", ""))
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline and not trainer.received_sigterm:
            time.sleep(0.1)
