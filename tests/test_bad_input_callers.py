"""Callers of the safe loaders: a saved folder (PPO step, adapter, PM) never decides on its own to
run code or to load something other than a LoRA adapter; only the run's config keys do."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_config
from omegaconf import OmegaConf

import syco.ppo.training as training
from syco.checkpoints.runner import Checkpoint, model_config
from syco.policy.generation import Policy
from syco.ppo.config import PPOConfig
from syco.ppo.model import ActorCritic
from syco.tracking import DiskFullError

REPO = Path(__file__).resolve().parents[1]


def _tiny_model() -> dict:
    return OmegaConf.to_container(compose_config("model/tiny"), resolve=True)["model"]


def _step_folder(root: Path, model: dict) -> Checkpoint:
    """A PPO step folder as save_policy writes it (adapter_config.json + syco_ppo.json), by hand."""
    folder = root / "policy" / "step_2"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (folder / "syco_ppo.json").write_text(json.dumps({"model": model, "step": 2, "eval/kl": 0.5}))
    meta = json.loads((folder / "syco_ppo.json").read_text())
    return Checkpoint(step=2, adapter=folder, meta=meta, kl=0.5, kl_source="eval/kl")


def test_step_folder_cannot_turn_on_remote_code(tmp_path, caplog):
    ckpt = _step_folder(tmp_path, {**_tiny_model(), "trust_remote_code": True,
                                   "attn_implementation": "someorg/some-kernel"})
    cfg = compose_config("evaluate", ["method=checkpoints", f"checkpoints.run={tmp_path}"])
    assert cfg.checkpoints.trust_remote_code is False  # the documented default
    with caplog.at_level(logging.WARNING):
        out = model_config(cfg, ckpt)
    assert out["trust_remote_code"] is False
    assert "attn_implementation" not in out  # a hub kernel is code too
    assert "PPO step folder" in caplog.text and "checkpoints.trust_remote_code" in caplog.text
    # the run's own key (not the folder) turns it on
    cfg.checkpoints.trust_remote_code = True
    assert model_config(cfg, ckpt)["trust_remote_code"] is True


def test_policy_adapter_of_another_kind_is_refused(tmp_path):
    folder = tmp_path / "xlora"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "XLORA", "base_model_name_or_path": "x/y"}))
    with pytest.raises(ValueError, match=r"policy\.adapter.*'XLORA'.*LoRA"):
        Policy(_tiny_model(), adapter=folder)
    with pytest.raises(FileNotFoundError, match=r"policy\.adapter=.*nowhere has no adapter_config.json"):
        Policy(_tiny_model(), adapter=tmp_path / "nowhere")


class _SeparateBase:
    def shares_base(self, path):
        return False


def test_ppo_pm_trust_remote_code_comes_from_ppo_config(monkeypatch, tmp_path):
    assert PPOConfig().trust_remote_code is False
    ppo_cfg = compose_config("train", ["task=ppo", f"run_dir={tmp_path}"]).ppo
    assert ppo_cfg.trust_remote_code is False
    assert PPOConfig.from_mapping({"trust_remote_code": True}).trust_remote_code is True
    calls = []
    monkeypatch.setattr(training, "load", lambda path, **kw: calls.append((path, kw)) or "pm")
    assert training.load_pm(_SeparateBase(), tmp_path / "pm", "pm", "auto", None) == "pm"
    training.load_pm(_SeparateBase(), tmp_path / "pm", "pm", "false", None, True)
    assert [kw["trust_remote_code"] for _, kw in calls] == [False, True]
    assert all(kw["trust_key"] == "ppo.trust_remote_code" for _, kw in calls)


def test_best_of_n_whose_judge_fails_every_judgement_stops_keeping_the_pools(tmp_path):
    """Best-of-n checks its judge's error rate when judging ends: a judge with no verdict at all
    stops the run (non-zero exit, no results.json) and the generated pools stay for the rerun."""
    run = tmp_path / "bon"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(PYTHONPATH=str(REPO / "tests"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "evaluate.py", f"hydra.run.dir={run}", "method=bon", "policy=tiny",
                           "bon.k=2", "eval.generation.max_new_tokens=4", "eval.answer.sources.builtin.limit=2",
                           "eval.misconceptions.sources.builtin.limit=2", "eval.probe.limit=1",
                           "eval.probe.max_new_tokens=4", "logger=none",
                           "eval.judges.rules._target_=fake_judges.NoVerdictJudge"],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode != 0
    assert "judge 'rules'" in proc.stderr and "max_error_rate" in proc.stderr
    assert not (run / "results.json").exists() and (run / "samples.jsonl").stat().st_size > 0
    assert json.loads((run / "status.json").read_text())["status"] == "failed"


def test_policy_save_on_a_full_disk_is_named_and_keeps_the_saved_step(tmp_path, monkeypatch):
    ac = ActorCritic.create(_tiny_model(), seed=0)
    saved = ac.save_policy(tmp_path / "policy" / "step_1", meta={"step": 1})
    before = {p.name: p.read_bytes() for p in saved.iterdir()}

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ac.peft, "save_pretrained", no_space)
    with pytest.raises(DiskFullError, match=str(tmp_path / "policy")):
        ac.save_policy(saved, meta={"step": 2})
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before
    assert [p.name for p in (tmp_path / "policy").iterdir()] == ["step_1"]  # no half-written folder
