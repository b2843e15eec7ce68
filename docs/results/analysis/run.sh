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
# the annotator against the true values: belief pairs, every feature set
$PY analyze.py data=beliefs annotator=smollm2 analysis.max_pairs=300 hydra.run.dir="$OUT/beliefs_smollm2"
if [ -n "$STANDARD" ] && [ -n "$NONSYCO" ]; then
  $PY analyze.py data=beliefs analysis.side=heldout labels=pm "pm.path={standard:$STANDARD,nonsyco:$NONSYCO}" \
      "$FEATURES" hydra.run.dir="$OUT/pm_labels"
fi
$PY $HERE/coverage.py "$OUT" --out $HERE/summary.json
cp "$OUT/planted/seed0/forest.png" $HERE/forest_planted_seed0.png
cp "$OUT/hh_smollm2/forest.png" $HERE/forest_hh_smollm2.png
[ -f "$OUT/pm_labels/forest.png" ] && cp "$OUT/pm_labels/forest.png" $HERE/forest_pm_labels.png
