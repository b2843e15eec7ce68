"""Masked statistics, whitening and generalized advantage estimation (pure; no Lightning).

Tensors are [batch, time] over response tokens; `mask` is 1 on real response tokens and 0 on
padding. Responses may be left- or right-padded: GAE runs backwards over the masked tokens only,
so a padding step neither discounts nor bootstraps.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        total = mask.sum()
        if total == 0:
            raise ValueError("masked_mean over an empty mask")
        return (x * mask).sum() / total
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def token_mean(x: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor | float | None = None) -> torch.Tensor:
    """Sum of the unmasked entries over `tokens` (None: their count, i.e. `masked_mean`). With the
    token count of a whole mini-batch, the parts of it (micro-batches, ranks) add up to its mean:
    gradient accumulation and data parallelism then give the gradient of one large batch."""
    if tokens is None:
        return masked_mean(x, mask)
    if float(tokens) <= 0:
        raise ValueError(f"token_mean over {float(tokens)} tokens")
    return (x * mask.to(x.dtype)).sum() / torch.as_tensor(tokens, dtype=x.dtype, device=x.device)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    n = mask.sum()
    if unbiased:
        if n < 2:
            raise ValueError("unbiased masked_var needs at least 2 unmasked values")
        var = var * n / (n - 1)
    return var


def masked_moments(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[sum, sum of squares, count] of the unmasked entries, in float64: what ranks add up to
    whiten over the global batch (`moments_mean_var`)."""
    m = mask.to(torch.float64)
    x = x.to(torch.float64)
    return torch.stack([(x * m).sum(), (x * x * m).sum(), m.sum()])


def moments_mean_var(moments: torch.Tensor, unbiased: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance from `masked_moments` (summed over ranks)."""
    total, squares, n = moments.unbind()
    if n < (2 if unbiased else 1):
        raise ValueError(f"whitening needs at least {2 if unbiased else 1} unmasked values, got {int(n)}")
    mean = total / n
    var = (squares / n - mean**2).clamp(min=0)
    if unbiased:
        var = var * n / (n - 1)
    return mean, var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8,
                  moments: torch.Tensor | None = None) -> torch.Tensor:
    """(x - mean) / std over the unmasked entries; masked entries are returned as 0. `moments`
    (`masked_moments` summed over every rank) whitens over the global batch instead of this one."""
    if moments is None:
        mean, var = masked_mean(x, mask), masked_var(x, mask)
    else:
        mean, var = (v.to(x.dtype) for v in moments_mean_var(moments))
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns (advantages + values) by GAE over each row's masked tokens.

    delta_t = r_t + gamma * V(next) - V_t and A_t = delta_t + gamma * lam * A(next), where "next"
    is the next unmasked token of the row (V = 0 and A = 0 after the last one)."""
    if not (rewards.shape == values.shape == mask.shape) or rewards.dim() != 2:
        raise ValueError(f"rewards, values, mask must be equal [batch, time]; got {tuple(rewards.shape)}, "
                         f"{tuple(values.shape)}, {tuple(mask.shape)}")
    m = mask.to(rewards.dtype)
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_adv = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        # on padding keep carrying the next real token's value and advantage unchanged
        advantages[:, t] = adv * m[:, t]
        next_value = torch.where(m[:, t] > 0, values[:, t], next_value)
        next_adv = torch.where(m[:, t] > 0, adv, next_adv)
    returns = (advantages + values) * m
    return advantages, returns


def leave_one_out_baseline(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each score minus the mean of the other scores of its prompt (RLOO's baseline, Ahmadian et al.
    2024). Rows come in consecutive groups of `group_size` samples of one prompt. How good a fact or
    question is for the PM is shared by every sample of it and carries no signal about the response;
    with few prompts per batch that shared part dominates the advantage. Unbiased: the baseline of a
    row never reads the row itself."""
    if group_size < 2:
        raise ValueError(f"a leave-one-out baseline needs >= 2 samples per prompt, got {group_size}")
    if scores.dim() != 1 or scores.numel() % group_size:
        raise ValueError(f"scores of shape {tuple(scores.shape)} do not split into groups of {group_size}")
    grouped = scores.view(-1, group_size)
    others = (grouped.sum(1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others).reshape(-1)
