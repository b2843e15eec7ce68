"""Run `evaluate.py <args>` and send it a real signal (`KILL_SIGNAL`, default SIGTERM) after its n-th
write of generated samples (`KILL_AFTER_WRITES=n`; 0 or unset: never). On exit it prints `SAMPLES_WRITTEN <count>`: how many
samples this run generated and stored. The kill-and-resume tests run it as a subprocess."""

from __future__ import annotations

import atexit
import os
import runpy
import signal
import sys
from pathlib import Path

from syco.data.samples import SampleStore

kill_after = int(os.environ.get("KILL_AFTER_WRITES") or 0)
counts = {"writes": 0, "samples": 0}
put_many = SampleStore.put_many


def counting_put_many(self: SampleStore, items: list) -> None:
    put_many(self, items)
    counts["writes"] += 1
    counts["samples"] += len(items)
    if counts["writes"] == kill_after:
        os.kill(os.getpid(), getattr(signal, os.environ.get("KILL_SIGNAL") or "SIGTERM"))


SampleStore.put_many = counting_put_many  # type: ignore[method-assign]
atexit.register(lambda: print(f"SAMPLES_WRITTEN {counts['samples']}", flush=True))
script = Path(__file__).resolve().parents[1] / "evaluate.py"
sys.argv = [str(script), *sys.argv[1:]]
runpy.run_path(str(script), run_name="__main__")
