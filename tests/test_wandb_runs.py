"""W&B runs a researcher can compare, read back from the offline run files: tiny PM training, PPO,
evaluation and best-of-n with `logger=wandb` offline (no network, no API key, no ~/.netrc) log their
resolved config, a group, a job type, tags and a name that tells runs apart; PPO rows carry the PPO
step (ppo/step, the x-axis of every PPO metric) and the evaluations' KL (eval/kl, the x-axis of
eval_by_kl/*); best-of-n logs one run per selector, all with the same keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO_ROOT, compose_config, compose_resolvable
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf
from test_eval_checkpoints import SMALL as CHECKPOINTS
from test_eval_checkpoints import fake_ppo_run

from syco.pm.model import PreferenceModel
from syco.tracking import run_identity

WANDB = Path(sys.executable).with_name("wandb")
PM = ["task=pm", "model=tiny", "data=beliefs", "data.max_train_pairs=24", "data.max_val_pairs=8", "data.batch_size=4",
      "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false"]
PPO = ["task=ppo", "model=tiny", "ppo.total_steps=2", "ppo.batch_size=4", "ppo.mini_batch_size=2", "ppo.ppo_epochs=1",
       "ppo.max_new_tokens=4", "ppo.eval_prompts.limit=2", "ppo.eval.every=1", "ppo.checkpoint_every=1",
       "trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false"]
EVAL = ["policy=tiny", "eval.tasks=[answer]", "eval.generation.max_new_tokens=6", "eval.answer.sources.builtin.limit=2"]
BON = ["method=bon", "policy=tiny", "bon.k=4", "bon.bootstrap_rounds=20", "bon.tasks=[answer]",
       "eval.generation.max_new_tokens=6", "eval.answer.sources.builtin.limit=3", "eval.probe.limit=2", "eval.probe.max_new_tokens=6"]


def run(script: str, run_dir: Path, home: Path, *overrides: str) -> None:
    """`python <script> logger=wandb` offline, as on a machine without W&B credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    real_home = Path(os.environ.get("HOME", "~")).expanduser()
    env.update(WANDB_MODE="offline", HOME=str(home), OMP_NUM_THREADS="1",
               SYCO_CACHE=os.environ.get("SYCO_CACHE", str(real_home / ".cache" / "syco")),
               HF_HOME=os.environ.get("HF_HOME", str(real_home / ".cache" / "huggingface")),
               MPLCONFIGDIR=str(home / "mpl"))
    cmd = [sys.executable, script, f"hydra.run.dir={run_dir}", "logger=wandb", *overrides]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-5000:]}"


def records(run_dir: Path) -> dict[str, Any]:
    """{name: {"run": the run record, "config", "metrics": {key: step metric}, "history": [rows]}} of
    every offline W&B run in `run_dir`, read with `wandb leet inspect --json`."""
    out = {}
    for folder in sorted((run_dir / "wandb").glob("offline-run-*")):
        lines = subprocess.run([str(WANDB), "leet", "inspect", "--json", str(folder)], capture_output=True, text=True,
                               check=True, timeout=60).stdout.splitlines()
        recs = [json.loads(line) for line in lines if line.startswith("{")]
        info = next(r["run"] for r in recs if r["type"] == "run")
        config = dict(info.get("config", {}).get("update", {}))
        for r in recs:
            if r["type"] == "config":
                config.update(r["config"].get("update", {}))
        metrics = {r["metric"]["name"]: r["metric"].get("step_metric") for r in recs
                   if r["type"] == "metric" and r["metric"].get("name")}
        history = [r["history"]["item"] for r in recs if r["type"] == "history"]
        assert info["display_name"] not in out, f"two runs named {info['display_name']}"
        out[info["display_name"]] = {"run": info, "config": config, "metrics": metrics, "history": history}
    return out


def tiny_pm(folder: Path, seed: int, variant: str) -> Path:
    cfg = OmegaConf.to_container(compose_config("model/tiny"), resolve=True)["model"]
    pm = PreferenceModel.create(cfg, max_length=128, seed=seed)
    with torch.no_grad():  # distinct rewards per PM
        for name, p in pm.named_parameters():
            if "lora_B" in name or "score" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed))
    return pm.save(folder, variant=variant, seed=seed)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")  # no ~/.netrc, no W&B settings
    assert not (home / ".netrc").exists()
    return home


@pytest.fixture(scope="module")
def pms(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pms")
    return {"standard": tiny_pm(root / "standard", 1, "standard"), "nonsyco": tiny_pm(root / "nonsyco", 2, "nonsyco")}


def check_common(r: dict[str, Any], job_type: str, group: str, seed: int) -> None:
    info = r["run"]
    assert info["job_type"] == job_type and info["run_group"] == group
    assert job_type.split("-")[-1] in info["tags"] and f"seed{seed}" in info["tags"]
    assert r["config"]["seed"] == seed and "logger" in r["config"]
    assert "${" not in json.dumps({k: v for k, v in r["config"].items() if not k.startswith("_")})  # resolved


def test_pm_training_run(tmp_path, home):
    run("train.py", tmp_path / "pm", home, *PM, "seed=1", "pm=nonsyco")
    (name, r), = records(tmp_path / "pm").items()
    assert name == "pm-nonsyco-tiny-llama-seed1"
    check_common(r, "pm", "pm-tiny-llama", 1)
    assert {"nonsyco", "tiny-llama", "beliefs"} <= set(r["run"]["tags"])
    assert r["config"]["run_dir"] == str(tmp_path / "pm") and r["config"]["pm"]["variant"] == "nonsyco"
    assert any("train/loss" in row for row in r["history"])


def test_names_differ_by_seed_and_variant_groups_do_not(tmp_path):
    ids = [run_identity(compose_config("train", [*PM, f"seed={s}", f"pm={v}", f"run_dir={tmp_path}"]))
           for s in (0, 1) for v in ("standard", "nonsyco")]
    assert len({i["name"] for i in ids}) == 4 and len({i["group"] for i in ids}) == 1
    assert len({(i["job_type"], *sorted(i["tags"])) for i in ids}) == 4


def test_ppo_run_named_after_the_pm_it_loaded_with_step_and_kl_axes(tmp_path, home, pms):
    # pm=standard (the default) but the PM loaded is the nonsyco one: the name says nonsyco
    run("train.py", tmp_path / "ppo", home, *PPO, f"ppo.pm={pms['nonsyco']}", "seed=3")
    (name, r), = records(tmp_path / "ppo").items()
    assert name == "ppo-nonsyco-tiny-llama-seed3"
    check_common(r, "ppo", "ppo-tiny-llama", 3)
    assert r["config"]["ppo"]["pm"] == str(pms["nonsyco"])
    m = r["metrics"]
    assert m["ppo/step"] is None and m["objective/kl"] == "ppo/step" and m["eval/score"] == "ppo/step"
    assert m["eval/kl"] == "ppo/step" and m["eval_by_kl/score"] == "eval/kl"
    trained = [row["ppo/step"] for row in r["history"] if "objective/kl" in row]
    evaluated = [(row["ppo/step"], row["eval/kl"]) for row in r["history"] if "eval/score" in row]
    assert trained == [1, 2]  # one row per PPO step, at that step (no longer both at global step 0)
    assert [s for s, _ in evaluated] == [0, 1, 2] and evaluated[0][1] == pytest.approx(0.0, abs=1e-4)
    assert all("ppo/step" in row for row in r["history"] if not set(row) <= {"_step", "_runtime", "_timestamp"})
    assert all("eval_by_kl/score" in row for row in r["history"] if "eval/kl" in row)


def test_eval_run(tmp_path, home):
    run("evaluate.py", tmp_path / "eval", home, *EVAL, "seed=2")
    (name, r), = records(tmp_path / "eval").items()
    assert name == "eval-default-tiny-llama-seed2"
    check_common(r, "eval", "eval-default-tiny-llama", 2)
    assert r["config"]["method"]["name"] == "eval" and r["config"]["eval"]["tasks"] == ["answer"]


def test_best_of_n_one_run_per_selector_with_the_same_keys(tmp_path, home, pms):
    run("evaluate.py", tmp_path / "bon", home, *BON, "seed=4", f"+bon.pms.standard={pms['standard']}",
        f"+bon.pms.nonsyco={pms['nonsyco']}")
    runs = records(tmp_path / "bon")
    group = "bon-default-tiny-llama-k4"
    assert set(runs) == {f"{group}-seed4", "standard-seed4", "nonsyco-seed4", "oracle-seed4"}
    for r in runs.values():
        check_common(r, "bon", group, 4)
    curves = {name: r for name, r in runs.items() if name != f"{group}-seed4"}
    keys = {name: {k for row in r["history"] for k in row if not k.startswith("_")} for name, r in curves.items()}
    assert len({frozenset(k) for k in keys.values()}) == 1, keys  # one chart per key, a line per selector
    some = next(iter(keys.values()))
    assert {"bon/n", "bon/log2_n", "bon/kl"} <= some and any(k.startswith("bon/answer/") for k in some)
    for name, r in curves.items():
        assert [row["bon/n"] for row in r["history"]] == [1, 2, 4]
        assert r["metrics"]["bon/kl"] is None and all(r["metrics"][k] == "bon/kl" for k in some if "/answer/" in k)
        assert name.split("-")[0] in r["run"]["tags"] and r["config"]["bon_selector"] == name.split("-")[0]
    assert "nonsyco" in curves["nonsyco-seed4"]["run"]["tags"]
    # the PNGs and results.json are written as before
    assert (tmp_path / "bon" / "results.json").is_file() and list((tmp_path / "bon" / "plots").glob("*.png"))


def step_folder(run: Path, step: int, pm: Path, seed: int) -> Path:
    """A PPO run's saved step as syco.tracking reads it: policy/step_<k>/syco_ppo.json."""
    folder = run / "policy" / f"step_{step}"
    folder.mkdir(parents=True)
    (folder / "syco_ppo.json").write_text(json.dumps({"pm": str(pm), "seed": seed, "step": step}))
    return folder


@pytest.fixture
def hydra_cleared():
    yield
    HydraConfig.instance().cfg = None  # compose_resolvable installs Hydra's runtime config


def test_checkpoints_and_adapter_runs_named_after_the_ppo_run(tmp_path, pms, hydra_cleared):
    run = tmp_path / "ppo_run"
    step = step_folder(run, 4, pms["nonsyco"], 7)
    ck = run_identity(compose_resolvable("evaluate", ["method=checkpoints", f"checkpoints.run={run}", "policy=tiny",
                                                      "seed=0"], tmp_path))
    assert ck["job_type"] == "checkpoints" and ck["name"] == "checkpoints-default-ppo-nonsyco-seed7"
    assert ck["group"] == "checkpoints-default" and {"checkpoints", "ppo", "nonsyco", "seed0"} <= set(ck["tags"])
    ev = run_identity(compose_resolvable("evaluate", ["policy=tiny", f"policy.adapter={step}"], tmp_path))
    assert ev["name"] == "eval-default-tiny-llama-ppo-nonsyco-seed7-step4-seed0" and ev["group"] == "eval-default-tiny-llama"


def test_rlhf_stages_and_a_multirun_sweep(tmp_path, pms, hydra_cleared):
    over = ["task=rlhf", "model=tiny", "pm=nonsyco", f"run_dir={tmp_path}"]
    pm_stage, ppo_stage = (run_identity(compose_config("train", o)) for o in (over, [*over, f"ppo.pm={pms['nonsyco']}"]))
    assert (pm_stage["job_type"], pm_stage["name"]) == ("rlhf-pm", "rlhf-nonsyco-tiny-llama-pm-seed0")
    assert (ppo_stage["job_type"], ppo_stage["name"]) == ("rlhf-ppo", "rlhf-nonsyco-tiny-llama-seed0")
    assert pm_stage["group"] == ppo_stage["group"] == "rlhf-tiny-llama"
    cfg = compose_config("train", [*PM, f"run_dir={tmp_path}", "hydra.sweep.dir=multirun/pb_seeds"],
                         return_hydra_config=True)
    cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    assert run_identity(cfg)["group"] == "train-pb_seeds"  # every job of the sweep


def test_checkpoints_run_keys_shared_across_ppo_runs(tmp_path, home):
    ppo_run = fake_ppo_run(tmp_path)  # its PM: <tmp_path>/pms/standard, seed 0
    tiny_pm(tmp_path / "pms" / "standard", 1, "standard")
    run("evaluate.py", tmp_path / "hydra", home, *CHECKPOINTS, f"checkpoints.run={ppo_run}")
    (name, r), = records(tmp_path / "hydra").items()
    assert name == "checkpoints-planted_bias-ppo-standard-seed0"
    check_common(r, "checkpoints", "checkpoints-planted_bias", 0)
    steps = [row["ppo/step"] for row in r["history"] if "ppo/step" in row]
    assert steps == [0, 2] and r["metrics"]["ppo/kl"] is None and r["metrics"]["ppo/step"] is None
    # the same keys in every checkpoints run of the group: ppo/<judge>/<task>/<dataset>/<metric> against ppo/kl
    keys = [k for k in r["metrics"] if k.startswith("ppo/rules/answer/")]
    assert keys and all(r["metrics"][k] == "ppo/kl" for k in keys)
