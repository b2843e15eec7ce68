"""The one set-up that generates evaluation samples, shared by the evaluation (`syco.eval.runner`),
best-of-n pools (`syco.bon.runner`) and, through the evaluation, PPO checkpoints: the policy, the
run's resumable samples.jsonl, the generation settings and the bad-row policy (`Sampling`, from the
config), the records of a task, and generation of every missing turn."""

from __future__ import annotations

import gc
import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from syco.data.pairs import BadRows
from syco.data.records import EvalRecord
from syco.data.samples import SampleStore
from syco.eval import sources as S
from syco.eval.judges import DEFAULT_MAX_ERROR_RATE, CachedJudge
from syco.eval.tasks import stage_request, temperature
from syco.policy import Policy, check_max_rows

log = logging.getLogger(__name__)


@dataclass
class Sampling:
    """What generating an evaluation's samples needs, built once from the config (`open_sampling`)."""

    policy: Policy | None
    store: SampleStore  # <run_dir>/samples.jsonl: resumed when it exists
    gen: dict[str, Any]  # eval.generation, with the seed (and samples_per_prompt when overridden)
    bad_rows: BadRows  # eval.on_bad_row
    seed: int

    def records(self, task: str, task_cfg: Any) -> list[EvalRecord]:
        return build_records(task, task_cfg, self.policy, self.store, self.gen, self.bad_rows, self.seed)

    def generate(self, records: list[EvalRecord], stages: int, desc: str, **settings: Any) -> None:
        """Every missing turn of every sample of `records` (`settings` override eval.generation)."""
        generate(records, stages, self.policy, self.store, {**self.gen, **settings}, desc)

    def release_policy(self) -> None:
        """Free the policy's memory (e.g. before loading preference models)."""
        self.policy = None
        gc.collect()


def open_sampling(cfg: DictConfig, run_dir: Path, **settings: Any) -> Sampling:
    """The policy (`policy`, with its optional adapter), `<run_dir>/samples.jsonl`, the generation
    settings (`eval.generation`, the seed, then `settings`) and `eval.on_bad_row`."""
    policy_cfg = OmegaConf.to_container(cfg.policy, resolve=True)
    adapter = policy_cfg.pop("adapter", None)
    policy = Policy(policy_cfg, adapter=adapter, cache_dir=cfg.cache_dir)
    gen = {**OmegaConf.to_container(cfg.eval.generation, resolve=True), "seed": int(cfg.seed), **settings}
    bad_rows = BadRows(cfg.eval.get("on_bad_row", "error"))
    store = SampleStore(run_dir / "samples.jsonl")
    if store.resumed:
        log.info("resuming: %d samples already in %s", store.resumed, store.path)
    return Sampling(policy, store, gen, bad_rows, int(cfg.seed))


def cached_judge(name: str, judge_cfg: Any, run_dir: Path) -> CachedJudge:
    """The `eval.judges.<name>` judge, its verdicts cached in <run_dir>/judge_cache. Its optional
    `max_error_rate` (default 0.5) is the cache's, not the judge's: more failed judgements than that
    stop the run (JudgeFailedError), whichever judge it is."""
    if isinstance(judge_cfg, DictConfig):
        judge_cfg = OmegaConf.to_container(judge_cfg, resolve=True)
    judge_cfg = dict(judge_cfg)
    rate = judge_cfg.pop("max_error_rate", None)
    try:
        rate = DEFAULT_MAX_ERROR_RATE if rate is None else float(rate)
    except (TypeError, ValueError):
        raise ValueError(f"eval.judges.{name}.max_error_rate={rate!r}: expected a fraction in [0, 1]") from None
    judge = instantiate(judge_cfg)
    judge.name = name
    return CachedJudge(judge, run_dir / "judge_cache", rate)


def generate(records: list[EvalRecord], stages: int, policy: Policy, store: SampleStore, gen: Mapping[str, Any],
             desc: str, chunk: int = 64) -> None:
    """Generate every missing turn of every sample, stage by stage, storing each chunk as it is done.
    A record gets its n samples in one call (the n samples share one prefill).
    A chunk holds at least one generate batch: with large pools (K=64) on a GPU, prompts per call
    would otherwise fall to one.

    Resumable exactly: chunks and their seeds are laid out over every sample, done or not, so a rerun
    of a stopped run draws each missing sample as the uninterrupted run would have; a call whose
    samples are all stored is skipped (its samples are written together, see SampleStore.put_many)."""
    n = int(gen.get("samples_per_prompt", 1))
    chunk = max(chunk, int(gen.get("batch_size", 16)))
    max_rows = gen.get("max_rows_per_call")
    check_max_rows(max_rows, "eval.generation.max_rows_per_call")
    for stage in range(stages):
        units: dict[float, list[tuple[EvalRecord, list[int]]]] = {}
        for r in records:
            groups = [list(range(n))] if stage == 0 and n > 1 else [[i] for i in range(n)]
            units.setdefault(temperature(r, gen), []).extend((r, g) for g in groups)
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
                    if all(len(store.responses(r, i)) > stage for r, g in calls for i in g):
                        continue  # stored by an earlier run
                    outs = policy.generate([stage_request(r, store.responses(r, g[0])) for r, g in calls],
                                           temperature=temp, max_new_tokens=int(gen["max_new_tokens"]), n=draws,
                                           batch_size=int(gen.get("batch_size", 16)), max_rows_per_call=max_rows,
                                           top_k=int(gen.get("top_k") or 0), top_p=float(gen.get("top_p") or 1.0),
                                           stop_strings=["\n"] if gen.get("stop_at_newline") else None,
                                           seed=int(gen.get("seed", 0)) + stage * 7919 + start * 31 + draws,
                                           desc=f"{desc} (turn {stage + 1}/{stages})")
                    store.put_many([(r, i, store.responses(r, i) + [text])
                                    for (r, g), out in zip(calls, outs) for i, text in zip(g, out)
                                    if len(store.responses(r, i)) == stage])


def _call(builder: Any, **context: Any) -> Any:
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
