"""What the side-by-side benchmarks share: each measurement runs as `<script> --worker <who> ...` in a
process of its own (its peak RSS and, where it matters, jax's compilation are its own), prints one
`RESULT <json>` line, and the parent reads it back."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any


def peak_rss_gb() -> float:
    """This process's peak resident memory (ru_maxrss, KiB on Linux), in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def report(result: Mapping[str, Any]) -> None:
    """A worker's result, as the one line `run_worker` reads."""
    print("RESULT " + json.dumps(result), flush=True)


def run_worker(script: str, who: str, args: Sequence[str], env: Mapping[str, str] | None = None) -> dict:
    """Run `script --worker who *args` and return its RESULT; a failed run stops the benchmark,
    showing the end of the worker's output."""
    proc = subprocess.run([sys.executable, script, "--worker", who, *args], capture_output=True, text=True,
                          env=dict(env) if env is not None else None)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        raise SystemExit(f"{who} run failed (exit {proc.returncode})")
    return json.loads(line[7:])
