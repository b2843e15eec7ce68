"""PPO's clipped policy and value losses, and per-token rewards (pure; no Lightning)."""

from __future__ import annotations

import torch

from syco.core.advantages import token_mean
from syco.core.indexing import last_token_index


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """-kl_coef * KL on every response token, plus the sequence score on its last real token."""
    if scores.dim() != 1 or scores.shape[0] != kl.shape[0] or kl.shape != mask.shape:
        raise ValueError(f"scores [batch], kl and mask [batch, time] expected; got {tuple(scores.shape)}, "
                         f"{tuple(kl.shape)}, {tuple(mask.shape)}")
    m = mask.to(kl.dtype)
    if not (m.sum(1) > 0).all():
        raise ValueError("a response has no tokens")
    rewards = -kl_coef * kl * m
    rewards[torch.arange(m.shape[0], device=m.device), last_token_index(m)] += scores.to(kl.dtype)
    return rewards


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_range: float = 0.2, tokens: torch.Tensor | float | None = None,
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate: mean over tokens of max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)).
    `tokens`: the mini-batch's token count when these rows are a part of it (see `token_mean`);
    the statistics are then that part's share of the mini-batch mean too."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = token_mean(torch.maximum(unclipped, clipped), mask, tokens)
    with torch.no_grad():
        stats = {
            "clipfrac": token_mean((clipped > unclipped).to(logprobs.dtype), mask, tokens),
            "approxkl": token_mean(0.5 * log_ratio**2, mask, tokens),
            "ratio": token_mean(ratio, mask, tokens),
        }
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_range_value: float = 0.2, tokens: torch.Tensor | float | None = None,
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """0.5 * mean over tokens of max((V - R)^2, (clip(V, V_old +- eps) - R)^2) (`tokens`: as in
    `policy_loss`)."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * token_mean(torch.maximum(unclipped, clipped), mask, tokens)
    with torch.no_grad():
        stats = {"clipfrac": token_mean((clipped > unclipped).to(values.dtype), mask, tokens)}
    return loss, stats


def entropy_from_logits(logits: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Per-position entropy of the categorical distribution given by logits [..., vocab], `chunk`
    positions at a time: a full-vocabulary softmax makes three [positions, vocab] temporaries, and
    PPO takes it over every response token while the update's graph is held."""
    flat = logits.reshape(-1, logits.shape[-1])
    parts = []
    for start in range(0, flat.shape[0], chunk):
        logp = torch.log_softmax(flat[start:start + chunk].float(), dim=-1)
        parts.append(-(logp.exp() * logp).sum(-1))
    return torch.cat(parts).reshape(logits.shape[:-1])
