"""LoRA adapters through peft, with the scalar reward head saved inside the adapter."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

REWARD_HEAD = "reward_head"


def attach_reward_head(model: PreTrainedModel, seed: int = 0) -> torch.nn.Linear:
    """Add a scalar head on the final hidden state; kept in float32 so rewards keep their precision.
    No bias: the Bradley-Terry loss only sees reward differences, so a bias would never get a gradient."""
    head = torch.nn.Linear(model.config.hidden_size, 1, bias=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        # a small init keeps the first rewards near zero (as sequence-classification heads do)
        torch.nn.init.normal_(head.weight, std=1.0 / (model.config.hidden_size + 1) ** 0.5)
    setattr(model, REWARD_HEAD, head.to(device=model.device, dtype=torch.float32))
    return head


def lora_config(cfg: Mapping[str, Any], modules_to_save: Sequence[str] = (REWARD_HEAD,)) -> LoraConfig:
    target = cfg.get("target_modules") or ["q_proj", "v_proj"]
    return LoraConfig(
        r=int(cfg.get("r", 16)),
        lora_alpha=int(cfg.get("alpha", 32)),
        lora_dropout=float(cfg.get("dropout", 0.0)),
        target_modules=target if isinstance(target, str) else list(target),
        bias="none",
        modules_to_save=list(modules_to_save),
    )


def apply_lora(model: PreTrainedModel, cfg: Mapping[str, Any]) -> PeftModel:
    """Freeze the base, add trainable LoRA weights; the reward head (if attached) is fully trainable."""
    return get_peft_model(model, lora_config(cfg))


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def check_adapter_folder(folder: str | Path, where: str) -> Path:
    """A saved adapter folder that is safe to load onto a base we chose: a peft LoRA adapter (syco
    saves nothing else; other adapter kinds can name further models to fetch). Its
    `base_model_name_or_path` and `auto_mapping` are never read: the base is the caller's."""
    folder = Path(folder)
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{where}={folder} has no adapter_config.json (not a saved peft adapter)")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{where}: {config_file} is not valid JSON ({err})") from err
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        kind = config.get("peft_type") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{where}: {config_file} holds a {kind!r} adapter; syco loads only LoRA adapters (peft_type LORA)")
    return folder
