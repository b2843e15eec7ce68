"""Summarize docs/results/analysis/run.sh's runs into summary.json: planted-coefficient coverage over
seeds, the weak-prior fit against statsmodels' maximum likelihood on the same design, the data vs
PM-label comparison, the hh-rlhf run's headline numbers, and how often the LM annotator agrees with
the rules and the true values where they overlap.

    python docs/results/analysis/coverage.py <output root of run.sh> --out docs/results/analysis/summary.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import statsmodels.api as sm

from syco.analysis.report import forest_plot

# runs whose results.json is kept beside the write-up (as <name>.analysis.json) with its forest plot
KEPT = {"planted_seed0": "planted/seed0", "weak_prior": "weak_prior", "pm_labels": "pm_labels",
        "hh_smollm2": "hh_smollm2", "beliefs_smollm2": "beliefs_smollm2",
        "beliefs_smollm2_margin0": "beliefs_smollm2_margin0"}


def load(path: Path) -> dict[str, Any]:
    return json.loads((path / "results.json").read_text())


def planted(root: Path) -> dict[str, Any]:
    runs = sorted((root / "planted").glob("seed*"))
    rows, covered, excludes_zero = [], 0, 0
    for run in runs:
        r = load(run)
        fit = r["label_sets"]["data"]
        row = {"seed": run.name, "holdout_accuracy": fit["holdout_accuracy"], "prior_scale": fit["prior_scale"]}
        for name, coef in fit["coefficients"].items():
            a = coef["alpha"]
            true = r["planted"].get(name, 0.0)  # every other feature has true weight 0 under the rater
            inside = a["q2.5"] <= true <= a["q97.5"]
            covered += inside
            row[name] = {"median": a["median"], "q2.5": a["q2.5"], "q97.5": a["q97.5"], "true": true,
                         "covered": inside, "r_hat": coef["r_hat"], "ess": coef["ess"]}
            if name in r["planted"]:
                excludes_zero += not (a["q2.5"] <= 0.0 <= a["q97.5"])
        rows.append(row)
    n_coef = sum(len(load(run)["label_sets"]["data"]["coefficients"]) for run in runs)
    n_planted = sum(len(load(run)["planted"]) for run in runs)
    return {"seeds": len(runs), "coverage_95": covered / n_coef, "intervals": n_coef,
            "planted_excluding_zero": f"{excludes_zero}/{n_planted}", "runs": rows}


def weak_prior(root: Path) -> dict[str, Any]:
    run = root / "weak_prior"
    r = load(run)
    design = np.load(run / "design.npz")
    train = ~design["holdout"]
    mle = sm.Logit(design["y_data"][train], design["X"][train]).fit(disp=0)
    names = [str(n) for n in design["names"]]
    means = {n: r["label_sets"]["data"]["coefficients"][n]["alpha"]["mean"] for n in names}
    diff = {n: float(means[n] - mle.params[i]) for i, n in enumerate(names)}
    return {"prior_scale": r["label_sets"]["data"]["prior_scale"], "posterior_mean": means,
            "mle": {n: float(mle.params[i]) for i, n in enumerate(names)},
            "max_abs_difference": max(abs(v) for v in diff.values()), "difference": diff}


def pm_labels(root: Path) -> dict[str, Any] | None:
    run = root / "pm_labels"
    if not (run / "results.json").is_file():
        return None
    r = load(run)
    out = {"pairs": r["pairs"], "planted": r["planted"], "pm_labels": r["pm_labels"]}
    for label, fit in r["label_sets"].items():
        out[label] = {name: fit["coefficients"][name]["alpha"] for name in r["planted"]}
        out[label]["holdout_accuracy"] = fit["holdout_accuracy"]
    return out


def hh(root: Path, name: str = "hh_smollm2") -> dict[str, Any] | None:
    run = root / name
    if not (run / "results.json").is_file():
        return None
    r = load(run)
    fit = r["label_sets"]["data"]
    lm = {n: p for n, p in r["feature_provenance"].items() if p["kind"] == "lm"}
    return {"pairs": r["pairs"], "holdout_accuracy": fit["holdout_accuracy"], "prior_scale": fit["prior_scale"],
            "computed": {n: p["computed"] for n, p in r["feature_provenance"].items()},
            "wall_time_s": r["wall_time_s"], "annotator": r["annotator"], "annotator_failures": r["annotator_failures"],
            "dropped_zero_features": r["dropped_zero_features"],
            "lm_nonzero_fraction": {n: p["nonzero_fraction"] for n, p in lm.items()},
            "p_median": {n: c["p"]["median"] for n, c in fit["coefficients"].items()}}


# (LM feature, reference feature, sign): where the reference (a rule or a true value) says which response
# shows the thing, does the annotator say so too?
OVERLAPS = [("concise", "longer", -1), ("optimistic", "more_positive", 1), ("structured", "uses_lists", 1),
            ("matches_beliefs_explicit", "agrees_with_stated_belief", 1), ("agrees_with_user", "agrees_with_stated_belief", 1),
            ("matches_beliefs_explicit", "true_matches_beliefs", 1), ("agrees_with_user", "true_matches_beliefs", 1),
            ("truthful", "true_truthful", 1)]


def annotator_agreement(run: Path) -> dict[str, Any] | None:
    """Per overlap: pairs where the reference is nonzero, the fraction where the annotator gives the
    same sign, where it gives the opposite one and where it says 0; and the annotator's share of 0s."""
    if not (run / "design.npz").is_file():
        return None
    d = np.load(run / "design.npz")
    names = [str(n) for n in d["names"]]
    X = d["X"]
    out: dict[str, Any] = {}
    for lm, ref, sign in OVERLAPS:
        if lm not in names or ref not in names:
            continue
        a, b = X[:, names.index(lm)], sign * X[:, names.index(ref)]
        on = b != 0
        if not on.any():
            continue
        out[f"{lm} vs {ref}"] = {"pairs": int(on.sum()), "same": float((a[on] == b[on]).mean()),
                                 "opposite": float((a[on] == -b[on]).mean()), "zero": float((a[on] == 0).mean())}
    prov = json.loads((run / "results.json").read_text())["feature_provenance"]
    lm = [p["nonzero_fraction"] for p in prov.values() if p["kind"] == "lm"]
    out["lm_zero_fraction"] = 1.0 - float(np.mean(lm)) if lm else None  # every LM value, kept features or not
    return out


def keep(root: Path, here: Path) -> list[str]:
    """Copy each kept run's results.json beside the write-up and draw its forest plot from that copy."""
    kept = []
    for name, sub in KEPT.items():
        src = root / sub / "results.json"
        if not src.is_file():
            continue
        r = json.loads(src.read_text())
        (here / f"{name}.analysis.json").write_text(json.dumps(r, indent=1) + "\n")
        accuracy = ", ".join(f"{k} {v['holdout_accuracy']:.3f}" for k, v in r["label_sets"].items())
        forest_plot(r["label_sets"], here / f"forest_{name}.png", r["planted"],
                    title=f"{name}: {r['pairs']} pairs\nholdout accuracy {accuracy}")
        kept.append(name)
    return kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("root", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    summary = {"planted": planted(args.root), "weak_prior_vs_mle": weak_prior(args.root),
               "pm_labels": pm_labels(args.root), "hh_rlhf": hh(args.root),
               "hh_rlhf_rerun_from_cache": hh(args.root, "hh_smollm2_cached"),
               "annotator_vs_rules_hh": annotator_agreement(args.root / "hh_smollm2_cached"),
               "annotator_vs_truth_beliefs": annotator_agreement(args.root / "beliefs_smollm2"),
               "annotator_margin0_vs_truth_beliefs": annotator_agreement(args.root / "beliefs_smollm2_margin0")}
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    summary["kept"] = keep(args.root, args.out.parent)
    print(json.dumps({"coverage_95": summary["planted"]["coverage_95"],
                      "planted_excluding_zero": summary["planted"]["planted_excluding_zero"],
                      "weak_prior_max_abs_difference": summary["weak_prior_vs_mle"]["max_abs_difference"]}, indent=1))


if __name__ == "__main__":
    main()
