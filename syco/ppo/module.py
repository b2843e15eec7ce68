"""PPO as a LightningModule with manual optimization: each training step is one rollout batch
(sample, score, KL-penalized token rewards, GAE), then `ppo_epochs` epochs of clipped policy and
value updates over mini-batches (with gradient accumulation), then the KL controller update.

Metric names follow TRL's PPO trainer. A non-finite KL, score, loss or gradient norm raises
`FloatingPointError` naming the step and the quantity before anything of that step is saved.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import ParallelStrategy
from transformers import get_scheduler

from syco.core.advantages import gae, leave_one_out_baseline, masked_moments, masked_whiten, token_mean
from syco.core.kl import kl_per_token
from syco.core.ppo import entropy_from_logits, policy_loss, token_rewards, value_loss
from syco.data.chat import Prompt
from syco.ppo.config import PPOConfig
from syco.ppo.model import POLICY, VALUE, ActorCritic
from syco.ppo.prompts import step_prompts
from syco.ppo.rewards import RunningMoments, pm_scores, shape_scores
from syco.ppo.rollout import Rollout, concat, evaluate, sample, token_logprobs
from syco.tracking import write_json_atomic

log = logging.getLogger(__name__)

COUNTS = ("val/num_eos_tokens",)  # step metrics summed over ranks (the rest are averaged)
# the update statistics summed over a mini-batch's micro-batches and ranks (each a token mean over it)
UPDATE_STATS = ("policy/approxkl_avg", "policy/clipfrac_avg", "policy/entropy_avg", "loss/policy_avg",
                "loss/value_avg", "val/clipfrac_avg", "val/ratio")


def _seed(*parts: int) -> int:
    value = 0
    for p in parts:
        value = (value * 1_000_003 + int(p)) % (2**31 - 1)
    return value


class PPOModule(L.LightningModule):
    def __init__(self, ac: ActorCritic, pm: Any, cfg: PPOConfig, prompts: Sequence[Prompt],
                 eval_prompts: Sequence[Prompt], run_dir: str | Path, gold_pm: Any = None, seed: int = 0,
                 info: Mapping[str, Any] | None = None):
        super().__init__()
        self.automatic_optimization = False
        # checkpoints hold only the trainable weights (policy, value, value head); the rest is rebuilt
        self.strict_loading = False
        self.ac = ac
        self.pm = pm
        self.gold_pm = gold_pm
        self.cfg = cfg
        self.prompts = list(prompts)
        self.eval_prompts = list(eval_prompts)
        self.run_dir = Path(run_dir)
        self.seed = int(seed)
        self.info = dict(info or {})
        self.kl_ctl = cfg.kl.controller()
        self.running = RunningMoments()
        self.ppo_step = 0
        self.eval_history: list[dict[str, Any]] = []
        self.last_metrics: dict[str, float] = {}
        self.steps_this_fit = 0

    @property
    def attached(self) -> bool:
        """Whether a Trainer runs the module (tests also drive it directly)."""
        try:
            return self.trainer is not None
        except RuntimeError:  # Lightning: "not attached to a `Trainer`"
            return False

    # setup --------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        for m in (self.ac, self.pm, self.gold_pm):
            if m is not None:
                m.eval()  # no dropout anywhere: the first PPO ratio is exactly 1

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return self.ac.parameters_of(POLICY) + self.ac.parameters_of(VALUE)

    def configure_optimizers(self) -> Any:
        o = self.cfg.optimizer
        optimizer = torch.optim.AdamW(self.trainable_parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                      weight_decay=o.weight_decay)
        total = self.cfg.total_steps * self.cfg.optimizer_steps_per_rollout
        scheduler = get_scheduler(o.scheduler, optimizer, num_warmup_steps=o.warmup_steps, num_training_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_start(self) -> None:
        self.steps_this_fit = 0
        if self.ppo_step == 0 and self.cfg.eval.at_start and not self.eval_history:
            self.evaluate_and_save(0)

    # rollout ------------------------------------------------------------------------------------
    def rollout(self, prompts: Sequence[Prompt], seed: int, temperature: float | None = None,
                max_new_tokens: int | None = None, values: bool = True) -> Rollout:
        """Sample from the policy and fill in log-probs (policy, reference), entropy and values."""
        t = self.cfg.temperature if temperature is None else temperature
        r = sample(self.ac, prompts, max_new_tokens or self.cfg.max_new_tokens, t, seed)
        return evaluate(self.ac, r, t, self.cfg.forward_batch_size or self.cfg.mini_batch_size, values=values)

    def training_rollout(self, prompts: Sequence[Prompt], step: int, rank: int) -> Rollout:
        """This rank's rollout of PPO step `step`, generated in calls of `generation_batch_size` rows,
        each seeded by its place in the global batch: the same draws in one process as in several."""
        cfg = self.cfg
        size = cfg.generation_batch_size or len(prompts)
        first = rank * len(prompts) // size
        parts = [sample(self.ac, prompts[i:i + size], cfg.max_new_tokens, cfg.temperature,
                        _seed(self.seed, step, first + j)) for j, i in enumerate(range(0, len(prompts), size))]
        rollout = concat(parts, self.ac.tokenizer.pad_token_id)
        return evaluate(self.ac, rollout, cfg.temperature, cfg.forward_batch_size or cfg.mini_batch_size)

    def scores(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw PM scores, the shaped scores PPO optimizes), on the module's device."""
        raw = pm_scores(self.pm, rollout.prompts, rollout.responses, self.cfg.reward)
        # the running statistics take in every rank's scores: the same on every rank, as in one process
        seen = self._gather(raw) if self.cfg.reward.normalize == "running" else None
        shaped = shape_scores(raw, rollout.has_stop.cpu(), self.cfg.reward, self.running,
                              float(getattr(self.pm, "reward_mean", 0.0)), float(getattr(self.pm, "reward_std", 1.0)),
                              seen=seen)
        return raw.to(self.device), shaped.to(self.device)

    # training -----------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> None:
        cfg = self.cfg
        step = self.ppo_step + 1
        start = time.time()
        self.ac.eval()
        rank, world = self.global_rank, self.trainer.world_size if self.attached else 1
        k = cfg.samples_per_prompt
        prompts = [p for p in step_prompts(self.prompts, self.ppo_step, cfg.batch_size // k, self.seed, rank, world)
                   for _ in range(k)]  # consecutive groups of k samples of one prompt
        rollout = self.training_rollout(prompts, step, rank)
        raw, scores = self.scores(rollout)
        mask = rollout.response_mask.float()
        kl = kl_per_token(rollout.logprobs, rollout.ref_logprobs, cfg.kl.estimator) * mask
        seq_kl = kl.sum(1)
        self._check(step, {"KL": seq_kl, "PM score": scores, "policy log-probs": rollout.logprobs,
                           "reference log-probs": rollout.ref_logprobs, "values": rollout.values})
        if self.ppo_step == 0 and seq_kl.abs().max() > 1e-4:
            log.warning("KL to the reference is %.3g at the first step: the policy does not start at the reference "
                        "(a trained init adapter without its frozen copy?)", float(seq_kl.abs().max()))
        kl_coef = float(self.kl_ctl.value)
        optimized = leave_one_out_baseline(scores, k) if cfg.reward.baseline == "prompt" else scores
        rewards = token_rewards(optimized, kl, mask, kl_coef)
        advantages, returns = gae(rewards, rollout.values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:  # over the global batch: every rank's advantages
            moments = self._all_sum(masked_moments(advantages, mask)) if world > 1 else None
            advantages = masked_whiten(advantages, mask, moments=moments)
        rollout.advantages, rollout.returns = advantages, returns
        lr = self.lr_schedulers().get_last_lr()[0]  # the rate this step's updates use (first one)
        stats = self.ppo_update(rollout, step)

        mean_kl = self._all_mean(seq_kl.mean())
        self.kl_ctl.update(float(mean_kl), cfg.batch_size * world)
        non_score = (-kl_coef * kl).sum(1)
        elapsed = time.time() - start
        metrics = {
            "objective/kl": seq_kl.mean(),
            "objective/entropy": rollout.entropy.sum(1).mean(),
            "objective/non_score_reward": non_score.mean(),
            "objective/rlhf_reward": scores.mean() + non_score.mean(),
            "objective/scores": scores.mean(),
            "objective/pm_score": raw.mean(),
            "objective/kl_coef": torch.tensor(kl_coef),
            **stats,
            "val/num_eos_tokens": rollout.has_stop.float().sum(),
            "response/length": rollout.lengths.float().mean(),
            "response/eos_rate": rollout.has_stop.float().mean(),
            "eps": torch.tensor(cfg.batch_size * world / elapsed),
            "lr": torch.tensor(lr),
            "episode": torch.tensor(float(step * cfg.batch_size * world)),
            "ppo_step": torch.tensor(float(step)),
        }
        self.ppo_step = step
        self.steps_this_fit += 1
        evaluated = {}
        if step % cfg.eval.every == 0 or step == cfg.total_steps:
            evaluated = self.evaluate_and_save(step)  # logs its own row (see there)
        metrics = self._global(metrics)
        for name, value in metrics.items():
            self.log(name, value, on_step=True, on_epoch=False, batch_size=cfg.batch_size,
                     prog_bar=name in ("objective/scores", "objective/kl"))
        self.last_metrics = {**{k: float(v) for k, v in metrics.items()}, **evaluated}

    def ppo_update(self, rollout: Rollout, step: int) -> dict[str, torch.Tensor]:
        """`ppo_epochs` passes over the global batch in shuffled mini-batches, one optimizer step each.

        The shuffle is one permutation of the global batch on every rank (a shared seed), and a
        mini-batch's loss is the mean over all of its tokens, whichever rank holds them: with
        `mini_batch_size` rows per device, n processes take the optimizer steps one process takes
        with n times the batch and mini-batch (same shuffle, same gradients)."""
        cfg = self.cfg
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        params = self.trainable_parameters()
        world = self.trainer.world_size if self.attached else 1
        n, first = len(rollout), self.global_rank * len(rollout)
        lengths = self._gather(rollout.lengths).cpu()  # every row's token count: each mini-batch's total
        generator = torch.Generator().manual_seed(_seed(self.seed, step, 7))
        sums, norms = [], []
        if self.ac.model_cfg.get("gradient_checkpointing"):
            self.ac.peft.train()  # HF checkpoints activations only in train mode (dropout is 0 in PPO)
        for epoch in range(cfg.ppo_epochs):
            order = torch.randperm(n * world, generator=generator)
            for mb, mini in enumerate(order.split(cfg.mini_batch_size * world)):
                where = f" (PPO epoch {epoch}, mini-batch {mb})"
                rows = mini[(mini >= first) & (mini < first + n)] - first
                sums.append(self._backward(rollout, rows, lengths[mini].sum().double(), world, step, where))
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or float("inf"))
                self._check(step, {"gradient norm": norm}, where=where)
                norms.append(norm.detach().float().cpu())
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
        self.ac.eval()
        # each mini-batch's token means (every rank's share added up), averaged over the mini-batches
        per_mini = self._all_sum(torch.stack(sums))
        out = {k: per_mini[:, i].mean().float() for i, k in enumerate(UPDATE_STATS)}
        ratios = per_mini[:, UPDATE_STATS.index("val/ratio")]
        out["val/ratio_var"] = ratios.var().float() if ratios.numel() > 1 else torch.zeros(())
        out["policy/grad_norm"] = torch.stack(norms).mean()
        return out

    def _backward(self, rollout: Rollout, rows: torch.Tensor, tokens: torch.Tensor, world: int, step: int,
                  where: str) -> torch.Tensor:
        """Gradients of this rank's `rows` of a mini-batch of `tokens` tokens in all, in micro-batches;
        returns their share of the mini-batch's statistics (`UPDATE_STATS`). DDP averages gradients
        over ranks, hence the loss times the world size. Exactly one backward per rank syncs them
        (the last); a rank holding no row of the mini-batch syncs a zero-weight one."""
        cfg = self.cfg
        if len(rows) == 0:
            loss, _ = self._loss(rollout.select([0]), tokens)
            self.manual_backward(loss * 0.0)
            return torch.zeros(len(UPDATE_STATS), dtype=torch.float64)
        micros = rows.split(cfg.micro_batch_size)
        total = torch.zeros(len(UPDATE_STATS), dtype=torch.float64)
        for i, micro in enumerate(micros):
            loss, stats = self._loss(rollout.select(micro), tokens)
            self._check(step, {"policy loss": stats["loss/policy_avg"], "value loss": stats["loss/value_avg"]},
                        where=where)
            with nullcontext() if i == len(micros) - 1 else self._no_sync():
                self.manual_backward(loss * world)
            total += torch.stack([stats[k].detach().double().cpu() for k in UPDATE_STATS])
        return total

    def _no_sync(self) -> AbstractContextManager[Any]:
        """Gradients accumulate locally inside (DDP syncs them at the next backward outside)."""
        strategy = self.trainer.strategy if self.attached else None
        return strategy.block_backward_sync() if isinstance(strategy, ParallelStrategy) else nullcontext()

    def _loss(self, part: Rollout, tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Clipped policy loss + vf_coef * clipped value loss on the rows `part`, as their share of a
        mini-batch of `tokens` tokens (None: their own token mean)."""
        cfg, ac = self.cfg, self.ac
        n_resp = part.response_ids.shape[1]
        mask = part.response_mask
        logits, values = ac.policy_outputs(part.input_ids, part.attention_mask, n_resp, cfg.temperature)
        logprobs = token_logprobs(logits, part.response_ids)
        pg_loss, pg = policy_loss(logprobs, part.logprobs, part.advantages, mask, cfg.clip_range, tokens)
        vf_loss, vf = value_loss(values, part.values, part.returns, mask, cfg.clip_range_value, tokens)
        with torch.no_grad():
            entropy = token_mean(entropy_from_logits(logits.detach()), mask, tokens)
        stats = {"policy/approxkl_avg": pg["approxkl"], "policy/clipfrac_avg": pg["clipfrac"],
                 "policy/entropy_avg": entropy, "loss/policy_avg": pg_loss.detach(),
                 "loss/value_avg": vf_loss.detach(), "val/clipfrac_avg": vf["clipfrac"], "val/ratio": pg["ratio"]}
        return pg_loss + cfg.vf_coef * vf_loss, stats

    def _check(self, step: int, values: Mapping[str, torch.Tensor | None], where: str = "") -> None:
        for name, value in values.items():
            if value is None:
                continue
            bad = ~torch.isfinite(value.detach())
            if bad.any():
                example = value.detach().flatten()[bad.flatten()][0].item()
                raise FloatingPointError(
                    f"PPO step {step}{where}: non-finite {name} ({example}); stopping before the step is saved. "
                    f"The last good checkpoint ({self.run_dir / 'checkpoints' / 'last.ckpt'}) and policy adapters "
                    f"({self.run_dir / 'policy'}) are untouched.")

    def _global(self, metrics: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The step's metrics over the global batch, the same on every rank (logged and written to
        metrics.json alike): rank means averaged (every rank holds batch_size rows), counts summed."""
        names = list(metrics)
        local = torch.stack([metrics[k].detach().float().cpu() for k in names])
        world = self.trainer.world_size if self.attached else 1
        if world > 1:
            total = self._all_sum(local.to(self.device)).cpu()
            local = torch.stack([total[i] if k in COUNTS else total[i] / world for i, k in enumerate(names)])
        return {k: local[i].to(self.device) for i, k in enumerate(names)}

    def _all_sum(self, value: torch.Tensor) -> torch.Tensor:
        if not self.attached or self.trainer.world_size == 1:
            return value
        return self.trainer.strategy.reduce(value.detach().to(self.device), reduce_op="sum").to(value.device)

    def _gather(self, value: torch.Tensor) -> torch.Tensor:
        """Every rank's `value`, concatenated in rank order (this rank's alone in one process)."""
        if not self.attached or self.trainer.world_size == 1:
            return value
        gathered = self.all_gather(value.detach().to(self.device))
        return gathered.reshape(-1, *value.shape[1:]).to(value.device)

    def _all_mean(self, value: torch.Tensor) -> torch.Tensor:
        if not self.attached or self.trainer.world_size == 1:
            return value
        return self.trainer.strategy.reduce(value.detach(), reduce_op="mean")

    # evaluation ---------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate_prompts(self) -> dict[str, float]:
        """On the fixed eval prompts, with a fixed sampling seed: KL to the reference (the penalty's
        estimator, per response), both PMs' normalized scores and their gap, length and EOS rate."""
        cfg, e = self.cfg, self.cfg.eval
        temperature = cfg.temperature if e.temperature is None else e.temperature
        kls, lengths, stops, prompts, responses = [], [], [], [], []
        for i, start in enumerate(range(0, len(self.eval_prompts), e.batch_size)):
            chunk = self.eval_prompts[start:start + e.batch_size]
            r = self.rollout(chunk, seed=_seed(e.seed, i), temperature=temperature,
                             max_new_tokens=e.max_new_tokens, values=False)
            mask = r.response_mask.float()
            kls.append((kl_per_token(r.logprobs, r.ref_logprobs, cfg.kl.estimator) * mask).sum(1).cpu())
            lengths.append(r.lengths.float().cpu())
            stops.append(r.has_stop.float().cpu())
            prompts += r.prompts
            responses += r.responses
        out = {"eval/kl": float(torch.cat(kls).mean()), "eval/response_length": float(torch.cat(lengths).mean()),
               "eval/eos_rate": float(torch.cat(stops).mean())}
        score = pm_scores(self.pm, prompts, responses, cfg.reward, normalize=True)
        out["eval/score"] = float(score.mean())
        if self.gold_pm is not None:
            gold = pm_scores(self.gold_pm, prompts, responses, cfg.reward, normalize=True)
            out["eval/gold_score"] = float(gold.mean())
            out["eval/gold_gap"] = out["eval/score"] - out["eval/gold_score"]
        self._check(self.ppo_step, {k: torch.tensor(v) for k, v in out.items()}, where=" (evaluation)")
        return out

    def evaluate_and_save(self, step: int) -> dict[str, float]:
        """Evaluate, save the policy adapter to <run_dir>/policy/step_<step> (rank 0), and log."""
        metrics = self.evaluate_prompts()
        row = {"step": step, "kl_coef": float(self.kl_ctl.value), **metrics}
        path = self.run_dir / "policy" / f"step_{step}"
        if self.global_rank == 0:
            self.ac.save_policy(path, meta={**self.info, **row, "ppo_config": asdict(self.cfg)})
        if self.attached:
            self.trainer.strategy.barrier("ppo-save")
        row["adapter"] = str(path)
        self.eval_history = [r for r in self.eval_history if r["step"] != step] + [row]
        if self.global_rank == 0:
            write_json_atomic(self.run_dir / "ppo_eval.json", self.eval_history)
            # straight to the loggers, at the step Lightning gives this PPO step's row (W&B merges the
            # two): through self.log, Lightning would repeat these values in every later row until the
            # next evaluation. Lightning logs the row of a training batch at the number of batches
            # before it, which for PPO step k (one batch each, counted in the checkpointed ppo_step)
            # is k - 1. The same on every rank (fixed prompts and seed): no all-reduce.
            logger_step = max(step - 1, 0)
            for lg in self.loggers:
                lg.log_metrics({**metrics, "ppo_step": float(step)}, step=logger_step)
        log.info("step %d: %s", step, "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return metrics

    # checkpoints --------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        ids = {id(p) for p in self.trainable_parameters()}
        keep = {name for name, p in self.named_parameters() if id(p) in ids}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["ppo"] = {"step": self.ppo_step, "kl_controller": self.kl_ctl.state_dict(),
                             "running_scores": self.running.state_dict(), "eval_history": self.eval_history,
                             "critic": self.cfg.critic}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("ppo")
        if state is None:
            raise ValueError("this checkpoint has no PPO state: it was not written by task=ppo")
        # the checkpoint holds only the trainable weights: another critic would resume with a fresh one
        saved = state.get("critic", "separate")
        if saved != self.cfg.critic:
            raise ValueError(f"this checkpoint was written with ppo.critic={saved}, the run now asks for "
                             f"ppo.critic={self.cfg.critic}: resume with ppo.critic={saved}")
        self.ppo_step = int(state["step"])
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.running.load_state_dict(state["running_scores"])
        self.eval_history = list(state["eval_history"])
