"""`train.py task=rlhf pm=standard|nonsyco`: train the PM of that variant (or reuse one trained
with the same resolved config), then run PPO against it (ppo.pm set to that PM).

The PM stage is `task=pm` run into <run_dir>/pm (its export: <run_dir>/pm/pm). Exports are also
kept in `rlhf.pm_cache/<key>/pm`, where key hashes the resolved model, PM, data, optimizer, seed
and training-length settings: a later run with the same settings skips PM training.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from syco.lifecycle import run_status
from syco.pm import training as pm_training
from syco.pm.model import META_FILE
from syco.ppo.training import run_ppo
from syco.tracking import publish_dir

log = logging.getLogger(__name__)
TRAINER_KEYS = ("max_epochs", "max_steps", "precision", "accumulate_grad_batches", "gradient_clip_val", "devices",
                "num_nodes")


def pm_cache_key(cfg: DictConfig) -> str:
    """Hash of everything that decides the trained PM's weights."""
    keyed = {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "pm": OmegaConf.to_container(cfg.pm, resolve=True),
        "data": OmegaConf.to_container(cfg.data, resolve=True),
        "optimizer": OmegaConf.to_container(cfg.optimizer, resolve=True),
        "trainer": {k: cfg.trainer.get(k) for k in TRAINER_KEYS},
        "seed": int(cfg.seed),
    }
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _is_export(path: Path) -> bool:
    return (path / META_FILE).is_file()


def ensure_pm(cfg: DictConfig) -> tuple[Path, dict[str, Any]]:
    """The PM to optimize against: from the cache, from this run's finished PM stage (a resumed
    job), or trained now."""
    r = cfg.get("rlhf") or {}
    key = pm_cache_key(cfg)
    reuse = bool(r.get("reuse_pm", True))
    cache = Path(r.get("pm_cache") or Path(cfg.cache_dir) / "rlhf_pms") / key
    run_dir = Path(cfg.run_dir)
    stage_dir = run_dir / "pm"
    info: dict[str, Any] = {"key": key, "variant": cfg.pm.get("variant"), "cache": str(cache / "pm")}
    if reuse and _is_export(cache / "pm"):
        log.info("reusing the PM trained with the same config: %s", cache / "pm")
        return cache / "pm", {**info, "source": "cache"}
    if _is_export(stage_dir / "pm") and (stage_dir / "metrics.json").is_file():
        log.info("this run's PM stage already finished: %s", stage_dir / "pm")
        info["source"] = "run"
    else:
        stage = copy.deepcopy(cfg)
        OmegaConf.update(stage, "run_dir", str(stage_dir), force_add=True)
        # a checkpoint path given for the run is PPO's; the PM stage resumes from its own last.ckpt
        OmegaConf.update(stage, "ckpt_path", "last" if cfg.get("ckpt_path") else None, force_add=True)
        log.info("training the %s PM into %s", cfg.pm.get("variant"), stage_dir)
        pm_training.run(stage)
        gc.collect()
        info["source"] = "trained"
    if reuse and _rank() == 0:
        _store(stage_dir, cache)
    return stage_dir / "pm", info


def _store(stage_dir: Path, cache: Path) -> None:
    """Copy the PM stage's export and metrics into the cache (atomically; concurrent jobs may race)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache) + ".lock"):
        if _is_export(cache / "pm"):
            return
        tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{cache.name}-"))
        try:
            shutil.copytree(stage_dir / "pm", tmp / "pm")
            if (stage_dir / "metrics.json").is_file():
                shutil.copy2(stage_dir / "metrics.json", tmp / "metrics.json")
            publish_dir(tmp, cache)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("cached the PM at %s", cache / "pm")


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train the PM (or reuse it), then PPO against it; status.json says how far it got."""
    with run_status(cfg.run_dir, "train.py task=rlhf", signals=True):
        return _run(cfg)


def _run(cfg: DictConfig) -> dict[str, Any]:
    if cfg.ppo.get("pm"):
        raise ValueError(f"task=rlhf optimizes against the PM it trains: drop ppo.pm={cfg.ppo.pm} "
                         "(or run task=ppo against that PM)")
    pm_path, info = ensure_pm(cfg)
    pm_metrics = pm_path.parent / "metrics.json"  # the PM stage's held-out accuracy, syco rate, ...
    if pm_metrics.is_file():
        info["metrics"] = json.loads(pm_metrics.read_text()).get("metrics")
    ppo_cfg = copy.deepcopy(cfg)
    OmegaConf.update(ppo_cfg, "ppo.pm", str(pm_path))  # the PPO target, as a task=ppo run would name it
    return run_ppo(ppo_cfg, extra={"pm_stage": info})
