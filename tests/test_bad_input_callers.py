"""Callers of the safe loaders: a saved folder (PPO step, adapter, PM) never decides on its own to
run code or to load something other than a LoRA adapter; only the run's config keys do."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import compose_config
from omegaconf import OmegaConf

import syco.ppo.training as training
from syco.checkpoints.runner import Checkpoint, model_config
from syco.policy.generation import Policy
from syco.ppo.config import PPOConfig


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
