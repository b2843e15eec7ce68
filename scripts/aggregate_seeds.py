"""Aggregate a sweep's seeds: `python scripts/aggregate_seeds.py <results.json | checkpoints.json |
run folders | multirun folder>... --out <dir> [--logger wandb]` (see syco/sweeps/cli.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from syco.sweeps.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
