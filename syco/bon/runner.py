"""`python evaluate.py method=bon`: sycophancy against best-of-n optimization strength.

One pool of K samples per eval prompt (generated once, resumable from samples.jsonl), every
sample judged once, the pool scored by every PM given (cached per PM) and by the oracle, then
each metric at every n of the grid for every PM, with bootstrap intervals over items, and the
paired difference between PMs (`bon.compare`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from syco.bon.estimate import (
    ORACLE,
    STATISTICS,
    bootstrap_difference,
    bootstrap_metrics,
    expected_samples,
    n_grid,
    oracle_scores,
)
from syco.bon.pairwise import pool_preferences
from syco.bon.probe import INSTRUCTIONS, dialogue_pool, first_scores, preference_rates, probe_records
from syco.bon.report import log_summary, plot_results, report, selection_table
from syco.bon.scoring import pm_spec, resolve_device, score_pools
from syco.core.best_of_n import kl_best_of_n
from syco.data.samples import SampleStore
from syco.eval.generation import cached_judge, open_sampling
from syco.eval.judges import Judge
from syco.eval.tasks import verdicts
from syco.tracking import build_loggers, send, write_json_atomic

log = logging.getLogger(__name__)
PROBE = "misconception_probe"  # pool names of the section 4.3 probe: misconception_probe/<reply kind>


@dataclass(frozen=True)
class Plan:
    """`bon.*` read and checked before any sampling: pool size, grid, selectors, judge, rounds."""

    k: int
    grid: list[int]
    specs: list[dict[str, Any]]  # the PMs (bon.pms), each {name, path, prefix}
    oracle: bool
    comparisons: list[tuple[str, str]]
    judge: str
    device: str
    rounds: int
    seed: int


def plan(cfg: DictConfig) -> Plan:
    bon = cfg.bon
    k = int(bon.k)
    if k < 1:
        raise ValueError(f"bon.k must be >= 1, got {k}")
    unsupported = [t for t in bon.tasks if t not in STATISTICS]
    if unsupported:
        raise ValueError(f"best-of-n needs single-turn tasks; remove {unsupported} from bon.tasks "
                         f"(supported: {sorted(STATISTICS)})")
    prefixes = OmegaConf.to_container(bon.get("prefixes") or {}, resolve=True)
    specs = [pm_spec(name, OmegaConf.to_container(s, resolve=True) if not isinstance(s, str) else s, prefixes)
             for name, s in (bon.get("pms") or {}).items() if s is not None]
    oracle = bool(bon.get("oracle", True))
    if not specs and not oracle:
        raise ValueError("bon.pms is empty and bon.oracle is false: nothing selects the samples")
    compare = bon.get("compare", "auto")
    compare = OmegaConf.to_container(compare, resolve=True) if OmegaConf.is_config(compare) else compare
    judge = str(bon.judge)
    if judge not in (cfg.eval.judges or {}):
        raise ValueError(f"bon.judge={judge!r} is not one of eval.judges {list(cfg.eval.judges or {})}")
    return Plan(k, n_grid(k, bon.get("n_grid")), specs, oracle, compare_pairs(compare, [s["name"] for s in specs], oracle),
                judge, resolve_device(bon.get("device", "auto")), int(bon.get("bootstrap_rounds", 300)), int(cfg.seed))


def run_bon(cfg: DictConfig) -> dict[str, Any]:
    """Pools of K samples (generated once, resumable), judged once, scored by every selector, then
    every metric at every n, paired differences and rises, and the PMs' preferences."""
    start = time.time()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    p = plan(cfg)
    loggers = build_loggers(cfg)  # a tracker that cannot start fails before any generation
    pools = build_pools(cfg, p.k, run_dir)
    generation_s = time.time() - start
    judge = cached_judge(p.judge, cfg.eval.judges[p.judge], run_dir)
    judge_pools(pools, judge)
    judge.check_errors(final=True)  # too many failed judgements: stop before scoring on them
    scores = score_selectors(p, pools, run_dir, cfg.cache_dir, int(cfg.bon.get("score_batch_size", 16)))
    results, expected = estimates(p, pools, scores)
    differences, rises = paired_changes(p, pools, expected, scores)
    pms = [s["name"] for s in p.specs]
    summary = {
        "method": "best_of_n",
        "k": p.k,
        "n_grid": p.grid,
        "kl_nominal": {str(n): kl_best_of_n(n) for n in p.grid},
        "judge": p.judge,
        "pms": {s["name"]: {"path": s["path"], "prefix": s["prefix"]} for s in p.specs}
        | ({"oracle": "truthful verdict"} if "oracle" in scores else {}),
        "results": results,
        "differences": differences,
        "rises": rises,
        "probe_preferences": probe_preferences(pools, scores, pms, p.judge),
        "pool_preferences": {pm: {name: pool_preferences(_task(name), task_pools, scores[pm], p.judge)
                                  for name, task_pools in pools.items()
                                  if task_pools and len(task_pools[0]["samples"]) > 1} for pm in pms},
        "pools": {t: len(x) for t, x in pools.items()},
        "samples": {t: sum(len(x["samples"]) for x in ps) for t, ps in pools.items()},
        "generation_time_s": generation_s,
        "wall_time_s": time.time() - start,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    write_json_atomic(run_dir / "results.json", summary)
    plots = plot_results(summary, run_dir / "plots")
    table = selection_table(pools, scores, p.grid, p.seed, cfg.bon.get("table_n"))
    send(loggers, report(summary, plots, table))
    log_summary(summary)
    return summary


def build_pools(cfg: DictConfig, k: int, run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """{task: [{"record", "samples": K samples}]}, generated with the policy (cached and resumable)."""
    sampling = open_sampling(cfg, run_dir, samples_per_prompt=k)
    pools: dict[str, list[dict[str, Any]]] = {}
    for task in cfg.bon.tasks:
        records = sampling.records(task, cfg.eval[task])
        sampling.generate(records, 1, f"{task} pool (K={k})")
        pools[task] = [_pool(r, sampling.store, k) for r in records]
    probe = cfg.eval.get("probe") or {}  # eval.probe: the section 4.3 probe is eval data
    if any(v is not None for v in (probe.get("sources") or {}).values()):
        written = probe_records(probe.sources, sampling.bad_rows, probe.get("limit"), int(cfg.seed),
                                probe.get("heldout_fraction"), int(probe.get("split_seed", 0)))
        for kind, records in written.items():
            size = k if kind == "sycophantic" else 1  # the first sycophantic sample is the written reply
            sampling.generate(records, 1, f"probe: {kind} (x{size})", stop_at_newline=False,
                              max_new_tokens=int(probe.get("max_new_tokens", 96)), samples_per_prompt=size)
            pools[f"{PROBE}/{kind}"] = [dialogue_pool(r, _pool(r, sampling.store, size)["samples"]) for r in records]
    sampling.bad_rows.log_summary()
    sampling.release_policy()  # the PMs come next: free the policy's memory first
    return pools


def _pool(record: Any, store: SampleStore, size: int) -> dict[str, Any]:
    return {"record": record, "samples": [{"record": record, "index": i, "responses": store.responses(record, i)}
                                          for i in range(size)]}


def _task(pool_name: str) -> str:
    """The evaluation task whose verdicts and metrics a pool uses (probe pools: misconceptions)."""
    return "misconceptions" if pool_name.startswith(PROBE) else pool_name


def judge_pools(pools: Mapping[str, list[dict[str, Any]]], judge: Judge) -> None:
    for name, task_pools in pools.items():
        verdicts(_task(name), [s for p in task_pools for s in p["samples"]], judge)


def score_selectors(p: Plan, pools: Mapping[str, list[dict[str, Any]]], run_dir: Path, cache_dir: Any,
                    batch_size: int) -> dict[str, dict[str, np.ndarray]]:
    """{selector: {record key: [K] scores}}: every PM (cached in <run_dir>/pool_scores), and the oracle."""
    everything = [pool for task_pools in pools.values() for pool in task_pools]
    scores = {spec["name"]: score_pools(spec, everything, run_dir / "pool_scores" / f"{spec['name']}.json",
                                        cache_dir=cache_dir, batch_size=batch_size, device=p.device)
              for spec in p.specs}
    if p.oracle:
        scores["oracle"] = {pool["record"].key: oracle_scores(_task(name), [s["verdicts"].get(p.judge)
                                                                           for s in pool["samples"]])
                            for name, task_pools in pools.items() if _task(name) in ORACLE for pool in task_pools}
    return scores


Expected = dict[tuple[str, int, str], list[dict[str, Any]]]  # (selector, n, pool name) -> expected samples


def estimates(p: Plan, pools: Mapping[str, list[dict[str, Any]]], scores: Mapping[str, Mapping[str, np.ndarray]]
              ) -> tuple[dict[str, Any], Expected]:
    """{selector: {n: {task: metrics with bootstrap intervals}}}, and the expected samples they come from."""
    results: dict[str, Any] = {}
    expected: Expected = {}
    for pm_name, pm_scores in scores.items():
        results[pm_name] = {}
        for n in p.grid:
            results[pm_name][str(n)] = {}
            for name, task_pools in pools.items():
                if name.startswith(PROBE) and name != f"{PROBE}/sycophantic":
                    continue  # one written reply per item: no best-of-n
                if not all(pool["record"].key in pm_scores for pool in task_pools):
                    continue  # e.g. the oracle on a task without a truth
                expected[pm_name, n, name] = expected_samples(_task(name), task_pools, pm_scores, p.judge, n)
                results[pm_name][str(n)][name.split("/")[0]] = bootstrap_metrics(
                    _task(name), expected[pm_name, n, name], p.judge, rounds=p.rounds, seed=p.seed + n)
    return results, expected


def paired_changes(p: Plan, pools: Mapping[str, Any], expected: Expected, scores: Mapping[str, Any]
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Paired intervals (the same items in both terms: tighter than comparing two intervals): PM a
    minus PM b on the same pools (`bon.compare`), and each selector's change from the first n."""
    def paired(a: tuple[str, int], b: tuple[str, int], n: int) -> dict[str, Any]:
        return {name.split("/")[0]: bootstrap_difference(
            _task(name), expected[(*a, name)], expected[(*b, name)], p.judge, rounds=p.rounds,
            seed=p.seed + n) for name in pools if (*a, name) in expected and (*b, name) in expected}

    differences = {f"{a}-{b}": {str(n): paired((a, n), (b, n), n) for n in p.grid} for a, b in p.comparisons}
    rises = {pm_name: {str(n): paired((pm_name, n), (pm_name, p.grid[0]), n) for n in p.grid[1:]}
             for pm_name in scores}
    return differences, rises


def probe_preferences(pools: Mapping[str, list[dict[str, Any]]], scores: Mapping[str, Mapping[str, np.ndarray]],
                      pms: Sequence[str], judge: str) -> dict[str, Any]:
    """Section 4.3: each PM's preference for the written sycophantic reply over the truthful ones."""
    preferences: dict[str, Any] = {}
    if f"{PROBE}/sycophantic" not in pools:
        return preferences
    written = {kind: [pool["samples"][0] for pool in pools[f"{PROBE}/{kind}"]] for kind in INSTRUCTIONS}
    for pm_name in pms:
        by_kind = {kind: first_scores(pools[f"{PROBE}/{kind}"], scores[pm_name]) for kind in INSTRUCTIONS}
        preferences[pm_name] = {"all": preference_rates(written, by_kind, judge)}
        for dataset in sorted({s["record"].dataset for s in written["sycophantic"]}):
            part = {kind: [s for s in ss if s["record"].dataset == dataset] for kind, ss in written.items()}
            preferences[pm_name][dataset] = preference_rates(part, by_kind, judge)
    return preferences


def compare_pairs(spec: Any, pm_names: Sequence[str], oracle: bool) -> list[tuple[str, str]]:
    """`bon.compare`: auto (every pair of bon.pms, in the order given), none, or a list of [a, b]
    names (PMs of bon.pms, or oracle); each gives metric(a) - metric(b) at every n."""
    if spec in (None, "none", False):
        return []
    if spec == "auto":
        return [(a, b) for i, a in enumerate(pm_names) for b in pm_names[i + 1 :]]
    known = [*pm_names, *(["oracle"] if oracle else [])]
    pairs = []
    for pair in spec:
        if isinstance(pair, str) or len(pair) != 2:
            raise ValueError(f"bon.compare: expected pairs [a, b] of PM names, got {pair!r}")
        unknown = [x for x in pair if x not in known]
        if unknown:
            raise ValueError(f"bon.compare {list(pair)}: {unknown} not among the selectors {known}")
        pairs.append((str(pair[0]), str(pair[1])))
    return pairs
