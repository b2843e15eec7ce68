"""Sequence rewards for PPO: PM scores of (prompt, response) texts, optionally normalized (by the
PM's exported held-out statistics or by this run's running statistics), penalized when the
response never ended, and clipped."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from syco.ppo.config import RewardConfig


class RunningMoments:
    """Running mean and standard deviation of every score seen (Chan et al.'s parallel update)."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 0.0

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().double().flatten()
        n = float(x.numel())
        if n == 0:
            return
        mean, var = float(x.mean()), float(x.var(unbiased=False))
        total = self.count + n
        delta = mean - self.mean
        m2 = self.var * self.count + var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / total
        self.count = total

    @property
    def std(self) -> float:
        # the unbiased std once there are >= 2 scores
        if self.count < 2:
            return 1.0
        return math.sqrt(self.var * self.count / (self.count - 1))

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), float(state["count"])


def pm_scores(pm: Any, prompts: Sequence[Any], responses: Sequence[str], cfg: RewardConfig,
              normalize: bool = False) -> torch.Tensor:
    """Raw (or PM-normalized) scores of each (prompt, response); the PM reads each at its last token."""
    return torch.tensor(pm.score(list(prompts), list(responses), batch_size=cfg.batch_size,
                                 padding_side=cfg.padding_side, normalize=normalize), dtype=torch.float32)


def shape_scores(raw: torch.Tensor, has_stop: torch.Tensor, cfg: RewardConfig, running: RunningMoments,
                 pm_mean: float = 0.0, pm_std: float = 1.0, seen: torch.Tensor | None = None) -> torch.Tensor:
    """The score PPO optimizes: normalized, then the missing-EOS penalty, then clipped. `seen`: the
    raw scores of the whole global batch (every rank's), which the running statistics take in."""
    scores = raw.float().clone()
    if cfg.normalize == "pm":
        scores = (scores - pm_mean) / pm_std
    elif cfg.normalize == "running":
        running.update(raw if seen is None else seen)
        scores = (scores - running.mean) / max(running.std, 1e-8)
    if cfg.missing_eos_penalty:
        scores = scores - float(cfg.missing_eos_penalty) * (~has_stop.to(scores.device)).float()
    if cfg.clip is not None:
        scores = scores.clamp(-float(cfg.clip), float(cfg.clip))
    return scores
