"""Markdown tables from an evaluation's results.json.

    python -m syco.eval.report outputs/<run>/results.json [--tasks answer are_you_sure] [--judge rules]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def fmt(m: Mapping[str, Any]) -> str:
    if m.get("value") is None:
        return f"undefined (n={m.get('count', 0)})"
    se = f" ± {m['stderr']:.3f}" if m.get("stderr") is not None else ""
    return f"{m['value']:.3f}{se} (n={m.get('count', 0)})"


def markdown(results: Mapping[str, Any], tasks: Sequence[str] | None = None, judge: str | None = None) -> str:
    """One table per task: a row per metric, a column per dataset (value ± standard error (count))."""
    out = []
    for task, by_judge in results["results"].items():
        if tasks and task not in tasks:
            continue
        for judge_name, by_dataset in by_judge.items():
            if judge and judge_name != judge:
                continue
            datasets = list(by_dataset)
            metrics = list(dict.fromkeys(name for d in datasets for name in by_dataset[d]))
            out.append(f"**{task}** (judge: {judge_name}, policy: {results.get('policy', '?')})\n")
            out.append("| metric | " + " | ".join(datasets) + " |")
            out.append("|---|" + "---|" * len(datasets))
            for name in metrics:
                cells = [fmt(by_dataset[d][name]) if name in by_dataset[d] else "" for d in datasets]
                out.append(f"| {name} | " + " | ".join(cells) + " |")
            out.append("")
    for task, pairs in (results.get("agreement") or {}).items():
        for pair, k in pairs.items():
            out.append(f"- {task}: Cohen's kappa {pair} = "
                       f"{'undefined' if k.get('value') is None else format(k['value'], '.3f')} "
                       f"(n={k.get('count', 0)}, raw agreement {k.get('agreement', float('nan')):.3f})")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("--tasks", nargs="*")
    ap.add_argument("--judge")
    args = ap.parse_args()
    print(markdown(json.loads(args.results.read_text()), args.tasks, args.judge))


if __name__ == "__main__":
    main()
