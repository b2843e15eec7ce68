"""How cost grows: wall time and peak memory of syco's jobs against the size of the work, on this machine.

Six sweeps, each point (sweep, size) in a process of its own (bench/worker.py), so that its peak RSS
(ru_maxrss) is its own; each runs syco's own code path and times the work itself, model loading
excluded:

- pm_pairs, pm_length: `train.py task=pm` (syco.pm.training.run) on hh-rlhf helpful-base pairs from
  ../shared/data; seconds = the training loop (Lightning's fit from its first to its last batch: the
  optimizer steps, one epoch; data tokenization, the export and the held-out measurement after it
  are not counted); peak RSS = at the end of training (the whole job's, with the export's reload, in
  `extra`). The pairs are hh-rlhf training-side pairs in a seeded order whose untruncated length
  (prompt + chosen + rejected, the row syco packs) lies in (max_length / 2, max_length]: raising
  max_length lengthens the rows the model computes (random pairs are mostly far shorter than 512
  tokens, so raising it would mostly change which pairs are admitted). A smaller pair count takes the
  first pairs of the larger one.
- bon_k: `evaluate.py method=bon` (syco.bon.runner.run_bon), task answer on the built-in facts, one
  untrained exported PM; seconds = pool generation + judging + PM scoring (the policy's and the PM's
  loading subtracted); the estimates and bootstrap over n and the plots are in `extra`.
- ppo_batch, ppo_tokens: `train.py task=ppo` steps (syco.ppo.training.build/fit), PM an untrained
  export on the same base (an adapter on the policy's base); seconds = the mean wall time of a PPO
  step (rollout, scoring, ppo.ppo_epochs epochs of updates) after --ppo-warmup untimed steps.
- eval_items: `evaluate.py` (syco.eval.runner.run), task answer on the built-in facts (4 prompts an
  item), rules judge; seconds = the whole run less the policy's loading.

    python bench/scaling.py --out outputs/scaling/scaling.json       # every sweep, SmolLM2 (15-20 min, 2 cores)
    OMP_NUM_THREADS=1 python bench/scaling.py --quick --out /tmp/scaling.json   # smoke run: tiny model, tiny sizes
    python bench/scaling.py --sweeps pm_length --pm-lengths 128 256 512 1024 --out outputs/scaling/length.json

The result file (a list of rows, rewritten atomically after every point), the tables and the figure:
bench/scaling_report.py (which also redraws them from the file).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from scaling_report import SWEEPS, format_rows_table, format_summary_table, plot
from worker import peak_rss_gb, report, run_worker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED_DATA = Path(os.environ.get("SYCO_SHARED_DATA", REPO.parent / "shared" / "data"))
HH = SHARED_DATA / "hh_rlhf" / "helpful-base" / "test.jsonl.gz"
# (job, knob, unit, the point's key counting units): seconds / units is the per-unit time; units grow
# with the knob, so a constant per-unit time is linear growth. A pool's samples are K x its prompts.
KNOBS = {"pm_pairs": ("pm", "pairs", "pair", "pairs"),
         "pm_length": ("pm", "data.max_length", "token of max_length", "max_length"),
         "bon_k": ("bon", "bon.k", "sample", "samples"),
         "ppo_batch": ("ppo", "ppo.batch_size", "response", "batch_size"),
         "ppo_tokens": ("ppo", "ppo.max_new_tokens", "new token", "max_new_tokens"),
         "eval_items": ("eval", "items", "item", "items")}
QUICK = {"model": "tiny", "pm_pairs": [8, 16], "pm_max_length": 256, "pm_lengths": [128, 256], "pm_fixed_pairs": 8,
         "bon_k": [2, 4], "ppo_batch": [2, 4], "ppo_tokens": [4, 8], "ppo_fixed_batch": 2, "ppo_fixed_tokens": 4,
         "ppo_steps": 1, "eval_items": [1, 2]}


# --- composing configs and timing syco's own functions ---------------------------------------------
def compose(config_name: str, run_dir: Path, overrides: Sequence[str]) -> Any:
    """conf/<config_name>.yaml as the entry point would compose it, with what only a running app knows
    (run_dir, shared_data, Hydra's runtime choices, e.g. evaluate.py's run_name) pinned."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    pinned = [f"run_dir={run_dir}", f"shared_data={SHARED_DATA}", "logger=none"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = hydra_compose(config_name=config_name, overrides=[*pinned, *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


class Phases:
    """Seconds spent in named functions: `wrap(owner, name)` replaces owner.name (a module's,
    class's or instance's attribute, looked up at call time by syco's code) with a timed call."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, owner: Any, name: str, label: str | None = None) -> None:
        inner, key = getattr(owner, name), label or name

        def timed(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start

        setattr(owner, name, timed)

    def get(self, key: str) -> float:
        return self.seconds.get(key, 0.0)


def select_pairs(pairs: Sequence[Any], length: Callable[[Any], int], max_length: int, n: int, seed: int = 0) -> list:
    """The first n pairs, in a seeded order, whose length lies in (max_length / 2, max_length]: rows
    that fill max_length without truncation. A smaller n takes a prefix of a larger n's pairs."""
    import random

    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    out = []
    for i in order:
        if max_length // 2 < length(pairs[i]) <= max_length:
            out.append(pairs[i])
            if len(out) == n:
                return out
    raise SystemExit(f"only {len(out)} pairs of length ({max_length // 2}, {max_length}] in the training pairs; "
                     f"need {n}")


def response_tokens(samples_jsonl: Path, tokenizer: Any) -> float:
    """Mean tokens of the responses stored in a run's samples.jsonl (the generation's real length)."""
    lengths = [len(tokenizer(r, add_special_tokens=False)["input_ids"])
               for line in samples_jsonl.read_text().splitlines() for r in json.loads(line)["responses"]]
    return sum(lengths) / max(1, len(lengths))


def policy_tokenizer(cfg: Any) -> Any:
    from omegaconf import OmegaConf

    from syco.models.backbone import load_tokenizer

    return load_tokenizer(OmegaConf.to_container(cfg.policy, resolve=True), cfg.cache_dir)


# --- workers: one point each, in a process of its own ------------------------------------------------
def run_pm(point: Mapping[str, Any], run_dir: Path) -> dict:
    import lightning as L
    from omegaconf import OmegaConf

    import syco.pm.training as training
    from syco.data.chat import ChatFormatter
    from syco.models.backbone import load_tokenizer
    from syco.pm.model import PreferenceModel

    max_length, n = int(point["max_length"]), int(point["pairs"])
    cfg = compose("train", run_dir, [
        f"model={point['model']}", "data=hh_rlhf", f"data.sources.hh.path={point['data']}",
        f"data.max_length={max_length}", f"data.batch_size={point['batch_size']}", "trainer.max_epochs=1",
        # the held-out measurement after training is not timed: keep it short
        "data.max_val_pairs=16", "data.probe.misconceptions=null",
        "trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false"])
    formatter = ChatFormatter(load_tokenizer(OmegaConf.to_container(cfg.model, resolve=True), cfg.cache_dir))
    lengths: dict[int, int] = {}

    def length(p: Any) -> int:  # prompt + chosen + rejected, untruncated: the row syco packs
        if id(p) not in lengths:
            lengths[id(p)] = len(formatter.prompt_ids(list(p.prompt))) + sum(
                map(len, formatter.responses_ids([p.chosen, p.rejected])))
        return lengths[id(p)]

    chosen: list[Any] = []
    build = training.build_preference_splits

    def splits_of_the_sweep(*a: Any, **k: Any) -> Any:  # syco's splits, then this point's training pairs
        splits = build(*a, **k)
        splits.train = select_pairs(splits.train, length, max_length, n)
        chosen.extend(splits.train)
        return splits

    training.build_preference_splits = splits_of_the_sweep
    marks: list[float] = []

    rss: list[float] = []

    class Clock(L.Callback):
        def on_train_start(self, *a: Any, **k: Any) -> None:
            marks.append(time.perf_counter())

        def on_train_batch_end(self, *a: Any, **k: Any) -> None:
            marks.append(time.perf_counter())

        def on_train_end(self, *a: Any, **k: Any) -> None:
            # the peak so far (ru_maxrss never falls): loading and training, before the export's reload
            rss.append(peak_rss_gb())

    callbacks = training.extra_callbacks
    training.extra_callbacks = lambda c: [*callbacks(c), Clock()]  # the config's route takes no instances
    phases = Phases()
    phases.wrap(PreferenceModel, "create", "load")
    start = time.perf_counter()
    summary = training.run(cfg)
    total = time.perf_counter() - start
    steps = len(marks) - 1
    tokens = sum(length(p) for p in chosen)
    seconds = marks[-1] - marks[0]
    return {"seconds": seconds, "what": "training loop, one epoch", "peak_rss_gb": rss[0],
            "notes": {"steps": steps, "mean pair tokens": tokens / n, "s per 1k pair tokens": 1000 * seconds / tokens},
            "extra": {"steps": steps, "global_step": summary["global_step"], "tokens": tokens,
                      "steady_step_s": (marks[-1] - marks[1]) / (steps - 1) if steps > 1 else None,
                      "first_step_s": marks[1] - marks[0], "load_s": phases.get("load"),
                      "job_peak_rss_gb": peak_rss_gb(),  # with the export, its reload and the held-out measurement
                      "run_total_s": total}}


def run_bon(point: Mapping[str, Any], run_dir: Path) -> dict:
    import syco.bon.runner as runner
    import syco.eval.generation as generation
    import syco.pm

    cfg = compose("evaluate", run_dir, [
        "method=bon", f"policy={point['model']}", "bon.tasks=[answer]", f"bon.k={point['k']}",
        f"+bon.pms.pm={point['pm']}", "bon.device=cpu", "eval.probe.sources.builtin=null",
        f"eval.answer.sources.builtin.limit={point['items']}"])
    phases = Phases()
    phases.wrap(generation, "Policy", "policy_load")
    phases.wrap(syco.pm, "load", "pm_load")
    for name in ("build_pools", "judge_pools", "score_selectors", "estimates", "paired_changes"):
        phases.wrap(runner, name)
    start = time.perf_counter()
    summary = runner.run_bon(cfg)
    total = time.perf_counter() - start - phases.get("policy_load") - phases.get("pm_load")
    generate = phases.get("build_pools") - phases.get("policy_load")
    score = phases.get("score_selectors") - phases.get("pm_load")
    samples = sum(summary["samples"].values())
    tokens = response_tokens(run_dir / "samples.jsonl", policy_tokenizer(cfg))
    return {"seconds": generate + phases.get("judge_pools") + score, "what": "pool generation, judging, PM scoring",
            "peak_rss_gb": peak_rss_gb(),
            "notes": {"prompts": sum(summary["pools"].values()), "generate s": generate, "score s": score,
                      "response tokens": tokens},
            "extra": {"generate_s": generate, "judge_s": phases.get("judge_pools"), "score_s": score,
                      "estimate_s": phases.get("estimates") + phases.get("paired_changes"), "run_total_s": total,
                      "policy_load_s": phases.get("policy_load"), "pm_load_s": phases.get("pm_load"),
                      "samples": samples, "response_tokens": tokens}}


def run_ppo(point: Mapping[str, Any], run_dir: Path) -> dict:
    import lightning as L

    import syco.ppo.module as ppo_module
    from syco.ppo.training import build, fit, trainer_for

    batch, warmup, timed = int(point["batch_size"]), int(point["warmup"]), int(point["steps"])
    steps = warmup + timed
    cfg = compose("train", run_dir, [
        f"model={point['model']}", "task=ppo", f"ppo.pm={point['pm']}", f"ppo.batch_size={batch}",
        f"ppo.mini_batch_size={min(batch, int(point['mini_batch_size']))}",
        f"ppo.max_new_tokens={point['max_new_tokens']}",
        # one step more than run: evaluation runs at the last configured step, never reached here
        f"ppo.total_steps={steps + 1}", "ppo.eval.at_start=false", f"ppo.eval.every={10**6}",
        "ppo.eval_prompts.limit=2", f"ppo.checkpoint_every={10**6}",
        "trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false"])
    L.seed_everything(int(cfg.seed))
    phases = Phases()
    for name in ("sample", "evaluate"):  # generation, and the no-grad forwards of the rollout
        phases.wrap(ppo_module, name)
    module, ppo = build(cfg)
    for name in ("scores", "ppo_update"):
        phases.wrap(module, name)
    marks: list[float] = []
    lengths: list[float] = []

    class Clock(L.Callback):
        def on_train_start(self, *a: Any, **k: Any) -> None:
            marks.append(time.perf_counter())

        def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *a: Any, **k: Any) -> None:
            marks.append(time.perf_counter())
            lengths.append(float(pl_module.last_metrics.get("response/length", float("nan"))))
            if len(marks) == warmup + 1:
                phases.seconds.clear()  # the phases of the timed steps only
            if len(marks) == steps + 1:
                trainer.should_stop = True

    trainer = trainer_for(cfg, ppo, [], run_dir)
    trainer.callbacks += [Clock()]
    fit(trainer, module)
    if module.ppo_step != steps:
        raise RuntimeError(f"ran {module.ppo_step} PPO steps, expected {steps}")
    per_step = (marks[-1] - marks[warmup]) / timed
    length = sum(lengths[warmup:]) / timed
    phase = {f"{k}_s": v / timed for k, v in phases.seconds.items()}
    return {"seconds": per_step, "what": "one PPO step", "peak_rss_gb": peak_rss_gb(),
            "notes": {"response tokens": length, "generate s": phase.get("sample_s", 0.0),
                      "update s": phase.get("ppo_update_s", 0.0)},
            "extra": {**phase, "response_tokens": length, "timed_steps": timed, "warmup_steps": warmup,
                      "pm_adapter": type(module.pm).__name__ == "SharedBasePM",
                      # the config's settings that set a step's work (conf/ppo/default.yaml at this commit)
                      "ppo": {k: cfg.ppo.get(k) for k in ("ppo_epochs", "mini_batch_size", "samples_per_prompt",
                                                          "critic", "share_prompts", "temperature")}}}


def run_eval(point: Mapping[str, Any], run_dir: Path) -> dict:
    import syco.eval.generation as generation
    import syco.eval.runner as runner

    cfg = compose("evaluate", run_dir, [f"policy={point['model']}", "eval.tasks=[answer]",
                                        f"eval.answer.sources.builtin.limit={point['items']}"])
    phases = Phases()
    phases.wrap(generation, "Policy", "policy_load")
    for name in ("generate_samples", "judge_and_aggregate"):
        phases.wrap(runner, name)
    start = time.perf_counter()
    summary = runner.run(cfg)
    seconds = time.perf_counter() - start - phases.get("policy_load")
    tokens = response_tokens(run_dir / "samples.jsonl", policy_tokenizer(cfg))
    generate = phases.get("generate_samples")
    return {"seconds": seconds, "what": "the run less loading", "peak_rss_gb": peak_rss_gb(),
            "notes": {"samples": summary["samples"]["answer"], "generate s": generate, "response tokens": tokens},
            "extra": {"generate_s": generate, "judge_s": phases.get("judge_and_aggregate"),
                      "policy_load_s": phases.get("policy_load"), "samples": summary["samples"]["answer"],
                      "response_tokens": tokens}}


def run_export(point: Mapping[str, Any], run_dir: Path) -> dict:
    """An untrained PM on the policy's base, exported once: cost does not depend on what it learned."""
    from omegaconf import OmegaConf

    from syco.pm.model import PreferenceModel

    cfg = compose("train", run_dir, [f"model={point['model']}"])
    PreferenceModel.create(OmegaConf.to_container(cfg.model, resolve=True), int(cfg.data.max_length),
                           cache_dir=cfg.cache_dir).save(point["pm"])
    return {"pm": point["pm"]}


WORKERS = {"pm": run_pm, "bon": run_bon, "ppo": run_ppo, "eval": run_eval, "export": run_export}


# --- the sweeps --------------------------------------------------------------------------------------
def points(args: argparse.Namespace, pm: str) -> list[tuple[str, float, dict[str, Any]]]:
    """(sweep, size, the worker's point) for every size of every chosen sweep."""
    m = args.model
    pm_point = {"job": "pm", "model": m, "batch_size": args.pm_batch_size, "data": str(args.data)}
    ppo_point = {"job": "ppo", "model": m, "pm": pm, "steps": args.ppo_steps, "warmup": args.ppo_warmup,
                 "mini_batch_size": args.ppo_mini_batch_size}
    make = {
        "pm_pairs": lambda n: {**pm_point, "pairs": n, "max_length": args.pm_max_length},
        "pm_length": lambda n: {**pm_point, "pairs": args.pm_fixed_pairs, "max_length": n},
        "bon_k": lambda k: {"job": "bon", "model": m, "pm": pm, "k": k, "items": args.bon_items},
        "ppo_batch": lambda b: {**ppo_point, "batch_size": b, "max_new_tokens": args.ppo_fixed_tokens},
        "ppo_tokens": lambda t: {**ppo_point, "batch_size": args.ppo_fixed_batch, "max_new_tokens": t},
        "eval_items": lambda n: {"job": "eval", "model": m, "items": n},
    }
    sizes = {"pm_pairs": args.pm_pairs, "pm_length": args.pm_lengths, "bon_k": args.bon_k,
             "ppo_batch": args.ppo_batch, "ppo_tokens": args.ppo_tokens, "eval_items": args.eval_items}
    return [(sweep, n, make[sweep](n)) for sweep in args.sweeps for n in sizes[sweep]]


def make_row(sweep: str, size: float, point: Mapping[str, Any], result: Mapping[str, Any], context: Mapping[str, Any],
             shared_with: str | None = None) -> dict[str, Any]:
    job, knob, unit, count = KNOBS[sweep]
    units = float({**point, **result.get("extra", {})}[count])
    settings = {k: v for k, v in point.items() if k not in ("job", "pm")}
    if "pm" in point:
        settings["pm"] = "untrained export on the policy's base"
    row = {"sweep": sweep, "job": job, "knob": knob, "size": size, "seconds": result["seconds"], "what": result["what"],
           "units": units, "unit": unit, "per_unit_s": result["seconds"] / units,
           "peak_rss_gb": result["peak_rss_gb"], "notes": result.get("notes", {}), "settings": settings,
           "extra": result.get("extra", {}), **context}
    if shared_with:
        row["shared_with"] = shared_with  # the same point measured once, reported in both sweeps
    return row


def context() -> dict[str, Any]:
    """Commit and machine, recorded in every row; `tree_changes`: tracked files that differ from the
    commit (the code measured is then not exactly the commit's)."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changes = len(git("status", "--porcelain", "--untracked-files=no").splitlines())
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"commit": commit, "tree_changes": changes, "machine": {"cpus": os.cpu_count(), "cpu": cpu,
                                          "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "default")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=sorted(WORKERS))
    ap.add_argument("--point", help="the worker's point (JSON)")
    ap.add_argument("--out", default="outputs/scaling/scaling.json",
                    help="the result file (rewritten after each point)")
    ap.add_argument("--png", help="the figure (default: beside --out, .png)")
    ap.add_argument("--quick", action="store_true", help="smoke run: model=tiny and tiny sizes (overrides the sizes)")
    ap.add_argument("--sweeps", nargs="+", choices=list(SWEEPS), default=list(SWEEPS))
    ap.add_argument("--model", default="smollm2", help="model / policy config (conf/model): smollm2, tiny, ...")
    ap.add_argument("--data", default=str(HH), help="hh-rlhf pairs for PM training")
    ap.add_argument("--pm-pairs", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--pm-max-length", type=int, default=256, help="data.max_length of the pm_pairs sweep")
    ap.add_argument("--pm-lengths", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--pm-fixed-pairs", type=int, default=16, help="pairs of the pm_length sweep")
    ap.add_argument("--pm-batch-size", type=int, default=8)
    ap.add_argument("--bon-k", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--bon-items", type=int, default=1, help="built-in facts (4 answer prompts each)")
    ap.add_argument("--ppo-batch", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--ppo-tokens", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--ppo-fixed-batch", type=int, default=8, help="ppo.batch_size of the ppo_tokens sweep")
    ap.add_argument("--ppo-fixed-tokens", type=int, default=32, help="ppo.max_new_tokens of the ppo_batch sweep")
    ap.add_argument("--ppo-mini-batch-size", type=int, default=4, help="ppo.mini_batch_size (at most the batch)")
    ap.add_argument("--ppo-steps", type=int, default=2, help="timed PPO steps per point")
    ap.add_argument("--ppo-warmup", type=int, default=1, help="untimed PPO steps first")
    ap.add_argument("--eval-items", type=int, nargs="+", default=[8, 16, 32])
    args = ap.parse_args()
    if args.worker:
        with tempfile.TemporaryDirectory() as tmp:
            report(WORKERS[args.worker](json.loads(args.point), Path(tmp) / "run"))
        return
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)

    from syco.tracking import write_json_atomic

    # workers read only local files; no tracker
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "WANDB_MODE": "disabled"}
    ctx = context()
    rows: list[dict[str, Any]] = []
    began = time.time()
    measured: dict[str, tuple[str, dict]] = {}
    failed: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        pm = str(Path(tmp) / "pm")
        todo = points(args, pm)
        if any(p["job"] in ("bon", "ppo") for _, _, p in todo):
            run_worker(__file__, "export", ["--point", json.dumps({"model": args.model, "pm": pm})], env)
        for sweep, size, point in todo:
            key = json.dumps(point, sort_keys=True)
            first = measured.get(key)
            start = time.time()
            if first is None:
                try:
                    measured[key] = (sweep, run_worker(__file__, point["job"], ["--point", key], env))
                except SystemExit as e:  # one failed point (its output printed above) does not stop the others
                    failed.append(f"{sweep} {KNOBS[sweep][1]}={size:g}: {e}")
                    continue
            result = measured[key][1]
            rows.append(make_row(sweep, size, point, result, ctx, first[0] if first else None))
            write_json_atomic(args.out, rows)
            how = f"measured with {first[0]}" if first else f"{time.time() - start:.0f} s with loading"
            print(f"{sweep:10s} {KNOBS[sweep][1]:>20s} = {size:<5g} {result['seconds']:8.2f} s  peak RSS "
                  f"{result['peak_rss_gb']:.2f} GB  ({how})", flush=True)
    print(f"\nmodel={args.model}, torch threads: OMP_NUM_THREADS={ctx['machine']['omp_num_threads']} "
          f"({ctx['machine']['cpus']} CPUs), commit {ctx['commit']}; {len(measured)} measurements in "
          f"{(time.time() - began) / 60:.1f} min with loading\n")
    print(format_rows_table(rows) + "\n\n" + format_summary_table(rows))
    print(f"\nwrote {args.out} and {plot(rows, args.png or Path(args.out).with_suffix('.png'))}")
    if failed:
        raise SystemExit("failed points:\n" + "\n".join(failed))


if __name__ == "__main__":
    main()
