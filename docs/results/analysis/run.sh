#!/usr/bin/env bash
# analyze.py's acceptance measurements (issue 26), from the repository root:
#   bash docs/results/analysis/run.sh <output root> [standard PM folder] [nonsyco PM folder]
# 1. planted-bias recovery: the simulated rater's pairs (beta = 2, gamma = 1) over 10 seeds, with
#    distractor features of true weight 0; 2. the same data with a weak prior against statsmodels'
#    maximum-likelihood fit; 3. hh-rlhf helpful pairs with the programmatic features and SmolLM2 as
#    LM annotator, and on 300 belief pairs against their true values; 4. labels=pm: the standard and nonsyco PMs on the held-out belief pairs;
#    then coverage.py summarizes 1, 2 and 4 into summary.json beside this script.
set -euo pipefail
OUT=$(realpath -m "${1:-outputs/analysis}")
STANDARD=${2:-}
NONSYCO=${3:-}
PY=${PYTHON:-.venv/bin/python}
export WANDB_MODE=offline OMP_NUM_THREADS=2 SYCO_CACHE="$OUT/cache"
HERE=docs/results/analysis
FEATURES='analysis.features=[truth,longer,hedges_more,more_positive]'
mkdir -p "$OUT"
for seed in 0 1 2 3 4 5 6 7 8 9; do
  $PY analyze.py data=beliefs seed=$seed "$FEATURES" hydra.run.dir="$OUT/planted/seed$seed"
done
$PY analyze.py data=beliefs "$FEATURES" 'analysis.prior_grid=[10.0]' hydra.run.dir="$OUT/weak_prior"
$PY analyze.py data=hh_rlhf annotator=smollm2 analysis.max_pairs=1000 logger=wandb hydra.run.dir="$OUT/hh_smollm2"
# the same again: every feature value comes from the cache
$PY analyze.py data=hh_rlhf annotator=smollm2 analysis.max_pairs=1000 hydra.run.dir="$OUT/hh_smollm2_cached"
# the annotator against the true values: belief pairs, every feature set
$PY analyze.py data=beliefs annotator=smollm2 analysis.max_pairs=300 hydra.run.dir="$OUT/beliefs_smollm2"
# margin 0: the sign of P(A) - 0.5 (every value -1 or +1), to see whether its leaning agrees with the truth at all
$PY analyze.py data=beliefs annotator=smollm2 annotator.margin=0.0 analysis.max_pairs=300 \
    hydra.run.dir="$OUT/beliefs_smollm2_margin0"
if [ -n "$STANDARD" ] && [ -n "$NONSYCO" ]; then
  $PY analyze.py data=beliefs analysis.side=heldout labels=pm "pm.path={standard:$STANDARD,nonsyco:$NONSYCO}" \
      "$FEATURES" hydra.run.dir="$OUT/pm_labels"
fi
# summary.json, and beside it <run>.analysis.json (a run's results.json) with its forest_<run>.png
$PY $HERE/coverage.py "$OUT" --out $HERE/summary.json
