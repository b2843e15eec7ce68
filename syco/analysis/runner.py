"""The job `python analyze.py` runs: pairs from a preference data group, their features, labels
(the data's, and with labels=pm each trained PM's), then per label set a Bayesian logistic
regression (prior scale chosen on a holdout split) and the report.

Writes into the run folder: results.json (per label set: the prior choice, holdout accuracy,
diagnostics and every feature's posterior; the features' provenance; the planted coefficients of
synthetic data), forest.png, design.npz (the feature matrix, labels and holdout mask), and W&B
(config, summary, the forest plot, a coefficient table).
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from syco.analysis.features import (
    PROGRAM_FEATURES,
    TRUE_PREFIX,
    FeatureCache,
    PairView,
    compute_features,
    feature_kind,
    orient,
)
from syco.analysis.lm_features import LM_FEATURES
from syco.analysis.regression import choose_prior_scale, fit_posterior, holdout_accuracy, summarize
from syco.analysis.report import COLUMNS, coefficient_rows, forest_plot
from syco.core.config_checks import ConfigError
from syco.data.beliefs import TRUE_FEATURES
from syco.data.pairs import PreferencePair
from syco.data.preference import build_preference_splits
from syco.pm.model import load as load_pm
from syco.tracking import Report, build_loggers, pm_variant, send, write_json_atomic

log = logging.getLogger(__name__)
SIDES = ("all", "train", "heldout")


def preference_pairs(cfg: DictConfig) -> list[PreferencePair]:
    """The data group's pairs of `analysis.side`, a seeded sample of `analysis.max_pairs` of them."""
    a = cfg.analysis
    if a.side not in SIDES:
        raise ValueError(f"analysis.side={a.side!r}: must be one of {', '.join(SIDES)}")
    splits = build_preference_splits(OmegaConf.to_container(cfg.data, resolve=True), {}, seed=int(cfg.seed))
    pairs = {"all": splits.train + splits.val, "train": splits.train, "heldout": splits.val}[a.side]
    if a.max_pairs is not None and len(pairs) > int(a.max_pairs):
        pairs = random.Random(int(cfg.seed)).sample(pairs, int(a.max_pairs))
    if len(pairs) < 10:
        raise ValueError(f"{len(pairs)} pairs on side {a.side!r}: too few to fit a regression")
    return pairs


def feature_names(requested: Sequence[str], lm: Sequence[str]) -> list[str]:
    """`analysis.features` with the sets program / truth / lm (the annotator's features, `lm`)
    expanded, in order, without repeats; ConfigError naming every unknown name."""
    out: list[str] = []
    for name in requested:
        name = str(name)  # YAML reads a bare true / null as a bool / None: named as written in the error
        expanded = {"program": list(PROGRAM_FEATURES), "truth": [TRUE_PREFIX + n for n in TRUE_FEATURES],
                    "lm": list(lm)}.get(name, [name])
        out += [n for n in expanded if n not in out]
    problems = []
    for name in out:
        try:
            feature_kind(name, list(LM_FEATURES))
        except ValueError as err:
            problems.append(f"analysis.features: {err}")
    if problems:
        raise ConfigError("analyze.py", problems)
    return out


def lm_feature_names(cfg: DictConfig) -> list[str]:
    """The annotator's features (`annotator.features`, default every documented one); none without one."""
    if OmegaConf.select(cfg, "annotator._target_") is None:
        return []
    return list(OmegaConf.select(cfg, "annotator.features", default=None) or LM_FEATURES)


def check_features(cfg: DictConfig) -> None:
    """Every name in analysis.features is known (before any data, model or run status)."""
    feature_names(list(cfg.analysis.features), lm_feature_names(cfg))


def pm_paths(value: Any) -> dict[str, str]:
    """pm.path as {label set name: folder}: one folder is named by its export's variant."""
    if value is None or value == "":
        raise ValueError("labels=pm needs pm.path=<exported PM folder> (or pm.path={name: folder, ...})")
    if isinstance(value, Mapping):
        return {f"pm:{k}": str(v) for k, v in value.items()}
    return {f"pm:{pm_variant(value) or Path(str(value)).name}": str(value)}


def pm_labels(views: Sequence[PairView], path: str, cfg: DictConfig) -> tuple[np.ndarray, dict[str, float]]:
    """1 where the PM prefers A: drawn with probability sigmoid(score_A - score_B) (labels.sample)
    or the higher score; and how often it agrees with the data's label."""
    pm = load_pm(path, cache_dir=cfg.cache_dir, trust_remote_code=bool(cfg.pm.trust_remote_code),
                 trust_key="pm.trust_remote_code")
    prompts = [v.prompt for v in views]
    a = np.asarray(pm.score(prompts, [v.a for v in views], batch_size=int(cfg.labels.batch_size)))
    b = np.asarray(pm.score(prompts, [v.b for v in views], batch_size=int(cfg.labels.batch_size)))
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        bad = int(np.flatnonzero(~(np.isfinite(a) & np.isfinite(b)))[0])
        raise FloatingPointError(f"PM {path}: non-finite score on pair {bad} ({views[bad].source})")
    p = 1.0 / (1.0 + np.exp(-(a - b)))
    rng = np.random.default_rng(int(cfg.seed) + 17)
    y = (rng.random(len(p)) < p).astype(np.int64) if cfg.labels.sample else (a > b).astype(np.int64)
    data = np.array([v.a_preferred for v in views])
    return y, {"agreement_with_data": float((y == data).mean()), "mean_p_a": float(p.mean()),
               "agreement_of_higher_score_with_data": float(((a > b) == data).mean())}


def holdout_mask(views: Sequence[PairView], fraction: float, seed: int) -> np.ndarray:
    """Whole groups (a fact's templates, a dialogue) on one side: no near-duplicate in both."""
    groups = sorted({v.group for v in views})
    rng = random.Random(seed)
    held = set(rng.sample(groups, max(1, round(fraction * len(groups))))) if len(groups) > 1 else set()
    mask = np.array([v.group in held for v in views])
    if mask.all() or not mask.any():  # one group (or all held out): split the pairs instead
        mask = np.array([rng.random() < fraction for _ in views])
    return mask


def planted_coefficients(cfg: DictConfig, names: Sequence[str]) -> dict[str, float]:
    """The simulated rater's coefficients (beta, gamma) of the true features fitted, when the data has them."""
    beliefs = OmegaConf.select(cfg, "data.sources.beliefs", default=None)
    if beliefs is None or "beta" not in beliefs:
        return {}
    truth = {f"{TRUE_PREFIX}matches_beliefs": float(beliefs.beta), f"{TRUE_PREFIX}truthful": float(beliefs.gamma)}
    return {k: v for k, v in truth.items() if k in names}


def fit_label_set(X: np.ndarray, y: np.ndarray, held: np.ndarray, names: list[str], cfg: DictConfig,
                  combine: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    a = cfg.analysis
    choice = choose_prior_scale(X[~held], y[~held], X[held], y[held], grid=tuple(float(b) for b in a.prior_grid))
    posterior = fit_posterior(X[~held], y[~held], choice.scale, chains=int(a.chains), draws=int(a.draws),
                              warmup=int(a.warmup), seed=int(cfg.seed))
    summary = summarize(posterior, names, combine=combine)
    return {"prior_scale": choice.scale, "prior_grid": choice.table, "prior_criterion": choice.criterion,
            "train_pairs": int((~held).sum()), "holdout_pairs": int(held.sum()),
            "holdout_accuracy": holdout_accuracy(posterior, X[held], y[held]),
            "label_mean": float(y.mean()), "seconds": posterior.seconds, "divergences": int(posterior.divergences),
            "warnings": summary["warnings"], "coefficients": summary["coefficients"]}


def save_design(path: Path, X: np.ndarray, names: Sequence[str], labels: Mapping[str, np.ndarray],
                held: np.ndarray) -> None:
    """The regression's inputs (features, every label set, the holdout mask), to refit elsewhere."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, X=X, names=np.array(names), holdout=held,
                        **{f"y_{k.replace(':', '_')}": v for k, v in labels.items()})
    tmp.replace(path)


def run(cfg: DictConfig) -> dict[str, Any]:
    start = time.time()
    run_dir = Path(cfg.run_dir)
    annotator = instantiate(cfg.annotator) if OmegaConf.select(cfg, "annotator._target_") else None
    names = feature_names(list(cfg.analysis.features), lm_feature_names(cfg))
    views = orient(preference_pairs(cfg), int(cfg.seed))
    log.info("%d pairs (side %s), %d features requested", len(views), cfg.analysis.side, len(names))
    cache = FeatureCache(cfg.analysis.feature_cache)
    matrix = compute_features(views, names, cache, annotator, lm_features=list(LM_FEATURES))
    complete = matrix.complete_rows()
    missing = 1.0 - float(complete.mean())
    if missing > float(cfg.analysis.max_missing_fraction):
        per = {n: int(np.isnan(matrix.values[:, j]).sum()) for j, n in enumerate(names)}
        raise RuntimeError(f"{missing:.1%} of the pairs lack a feature value (over analysis.max_missing_fraction="
                           f"{cfg.analysis.max_missing_fraction}); missing per feature: "
                           f"{ {k: v for k, v in per.items() if v} }; annotator failures: {matrix.annotator_failures}. "
                           "Cached values are kept: a rerun asks only for the missing ones")
    views = [v for v, ok in zip(views, complete) if ok]
    X_all = matrix.values[complete]
    nonzero = np.abs(X_all).sum(axis=0) > 0
    dropped_zero = [n for n, keep in zip(names, nonzero) if not keep]
    if dropped_zero:
        log.info("features left out, 0 on every pair: %s", dropped_zero)
    kept = [n for n, keep in zip(names, nonzero) if keep]
    X = X_all[:, nonzero]
    combine = {k: list(v) for k, v in (cfg.analysis.combine or {}).items() if set(v) <= set(kept)}
    held = holdout_mask(views, float(cfg.analysis.holdout_fraction), int(cfg.seed))

    label_sets: dict[str, np.ndarray] = {}
    pm_info: dict[str, Any] = {}
    if cfg.labels.name == "data" or cfg.labels.get("also_data", False):
        label_sets["data"] = np.array([v.a_preferred for v in views], dtype=np.int64)
    if cfg.labels.name == "pm":
        for label, path in pm_paths(cfg.pm.path).items():
            label_sets[label], info = pm_labels(views, path, cfg)
            pm_info[label] = {"path": path, **info}
    save_design(run_dir / "design.npz", X, kept, label_sets, held)
    fits = {label: fit_label_set(X, y, held, kept, cfg, combine) for label, y in label_sets.items()}

    planted = planted_coefficients(cfg, kept)
    figure = forest_plot(fits, run_dir / "forest.png", planted,
                         title=f"{cfg.run_name}: {len(views)} pairs\nholdout accuracy "
                               + ", ".join(f"{k} {v['holdout_accuracy']:.3f}" for k, v in fits.items()))
    feature_kinds = {n: feature_kind(n, list(LM_FEATURES)) for n in names}
    results = {
        "pairs": len(views), "side": cfg.analysis.side, "kinds": dict(Counter(v.kind for v in views)),
        "dropped_incomplete": int((~complete).sum()), "features": kept, "dropped_zero_features": dropped_zero,
        "feature_provenance": {n: {"kind": feature_kinds[n], "computed": matrix.computed[n],
                                   "cached": len(complete) - matrix.computed[n] if feature_kinds[n] != "true" else 0,
                                   "unusable": matrix.failures[n].get("unusable", 0),
                                   "nonzero_fraction": float((matrix.values[complete][:, j] != 0).mean())}
                               for j, n in enumerate(names)},
        "annotator": getattr(annotator, "id", None), "annotator_failures": matrix.annotator_failures,
        "planted": planted, "label_sets": fits, "pm_labels": pm_info,
        "wall_time_s": time.time() - start,
    }
    write_json_atomic(run_dir / "results.json", results)
    log.info("wrote %s and %s", run_dir / "results.json", figure)
    summary = {f"{label}/holdout_accuracy": fit["holdout_accuracy"] for label, fit in fits.items()}
    summary.update({f"{label}/p/{name}": c["p"]["median"] for label, fit in fits.items()
                    for name, c in fit["coefficients"].items()})
    loggers = build_loggers(cfg, job_type="analyze", name=f"{cfg.run_name}-seed{cfg.seed}",
                            tags=["analyze", str(cfg.labels.name), f"seed{cfg.seed}"])
    send(loggers, Report(summary=summary, images=[figure],
                         tables={"coefficients": (COLUMNS, coefficient_rows(fits))}))
    return results

