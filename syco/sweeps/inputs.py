"""The runs of a sweep, read back: best-of-n results.json (`evaluate.py method=bon`) and PPO
checkpoint evaluations (`evaluate.py method=checkpoints`: <ppo run>/evaluations/<name>/checkpoints.json),
each with its seed, the config it is grouped by, its x grid and every metric of every line (a
best-of-n selector, or the PM a PPO run optimized)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from syco.bon.report import dataset_view

BON, PPO = "bon", "ppo"
FILES = {"results.json": BON, "checkpoints.json": PPO}
METHODS = {"best_of_n": BON, "ppo_checkpoints": PPO}
X_NAME = {BON: "n", PPO: "step"}
# where a run lives or writes, never what it is: not part of the group (with every key named seed, and
# every value that is a file system path, e.g. each seed's own PM folder)
WHERE = ("run_dir", "run_name", "cache_dir", "shared_data", "ckpt_path", "hydra", "logger", "checkpoints.label",
         "checkpoints.name", "checkpoints.out")
# keys whose string values are files or folders (relative ones too, which need not exist from here)
PATH_LEAVES = ("path", "pm", "gold_pm", "adapter", "init_adapter", "from_path", "policy_samples",
               "run", "bon", "versus", "overlay", "out")
MetricKey = tuple[str, str, str]  # task, dataset, metric


class SweepInputError(ValueError):
    """Inputs that cannot be aggregated; the message names the files."""


@dataclass
class Run:
    kind: str  # bon | ppo
    path: Path  # the results.json or checkpoints.json
    seed: int
    config: dict[str, Any]  # flattened; what the runs are grouped by (seed and locations left out)
    where: dict[str, Any]  # the flattened keys left out of the group (seed, paths, ...)
    x: list[int]  # n grid (bon) or PPO steps
    kl: dict[int, float]  # nominal (bon) or measured (ppo) KL at each x
    lines: dict[str, dict[MetricKey, dict[int, float | None]]] = field(default_factory=dict)


def find(paths: Sequence[str | Path], skip: Path | None = None) -> list[Path]:
    """The result files named, or found under the folders named (a run folder, a Hydra multirun
    folder, a PPO run with evaluations/): best-of-n results.json and checkpoints.json; a results.json
    of another method found in a folder (a single evaluation) is passed over."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            for name in FILES:
                for f in sorted(p.rglob(name)):
                    if skip is not None and skip.resolve() in f.resolve().parents:
                        continue
                    if name == "results.json" and _method(f) != "best_of_n":
                        continue
                    found.append(f)
        else:
            raise SweepInputError(f"{p}: no such file or folder")
    if not found:
        raise SweepInputError(f"no best-of-n results.json nor checkpoints.json under {', '.join(map(str, paths))}")
    return sorted(set(found), key=str)


def _method(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("method")
    except (OSError, ValueError, AttributeError):
        return None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: json.dumps(tree) if isinstance(tree, list) else tree}


def _is_where(key: str, value: Any, ignore: Iterable[str]) -> bool:
    leaf = key.rpartition(".")[2]
    bare = key.split(".", 1)[1] if key.startswith(("train.", "eval.")) else key
    if leaf == "seed" or any(bare == w or bare.startswith(w + ".") for w in (*WHERE, *ignore)):
        return True
    if isinstance(value, str) and value and "${" not in value:
        if (leaf in PATH_LEAVES or bare.startswith("bon.pms.")) and "/" in value:
            return True  # a run's own inputs (each seed's PM, adapter, PPO run), wherever they are
        return value.startswith(("/", "./", "../", "~")) or ("/" in value and Path(value).exists())
    return False


def split_config(config: Mapping[str, Any], ignore: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    flat = flatten(config)
    where = {k: v for k, v in flat.items() if _is_where(k, v, ignore)}
    return {k: v for k, v in flat.items() if k not in where}, where


def _yaml(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)  # type: ignore[return-value]


def _seed(config: Mapping[str, Any] | None, where: str) -> int:
    seed = (config or {}).get("seed")
    if seed is None or isinstance(seed, bool):
        raise SweepInputError(f"{where}: no seed in its config; aggregating across seeds needs each run's seed")
    try:
        return int(seed)
    except (TypeError, ValueError):
        raise SweepInputError(f"{where}: seed={seed!r} is not an integer") from None


def read(path: Path, ignore: Iterable[str] = ()) -> Run:
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SweepInputError(f"{path}: cannot read it as JSON ({err})") from None
    kind = METHODS.get(summary.get("method")) if isinstance(summary, Mapping) else None
    if kind is None:
        raise SweepInputError(f"{path}: not a best-of-n results.json (evaluate.py method=bon) nor a checkpoints.json "
                              f"(evaluate.py method=checkpoints); its method is {summary.get('method')!r}"
                              if isinstance(summary, Mapping) else f"{path}: not a JSON object")
    missing = [k for k in (("results", "n_grid", "kl_nominal") if kind == BON else ("results", "points", "judge"))
               if k not in summary]
    if missing:
        raise SweepInputError(f"{path}: has no {missing}: not a complete {kind} result file")
    return _read_bon(path, summary, ignore) if kind == BON else _read_ppo(path, summary, ignore)


def _read_bon(path: Path, s: Mapping[str, Any], ignore: Iterable[str]) -> Run:
    beside = path.parent / ".hydra" / "config.yaml"
    config = s.get("config") or _yaml(beside)
    seed = _seed(config, f"{path} (its `config`, or {beside})")
    group, where = split_config(config or {}, ignore)
    lines: dict[str, dict[MetricKey, dict[int, float | None]]] = {}
    for selector, by_n in s["results"].items():
        lines[selector] = {}
        for n, by_task in by_n.items():
            for task, by_dataset in by_task.items():
                view = dataset_view(by_dataset)
                for metric, m in (view[1] if view else {}).items():
                    lines[selector].setdefault((task, view[0], metric), {})[int(n)] = m.get("value")
    return Run(BON, path, seed, group, where, [int(n) for n in s["n_grid"]],
               {int(n): float(v) for n, v in s["kl_nominal"].items()}, lines)


def _ppo_run_config(path: Path, s: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The PPO run's train.py config (<run>/.hydra/config.yaml), else the seed its steps saved."""
    run = Path(s.get("run") or path.parents[2])
    cfg_file = run / ".hydra" / "config.yaml"
    config = _yaml(cfg_file)
    if config is not None:
        return config, str(cfg_file)
    for p in s["points"]:
        meta = Path(p.get("adapter") or "") / "syco_ppo.json"
        if p.get("adapter") and meta.is_file():
            saved = json.loads(meta.read_text())
            return {"seed": saved.get("seed")}, str(meta)
    return None, f"{cfg_file} (or a step's syco_ppo.json)"


def _pm_variant(pm: Any) -> str | None:
    try:
        return json.loads((Path(str(pm)) / "syco_pm.json").read_text()).get("variant") if pm else None
    except (OSError, ValueError, AttributeError):
        return None


def _read_ppo(path: Path, s: Mapping[str, Any], ignore: Iterable[str]) -> Run:
    train, where_read = _ppo_run_config(path, s)
    seed = _seed(train, f"{path} (the PPO run's seed, from {where_read})")
    group, where = split_config({"train": train or {}, "eval": s.get("config") or {}}, ignore)
    group.update({"eval_name": s.get("eval_name"), "judge": s["judge"], "kl": (s.get("kl") or {}).get("key")})
    line = _pm_variant(s.get("pm")) or s.get("label") or "ppo"
    metrics: dict[MetricKey, dict[int, float | None]] = {}
    for step, by_task in s["results"].items():
        for task, by_judge in by_task.items():
            view = dataset_view(by_judge.get(s["judge"], {}))
            for metric, m in (view[1] if view else {}).items():
                metrics.setdefault((task, view[0], metric), {})[int(step)] = m.get("value")
    steps = [int(p["step"]) for p in s["points"]]
    return Run(PPO, path, seed, group, where, steps, {int(p["step"]): float(p["kl"]) for p in s["points"]},
               {line: metrics})
