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


def prompt_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Rows with the same (padded) prompt: (the first row of each distinct prompt, each row's index
    into those), or None when no two rows share a prompt. Ids and mask both decide, so a real token
    equal to the pad id never merges two different prompts."""
    if prompt_ids.shape != prompt_mask.shape or prompt_ids.dim() != 2:
        raise ValueError(f"prompt ids {tuple(prompt_ids.shape)} and mask {tuple(prompt_mask.shape)} must be one [batch, time] shape")
    rows = torch.cat([prompt_ids.long(), prompt_mask.long()], dim=1)
    distinct, inverse = torch.unique(rows, dim=0, return_inverse=True)
    n = rows.shape[0]
    if len(distinct) == n:
        return None
    first = torch.full((len(distinct),), n, dtype=torch.long, device=rows.device)
    first = first.scatter_reduce(0, inverse, torch.arange(n, device=rows.device), reduce="amin")
    # number the prompts in order of first appearance (torch.unique sorts them by value)
    order = torch.argsort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=rows.device)
    return first[order], rank[inverse]
