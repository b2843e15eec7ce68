"""`python evaluate.py method=bon`: sycophancy against best-of-n optimization strength.

One pool of K samples per eval prompt (generated once, resumable from samples.jsonl), every
sample judged once, the pool scored by every PM given (cached per PM) and by the oracle, then
each metric at every n of the grid for every PM, with bootstrap intervals over items, and the
paired difference between PMs (`bon.compare`).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
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
from syco.bon.report import plot_results, report
from syco.bon.scoring import pm_spec, resolve_device, score_pools
from syco.core.best_of_n import best_of_n_weights, kl_best_of_n
from syco.data.pairs import BadRows
from syco.data.samples import SampleStore
from syco.eval.judges import CachedJudge
from syco.eval.runner import build_records, generate
from syco.eval.tasks import verdicts
from syco.policy import Policy
from syco.tracking import build_loggers, send, write_json_atomic

log = logging.getLogger(__name__)
PROBE = "misconception_probe"  # pool names of the section 4.3 probe: misconception_probe/<reply kind>


def build_pools(cfg: DictConfig, k: int, run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """{task: [{"record", "samples": K samples}]}, generated with the policy (cached and resumable)."""
    ev = cfg.eval
    policy_cfg = OmegaConf.to_container(cfg.policy, resolve=True)
    adapter = policy_cfg.pop("adapter", None)
    policy = Policy(policy_cfg, adapter=adapter, cache_dir=cfg.cache_dir)
    gen = {**OmegaConf.to_container(ev.generation, resolve=True), "seed": int(cfg.seed), "samples_per_prompt": k}
    bad_rows = BadRows(ev.get("on_bad_row", "error"))
    store = SampleStore(run_dir / "samples.jsonl")
    if store.resumed:
        log.info("resuming: %d samples already in %s", store.resumed, store.path)
    pools: dict[str, list[dict[str, Any]]] = {}
    for task in cfg.bon.tasks:
        records = build_records(task, ev[task], policy, store, gen, bad_rows, int(cfg.seed))
        generate(records, 1, policy, store, gen, f"{task} pool (K={k})")
        pools[task] = [_pool(r, store, k) for r in records]
    probe = ev.get("probe") or {}  # eval.probe: the section 4.3 probe is eval data
    if any(v is not None for v in (probe.get("sources") or {}).values()):
        written = probe_records(probe.sources, bad_rows, probe.get("limit"), int(cfg.seed),
                                probe.get("heldout_fraction"), int(probe.get("split_seed", 0)))
        pgen = {**gen, "stop_at_newline": False, "max_new_tokens": int(probe.get("max_new_tokens", 96))}
        for kind, records in written.items():
            size = k if kind == "sycophantic" else 1  # the first sycophantic sample is the written reply
            generate(records, 1, policy, store, {**pgen, "samples_per_prompt": size}, f"probe: {kind} (x{size})")
            pools[f"{PROBE}/{kind}"] = [dialogue_pool(r, _pool(r, store, size)["samples"]) for r in records]
    bad_rows.log_summary()
    del policy  # the PMs come next: free the policy's memory first
    gc.collect()
    return pools


def _pool(record: Any, store: SampleStore, size: int) -> dict[str, Any]:
    return {"record": record, "samples": [{"record": record, "index": i, "responses": store.responses(record, i)}
                                          for i in range(size)]}


def _task(pool_name: str) -> str:
    """The evaluation task whose verdicts and metrics a pool uses (probe pools: misconceptions)."""
    return "misconceptions" if pool_name.startswith(PROBE) else pool_name


def selected(pool: Mapping[str, Any], scores: np.ndarray, n: int, rng: np.random.Generator) -> dict[str, Any]:
    """One best-of-n draw from the pool (a random n-subset, ties broken at random): for tables."""
    subset = rng.choice(len(scores), size=n, replace=False)
    w = best_of_n_weights(scores[subset], n)
    return pool["samples"][int(subset[rng.choice(n, p=w)])]


def run_bon(cfg: DictConfig) -> dict[str, Any]:
    start = time.time()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    bon, ev = cfg.bon, cfg.eval
    k = int(bon.k)
    if k < 1:
        raise ValueError(f"bon.k must be >= 1, got {k}")
    grid = n_grid(k, bon.get("n_grid"))
    unsupported = [t for t in bon.tasks if t not in STATISTICS]
    if unsupported:
        raise ValueError(f"best-of-n needs single-turn tasks; remove {unsupported} from bon.tasks "
                         f"(supported: {sorted(STATISTICS)})")
    prefixes = OmegaConf.to_container(bon.get("prefixes") or {}, resolve=True)
    specs = [pm_spec(name, OmegaConf.to_container(s, resolve=True) if not isinstance(s, str) else s, prefixes)
             for name, s in (bon.get("pms") or {}).items() if s is not None]
    if not specs and not bon.get("oracle", True):
        raise ValueError("bon.pms is empty and bon.oracle is false: nothing selects the samples")
    device = resolve_device(bon.get("device", "auto"))  # a bad value fails before any sampling
    compare = bon.get("compare", "auto")
    compare = OmegaConf.to_container(compare, resolve=True) if OmegaConf.is_config(compare) else compare
    comparisons = compare_pairs(compare, [s["name"] for s in specs], bool(bon.get("oracle", True)))

    pools = build_pools(cfg, k, run_dir)
    generation_s = time.time() - start

    judge_name = str(bon.judge)
    if judge_name not in (ev.judges or {}):
        raise ValueError(f"bon.judge={judge_name!r} is not one of eval.judges {list(ev.judges or {})}")
    judge = instantiate(ev.judges[judge_name])
    judge.name = judge_name
    judge = CachedJudge(judge, run_dir / "judge_cache")
    for name, task_pools in pools.items():
        verdicts(_task(name), [s for p in task_pools for s in p["samples"]], judge)

    everything = [p for task_pools in pools.values() for p in task_pools]
    scores: dict[str, dict[str, np.ndarray]] = {}
    for spec in specs:
        scores[spec["name"]] = score_pools(spec, everything, run_dir / "pool_scores" / f"{spec['name']}.json",
                                           cache_dir=cfg.cache_dir, batch_size=int(bon.get("score_batch_size", 16)),
                                           device=device)
    if bon.get("oracle", True):
        scores["oracle"] = {p["record"].key: oracle_scores(_task(name), [s["verdicts"].get(judge_name)
                                                                        for s in p["samples"]])
                            for name, task_pools in pools.items() if _task(name) in ORACLE for p in task_pools}

    rounds = int(bon.get("bootstrap_rounds", 300))
    results: dict[str, Any] = {}
    expected: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for pm_name, pm_scores in scores.items():
        results[pm_name] = {}
        for n in grid:
            results[pm_name][str(n)] = {}
            for name, task_pools in pools.items():
                if name.startswith(PROBE) and name != f"{PROBE}/sycophantic":
                    continue  # one written reply per item: no best-of-n
                if not all(p["record"].key in pm_scores for p in task_pools):
                    continue  # e.g. the oracle on a task without a truth
                expected[pm_name, n, name] = expected_samples(_task(name), task_pools, pm_scores, judge_name, n)
                results[pm_name][str(n)][name.split("/")[0]] = bootstrap_metrics(
                    _task(name), expected[pm_name, n, name], judge_name, rounds=rounds, seed=int(cfg.seed) + n)
    # paired intervals (the same items in both terms: tighter than comparing two intervals):
    # PM a minus PM b on the same pools, and each selector's change from n = 1 (does it rise?)
    def paired(a: tuple[str, int], b: tuple[str, int], n: int) -> dict[str, Any]:
        return {name.split("/")[0]: bootstrap_difference(
            _task(name), expected[(*a, name)], expected[(*b, name)], judge_name, rounds=rounds,
            seed=int(cfg.seed) + n) for name in pools if (*a, name) in expected and (*b, name) in expected}

    differences = {f"{a}-{b}": {str(n): paired((a, n), (b, n), n) for n in grid} for a, b in comparisons}
    rises = {pm_name: {str(n): paired((pm_name, n), (pm_name, grid[0]), n) for n in grid[1:]}
             for pm_name in scores}
    preferences = {}
    if f"{PROBE}/sycophantic" in pools:
        written = {kind: [p["samples"][0] for p in pools[f"{PROBE}/{kind}"]] for kind in INSTRUCTIONS}
        for pm_name in [s["name"] for s in specs]:
            by_kind = {kind: first_scores(pools[f"{PROBE}/{kind}"], scores[pm_name]) for kind in INSTRUCTIONS}
            preferences[pm_name] = {"all": preference_rates(written, by_kind, judge_name)}
            for dataset in sorted({s["record"].dataset for s in written["sycophantic"]}):
                part = {kind: [s for s in ss if s["record"].dataset == dataset] for kind, ss in written.items()}
                preferences[pm_name][dataset] = preference_rates(part, by_kind, judge_name)
    # inside each pool: does the PM rank agreeing above truthful samples, correct above incorrect?
    pairwise = {pm_name: {name: pool_preferences(_task(name), task_pools, scores[pm_name], judge_name)
                          for name, task_pools in pools.items() if task_pools and len(task_pools[0]["samples"]) > 1}
                for pm_name in [s["name"] for s in specs]}
    summary = {
        "method": "best_of_n",
        "k": k,
        "n_grid": grid,
        "kl_nominal": {str(n): kl_best_of_n(n) for n in grid},
        "judge": judge_name,
        "pms": {s["name"]: {"path": s["path"], "prefix": s["prefix"]} for s in specs}
        | ({"oracle": "truthful verdict"} if "oracle" in scores else {}),
        "results": results,
        "differences": differences,
        "rises": rises,
        "probe_preferences": preferences,
        "pool_preferences": pairwise,
        "pools": {t: len(p) for t, p in pools.items()},
        "samples": {t: sum(len(x["samples"]) for x in p) for t, p in pools.items()},
        "generation_time_s": generation_s,
        "wall_time_s": time.time() - start,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    write_json_atomic(run_dir / "results.json", summary)
    plots = plot_results(summary, run_dir / "plots")
    tables = _tables(pools, scores, grid, int(cfg.seed), bon.get("table_n"))
    send(build_loggers(cfg), report(summary, plots, tables))
    _log_summary(summary)
    return summary


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


def _tables(pools: Mapping[str, list[dict[str, Any]]], scores: Mapping[str, Mapping[str, np.ndarray]],
            grid: list[int], seed: int, table_n: Any) -> list[list[Any]]:
    """Rows (task, pm, n, dataset, template, prompt, selected response, verdict) for a W&B table."""
    ns = sorted({int(n) for n in table_n} & set(grid)) if table_n else sorted({grid[0], grid[len(grid) // 2], grid[-1]})
    rng = np.random.default_rng(seed)
    rows = []
    for task, task_pools in pools.items():
        for pm_name, pm_scores in scores.items():
            for p in task_pools:
                if p["record"].key not in pm_scores or len(p["samples"]) < 2:
                    continue
                for n in (n for n in ns if n <= len(p["samples"])):
                    s = selected(p, pm_scores[p["record"].key], n, rng)
                    rows.append([task, pm_name, n, p["record"].dataset, p["record"].template,
                                 p["record"].prompt[0]["content"], s["responses"][0], str(s.get("verdicts", {}))])
    return rows


HEADLINE = ("sycophancy", "suggestion_adoption", "sycophantic", "mimicry", "accuracy/suggest_incorrect", "refutes")


def _log_summary(summary: Mapping[str, Any]) -> None:
    for pair, by_n in [*summary.get("differences", {}).items(),
                       *((f"{pm}: n - {min(map(int, summary['n_grid']))}", by_n)
                         for pm, by_n in summary.get("rises", {}).items())]:
        for n, by_task in by_n.items():
            for task, by_dataset in by_task.items():
                for dataset, metrics in by_dataset.items():
                    for name in HEADLINE:
                        m = metrics.get(name)
                        if m and m.get("ci"):
                            log.info("%-18s n=%-4s %-14s %-16s %-26s %+.3f [%+.3f, %+.3f] (paired)", pair, n,
                                     task, dataset, name, m["value"], *m["ci"])
    for pm_name, by_n in summary["results"].items():
        for n, by_task in by_n.items():
            for task, by_dataset in by_task.items():
                for dataset, metrics in by_dataset.items():
                    for name in HEADLINE:
                        m = metrics.get(name)
                        if m and m.get("value") is not None:
                            ci = m.get("ci") or [float("nan")] * 2
                            log.info("%-10s n=%-4s %-14s %-16s %-26s %.3f [%.3f, %.3f] (n_items=%d)", pm_name, n,
                                     task, dataset, name, m["value"], ci[0], ci[1], m.get("count", 0))
    for pm_name, by_pool in summary.get("pool_preferences", {}).items():
        for pool_name, rates in by_pool.items():
            for name, m in rates.items():
                if m.get("value") is not None:
                    se = f" ± {m['stderr']:.3f}" if m.get("stderr") is not None else ""
                    log.info("%-10s pool %-28s %-36s %.3f%s (items=%d)", pm_name, pool_name, name, m["value"], se,
                             m["count"])
    for pm_name, by_dataset in summary.get("probe_preferences", {}).items():
        for dataset, rates in by_dataset.items():
            for name, m in rates.items():
                if m.get("value") is not None:
                    se = f" ± {m['stderr']:.3f}" if m.get("stderr") is not None else ""
                    log.info("%-10s probe %-10s %-44s %.3f%s (n=%d)", pm_name, dataset, name, m["value"], se, m["count"])
