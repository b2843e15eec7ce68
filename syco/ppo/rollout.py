"""Rollouts: sample responses from the policy, then the log-probs of the policy and the reference,
entropies and values of the sampled tokens, all at the sampling temperature.

Prompts are left-padded and responses right-padded, so every row is [pad.. prompt | response ..pad];
a response ends at its first stop token (EOS or end-of-turn), which is kept as its last action;
tokens after it are masked out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from syco.core.ppo import entropy_from_logits
from syco.data.chat import Prompt
from syco.ppo.model import ActorCritic

# [batch, R] fields, right-padded like the response
RESPONSE_FIELDS = ("response_ids", "response_mask", "logprobs", "ref_logprobs", "values", "entropy", "advantages",
                   "returns")


@dataclass
class Rollout:
    prompts: list[Prompt]
    responses: list[str]  # decoded text without the stop token
    prompt_ids: torch.Tensor  # [batch, P], left-padded
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor  # [batch, R], right-padded
    response_mask: torch.Tensor  # 1 up to and including the first stop token
    has_stop: torch.Tensor  # [batch] bool: the response ended by itself (not cut at max_new_tokens)
    logprobs: torch.Tensor | None = None  # [batch, R], policy, 0 where masked
    ref_logprobs: torch.Tensor | None = None
    values: torch.Tensor | None = None
    entropy: torch.Tensor | None = None  # of the policy's (tempered) next-token distribution
    advantages: torch.Tensor | None = None  # [batch, R], filled in before the PPO epochs
    returns: torch.Tensor | None = None

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    @property
    def lengths(self) -> torch.Tensor:
        return self.response_mask.sum(1)

    def __len__(self) -> int:
        return self.response_ids.shape[0]

    def select(self, index: torch.Tensor | Sequence[int]) -> Rollout:
        """The rows `index`; their columns trimmed to the longest prompt and response among them."""
        idx = torch.as_tensor(index, dtype=torch.long)
        rows = idx.tolist()
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = value[idx.to(value.device)]
            elif isinstance(value, list):
                value = [value[i] for i in rows]
            out[f.name] = value
        keep_p = int(out["prompt_mask"].sum(1).max())
        keep_r = int(out["response_mask"].sum(1).max())
        for name in ("prompt_ids", "prompt_mask"):
            out[name] = out[name][:, out[name].shape[1] - keep_p:]
        for name in RESPONSE_FIELDS:
            if out[name] is not None:
                out[name] = out[name][:, :keep_r]
        return Rollout(**out)


def concat(parts: Sequence[Rollout], pad_id: int) -> Rollout:
    """The rows of `parts`, in order, as one Rollout: prompts left-padded and responses right-padded
    (ids with `pad_id`, everything else with 0) to the widest part."""
    if not parts:
        raise ValueError("concat of no rollouts")
    if len(parts) == 1:
        return parts[0]
    width_p = max(r.prompt_ids.shape[1] for r in parts)
    width_r = max(r.response_ids.shape[1] for r in parts)
    out: dict[str, object] = {}
    for f in fields(Rollout):
        values = [getattr(r, f.name) for r in parts]
        if isinstance(values[0], list):
            out[f.name] = [x for v in values for x in v]
        elif all(v is None for v in values):
            out[f.name] = None
        elif any(v is None for v in values):
            raise ValueError(f"concat: {f.name} is set in some rollouts and not in others")
        elif f.name in ("prompt_ids", "prompt_mask"):
            fill = pad_id if f.name == "prompt_ids" else 0
            out[f.name] = torch.cat([torch.nn.functional.pad(v, (width_p - v.shape[1], 0), value=fill) for v in values])
        elif f.name in RESPONSE_FIELDS:
            fill = pad_id if f.name == "response_ids" else 0
            out[f.name] = torch.cat([torch.nn.functional.pad(v, (0, width_r - v.shape[1]), value=fill) for v in values])
        else:
            out[f.name] = torch.cat(values)
    return Rollout(**out)  # type: ignore[arg-type]


def stop_mask(response_ids: torch.Tensor, stop_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask of tokens up to and including each row's first stop token, whether the row has one)."""
    is_stop = torch.isin(response_ids, torch.tensor(list(stop_ids), device=response_ids.device))
    before = torch.cumsum(is_stop.long(), dim=1) - is_stop.long()  # stops strictly before each position
    return (before == 0).long(), is_stop.any(dim=1)


class TemperatureSampler(LogitsProcessor):
    """Pure sampling from softmax(scores / temperature) by inverse CDF, one uniform per row from the
    global random stream (torch.multinomial, generate's sampler, draws an exponential per vocabulary
    entry: several times slower on CPU at a 50k vocabulary). Returns 0 at the drawn token and -inf
    elsewhere, so generate's greedy step takes it."""

    def __init__(self, temperature: float):
        if not temperature > 0:
            raise ValueError(f"TemperatureSampler needs a temperature > 0, got {temperature}")
        self.temperature = float(temperature)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        cdf = torch.softmax(scores.float() / self.temperature, dim=-1).cumsum(dim=-1)
        # u in (0, total]: the first entry whose cdf reaches u has a probability > 0
        u = (1.0 - torch.rand(cdf.shape[0], 1, device=cdf.device)) * cdf[:, -1:]
        drawn = torch.searchsorted(cdf, u).clamp(max=cdf.shape[1] - 1)
        return torch.full_like(scores, -torch.inf).scatter_(1, drawn, 0.0)


def sampling_config(ac: ActorCritic, max_new_tokens: int, temperature: float) -> tuple[GenerationConfig, LogitsProcessorList]:
    """(generation config, logits processors) for pure sampling from softmax(logits / temperature):
    no top-k, top-p, repetition penalty or other processor (generate is greedy over
    `TemperatureSampler`'s draw; a value left unset would be filled from the model's or the
    library's defaults, e.g. top_k=50). temperature 0: greedy."""
    config = GenerationConfig(do_sample=False, repetition_penalty=1.0, no_repeat_ngram_size=0, num_beams=1,
                              max_new_tokens=max_new_tokens, eos_token_id=list(ac.stop_ids),
                              pad_token_id=ac.tokenizer.pad_token_id, use_cache=True)
    return config, LogitsProcessorList([TemperatureSampler(temperature)] if temperature > 0 else [])


@torch.no_grad()
def sample(ac: ActorCritic, prompts: Sequence[Prompt], max_new_tokens: int, temperature: float,
           seed: int) -> Rollout:
    """One response per prompt from the policy adapter, with a fixed random stream (`seed`)."""
    tok = ac.tokenizer
    encoded = [ac.formatter.prompt_ids(p) for p in prompts]
    batch = tok.pad({"input_ids": encoded}, padding_side="left", return_tensors="pt")
    ids, mask = batch["input_ids"].to(ac.device), batch["attention_mask"].to(ac.device)
    devices = [ac.device] if ac.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), ac.adapter("policy"):
        # the samples of one prompt (samples_per_prompt > 1) prefill it once
        cache = ac.shared_prefill(ids, mask)
        torch.manual_seed(seed)
        config, processors = sampling_config(ac, max_new_tokens, temperature)
        seqs = ac.peft.generate(input_ids=ids, attention_mask=mask, cache=cache, generation_config=config,
                                logits_processor=processors)
    response = seqs[:, ids.shape[1]:]
    response_mask, has_stop = stop_mask(response, ac.stop_ids)
    # the stop token is kept as an action but is not part of the text the PM reads
    texts = [tok.decode(r[: int(m.sum()) - int(s)], skip_special_tokens=True).strip()
             for r, m, s in zip(response.tolist(), response_mask, has_stop)]
    return Rollout(list(prompts), texts, ids, mask, response, response_mask, has_stop)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] per position (logits already divided by the temperature)."""
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def evaluate(ac: ActorCritic, rollout: Rollout, temperature: float, batch_size: int,
             values: bool = True) -> Rollout:
    """Fill in policy and reference log-probs, policy entropy and values, in row chunks."""
    parts: dict[str, list[torch.Tensor]] = {"logprobs": [], "ref_logprobs": [], "entropy": [], "values": []}
    n_resp = rollout.response_ids.shape[1]
    for start in range(0, len(rollout), batch_size):
        sl = slice(start, start + batch_size)
        ids, mask = rollout.input_ids[sl], rollout.attention_mask[sl]
        tokens, rmask = rollout.response_ids[sl], rollout.response_mask[sl].float()
        logits, value = ac.policy_outputs(ids, mask, n_resp, temperature, values=values)
        parts["logprobs"].append(token_logprobs(logits, tokens) * rmask)
        parts["entropy"].append(entropy_from_logits(logits) * rmask)
        del logits
        with ac.reference():
            ref = ac.response_logits(ids, mask, n_resp, temperature)
        parts["ref_logprobs"].append(token_logprobs(ref, tokens) * rmask)
        del ref
        if value is not None:
            parts["values"].append(value * rmask)
    rollout.logprobs = torch.cat(parts["logprobs"])
    rollout.ref_logprobs = torch.cat(parts["ref_logprobs"])
    rollout.entropy = torch.cat(parts["entropy"])
    rollout.values = torch.cat(parts["values"]) if values else None
    return rollout
