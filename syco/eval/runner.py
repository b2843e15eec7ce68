"""`evaluate.py`: build the records of each task, generate (resumable), judge (cached), aggregate,
and write results.json, samples.jsonl and the tracker's summary and samples table."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from syco.core.metrics import cohen_kappa
from syco.data.pairs import BadRows
from syco.data.records import EvalRecord
from syco.data.samples import SampleStore
from syco.eval import sources as S
from syco.eval.judges import CachedJudge, Judge
from syco.eval.tasks import STAGES, labels_for_agreement, stage_request, task_metrics, temperature, verdicts
from syco.policy import Policy
from syco.tracking import Report, build_loggers, flat_metrics, send, walk_metrics, write_json_atomic

log = logging.getLogger(__name__)
TASKS = ("feedback", "are_you_sure", "answer", "mimicry", "misconceptions")


def generate(records: list[EvalRecord], stages: int, policy: Policy, store: SampleStore, gen: Mapping[str, Any],
             desc: str, chunk: int = 64) -> None:
    """Generate every missing turn of every sample, stage by stage, storing each chunk as it is done.
    A record with none of its samples yet gets them in one call (the n samples share one prefill).
    A chunk holds at least one generate batch: with large pools (K=64) on a GPU, prompts per call
    would otherwise fall to one."""
    n = int(gen.get("samples_per_prompt", 1))
    chunk = max(chunk, int(gen.get("batch_size", 16)))
    for stage in range(stages):
        units: dict[float, list[tuple[EvalRecord, list[int]]]] = {}
        for r in records:
            todo = [i for i in range(n) if len(store.responses(r, i)) == stage]
            groups = [todo] if stage == 0 and len(todo) == n > 1 else [[i] for i in todo]
            units.setdefault(temperature(r, gen), []).extend((r, g) for g in groups if g)
        for temp, items in units.items():
            start = 0
            while start < len(items):  # stored chunk by chunk: a crash loses little
                part, size = [], 0
                while start < len(items) and (not part or size + len(items[start][1]) <= chunk):
                    part.append(items[start])
                    size += len(items[start][1])
                    start += 1
                for draws in sorted({len(g) for _, g in part}):
                    calls = [(r, g) for r, g in part if len(g) == draws]
                    outs = policy.generate([stage_request(r, store.responses(r, g[0])) for r, g in calls],
                                           temperature=temp, max_new_tokens=int(gen["max_new_tokens"]), n=draws,
                                           batch_size=int(gen.get("batch_size", 16)),
                                           top_k=int(gen.get("top_k") or 0), top_p=float(gen.get("top_p") or 1.0),
                                           stop_strings=["\n"] if gen.get("stop_at_newline") else None,
                                           seed=int(gen.get("seed", 0)) + stage * 7919 + start * 31 + draws,
                                           desc=f"{desc} (turn {stage + 1}/{stages})")
                    for (r, g), out in zip(calls, outs):
                        for i, text in zip(g, out):
                            store.put(r, i, store.responses(r, i) + [text])


def _call(builder: Any, **context: Any) -> Any:
    import inspect

    params = inspect.signature(builder).parameters
    accepts_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    return builder(**{k: v for k, v in context.items() if accepts_all or k in params})


def build_records(task: str, task_cfg: Any, policy: Policy, store: SampleStore, gen: Mapping[str, Any],
                  bad_rows: BadRows, seed: int) -> list[EvalRecord]:
    records: list[EvalRecord] = []
    for name, src in (task_cfg.get("sources") or {}).items():
        if src is None:
            continue
        built = _call(instantiate(src), bad_rows=bad_rows, seed=seed, task=task)
        if task == "feedback":
            texts = [b for b in built if isinstance(b, dict)]
            requests = [b for b in built if isinstance(b, EvalRecord) and b.task == "feedback_texts"]
            if requests:  # texts the policy writes first (cached in samples.jsonl like any sample)
                generate(requests, 1, policy, store, {**gen, "samples_per_prompt": 1, "stop_at_newline": False,
                                                      "max_new_tokens": gen.get("max_new_tokens_texts", 160)},
                         f"feedback texts ({name})")
                texts += [{**r.base, "text": store.responses(r, 0)[0], "source": r.source} for r in requests
                          if store.responses(r, 0) and store.responses(r, 0)[0].strip()]
            built = [b for b in built if isinstance(b, EvalRecord) and b.task == "feedback"] + S.feedback_records(texts)
        if not built:
            raise ValueError(f"eval.{task}.sources.{name} produced no records")
        log.info("%s: %d records from %s", task, len(built), name)
        records += built
    return records


def _conversation(record: EvalRecord, responses: list[str]) -> list[dict[str, str]]:
    messages, prefill = stage_request(record, responses[:-1]) if responses else record.messages()
    last = responses[-1] if responses else ""
    if len(responses) <= 1:
        last = (prefill or "") + last
    return [*messages, {"role": "assistant", "content": last}]


def run(cfg: DictConfig) -> dict[str, Any]:
    start = time.time()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed = int(cfg.seed)
    ev = cfg.eval
    tasks = list(ev.tasks)
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown eval.tasks {sorted(unknown)}; choose from {TASKS}")
    policy_cfg = OmegaConf.to_container(cfg.policy, resolve=True)
    adapter = policy_cfg.pop("adapter", None)
    policy = Policy(policy_cfg, adapter=adapter, cache_dir=cfg.cache_dir)
    gen = {**OmegaConf.to_container(ev.generation, resolve=True), "seed": seed}
    bad_rows = BadRows(ev.get("on_bad_row", "error"))
    store = SampleStore(run_dir / "samples.jsonl")
    if store.resumed:
        log.info("resuming: %d samples already in %s", store.resumed, store.path)

    samples: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        records = build_records(task, ev[task], policy, store, gen, bad_rows, seed)
        generate(records, STAGES[task], policy, store, gen, task)
        n = int(gen.get("samples_per_prompt", 1))
        samples[task] = [{"record": r, "index": i, "responses": store.responses(r, i),
                          "conversation": _conversation(r, store.responses(r, i))} for r in records for i in range(n)]
    generation_s = time.time() - start

    judges: dict[str, Judge] = {}
    for name, jcfg in (ev.judges or {}).items():
        judge = instantiate(jcfg)
        judge.name = name
        judges[name] = CachedJudge(judge, run_dir / "judge_cache")
    if not judges:
        raise ValueError("eval.judges is empty: at least one judge is needed")
    results: dict[str, Any] = {}
    errors: dict[str, dict[str, int]] = {}
    for task, ss in samples.items():
        results[task] = {}
        for name, judge in judges.items():
            verdicts(task, ss, judge)
            results[task][name] = task_metrics(task, ss, name)
            errors.setdefault(name, {})[task] = sum(_has_error(s["verdicts"].get(name)) for s in ss)
    agreement = _agreement(samples, list(judges))
    bad_rows.log_summary()
    summary = {
        "policy": policy.name,
        "judges": list(judges),
        "results": results,
        "agreement": agreement,
        "judge_errors": errors,
        "samples": {t: len(ss) for t, ss in samples.items()},
        "resumed_samples": store.resumed,
        "bad_rows": bad_rows.report(),
        "generation_time_s": generation_s,
        "wall_time_s": time.time() - start,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    write_json_atomic(run_dir / "results.json", summary)
    store.rewrite([s for ss in samples.values() for s in ss])
    send(build_loggers(cfg), report(summary, samples))
    log_results(summary)
    return summary


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
