"""Where to read a reward: the last real token of each sequence or packed segment (the PM reads its
score there, through the packing; PPO places the sequence score there)."""

from __future__ import annotations

import torch


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-padding position of each row of a [batch, time] 0/1 mask.

    Works for left and right padding alike and never looks at token ids, so it stays right when
    the pad token equals EOS or when an end-of-turn token also appears inside the prompt.
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be [batch, time], got shape {tuple(attention_mask.shape)}")
    mask = attention_mask.bool()
    if not mask.any(dim=1).all():
        empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"rows {empty} of the attention mask have no tokens")
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask, positions, -1).max(dim=1).values
