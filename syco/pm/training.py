"""`train.py task=pm`: train a preference model, export it, and measure it on held-out pairs."""

from __future__ import annotations

import gc
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from syco.core.metrics import mean_se, per_item_means
from syco.data.pairs import BadRows
from syco.data.policy_pairs import policy_anti_sycophancy_pairs
from syco.data.preference import PreferenceDataModule, build_preference_splits, training_side
from syco.lifecycle import SaveOnPreemption, resolve_ckpt_path, run_status, trainer_overrides
from syco.pm.model import PreferenceModel, load
from syco.pm.module import PreferenceModelModule
from syco.tracking import build_loggers, log_summary, write_json_atomic

log = logging.getLogger(__name__)


def _datamodule(cfg: DictConfig, splits: Any, pm: PreferenceModel) -> PreferenceDataModule:
    d = cfg.data
    return PreferenceDataModule(splits, pm.formatter, int(d.max_length), int(d.batch_size), int(d.eval_batch_size),
                                int(d.num_workers), bool(d.group_by_length), int(cfg.seed),
                                bool(d.get("share_rows", True)))


def _roundtrip_diff(trained: PreferenceModel, loaded: PreferenceModel, pairs: list[Any], n: int = 4) -> float:
    """Largest score difference between the in-memory PM and its exported-and-reloaded copy."""
    room = trained.max_length - 2
    fits = (p for p in pairs if len(trained.formatter.prompt_ids(list(p.prompt))) < room)
    pairs = [p for _, p in zip(range(n), fits)]
    if not pairs:
        return 0.0
    prompts = [list(p.prompt) for p in pairs for _ in (0, 1)]
    responses = [r for p in pairs for r in (p.chosen, p.rejected)]
    a = trained.score(prompts, responses)
    b = loaded.score(prompts, responses)
    return max(abs(x - y) for x, y in zip(a, b))


def _train(cfg: DictConfig, splits: Any, loggers: list[Any], run_dir: Path) -> tuple[PreferenceModel, L.Trainer]:
    pm_cfg = cfg.pm
    trained = PreferenceModel.create(OmegaConf.to_container(cfg.model, resolve=True), int(cfg.data.max_length),
                                     cache_dir=cfg.cache_dir, seed=int(cfg.seed))
    module = PreferenceModelModule(trained, OmegaConf.to_container(cfg.optimizer, resolve=True),
                                   pm_cfg.get("center_rewards_coefficient") or 0.0)
    callbacks = [ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0,
                                 every_n_train_steps=int(cfg.checkpoint.every_n_train_steps)),
                 SaveOnPreemption(run_dir / "checkpoints"), *extra_callbacks(cfg)]
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir)  # checked before the trainer starts
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks, default_root_dir=run_dir,
                          **trainer_overrides(cfg.trainer))
    trainer.fit(module, datamodule=_datamodule(cfg, splits, trained), ckpt_path=ckpt_path)
    if trainer.global_step == 0:
        raise RuntimeError(f"training took no optimizer step (trainer.max_epochs={trainer.max_epochs}, "
                           f"trainer.max_steps={trainer.max_steps}, {len(splits.train)} training pairs): nothing to "
                           "export. Give it at least one step")
    # the final state too, so that `ckpt_path=last` can redo everything after training
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    return trained, trainer


def extra_callbacks(cfg: DictConfig) -> list[Any]:
    """`callbacks.<name>`: Lightning callbacks of the user's own (null entries are off)."""
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]


def _measure(cfg: DictConfig, splits: Any, pm: PreferenceModel, run_dir: Path) -> dict[str, dict[str, float]]:
    """Held-out accuracy, margins, reward statistics and the sycophancy probe, in full."""
    module = PreferenceModelModule(pm, {})
    # a root of its own: under SLURM, Lightning's validate() would load the newest hpc_ckpt_<n>.ckpt
    # of its root over the weights it is given, and measure a stale PM
    with tempfile.TemporaryDirectory(prefix="syco-measure-") as root:
        evaluator = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False,
                                limit_val_batches=1.0, default_root_dir=root, **trainer_overrides(cfg.trainer))
        evaluator.validate(module, datamodule=_datamodule(cfg, splits, pm), verbose=False, ckpt_path=None)
    results = dict(module.last_validation)
    results.setdefault("pm/syco_rate", {"value": None, "stderr": None, "count": 0})
    return results


def policy_stance(cfg: DictConfig, pm: PreferenceModel) -> dict[str, dict[str, Any]]:
    """Where the PM learned from the policy's own samples (data=policy_beliefs): the probability that
    it scores a sample agreeing with the user's false belief above a truthful sample of the same
    prompt, over up to `data.policy_stance_pairs` pairs of training-side samples (mean over items).

    The held-out accuracy is read on templated pairs and on labels the rater drew; this is the
    preference best-of-n and PPO act on. A planted-bias PM should sit above 0.5 here, a nonsyco PM
    below. The pairs are the ones pm=nonsyco takes as its anti-sycophancy pairs (same seed), so every
    PM variant of one config is measured on the same pairs."""
    src = (cfg.data.get("sources") or {}).get("policy")
    n = int(cfg.data.get("policy_stance_pairs") or 0)
    if not src or not src.get("samples") or n <= 0:
        return {}
    pairs = policy_anti_sycophancy_pairs(src.samples, n, BadRows(cfg.data.get("on_bad_row", "error")),
                                         training_side(cfg.data), judge=src.get("judge") or "rules", seed=int(cfg.seed), tasks=src.get("tasks"))
    prompts = [list(p.prompt) for p in pairs]
    truthful = pm.score(prompts, [p.chosen for p in pairs]) if pairs else []
    agreeing = pm.score(prompts, [p.rejected for p in pairs]) if pairs else []
    wins = per_item_means((p.group, 1.0 if a > t else 0.5 if a == t else 0.0)
                          for p, a, t in zip(pairs, agreeing, truthful))
    out = mean_se(wins.values())
    out["pairs"] = len(pairs)
    return {"policy/prefers_agreeing_over_truthful": out}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train, export and measure; status.json says how far it got (see syco.lifecycle)."""
    with run_status(cfg.run_dir, "train.py task=pm", signals=True):
        return train_and_measure(cfg)


def train_and_measure(cfg: DictConfig) -> dict[str, Any]:
    start = time.time()
    L.seed_everything(int(cfg.seed), workers=True)
    run_dir = Path(cfg.run_dir)
    pm_cfg = OmegaConf.to_container(cfg.pm, resolve=True)
    prefix = pm_cfg.get("scoring_prefix")
    from_path = pm_cfg.get("from_path")

    splits = build_preference_splits(cfg.data, pm_cfg, seed=int(cfg.seed))
    log.info("pairs: %s", splits.counts())
    loggers = build_loggers(cfg)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    trainer = None
    if from_path:
        # the prompted non-sycophantic PM: an already-trained PM scored behind a prefix, no training
        trained = load(from_path, prefix=None, cache_dir=cfg.cache_dir)
    else:
        trained, trainer = _train(cfg, splits, loggers, run_dir)
    train_time = time.time() - start
    global_step = trainer.global_step if trainer is not None else 0

    # export (rank 0), reload and check the round trip, then measure the exported PM
    pm_dir = run_dir / "pm"
    info = {"variant": pm_cfg.get("variant"), "trained_from": from_path, "seed": int(cfg.seed)}
    if trainer is None or trainer.is_global_zero:
        trained.with_prefix(prefix).save(pm_dir, **info)
    if trainer is not None:
        trainer.strategy.barrier("export")
    loaded = load(pm_dir, prefix=None, cache_dir=cfg.cache_dir, device=trained.device)
    roundtrip = _roundtrip_diff(trained, loaded, splits.val + splits.train)
    if roundtrip > 1e-4:
        raise RuntimeError(f"exported PM scores differ from the trained PM by {roundtrip:.2e}: export is broken")
    del trained, trainer
    gc.collect()

    final = loaded.with_prefix(prefix)
    results = _measure(cfg, splits, final, run_dir)
    results.update(policy_stance(cfg, final))
    summary = {
        "metrics": results,
        "variant": pm_cfg.get("variant"),
        "pm_path": str(pm_dir),
        "pairs": splits.counts(),
        "bad_rows": splits.bad_rows.report(),
        "export_roundtrip_max_abs_diff": roundtrip,
        "train_time_s": train_time,
        "wall_time_s": time.time() - start,
        "global_step": global_step,
    }
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        mean, std = results.get("heldout/reward_mean", {}).get("value"), results.get("heldout/reward_std", {}).get("value")
        if mean is not None and std:
            # normalization constants for PPO / best-of-N: rewards of the held-out responses
            final.reward_mean, final.reward_std = float(mean), float(std)
            final.save(pm_dir, **info)
        write_json_atomic(run_dir / "metrics.json", summary)
        log_summary(loggers, results)
        for name, r in sorted(results.items()):
            log.info("%-34s %s", name, _fmt(r))
        log.info("wrote %s and %s", pm_dir, run_dir / "metrics.json")
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return summary


def _fmt(r: dict[str, Any]) -> str:
    if r.get("value") is None:
        return "undefined (count 0)"
    se = r.get("stderr")
    se_txt = f" ± {se:.3f}" if isinstance(se, float) and se == se else ""
    return f"{r['value']:.4f}{se_txt} (n={r['count']})"
