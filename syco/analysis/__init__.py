"""analyze.py: which interpretable features of a response predict that it is preferred (Sharma et
al. 2023, section 4.1), for a preference dataset's labels or a trained PM's preferences.

features: per-pair comparisons (programmatic, true values of synthetic pairs, an LM annotator),
cached on disk; regression: Bayesian logistic regression by NUTS; report: results.json, forest
plot, W&B; runner: the job analyze.py runs.
"""
