"""`checkpoints.pm_scores`: each step's evaluation samples scored by named PMs, levels in the PM's
std units and rises from the first step paired by item."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import compose_config
from omegaconf import OmegaConf
from test_eval_checkpoints import SMALL, _answer_step, ckpt_run  # noqa: F401  (fixture)
from test_eval_runner import evaluate

import syco.pm
from syco.checkpoints.pm_scores import checkpoint_pm_scores, paired_rise, pm_specs
from syco.pm.model import PreferenceModel

MEAN, STD = 0.5, 2.0


@pytest.fixture(scope="module")
def tiny_pm(tmp_path_factory) -> Path:
    """A random-head PM on the tiny base with a held-out normalization to undo."""
    model_cfg = OmegaConf.to_container(compose_config("model/tiny"), resolve=True)["model"]
    pm = PreferenceModel.create(model_cfg, max_length=128, seed=0)
    pm.reward_mean, pm.reward_std = MEAN, STD
    path = tmp_path_factory.mktemp("pm") / "pm"
    pm.save(path)
    return path


def test_paired_rise_exact():
    a, b = {("d", "x"): 1.0, ("d", "y"): 3.0, ("d", "z"): 9.0}, {("d", "x"): 0.0, ("d", "y"): 1.0}
    r = paired_rise(a, b, rounds=200)
    assert r["value"] == pytest.approx(1.5) and r["count"] == 2  # z has no partner: left out
    assert 1.0 <= r["ci"][0] <= 1.5 <= r["ci"][1] <= 2.0
    assert paired_rise({("d", "x"): 1.0}, {("d", "y"): 1.0}) is None
    assert "ci" not in paired_rise(a, b, rounds=0)


def test_levels_and_rises_equal_the_pm_scores(tiny_pm, tmp_path, monkeypatch):
    """Step 9 differs from step 0 in one response (fact 1 under the wrong suggestion): plain rises
    exactly 0, suggest_incorrect by that response's score change / 4 items, in std units."""
    _answer_step(tmp_path / "step_0", [True, True, False, False])
    _answer_step(tmp_path / "step_9", [True, False, False, False])
    specs = pm_specs({"standard": str(tiny_pm)})
    out = checkpoint_pm_scores({0: tmp_path / "step_0", 9: tmp_path / "step_9"}, specs, "rules", rounds=50, device="cpu")
    pm = syco.pm.load(str(tiny_pm))

    def score(text: str, template: str, i: int) -> float:
        (x,) = pm.score([[{"role": "user", "content": f"Q{i} {template}"}]], [text], normalize=True)
        return x

    scores = out["standard"]
    plain0 = sum(score("A", "plain", i) for i in range(4)) / 4
    level0 = scores["levels"]["0"]["answer"]
    assert level0["plain"]["value"] == pytest.approx(plain0, abs=1e-5) and level0["plain"]["count"] == 4
    rise = scores["rises"]["9"]["answer"]
    assert rise["plain"]["value"] == 0 and rise["plain"]["ci"] == [0, 0]
    moved = (score("B", "suggest_incorrect", 1) - score("A", "suggest_incorrect", 1)) / 4
    assert moved != 0 and rise["suggest_incorrect"]["value"] == pytest.approx(moved, abs=1e-5)
    assert rise["all"]["value"] == pytest.approx(moved / 2, abs=1e-5)  # per item: the mean of its two templates
    # cached per step: a second pass loads no PM
    assert (tmp_path / "step_9" / "pm_scores" / "standard.json").is_file()
    monkeypatch.setattr(syco.pm, "load", lambda *a, **k: pytest.fail("rescored a cached step"))
    again = checkpoint_pm_scores({0: tmp_path / "step_0", 9: tmp_path / "step_9"}, specs, "rules", rounds=50, device="cpu")
    assert again == out


def test_bad_pm_scores_name_the_entry(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoints.pm_scores.gold: .*no syco_pm.json"):
        pm_specs({"gold": str(tmp_path)})
    with pytest.raises(ValueError, match="checkpoints.pm_scores.gold: expected an exported PM folder"):
        pm_specs({"gold": 3})
    assert pm_specs(None) == [] and pm_specs({}) == []


def test_cli_writes_pm_scores_per_step(ckpt_run, tiny_pm, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    shutil.copytree(ckpt_run["run"], run)  # with its evaluations: only the scoring is new
    evaluate(tmp_path / "hydra", *SMALL, f"checkpoints.run={run}", f"+checkpoints.pm_scores.standard={tiny_pm}")
    s = json.loads((run / "evaluations" / "planted_bias" / "checkpoints.json").read_text())
    scores = s["pm_scores"]["standard"]
    assert set(scores["levels"]) == {"0", "2"} and set(scores["rises"]) == {"2"}
    for task in ("answer", "misconceptions"):
        for template, m in scores["rises"]["2"][task].items():
            a, b = scores["levels"]["2"][task][template]["value"], scores["levels"]["0"][task][template]["value"]
            assert m["value"] == pytest.approx(a - b, abs=1e-9)  # every item at both steps: rise = level difference
    (csv,) = (tmp_path / "hydra" / "csv").glob("version_*/metrics.csv")
    assert "ppo/pm_score/standard/answer/all" in csv.read_text().splitlines()[0].split(",")
    proc = evaluate(tmp_path / "hydra2", *SMALL, f"checkpoints.run={run}", "logger=none",
                    f"+checkpoints.pm_scores.gold={tmp_path / 'nowhere'}", check=False)
    assert proc.returncode != 0 and "checkpoints.pm_scores.gold" in proc.stderr
