"""Runs grouped by everything but the seed, checked (one file per seed, the same x grid and the
same metrics in every seed), and each (line, metric) at each x: the mean across seeds, the
t-interval across seeds and every seed's own value."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from syco.sweeps.inputs import X_NAME, Run, SweepInputError, find, read
from syco.sweeps.stats import INTERVAL, across_seeds

log = logging.getLogger(__name__)


def group_runs(runs: Sequence[Run]) -> list[list[Run]]:
    """Runs with the same kind and config (seed and locations aside), in the order first seen."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(json.dumps([r.kind, sorted(r.config.items())], default=str), []).append(r)
    return list(groups.values())


def _names(groups: Sequence[Sequence[Run]]) -> list[tuple[str, dict[str, Any]]]:
    """A name per group: its kind, and the config keys that tell it from the other groups of its kind."""
    out = []
    for g in groups:
        others = [h for h in groups if h is not g and h[0].kind == g[0].kind]
        keys = sorted({k for h in others for k in {*g[0].config, *h[0].config}
                       if g[0].config.get(k) != h[0].config.get(k)})
        differs = {k: g[0].config.get(k) for k in keys}
        out.append((g[0].kind + "".join(f" {k}={v}" for k, v in differs.items()), differs))
    return out


def _check_line(kind: str, line: str, runs: Sequence[Run]) -> None:
    seeds: dict[int, Path] = {}
    for r in runs:
        if r.seed in seeds:
            raise SweepInputError(f"{kind} {line!r}: seed {r.seed} twice ({seeds[r.seed]} and {r.path}); a seed "
                                  f"counts once: remove one, or aggregate them separately")
        seeds[r.seed] = r.path
    first = runs[0]
    for r in runs[1:]:
        if r.x != first.x:
            raise SweepInputError(f"{kind} {line!r}: different {X_NAME[kind]} grids across seeds: {first.x} in "
                                  f"{first.path}, {r.x} in {r.path}; only runs on the same grid can be aggregated "
                                  f"(an unfinished run? aggregate it once it is complete)")
        a, b = set(first.lines[line]), set(r.lines[line])
        if a != b:
            raise SweepInputError(f"{kind} {line!r}: different metrics across seeds: {first.path} has "
                                  f"{_few(a - b)} that {r.path} has not, and {r.path} has {_few(b - a)} "
                                  f"that {first.path} has not")


def _few(keys: Iterable[tuple[str, ...]]) -> str:
    names = sorted("/".join(k) for k in keys)
    return (", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")) if names else "none"


def _point(x: int, values: Mapping[int, float | None], level: float) -> dict[str, Any]:
    present = [v for v in values.values() if v is not None]
    return {"x": x, **across_seeds(present, level), "seeds": {str(s): v for s, v in sorted(values.items())}}


def aggregate_line(kind: str, line: str, runs: Sequence[Run], level: float) -> dict[str, Any]:
    runs = sorted(runs, key=lambda r: r.seed)
    _check_line(kind, line, runs)
    xs = runs[0].x
    metrics: dict[str, Any] = {}
    for key in sorted(runs[0].lines[line]):
        task, dataset, metric = key
        metrics["/".join(key)] = {"task": task, "dataset": dataset, "metric": metric, "points": [
            _point(x, {r.seed: r.lines[line][key].get(x) for r in runs}, level) for x in xs]}
    return {
        "seeds": [r.seed for r in runs],
        "files": {str(r.seed): str(r.path) for r in runs},
        "x": xs,
        "kl": [_point(x, {r.seed: r.kl.get(x) for r in runs}, level) for x in xs],
        "metrics": metrics,
    }


def _across(runs: Sequence[Run]) -> dict[str, dict[str, Any]]:
    """The left-out keys (seed, locations) that differ between the runs: {key: {seed: value}}."""
    keys = {k for r in runs for k in r.where}
    return {k: {str(r.seed): r.where.get(k) for r in runs} for k in sorted(keys)
            if len({json.dumps(r.where.get(k), default=str) for r in runs}) > 1}


def aggregate(runs: Sequence[Run], level: float = 0.95) -> dict[str, Any]:
    """seeds.json: every group, every line in it, every metric against x (and KL) across seeds."""
    if not 0 < level < 1:
        raise SweepInputError(f"--level={level}: must be in (0, 1), e.g. 0.95")
    groups = group_runs(runs)
    warnings: list[str] = []
    out = []
    for g, (name, differs) in zip(groups, _names(groups)):
        kind = g[0].kind
        lines: dict[str, list[Run]] = {}
        for r in g:
            for line in r.lines:
                lines.setdefault(line, []).append(r)
        agg = {line: aggregate_line(kind, line, lr, level) for line, lr in lines.items()}
        for line, a in agg.items():
            if len(a["seeds"]) < 2:
                warnings.append(f"{name} {line!r}: one seed only ({next(iter(a['files'].values()))}): no interval "
                                f"across seeds")
        out.append({"name": name, "kind": kind, "x": X_NAME[kind], "kl": "nominal" if kind == "bon" else "measured",
                    "config": differs, "across_seeds": _across(g), "lines": agg})
    for w in warnings:
        log.warning(w)
    return {"method": "seeds", "interval": {"level": level, "what": INTERVAL},
            "inputs": sorted(str(r.path) for r in runs), "warnings": warnings, "groups": out}


def load(paths: Sequence[str | Path], ignore: Iterable[str] = (), skip: Path | None = None) -> list[Run]:
    return [read(p, tuple(ignore)) for p in find(paths, skip)]
