"""Lightning training of a preference model with the Bradley-Terry loss."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torchmetrics import Metric, PearsonCorrCoef
from transformers import get_scheduler

from syco.core.bradley_terry import bradley_terry_loss
from syco.core.schedule import optimizer_steps
from syco.data.pairs import KINDS
from syco.lifecycle import rng_states, set_rng_states
from syco.pm.model import PreferenceModel

PROBE = KINDS.index("syco_probe")


class Tally(Metric):
    """Sum and count of a per-item statistic, summed across ranks: mean and standard error."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("squares", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:
        values = values.detach().double().flatten()
        self.total += values.sum()
        self.squares += (values**2).sum()
        self.count += values.numel()

    def compute(self) -> dict[str, float]:
        # the states are summed across ranks only inside compute(): everything read from them is
        # derived here (after compute() torchmetrics puts back this rank's own sums)
        n = float(self.count)
        if n == 0:
            return {"value": math.nan, "stderr": math.nan, "count": 0, "std": math.nan}
        mean = float(self.total) / n
        var = max(float(self.squares) / n - mean**2, 0.0)
        return {"value": mean, "stderr": math.sqrt(var / max(n - 1, 1)), "count": int(n), "std": math.sqrt(var)}


class PreferenceModelModule(L.LightningModule):
    def __init__(
        self,
        pm: PreferenceModel,
        optimizer: Mapping[str, Any],
        center_rewards_coefficient: float = 0.0,
    ):
        super().__init__()
        self.pm = pm
        self.optimizer_cfg = dict(optimizer)
        self.center_rewards_coefficient = float(center_rewards_coefficient or 0.0)
        # checkpoints hold only trainable weights (LoRA + head); the frozen base is rebuilt from config
        self.strict_loading = False
        self.accuracy = torch.nn.ModuleDict({k: Tally() for k in KINDS if k != "syco_probe"})
        self.accuracy_all = Tally()
        self.margin = Tally()
        self.chosen_reward = Tally()
        self.rejected_reward = Tally()
        self.reward = Tally()
        self.syco_rate = Tally()
        self.length_corr = PearsonCorrCoef()
        self.last_validation: dict[str, dict[str, float]] = {}

    # training -----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "fit":
            # HF models load in eval mode and Lightning keeps sub-module modes: switch dropout on explicitly
            self.pm.train()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        rewards = self.pm(batch["packed"])
        chosen, rejected = rewards[:, 0], rewards[:, 1]
        loss = bradley_terry_loss(chosen, rejected, batch["margin"], self.center_rewards_coefficient)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss {loss.item()} at step {self.global_step}")
        n = chosen.shape[0]
        log = dict(on_step=True, on_epoch=False, batch_size=n, sync_dist=True)
        self.log("train/loss", loss, prog_bar=True, **log)
        with torch.no_grad():
            self.log("train/accuracy", (chosen > rejected).float().mean(), prog_bar=True, **log)
            self.log("train/margin", (chosen - rejected).mean(), **log)
            self.log("train/reward_chosen", chosen.mean(), **log)
            self.log("train/reward_rejected", rejected.mean(), **log)
            self.log("train/tokens", batch["unpacked_tokens"].float(), reduce_fx="sum", **log)
        return loss

    def configure_optimizers(self) -> Any:
        cfg = self.optimizer_cfg
        params = [p for p in self.pm.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=float(cfg.get("lr", 1e-4)), weight_decay=float(cfg.get("weight_decay", 0.0)),
            betas=tuple(cfg.get("betas", (0.9, 0.999))),
        )
        total = self.scheduled_steps()
        warmup = cfg.get("warmup_steps")
        warmup = int(warmup) if warmup is not None else int(float(cfg.get("warmup_ratio", 0.0)) * total)
        scheduler = get_scheduler(cfg.get("scheduler", "linear"), optimizer, num_warmup_steps=warmup,
                                  num_training_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def scheduled_steps(self) -> int:
        """Optimizer steps the schedule spans, from the datamodule's size when there is one: asking
        Lightning (`estimated_stepping_batches`) builds the train loader before a checkpoint is
        restored, and a run resumed mid-epoch would then replay the epoch from its first batch."""
        trainer = self.trainer
        data = getattr(trainer, "datamodule", None)
        if data is None or not hasattr(data, "train_batches"):
            return int(trainer.estimated_stepping_batches)
        batches = data.train_batches(trainer.world_size, trainer.limit_train_batches)
        return optimizer_steps(batches, trainer.max_epochs, trainer.max_steps, trainer.accumulate_grad_batches)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if k in trainable or not k.startswith("pm.")}
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the generators as they were when the checkpoint was taken. Building the train loader draws
        # one number (its base seed): the uninterrupted run drew it at the start of the epoch, so a
        # run resumed at an epoch's start draws it now, after this restore, and a run resumed inside
        # an epoch gets the state back once more when training starts (on_train_start)
        self._rng_to_restore = checkpoint.get("rng_states")
        if self._rng_to_restore is not None:
            set_rng_states(self._rng_to_restore)

    def on_train_start(self) -> None:
        states, self._rng_to_restore = getattr(self, "_rng_to_restore", None), None
        per_epoch = self.trainer.num_training_batches
        done = self.trainer.fit_loop.epoch_loop.batch_progress.total.processed
        if states is not None and isinstance(per_epoch, int) and per_epoch > 0 and done % per_epoch:
            set_rng_states(states)

    # validation ---------------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        rewards = self.pm(batch["packed"])
        chosen, rejected = rewards[:, 0], rewards[:, 1]
        probe = batch["kind"] == PROBE
        if probe.any():
            self.syco_rate.update((rejected[probe] > chosen[probe]).float())
        held = ~probe
        if held.any():
            c, r, kinds = chosen[held], rejected[held], batch["kind"][held]
            correct = (c > r).float()
            self.accuracy_all.update(correct)
            for name, metric in self.accuracy.items():
                sel = kinds == KINDS.index(name)
                if sel.any():
                    metric.update(correct[sel])
            self.margin.update(c - r)
            self.chosen_reward.update(c)
            self.rejected_reward.update(r)
            self.reward.update(torch.cat([c, r]))
            lengths = batch["packed"].response_lengths[held].float()
            self.length_corr.update(torch.cat([c, r]), torch.cat([lengths[:, 0], lengths[:, 1]]))

    def on_validation_epoch_end(self) -> None:
        # a metric with no items reports count 0 (undefined), which is what we want: no warning
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*compute.*called before the ..update.. method.*")
            results = self._validation_results()
        for metric in [self.accuracy_all, self.margin, self.chosen_reward, self.rejected_reward, self.reward,
                       self.syco_rate, self.length_corr, *self.accuracy.values()]:
            metric.reset()
        self.last_validation = {k: v for k, v in results.items() if v["count"]}
        # values are already summed across ranks by the metrics: no further sync
        for name, result in self.last_validation.items():
            self.log(name.replace("heldout/", "val/"), result["value"], prog_bar=name == "heldout/accuracy")

    def _validation_results(self) -> dict[str, dict[str, float]]:
        results: dict[str, dict[str, float]] = {
            "heldout/accuracy": self.accuracy_all.compute(),
            "heldout/margin": self.margin.compute(),
            "heldout/reward_chosen": self.chosen_reward.compute(),
            "heldout/reward_rejected": self.rejected_reward.compute(),
            "pm/syco_rate": self.syco_rate.compute(),
        }
        for name, metric in self.accuracy.items():
            results[f"heldout/accuracy/{name}"] = metric.compute()
        reward = self.reward.compute()
        results["heldout/reward_mean"] = reward
        results["heldout/reward_std"] = {"value": reward.pop("std"), "stderr": math.nan, "count": reward["count"]}
        held = results["heldout/accuracy"]["count"]
        if held >= 2:
            results["heldout/reward_length_corr"] = {"value": float(self.length_corr.compute()), "stderr": math.nan,
                                                     "count": 2 * held}
        for r in results.values():
            r.pop("std", None)
        return results
