"""The planted-bias pipeline of experiment=planted_bias_known (the seventh PPO measurement,
docs/results), one stage after another under a run root:

  samples          the policy's samples on the training side (evaluate.py eval=policy_samples, T=0.7)
  pm_standard      the standard PM on them (train.py experiment=planted_bias_known)
  pm_nonsyco       the non-sycophantic PM (pm=nonsyco pm.anti_sycophancy.ratio=0.25)
  bon              best-of-8 with both PMs on the held-out facts (evaluate.py method=bon eval=planted_bias)
  ppo_standard     PPO against the standard PM, the nonsyco PM as gold (task=ppo, known facts only)
  ppo_nonsyco      PPO against the nonsyco PM, the standard PM as gold
  checkpoints_nonsyco, checkpoints_standard
                   every saved PPO step evaluated on the held-out facts with both PMs' scores
                   (evaluate.py method=checkpoints); the standard run's also with versus (standard
                   minus nonsyco), the best-of-n overlay and the nonsyco run's curves

Layout under ROOT: policy_samples/, pms/<pm>/ (export in pms/<pm>/pm), bon/, ppo/<pm>/ (evaluations in
ppo/<pm>/evaluations/planted_bias/), checkpoints/<pm>/ (their Hydra logs). A stage whose last file
exists is skipped, so the same command resumes a stopped pipeline; the PM and PPO stages resume
mid-run from their checkpoints (ckpt_path=last). The first failing stage stops it (exit status != 0).

  python scripts/planted_bias_known.py outputs/planted_bias_known --dry-run
  python scripts/planted_bias_known.py outputs/planted_bias_known [--samples <samples.jsonl>] \\
      [--set ppo:ppo.total_steps=75 --redo ppo] [--set train:trainer=gpu] [--only pm,bon]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from recipe import Stage, main

EXPERIMENT = "experiment=planted_bias_known"
PMS = {"standard": [], "nonsyco": ["pm=nonsyco", "pm.anti_sycophancy.ratio=0.25"]}
EVAL_NAME = "planted_bias"  # checkpoints.name: the eval config's name, the evaluations' sub-folder


def stages(args: argparse.Namespace) -> list[Stage]:
    root = args.root
    samples_dir = root / "policy_samples"
    samples = args.samples.resolve() if args.samples else samples_dir / "samples.jsonl"
    out: list[Stage] = []
    if not args.samples:
        out.append(Stage("samples", "evaluate", [
            "eval=policy_samples", "eval.generation.temperature_free=0.7", "eval.answer.sources.builtin.limit=200",
            f"hydra.run.dir={samples_dir}"], samples_dir / "results.json"))
    pm = {name: root / "pms" / name for name in PMS}
    for name, overrides in PMS.items():
        out.append(Stage(f"pm_{name}", "train", [EXPERIMENT, f"policy_samples={samples}", *overrides, "ckpt_path=last",
                                                 f"hydra.run.dir={pm[name]}"], pm[name] / "metrics.json"))
    out.append(Stage("bon", "evaluate", [
        "method=bon", "eval=planted_bias", "bon.k=8", "bon.tasks=[answer]", "eval.probe.sources.builtin=null",
        "eval.generation.temperature_free=0.7", *(f"+bon.pms.{n}={pm[n] / 'pm'}" for n in PMS),
        f"hydra.run.dir={root / 'bon'}"], root / "bon" / "results.json"))
    ppo = {name: root / "ppo" / name for name in PMS}
    for name, other in (("standard", "nonsyco"), ("nonsyco", "standard")):
        out.append(Stage(f"ppo_{name}", "train", [
            EXPERIMENT, "task=ppo", f"policy_samples={samples}", f"ppo.pm={pm[name] / 'pm'}",
            f"ppo.gold_pm={pm[other] / 'pm'}", "ckpt_path=last", f"hydra.run.dir={ppo[name]}"],
            ppo[name] / "metrics.json"))
    evaluations = {name: ppo[name] / "evaluations" / EVAL_NAME for name in PMS}
    for name in ("nonsyco", "standard"):  # the standard run's report reads the nonsyco run's
        compare = [f"checkpoints.versus={evaluations['nonsyco']}", f"checkpoints.bon={root / 'bon' / 'results.json'}",
                   f"checkpoints.overlay=[{evaluations['nonsyco'] / 'checkpoints.json'}]"] if name == "standard" else []
        out.append(Stage(f"checkpoints_{name}", "evaluate", [
            "method=checkpoints", f"checkpoints.run={ppo[name]}", "eval=planted_bias", "eval.tasks=[answer]",
            "eval.generation.temperature_free=0.7", "eval.generation.samples_per_prompt=4",
            *(f"+checkpoints.pm_scores.{n}={pm[n] / 'pm'}" for n in PMS), *compare,
            f"hydra.run.dir={root / 'checkpoints' / name}"], evaluations[name] / "checkpoints.json"))
    return out


def run(argv: Sequence[str] | None = None) -> int:
    return main(__doc__, stages, argv, paths=[("--samples", "the policy's samples.jsonl to use (skips the samples stage)")])


if __name__ == "__main__":
    sys.exit(run())
