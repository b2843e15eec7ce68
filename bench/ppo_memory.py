"""Peak memory of a PPO step against PM training on the same base model, side by side.

PPO holds the policy and value LoRA adapters (+ value head), the reference (adapters disabled)
and the PM (an adapter on the same base when it was trained on it; `--pm-separate` loads it as a
model of its own) and samples, scores and updates. PM training is `task=pm`'s training loop
(PreferenceModel + Lightning) on the same base. Each run is its own process, so its peak RSS
(ru_maxrss) is its own; runs alternate PPO, PM, PPO, ... and the medians are compared.

    python bench/ppo_memory.py                       # SmolLM2-135M, CPU, 2 rounds (goal: ratio <= 1.6)
    python bench/ppo_memory.py --model tiny --rounds 1 --ppo-steps 1 --pm-steps 2   # smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from worker import peak_rss_gb, report, run_worker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def compose(args: argparse.Namespace, run_dir: Path, *overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    pinned = [f"model={args.model}", f"run_dir={run_dir}", f"shared_data={REPO.parent / 'shared' / 'data'}",
              "logger=none", "trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return hydra_compose(config_name="train", overrides=[*pinned, *overrides])


def run_export(args: argparse.Namespace) -> dict:
    """An (untrained) PM on the base, exported: PPO's memory does not depend on what the PM learned."""
    from omegaconf import OmegaConf

    from syco.pm.model import PreferenceModel

    cfg = compose(args, Path(args.pm_path).parent)
    PreferenceModel.create(OmegaConf.to_container(cfg.model, resolve=True), int(cfg.data.max_length)).save(args.pm_path)
    return {"pm_path": args.pm_path}


def run_ppo(args: argparse.Namespace, run_dir: Path) -> dict:
    from syco.ppo.training import build, fit, trainer_for

    cfg = compose(args, run_dir, "task=ppo", f"ppo.pm={args.pm_path}", f"ppo.total_steps={args.ppo_steps}",
                  f"ppo.batch_size={args.batch_size}", f"ppo.mini_batch_size={args.mini_batch_size}",
                  f"ppo.max_new_tokens={args.max_new_tokens}", "ppo.eval.at_start=false",
                  "ppo.eval_prompts.limit=2", f"ppo.pm_on_policy_base={'false' if args.pm_separate else 'auto'}")
    module, ppo = build(cfg)
    start = time.perf_counter()
    fit(trainer_for(cfg, ppo, [], run_dir), module)
    seconds = time.perf_counter() - start
    eps = module.last_metrics.get("eps")
    return {"peak_rss_gb": peak_rss_gb(), "seconds": seconds, "steps": module.ppo_step,
            "seconds_per_step": args.batch_size / eps if eps else None,
            "pm_on_policy_base": type(module.pm).__name__ == "SharedBasePM"}


def run_pm(args: argparse.Namespace, run_dir: Path) -> dict:
    from syco.data.preference import build_preference_splits
    from syco.pm.training import _train

    cfg = compose(args, run_dir, "task=pm", f"data={args.pm_data}", f"data.batch_size={args.batch_size}",
                  f"data.max_train_pairs={args.batch_size * args.pm_steps}", "data.max_val_pairs=8",
                  f"trainer.max_steps={args.pm_steps}", f"checkpoint.every_n_train_steps={10**6}")
    splits = build_preference_splits(cfg.data, cfg.pm, seed=int(cfg.seed))
    start = time.perf_counter()
    _, trainer = _train(cfg, splits, [], run_dir)
    seconds = time.perf_counter() - start
    return {"peak_rss_gb": peak_rss_gb(), "seconds": seconds, "steps": trainer.global_step,
            "seconds_per_step": seconds / max(trainer.global_step, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["export", "ppo", "pm"])
    ap.add_argument("--model", default="smollm2", help="a conf/model option (smollm2, tiny, ...)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ppo-steps", type=int, default=2)
    ap.add_argument("--pm-steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8, help="prompts per PPO rollout; pairs per PM step")
    ap.add_argument("--mini-batch-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--pm-data", default="beliefs", help="the PM side's data option (beliefs, hh_rlhf, ...)")
    ap.add_argument("--pm-separate", action="store_true", help="load the PM as its own model, not as an adapter")
    ap.add_argument("--pm-path", default=None)
    args = ap.parse_args()
    if args.worker:
        with tempfile.TemporaryDirectory() as tmp:
            fn = {"export": lambda: run_export(args), "ppo": lambda: run_ppo(args, Path(tmp) / "run"),
                  "pm": lambda: run_pm(args, Path(tmp) / "run")}[args.worker]
            report(fn())
        return

    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as tmp:
        args.pm_path = str(Path(tmp) / "pm")
        passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                       if k not in ("worker", "rounds", "pm_separate") and v is not None]
        passthrough += ["--pm-separate"] if args.pm_separate else []

        def worker(who: str) -> dict:
            return run_worker(__file__, who, passthrough, env)

        worker("export")
        results: dict[str, list[dict]] = {"ppo": [], "pm": []}
        for rnd in range(args.rounds):
            for who in ("ppo", "pm"):
                r = worker(who)
                results[who].append(r)
                print(f"round {rnd + 1} {who:3s}: peak RSS {r['peak_rss_gb']:.2f} GB  "
                      f"{r['seconds_per_step']:.1f} s/step ({r['steps']} steps)", flush=True)

    med = {w: {k: statistics.median(r[k] for r in rs) for k in ("peak_rss_gb", "seconds_per_step")}
           for w, rs in results.items()}
    print(f"\nmodel={args.model} PPO: {args.batch_size} prompts x {args.max_new_tokens} new tokens, mini-batch "
          f"{args.mini_batch_size}, PM {'separate' if args.pm_separate else 'adapter on the base when shared'}; "
          f"PM training: data={args.pm_data}, {args.batch_size} pairs/step; rounds={args.rounds}")
    print(f"{'':5s}{'peak RSS GB':>13s}{'s/step':>9s}")
    for w in ("ppo", "pm"):
        print(f"{w:5s}{med[w]['peak_rss_gb']:13.2f}{med[w]['seconds_per_step']:9.1f}")
    ratio = med["ppo"]["peak_rss_gb"] / med["pm"]["peak_rss_gb"]
    print(f"ratio PPO/PM peak RSS: {ratio:.2f}x (goal <= 1.6x)")


if __name__ == "__main__":
    main()
