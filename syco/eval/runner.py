"""`evaluate.py method=eval`: build the records of each task, generate (resumable), judge (cached),
aggregate, and write results.json, samples.jsonl and the tracker's summary and samples table."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from syco.core.metrics import cohen_kappa
from syco.data.records import EvalRecord
from syco.data.samples import Sample
from syco.eval.generation import Sampling, cached_judge, open_sampling
from syco.eval.judges import CachedJudge, Judge
from syco.eval.tasks import STAGES, labels_for_agreement, stage_request, task_metrics, verdicts
from syco.tracking import Report, build_loggers, flat_metrics, send, walk_metrics, write_json_atomic

log = logging.getLogger(__name__)
TASKS = ("feedback", "are_you_sure", "answer", "mimicry", "misconceptions")


def _conversation(record: EvalRecord, responses: list[str]) -> list[dict[str, str]]:
    messages, prefill = stage_request(record, responses[:-1]) if responses else record.messages()
    last = responses[-1] if responses else ""
    if len(responses) <= 1:
        last = (prefill or "") + last
    return [*messages, {"role": "assistant", "content": last}]


def run(cfg: DictConfig) -> dict[str, Any]:
    """Generate every task's samples (resumable), judge them with every judge (cached), aggregate,
    then write results.json and the judged samples.jsonl and report to the loggers."""
    start = time.time()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tasks = check_tasks(cfg.eval)
    loggers = build_loggers(cfg)  # before any work: W&B online without a network fails here, not at the end
    sampling = open_sampling(cfg, run_dir)
    samples = generate_samples(sampling, cfg.eval, tasks)
    generation_s = time.time() - start
    judges = build_judges(cfg.eval, run_dir)
    results, errors = judge_and_aggregate(samples, judges)
    sampling.bad_rows.log_summary()
    summary = {
        "policy": sampling.policy.name,
        "judges": list(judges),
        "results": results,
        "agreement": _agreement(samples, list(judges)),
        "judge_errors": errors,
        "samples": {t: len(ss) for t, ss in samples.items()},
        "resumed_samples": sampling.store.resumed,
        "bad_rows": sampling.bad_rows.report(),
        "generation_time_s": generation_s,
        "wall_time_s": time.time() - start,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    write_json_atomic(run_dir / "results.json", summary)
    sampling.store.rewrite([s for ss in samples.values() for s in ss])
    send(loggers, report(summary, samples))
    log_results(summary)
    return summary


def check_tasks(ev: Any) -> list[str]:
    """`eval.tasks`, each a known task; and at least one judge (checked before any generation)."""
    tasks = list(ev.tasks)
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown eval.tasks {sorted(unknown)}; choose from {TASKS}")
    if not ev.judges:
        raise ValueError("eval.judges is empty: at least one judge is needed")
    return tasks


def generate_samples(sampling: Sampling, ev: Any, tasks: list[str]) -> dict[str, list[Sample]]:
    """{task: every sample of every record, with its conversation}, generated where missing."""
    n = int(sampling.gen.get("samples_per_prompt", 1))
    samples: dict[str, list[Sample]] = {}
    for task in tasks:
        records = sampling.records(task, ev[task])
        sampling.generate(records, STAGES[task], task)
        samples[task] = [{"record": r, "index": i, "responses": sampling.store.responses(r, i),
                          "conversation": _conversation(r, sampling.store.responses(r, i))}
                         for r in records for i in range(n)]
    return samples


def build_judges(ev: Any, run_dir: Path) -> dict[str, Judge]:
    return {name: cached_judge(name, jcfg, run_dir) for name, jcfg in (ev.judges or {}).items()}


def judge_and_aggregate(samples: Mapping[str, list[Sample]], judges: Mapping[str, Judge]
                        ) -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
    """Every judge's verdicts on every sample, then ({task: {judge: task_metrics}}, judge errors). A
    judge that failed more than its max_error_rate of its judgements raises JudgeFailedError."""
    results: dict[str, Any] = {}
    errors: dict[str, dict[str, int]] = {}
    for task, ss in samples.items():
        results[task] = {}
        for name, judge in judges.items():
            verdicts(task, ss, judge)
            results[task][name] = task_metrics(task, ss, name)
            errors.setdefault(name, {})[task] = sum(_has_error(s["verdicts"].get(name)) for s in ss)
    for judge in judges.values():
        if isinstance(judge, CachedJudge):
            judge.check_errors(final=True)
    return results, errors


def _has_error(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, dict):
        return any(_has_error(x) if isinstance(x, dict) else x is None for k, x in v.items() if k != "letter")
    return False


def _agreement(samples: Mapping[str, list[dict[str, Any]]], judges: list[str]) -> dict[str, Any]:
    """Cohen's kappa per task for every pair of judges."""
    out: dict[str, Any] = {}
    for task, ss in samples.items():
        for i, a in enumerate(judges):
            for b in judges[i + 1:]:
                la = [labels_for_agreement(task, s, a) for s in ss]
                lb = [labels_for_agreement(task, s, b) for s in ss]
                if any(x is not None for x in la):
                    out.setdefault(task, {})[f"{a}~{b}"] = cohen_kappa(la, lb)
    return out


def report(summary: Mapping[str, Any], samples: Mapping[str, list[dict[str, Any]]]) -> Report:
    """Every metric `<task>/<judge>/<dataset>/<metric>` and each judge pair's kappa `<task>/kappa/<a~b>`
    as the run summary, and the samples as a table."""
    flat = flat_metrics(summary["results"])
    flat.update(flat_metrics({task: {"kappa": pairs} for task, pairs in summary["agreement"].items()}))
    columns = ["task", "dataset", "template", "index", "conversation", "verdicts"]
    rows = [[t, s["record"].dataset, s["record"].template, s["index"], json.dumps(s["conversation"]),
             json.dumps(s.get("verdicts", {}))] for t, ss in samples.items() for s in ss]
    return Report(summary=flat, tables={"samples": (columns, rows)})


def log_results(summary: Mapping[str, Any]) -> None:
    for (task, judge, dataset, name), m in walk_metrics(summary["results"]):
        v = "undefined" if m.get("value") is None else f"{m['value']:.3f}"
        se = f" ± {m['stderr']:.3f}" if m.get("stderr") is not None else ""
        log.info("%-14s %-6s %-16s %-24s %s%s (n=%d)", task, judge, dataset, name, v, se, m.get("count", 0))
    for task, pairs in summary["agreement"].items():
        for pair, k in pairs.items():
            log.info("%-14s kappa %s = %s (n=%d)", task, pair, k.get("value"), k.get("count", 0))
