#!/usr/bin/env bash
# The cluster pipeline end to end on the local one-node SLURM (../shared/tools/local-slurm/start.sh,
# 2 CPUs): planted-bias PMs (standard, nonsyco) x seeds 0,1,2 as one Hydra sweep, PPO against each PM
# as a second sweep, every PPO run's checkpoints evaluated as a third, then the seeds aggregated.
# Small sizes (SmolLM2-135M, 300 training pairs, 4 PPO steps): it shows the machinery, not an effect.
#   bash docs/results/cluster-seeds/run.sh <output root>     (run from the repository root)
set -euo pipefail
OUT=$(realpath -m "${1:-outputs/cluster-seeds}")
PY=${PYTHON:-.venv/bin/python}
export WANDB_MODE=offline OMP_NUM_THREADS=1
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$OUT/times.txt"; }
LAUNCH=(-m hydra/launcher=slurm hydra.launcher.timeout_min=60 hydra.launcher.mem_gb=6)

stamp "PM sweep: 2 variants x 3 seeds"
$PY train.py "${LAUNCH[@]}" experiment=planted_bias_standard,planted_bias_nonsyco seed=0,1,2 \
    data.max_train_pairs=300 data.max_val_pairs=100 \
    hydra.sweep.dir="$OUT/pms" 'hydra.sweep.subdir=${pm.variant}_seed${seed}'
stamp "PM sweep done"

stamp "PPO sweep: one run per PM, the PM's seed"
$PY train.py "${LAUNCH[@]}" task=ppo +pm_variant=standard,nonsyco seed=0,1,2 \
    "ppo.pm=$OUT/pms/\${pm_variant}_seed\${seed}/pm" ppo.total_steps=4 ppo.batch_size=8 ppo.max_new_tokens=24 \
    ppo.eval.every=2 ppo.checkpoint_every=2 ppo.eval_prompts.limit=8 logger=many \
    hydra.sweep.dir="$OUT/ppo" 'hydra.sweep.subdir=${pm_variant}_seed${seed}'
stamp "PPO sweep done"

stamp "checkpoint evaluations: every saved step of every PPO run"
$PY evaluate.py "${LAUNCH[@]}" method=checkpoints eval=planted_bias +pm_variant=standard,nonsyco +run_seed=0,1,2 \
    "checkpoints.run=$OUT/ppo/\${pm_variant}_seed\${run_seed}" eval.answer.sources.builtin.limit=40 \
    eval.misconceptions.sources.builtin.limit=40 logger=many \
    hydra.sweep.dir="$OUT/evals" 'hydra.sweep.subdir=${pm_variant}_seed${run_seed}'
stamp "checkpoint evaluations done"

$PY scripts/aggregate_seeds.py "$OUT/ppo" --out "$OUT/seeds" --logger wandb --ignore pm_variant --ignore run_seed
stamp "seeds aggregated into $OUT/seeds"
