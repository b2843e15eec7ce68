"""Multi-stage recipes: stages of `train.py` / `evaluate.py` commands under one run root, run in order.

A stage is done when the file it writes last exists (a re-run skips it, so a stopped recipe resumes
where it stopped); the first stage that fails stops the recipe with its exit status. `--dry-run`
prints the exact commands and runs nothing. Used by the recipe scripts beside this file.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENTRIES = {"train": "train.py", "evaluate": "evaluate.py"}


@dataclass
class Stage:
    name: str
    entry: str            # train | evaluate
    overrides: list[str]  # Hydra overrides, hydra.run.dir included
    done: Path            # the file the stage writes last
    extra: list[str] = field(default_factory=list)  # overrides from the command line (--set)

    def argv(self, python: str) -> list[str]:
        return [python, ENTRIES[self.entry], *self.overrides, *self.extra]


def parse(description: str, argv: Sequence[str] | None, paths: Sequence[tuple[str, str]] = ()) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="run root: every stage writes under it")
    for flag, text in paths:  # the recipe's own inputs (paths)
        p.add_argument(flag, type=Path, default=None, help=text)
    p.add_argument("--dry-run", action="store_true", help="print the commands (done stages marked), run nothing")
    p.add_argument("--set", action="append", default=[], metavar="WHERE:OVERRIDE",
                   help="an override for the stages WHERE names: train, evaluate (every stage of that entry) or a "
                        "stage name or its prefix (ppo: both PPO runs); repeatable, later ones win")
    p.add_argument("--only", default=None, help="comma-separated stage names (or prefixes) to run; others are skipped")
    p.add_argument("--redo", action="append", default=[], help="run this stage (or prefix) even if it is done")
    p.add_argument("--python", default=sys.executable, help="the interpreter that runs train.py / evaluate.py")
    return p.parse_args(argv)


def _matches(stage: Stage, where: str) -> bool:
    return where in (stage.entry, "all") or stage.name.startswith(where)


def with_settings(stages: list[Stage], settings: Sequence[str]) -> list[Stage]:
    names = {"train", "evaluate", "all"} | {s.name for s in stages}
    for item in settings:
        where, sep, override = item.partition(":")
        if not sep or not override or not any(n.startswith(where) for n in names):
            raise SystemExit(f"--set {item!r}: expected WHERE:OVERRIDE with WHERE one of train, evaluate, all "
                             f"or a stage (prefix) of {[s.name for s in stages]}")
        for stage in stages:
            if _matches(stage, where):
                stage.extra.append(override)
    return stages


def run(stages: list[Stage], args: argparse.Namespace, cwd: Path = REPO) -> int:
    """Each stage in order: skipped when done (unless --redo) or not in --only; stops at the first
    failure and returns its exit status."""
    only = [w for w in (args.only or "").split(",") if w]
    for stage in stages:
        cmd = shlex.join(stage.argv(args.python))
        wanted = not only or any(_matches(stage, w) for w in only)
        redo = any(_matches(stage, w) for w in args.redo)
        skip = "not in --only" if not wanted else f"done ({stage.done})" if stage.done.is_file() and not redo else ""
        if args.dry_run:  # every command, runnable as printed; the ones a real run would skip are marked
            print(f"# {stage.name}{': would skip, ' + skip if skip else ''}\n{cmd}", flush=True)
            continue
        if skip:
            print(f"# {stage.name}: {skip}", flush=True)
            continue
        print(f"# {stage.name}\n{cmd}", flush=True)
        rc = subprocess.run(stage.argv(args.python), cwd=cwd).returncode
        if rc != 0:
            print(f"# {stage.name} failed (exit {rc}): stopped; fix it and run the recipe again to resume", flush=True)
            return rc
        if not stage.done.is_file():
            print(f"# {stage.name} exited 0 but did not write {stage.done}: stopped", flush=True)
            return 1
    return 0


def main(description: str, build: Callable[[argparse.Namespace], list[Stage]], argv: Sequence[str] | None = None,
         paths: Sequence[tuple[str, str]] = ()) -> int:
    """Parse the command line (`paths`: the recipe's own path options), build the stages, run them."""
    args = parse(description, argv, paths)
    args.root = args.root.resolve()
    return run(with_settings(build(args), args.set), args)
