#!/bin/bash
# Defaults for one GPU job; sbatch options on the command line override them (resources are arguments):
#   sbatch --partition=gpu --gpus-per-node=1 --cpus-per-task=16 --mem=64G --time=00:15:00 slurm/planted_bias_gpu.sh
#SBATCH --job-name=syco-planted-bias
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --mem=64G
#SBATCH --time=00:15:00
#SBATCH --output=%x-%j.out
# The planted-bias measurement at GPU scale, in one job on one GPU (side by side on it):
#   1. the standard and the nonsyco PM on every belief pair (templated + policy-written), 1 epoch;
#      best-of-n pools of K=64 on the held-out facts and misconceptions, generated meanwhile;
#   2. both PMs score the pools (results.json at every n), and PPO runs against each PM (the other
#      one as gold), temperature 0.7, training prompts = facts and misconceptions (training side);
#   3. every saved PPO step evaluated on the held-out items (evaluate.py method=checkpoints).
# A deadline (DEADLINE seconds from the start) keeps it inside the job's time limit: PPO stops early
# if it must, keeping its saved steps. Uses the policy samples of the fourth best-of-n measurement
# (docs/results/bon-4-temperature-07/) at PS, or samples them first (T=0.7, 200 facts and every training-side misconception; PS_T s at most):
#   sbatch slurm/planted_bias_gpu.sh                  # or: bash slurm/planted_bias_gpu.sh on a GPU machine
#   PS=<samples.jsonl> R=<run folder> OUT=<pack folder> PPO_STEPS=100 DEADLINE=560 sbatch ...
# Shorter windows: PM_X (PM overrides), PM_T (PM and pool stage limit, s), CK_RESERVE (s kept after PPO
# for checkpoint evaluation and packing), CK_SAMPLES (samples per prompt there); PPO_LR, PPO_EPOCHS (3e-4
# and 4; why: docs/results/ppo-3-gpu/ and docs/results/ppo-update-size/).
# PMS="standard unbiased" (default "standard nonsyco") picks the two PMs: standard = the planted-bias rater
# (beta=4), nonsyco = standard data plus anti-sycophancy pairs, unbiased = the same pairs labelled by the
# rater without the agreement bias (beta=0), the controlled counterpart. BON=0 skips the best-of-n pools.
# PMs already in $R/pms/<variant>/pm are reused. PPO_MISC=null: PPO prompts are the training-side facts only.
# PPO_EXTRA: more train.py overrides for both PPO runs, e.g. the per-prompt baseline of the fourth PPO
# measurement (docs/results/ppo-4-prompt-baseline/):
#   PPO_EXTRA="ppo.samples_per_prompt=4 ppo.reward.baseline=prompt ppo.optimizer.scheduler=constant"
# SMALL=1 runs the same flow at toy sizes on CPU (a dry run of the commands: ~20 min on 2 cores).
# Interpreter: PYTHON, else `python` of the activated venv, else <repo>/.venv/bin/python; the checkout:
# SYCO_REPO, else the folder sbatch was called from (or this script's parent when run with bash).
# Relative R, PS and OUT are read from the checkout. Any failed stage fails the job (exit 1, the failed
# stages named); a PPO stage stopped by its time limit is not a failure when it saved a policy step.
set -euo pipefail
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
if [ -n "${SLURM_JOB_ID:-}" ]; then REPO=${SYCO_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}; else REPO=${SYCO_REPO:-$(dirname "$0")/..}; fi
REPO=$(cd "$REPO" && pwd); cd "$REPO"
[ -f train.py ] || { echo "planted_bias_gpu.sh: no train.py in $REPO (set SYCO_REPO)" >&2; exit 2; }
if [ -z "${PYTHON:-}" ]; then PYTHON=$(command -v python || echo "$REPO/.venv/bin/python"); fi
PY=$(command -v "$PYTHON") || { echo "planted_bias_gpu.sh: no interpreter '$PYTHON' (activate the venv or set PYTHON)" >&2; exit 2; }
absolute() { case $1 in /*) echo "$1" ;; *) echo "$REPO/$1" ;; esac; }
R=$(absolute "${R:-outputs/planted_bias_gpu}"); mkdir -p "$R"
DEADLINE=${DEADLINE:-560}
PS=$(absolute "${PS:-outputs/policy_samples_t07/samples.jsonl}")
[ -f "$PS" ] || [ ! -f "$PS.gz" ] || gunzip -k "$PS.gz"
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
if [ "${SMALL:-0}" = 1 ]; then
  PM_X="data.max_train_pairs=24 data.max_val_pairs=16 trainer.max_epochs=1 data.probe.templates=1"
  K=4; BON_X="eval.answer.sources.builtin.limit=4 eval.misconceptions.sources.builtin.limit=3"
  PPO_X="ppo.total_steps=2 ppo.batch_size=4 ppo.mini_batch_size=2 ppo.eval.every=1 ppo.eval_prompts.limit=4"
  CK_X="eval.answer.sources.builtin.limit=3 eval.misconceptions.sources.builtin.limit=2 eval.generation.samples_per_prompt=2"
  TR="trainer=cpu"; GEN_BS=16
  PS_X="eval.answer.sources.builtin.limit=6 eval.misconceptions.sources.builtin.limit=4 eval.generation.samples_per_prompt=4"
else
  # batch 32: at batch 8 the nonsyco PM (6829 pairs) took over 4 min on an H200 (small steps are CPU-bound)
  PM_X=${PM_X:-"data.max_train_pairs=null trainer.max_epochs=1 data.batch_size=32 optimizer.lr=4e-4"}
  K=64; BON_X=""
  PPO_X="ppo.total_steps=${PPO_STEPS:-100} ppo.batch_size=32 ppo.mini_batch_size=16 ppo.eval.every=${PPO_EVERY:-20} ppo.checkpoint_every=${PPO_EVERY:-20}"
  CK_X="eval.generation.samples_per_prompt=${CK_SAMPLES:-6} eval.generation.batch_size=512"
  TR="trainer=gpu trainer.precision=32-true"; GEN_BS=1024
  PS_X="eval.answer.sources.builtin.limit=200"
fi
run() {  # name, seconds, command...: a stage with its own log and a hard stop
  local name=$1 secs=$(( $2 * ${SCALE:-1} )); shift 2
  el "start $name (limit ${secs}s)"
  local rc=0
  timeout -k 10 $secs "$@" > "$R/$name.log" 2>&1 || rc=$?
  el "end $name rc=$rc"; tail -n 4 "$R/$name.log" | sed "s/^/  $name| /" || true
  return $rc
}
declare -A PIDS=()
FAILED=()
start() {  # run a stage in the background; `finish` collects it
  run "$@" &
  PIDS[$1]=$!
}
finish() {  # wait for the named stages; any that failed fails the job
  local name rc
  for name in "$@"; do
    rc=0; wait "${PIDS[$name]}" || rc=$?
    unset "PIDS[$name]"
    if [ $rc != 0 ] && [ $rc = 124 ] && [[ $name == ppo_* ]] && compgen -G "$R/ppo/${name#ppo_}/policy/step_*" > /dev/null; then
      el "$name stopped at its time limit; its saved policy steps are kept"
    elif [ $rc != 0 ]; then
      FAILED+=("$name (rc=$rc, log $R/$name.log)")
    fi
  done
  if [ ${#FAILED[@]} -gt 0 ]; then
    el "FAILED: ${FAILED[*]}"
    wait || true  # let the stages still running end before the job does
    exit 1
  fi
}
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
el "model cache"
"$PY" - <<'PY'
import yaml
from syco.models.backbone import _gguf_cache_dir, default_cache_dir  # $SYCO_CACHE, else ~/.cache/syco
print(_gguf_cache_dir(yaml.safe_load(open("conf/model/smollm2.yaml")), default_cache_dir()))
PY
el "cached"
if [ ! -f $PS ]; then  # the fourth best-of-n measurement's policy samples (docs/results/bon-4-temperature-07/), made here when not given
  el "no policy samples at $PS: sampling them into $R/policy_samples"
  PS=$R/policy_samples/samples.jsonl
  [ -f "$PS" ] || run policy_samples ${PS_T:-240} "$PY" evaluate.py eval=policy_samples eval.generation.temperature_free=0.7 \
    eval.generation.batch_size=$GEN_BS $PS_X hydra.run.dir=$R/policy_samples || { el "FAILED: policy samples"; exit 1; }
fi
PMC="experiment=planted_bias_policy $TR data.policy_samples=$PS $PM_X"
BON_ARGS="method=bon eval=planted_bias bon.k=$K eval.probe.sources.builtin=null eval.generation.temperature_free=0.7 eval.generation.batch_size=$GEN_BS bon.score_batch_size=64 $BON_X hydra.run.dir=$R/bon"
read -r A B <<< "${PMS:-standard nonsyco}"
pm_args() {  # the train.py overrides of one PM variant
  case $1 in
    standard) echo "" ;;
    nonsyco) echo "pm=nonsyco pm.anti_sycophancy.ratio=0.7" ;;
    unbiased) echo "data.sources.beliefs.beta=0" ;;  # same pairs, rater without the agreement bias
    *) echo "unknown PM variant $1 (standard | nonsyco | unbiased)" >&2; return 1 ;;
  esac
}
XA=$(pm_args $A) && XB=$(pm_args $B) || exit 1
for v in $A $B; do [ -f $R/pms/$v/pm/syco_pm.json ] && el "PM $v: reusing $R/pms/$v/pm"; done
STAGES=()
[ -f $R/pms/$A/pm/syco_pm.json ] || { start pm_$A ${PM_T:-240} "$PY" train.py $PMC $XA hydra.run.dir=$R/pms/$A; STAGES+=(pm_$A); sleep 5; }
[ -f $R/pms/$B/pm/syco_pm.json ] || { start pm_$B ${PM_T:-240} "$PY" train.py $PMC $XB hydra.run.dir=$R/pms/$B; STAGES+=(pm_$B); sleep 5; }
if [ "${BON:-1}" = 1 ]; then start bon_pools ${PM_T:-240} "$PY" evaluate.py $BON_ARGS; STAGES+=(bon_pools); fi
finish "${STAGES[@]}"
for v in $A $B; do [ -f $R/pms/$v/pm/syco_pm.json ] || { el "FAILED: PM $v is missing ($R/pms/$v/pm)"; exit 1; }; done
G="$TR ppo.temperature=0.7 ppo.max_new_tokens=40 ppo.ppo_epochs=${PPO_EPOCHS:-4} ppo.optimizer.lr=${PPO_LR:-3e-4} ppo.prompts.misconceptions=${PPO_MISC:-builtin} $PPO_X ${PPO_EXTRA:-}"
PPO_T=$(( $(left) - ${CK_RESERVE:-150} ))  # what is left after PPO: checkpoint evaluation and packing
start ppo_$A $PPO_T "$PY" train.py task=ppo $G ppo.pm=$R/pms/$A/pm ppo.gold_pm=$R/pms/$B/pm hydra.run.dir=$R/ppo/$A
sleep 3
start ppo_$B $PPO_T "$PY" train.py task=ppo $G ppo.pm=$R/pms/$B/pm ppo.gold_pm=$R/pms/$A/pm hydra.run.dir=$R/ppo/$B
sleep 3
if [ "${BON:-1}" = 1 ]; then start bon_scored $(( $(left) - 20 )) "$PY" evaluate.py $BON_ARGS +bon.pms.$A=$R/pms/$A/pm +bon.pms.$B=$R/pms/$B/pm; fi
finish ppo_$A ppo_$B
for v in $A $B; do
  start ck_$v $(( $(left) - 15 )) "$PY" evaluate.py method=checkpoints eval=planted_bias checkpoints.run=$R/ppo/$v \
    eval.generation.temperature_free=0.7 $CK_X
  sleep 2
done
finish ck_$A ck_$B ${PIDS[bon_scored]:+bon_scored}
el "packing"
O=$(absolute "${OUT:-$R/packed}"); mkdir -p "$O"
tar -czf $O/logs.tgz -C $R $(cd $R && ls *.log)
for v in $A $B; do (cd $R && tar -czf $O/pm_$v.tgz --exclude='checkpoints' pms/$v); done
if [ -d $R/bon ]; then (cd $R && tar -czf $O/bon.tgz --exclude='judge_cache' bon); fi
(cd $R && tar -czf $O/ppo.tgz --exclude='checkpoints' --exclude='*.ckpt' --exclude='*.safetensors' ppo)
ls -la $O; el "done"
