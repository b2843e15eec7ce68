"""`python analyze.py` end to end on the embedded belief data: results.json, the forest plot, the
planted coefficients recovered, W&B offline files read back, labels=pm beside the data's labels,
and bad input named before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, SHARED_DATA, compose_config, compose_resolvable
from omegaconf import OmegaConf
from test_wandb_runs import records

from syco.analysis.runner import run
from syco.core.config_checks import ConfigError, check_analyze_config
from syco.pm.model import PreferenceModel

FAST = ["analysis.chains=2", "analysis.draws=300", "analysis.warmup=200", "analysis.max_pairs=600",
        "analysis.prior_grid=[0.1,1.0,10.0]"]


def analyze(run_dir: Path, *overrides: str, home: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "SLURM_"))}
    env.update(OMP_NUM_THREADS="1", HOME=str(home), WANDB_MODE="offline", SYCO_CACHE=str(home / "cache"))
    proc = subprocess.run([sys.executable, "analyze.py", f"hydra.run.dir={run_dir}", f"shared_data={SHARED_DATA}",
                           *overrides], cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def beliefs_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("analyze")
    run = root / "run"
    # the planted features and distractors of true weight 0 (not agrees_with_stated_belief: it nearly
    # equals true_matches_beliefs on these pairs, and two copies of one feature share its weight)
    analyze(run, *FAST, "logger=wandb", "analysis.features=[truth,longer,hedges_more,more_positive]", home=root)
    return run


def test_analyze_recovers_the_planted_rater_on_belief_pairs(beliefs_run):
    r = json.loads((beliefs_run / "results.json").read_text())
    assert r["pairs"] == 600 and set(r["label_sets"]) == {"data"}
    assert r["planted"] == {"true_matches_beliefs": 2.0, "true_truthful": 1.0}
    fit = r["label_sets"]["data"]
    coef = fit["coefficients"]
    for name, true in r["planted"].items():
        alpha = coef[name]["alpha"]
        assert alpha["q2.5"] < true < alpha["q97.5"], (name, alpha)  # the rater's coefficient is inside the 95%
    assert coef["true_matches_beliefs"]["p"]["q2.5"] > 0.5  # rewarded, all else equal
    assert fit["holdout_accuracy"] > 0.6 and fit["prior_scale"] in (0.1, 1.0, 10.0)
    assert fit["train_pairs"] + fit["holdout_pairs"] == 600
    prov = r["feature_provenance"]
    assert prov["longer"]["kind"] == "program" and prov["true_truthful"]["kind"] == "true"
    assert (beliefs_run / "forest.png").stat().st_size > 10_000
    assert json.loads((beliefs_run / "status.json").read_text())["status"] == "finished"


def test_analyze_logs_config_summary_plot_and_table_to_wandb(beliefs_run):
    (run,) = records(beliefs_run).values()
    info = run["run"]
    assert info["job_type"] == "analyze" and "analyze" in info["tags"] and "seed0" in info["tags"]
    assert {"analysis", "data", "labels"} <= set(run["config"])
    logged = {key.split(".")[0] for row in run["history"] for key in row}  # an image or table: <key>._type, ...
    assert {"plots/forest", "coefficients"} <= logged, logged


def test_a_rerun_reads_the_feature_cache(beliefs_run, tmp_path):
    home = beliefs_run.parent
    again = beliefs_run.parent / "again"
    analyze(again, *FAST, "analysis.features=[truth,longer,hedges_more,more_positive]", home=home)
    prov = json.loads((again / "results.json").read_text())["feature_provenance"]
    assert all(p["computed"] == 0 for p in prov.values() if p["kind"] == "program")


def test_labels_pm_fits_the_pm_beside_the_data(tmp_path):
    pm = tmp_path / "pm"
    tiny = OmegaConf.to_container(compose_config("model/tiny"), resolve=True)["model"]
    PreferenceModel.create(tiny, max_length=128, seed=0).save(pm)
    run = tmp_path / "run"
    analyze(run, *FAST, "analysis.max_pairs=200", "labels=pm", f"pm.path={pm}", "analysis.side=heldout", home=tmp_path)
    r = json.loads((run / "results.json").read_text())
    variant = json.loads((pm / "syco_pm.json").read_text()).get("variant") or pm.name
    pm_label = f"pm:{variant}"  # a label set per PM, named by its export's variant, beside the data's
    assert set(r["label_sets"]) == {"data", pm_label}
    assert 0.0 <= r["pm_labels"][pm_label]["agreement_with_data"] <= 1.0
    assert r["label_sets"][pm_label]["coefficients"].keys() == r["label_sets"]["data"]["coefficients"].keys()


@pytest.mark.parametrize("overrides, message", [
    (["analysis.side=both"], "analysis.side=both: must be one of all, train, heldout"),
    (["labels=pm"], "pm.path=null: labels=pm labels the pairs by a trained PM and none is given"),
    (["analysis.prior_grid=[0.1,-1]"], "analysis.prior_grid=[0.1,-1]: must be a non-empty list of Laplace scales > 0"),
    (["analysis.chains=0"], "analysis.chains=0: must be an integer >= 1"),
    (["analysis.holdout_fraction=1.0"], "analysis.holdout_fraction=1.0: must be a finite number > 0 and < 1"),
])
def test_bad_analyze_values_are_named_before_any_work(tmp_path, overrides, message):
    cfg = compose_config("analyze", [f"run_dir={tmp_path}", f"shared_data={SHARED_DATA}", *overrides])
    with pytest.raises(ConfigError) as err:
        check_analyze_config(cfg)
    assert any(p.startswith(message) for p in err.value.problems), err.value.problems


def test_unknown_feature_fails_in_one_line(tmp_path):
    proc = analyze(tmp_path / "run", "analysis.features=[longer,charisma]", home=tmp_path, check=False)
    assert proc.returncode == 1
    assert "unknown feature 'charisma'" in proc.stderr


def test_an_annotator_that_answers_nothing_usable_stops_the_run_counted(tmp_path):
    """Every answer under min_mass: the values are NaN, counted per reason, and past
    analysis.max_missing_fraction the run stops naming the features and the annotator's failures;
    the programmatic values computed meanwhile stay in the cache."""
    cfg = compose_resolvable("analyze", ["annotator=smollm2", "analysis.max_pairs=12", "analysis.features=[longer,lm]",
                                         "annotator.features=[empathetic,concise]", "annotator.min_mass=0.999",
                                         f"analysis.feature_cache={tmp_path / 'cache'}"], tmp_path / "run")
    cfg.annotator.model = compose_config("model/tiny").model
    with pytest.raises(RuntimeError, match=r"100.0% of the pairs lack a feature value.*'empathetic': 12.*low_mass"):
        run(cfg)
    assert list((tmp_path / "cache").rglob("longer.jsonl")) and not list((tmp_path / "cache").rglob("empathetic.jsonl"))
    assert not (tmp_path / "run" / "results.json").exists()
