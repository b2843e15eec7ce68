"""Bradley-Terry preference loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | float = 0.0,
    center_rewards_coefficient: float = 0.0,
) -> torch.Tensor:
    """Mean of -log sigmoid(r_chosen - r_rejected - margin), plus an optional centering term.

    The centering term (coefficient * mean((r_c + r_r)^2), as in Eisenstein et al. 2023 and TRL)
    keeps rewards near zero so that scores are comparable across PMs without normalization.
    """
    if chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(f"chosen {tuple(chosen_rewards.shape)} and rejected {tuple(rejected_rewards.shape)} differ")
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards - margin).mean()
    if center_rewards_coefficient:
        loss = loss + center_rewards_coefficient * ((chosen_rewards + rejected_rewards) ** 2).mean()
    return loss
