"""A Lightning callback that sends real signals to its own process at chosen optimizer steps: the
kill-and-resume tests add it to `train.py` runs with `+callbacks.stop._target_=signals.SignalAt`."""

from __future__ import annotations

import os

import lightning as L


class SignalAt(L.Callback):
    """Send each (step, signal number) to this process once the trainer reaches that many optimizer steps."""

    def __init__(self, plan: list[tuple[int, int]] | list[list[int]]):
        self.plan = {int(step): int(signum) for step, signum in plan}

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if (signum := self.plan.pop(trainer.global_step, None)) is not None:
            os.kill(os.getpid(), signum)
