"""`train.py task=ppo ppo.pm=<exported PM>`: PPO of a LoRA policy against a PM, under Lightning.

Writes into the run folder: policy/step_<k>/ (peft adapters, every `ppo.eval.every` steps, with
syco_ppo.json: the step and its evaluation), ppo_eval.json (every evaluation so far),
checkpoints/last.ckpt (resume with `ckpt_path=last`), csv/ or wandb/ logs, and metrics.json.
"""

from __future__ import annotations

import gc
import logging
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, IterableDataset

from syco.lifecycle import SaveOnPreemption, resolve_ckpt_path, run_status, trainer_overrides
from syco.pm.model import load
from syco.pm.training import extra_callbacks
from syco.ppo.config import PPOConfig
from syco.ppo.model import ActorCritic
from syco.ppo.module import PPOModule
from syco.tracking import build_loggers, write_json_atomic

log = logging.getLogger(__name__)


class Steps(IterableDataset):
    """An endless stream of step numbers: a PPO step draws its own prompts (`step_prompts`), so the
    loader carries no state to restore on resume; the trainer stops at max_steps."""

    def __iter__(self) -> Iterator[int]:
        i = 0
        while True:
            yield i
            i += 1


def load_pm(ac: ActorCritic, path: str | Path, name: str, share: str, cache_dir: Any = None,
            trust_remote_code: bool = False) -> Any:
    """The PM at `path`: an adapter on the policy's base when it was trained on that base
    (`share` auto|true), else a model of its own (running its base model's code only when
    ppo.trust_remote_code says so: the folder's own setting is ignored)."""
    share = str(share).lower()
    if share == "true" or (share == "auto" and ac.shares_base(path)):
        log.info("PM %s: adapter %r on the policy's base model", path, name)
        return ac.attach_pm(path, name)
    log.info("PM %s: loaded as a separate model", path)
    return load(path, cache_dir=cache_dir, trust_remote_code=bool(trust_remote_code), trust_key="ppo.trust_remote_code")


def build(cfg: DictConfig) -> tuple[PPOModule, PPOConfig]:
    """The PPO module for this config: actor-critic, PM(s) (ppo.pm, ppo.gold_pm), prompt sets."""
    ppo = PPOConfig.from_mapping(OmegaConf.to_container(cfg.ppo, resolve=True))
    if not ppo.pm:
        raise ValueError("task=ppo needs ppo.pm=<exported PM folder> (train one with task=pm, "
                         "or run task=rlhf to train the PM first)")
    pm_path = ppo.pm
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    ac = ActorCritic.create(model_cfg, ppo.lora, ppo.init_adapter, seed=int(cfg.seed), cache_dir=cfg.cache_dir,
                            value_head_std=ppo.value_head_std, share_prompts=ppo.share_prompts, critic=ppo.critic)
    pm = load_pm(ac, pm_path, "pm", ppo.pm_on_policy_base, cfg.cache_dir, ppo.trust_remote_code)
    gold = (load_pm(ac, ppo.gold_pm, "gold_pm", ppo.pm_on_policy_base, cfg.cache_dir, ppo.trust_remote_code)
            if ppo.gold_pm else None)
    prompts = instantiate(cfg.ppo.prompts)
    eval_prompts = instantiate(cfg.ppo.eval_prompts)
    info = {"pm": str(pm_path), "gold_pm": ppo.gold_pm, "init_adapter": ppo.init_adapter, "seed": int(cfg.seed)}
    module = PPOModule(ac, pm, ppo, prompts, eval_prompts, cfg.run_dir, gold_pm=gold, seed=int(cfg.seed), info=info)
    log.info("PPO: %d training prompts, %d eval prompts, %d steps of %d prompts", len(prompts), len(eval_prompts),
             ppo.total_steps, ppo.batch_size)
    return module, ppo


def trainer_for(cfg: DictConfig, ppo: PPOConfig, loggers: list[Any], run_dir: Path) -> L.Trainer:
    """cfg.trainer with what manual PPO optimization needs: the step budget in optimizer steps
    (Lightning counts those), clipping and accumulation done by the module, no validation loop."""
    per_rollout = ppo.optimizer_steps_per_rollout
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0,
                                 every_n_train_steps=ppo.checkpoint_every * per_rollout)
    callbacks = [checkpoint, SaveOnPreemption(run_dir / "checkpoints"), *extra_callbacks(cfg)]
    return instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks, default_root_dir=run_dir,
                       max_steps=ppo.total_steps * per_rollout, max_epochs=-1, gradient_clip_val=None,
                       accumulate_grad_batches=1, log_every_n_steps=1, limit_val_batches=0, num_sanity_val_steps=0,
                       val_check_interval=None, **trainer_overrides(cfg.trainer))


def fit(trainer: L.Trainer, module: PPOModule, ckpt_path: str | None = None) -> None:
    """Train over the endless step stream. Lightning's warnings about what PPO intends are silenced
    for this call only: the LM stays in eval mode (no dropout: the first PPO ratio is exactly 1), and
    a checkpoint holds the state after the step's optimizer updates."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
        warnings.filterwarnings("ignore", message=r".*manual optimization and every_n_train_steps.*")
        trainer.fit(module, train_dataloaders=DataLoader(Steps(), batch_size=None), ckpt_path=ckpt_path)


def run_ppo(cfg: DictConfig, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """PPO against cfg.ppo.pm; metrics.json holds the summary, with the last evaluation as `metrics`."""
    start = time.time()
    L.seed_everything(int(cfg.seed), workers=True)
    run_dir = Path(cfg.run_dir)
    ckpt = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir)  # a corrupt checkpoint stops it before any model loads
    module, ppo = build(cfg)
    loggers = build_loggers(cfg)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    trainer = trainer_for(cfg, ppo, loggers, run_dir)
    if ckpt:
        log.info("resuming from %s", ckpt)
    fit_start = time.time()
    fit(trainer, module, ckpt)
    fit_time = time.time() - fit_start
    # the final state too, so that `ckpt_path=last` finds a finished run
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    steps_done = module.steps_this_fit
    summary = {
        "task": str(cfg.task.name),
        "pm_path": str(ppo.pm),
        "gold_pm": ppo.gold_pm,
        "ppo_steps": module.ppo_step,
        "global_step": trainer.global_step,
        "last_step": module.last_metrics,
        "eval": module.eval_history,
        "final_adapter": module.eval_history[-1]["adapter"] if module.eval_history else None,
        # the last evaluation's numbers, {name: {value}} as task=pm reports: train.py's task.objective
        "metrics": {k: {"value": v} for k, v in (module.eval_history[-1] if module.eval_history else {}).items()
                    if k.startswith("eval/")},
        "seconds_per_step": fit_time / steps_done if steps_done else None,
        "wall_time_s": time.time() - start,
        **dict(extra or {}),
    }
    if trainer.is_global_zero:
        write_json_atomic(run_dir / "metrics.json", summary)
        log.info("wrote %s (%d PPO steps, %.1f s/step)", run_dir / "metrics.json", module.ppo_step,
                 summary["seconds_per_step"] or float("nan"))
    del module, trainer
    gc.collect()
    return summary


def run(cfg: DictConfig) -> dict[str, Any]:
    """PPO; status.json says how far it got (see syco.lifecycle)."""
    with run_status(cfg.run_dir, "train.py task=ppo", signals=True):
        return run_ppo(cfg)
