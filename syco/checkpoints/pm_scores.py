"""PM scores of a PPO run's checkpoint evaluations (`checkpoints.pm_scores`).

The run logs the optimized PM's score on a few fixed eval prompts; whether optimization raised it
on the evaluation's own prompts (held-out facts, say) and by how much, with an interval, needs the
evaluation's samples scored. Each step's samples are scored by every named PM (cached per step,
as best-of-n caches its pools), in units of the PM's held-out reward std (its `normalize`), and
each later step is compared with the first, paired by item (dataset, item id) with a bootstrap.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from syco.bon.scoring import pm_spec, score_pools
from syco.core.bootstrap import bootstrap_intervals
from syco.data.samples import judged_by_task

ALL = "all"  # every template of a task pooled (per item: the mean over its templates)
Item = tuple[str, str]


def pm_specs(pms: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """`checkpoints.pm_scores`: {name: exported PM folder}, checked before anything is evaluated."""
    specs = []
    for name, path in (pms or {}).items():
        spec = pm_spec(str(name), path, {}, where="checkpoints.pm_scores")  # scored behind its saved prefix, as PPO did
        meta = json.loads((Path(spec["path"]) / "syco_pm.json").read_text())
        spec.update(mean=float(meta.get("reward_mean", 0.0)), std=float(meta.get("reward_std", 1.0)))
        if not spec["std"] > 0:
            raise ValueError(f"checkpoints.pm_scores.{name}: {path} has reward_std={spec['std']} (not > 0)")
        specs.append(spec)
    return specs


def step_pools(folder: Path, judge: str) -> dict[str, dict[str, Any]]:
    """One step's evaluation samples as scoring pools: {record key: {record, samples}}."""
    pools: dict[str, dict[str, Any]] = {}
    for samples in judged_by_task(folder / "samples.jsonl", judge).values():
        for s in samples:
            if s["responses"]:
                pools.setdefault(s["record"].key, {"record": s["record"], "samples": []})["samples"].append(s)
    return pools


def item_scores(folder: Path, pools: Mapping[str, dict[str, Any]], spec: Mapping[str, Any], device: str | None = "auto",
                batch_size: int = 16) -> dict[str, dict[str, dict[Item, float]]]:
    """{task: {template: {item: mean normalized score of its samples}}} of one step's pools (step_pools);
    the raw scores are cached in <folder>/pm_scores/<name>.json (a re-run scores nothing new)."""
    scored = score_pools(spec, list(pools.values()), folder / "pm_scores" / f"{spec['name']}.json",
                         batch_size=batch_size, device=device)
    out: dict[str, dict[str, dict[Item, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for key, pool in pools.items():
        rec = pool["record"]
        for x in (scored[key] - spec["mean"]) / spec["std"]:
            out[rec.task][rec.template][(rec.dataset, rec.item_id)].append(float(x))
    return {task: {t: {i: float(np.mean(v)) for i, v in by_item.items()} for t, by_item in by_t.items()}
            for task, by_t in out.items()}


def _with_all(by_template: Mapping[str, Mapping[Item, float]]) -> dict[str, dict[Item, float]]:
    pooled: dict[Item, list[float]] = defaultdict(list)
    for by_item in by_template.values():
        for item, x in by_item.items():
            pooled[item].append(x)
    return {**by_template, ALL: {i: float(np.mean(v)) for i, v in pooled.items()}}


def paired_rise(a: Mapping[Item, float], b: Mapping[Item, float], rounds: int = 300, level: float = 0.95,
                seed: int = 0) -> dict[str, Any] | None:
    """mean(a - b) over the items both have, with a percentile bootstrap interval over items."""
    items = sorted(set(a) & set(b))
    if not items:
        return None
    d = np.array([a[i] - b[i] for i in items])
    out: dict[str, Any] = {"value": float(d.mean()), "count": len(items)}
    if rounds > 0:
        out["ci"] = bootstrap_intervals(lambda idx: {"mean": d[idx].mean()}, len(d), rounds=rounds, level=level,
                                        seed=seed)["mean"]
    return out


def checkpoint_pm_scores(folders: Mapping[int, Path], specs: Sequence[Mapping[str, Any]], judge: str,
                         rounds: int = 300, level: float = 0.95, device: str | None = "auto") -> dict[str, Any]:
    """{pm name: {path, units, levels: {step: {task: {template: {value, count}}}},
    rises: {step: {task: {template: {value, count, ci}}}}}}: each step's mean normalized score, and
    each later step minus the first step, paired by item."""
    steps = sorted(folders)
    pools = {s: step_pools(folders[s], judge) for s in steps}
    out: dict[str, Any] = {}
    for spec in specs:
        per_step = {s: {task: _with_all(by_t) for task, by_t in item_scores(folders[s], pools[s], spec, device).items()}
                    for s in steps}
        levels = {str(s): {task: {t: {"value": float(np.mean(list(v.values()))), "count": len(v)}
                                  for t, v in by_t.items()} for task, by_t in per_step[s].items()} for s in steps}
        first = per_step[steps[0]]
        rises: dict[str, Any] = {}
        for s in steps[1:]:
            rises[str(s)] = {task: {t: r for t, v in by_t.items()
                                    if (r := paired_rise(v, first.get(task, {}).get(t, {}), rounds, level)) is not None}
                             for task, by_t in per_step[s].items()}
        out[spec["name"]] = {"path": spec["path"], "units": "(score - reward_mean) / reward_std of the PM's held-out "
                             "split; per item the mean over its samples", "levels": levels, "rises": rises}
    return out
