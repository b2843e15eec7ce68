"""Decoding the samples of a best-of-n pool against one copy of their prompt's keys and values.

`generate` with a DynamicCache copies the prompt's cache to each of the K rows of a prompt, then grows
every row's cache by concatenation at each step: each decode step reads and rewrites K copies of the
prompt. On CPU that memory traffic, not the weights, dominates decoding, so stacking more rows into a
step gains nothing. Here each layer keeps the prompts' keys and values once ([prompts, kv heads, prompt
length, head dim]) and each row's own tokens in a buffer allocated once; a row's query is scored
against its prompt's keys (the K rows of a prompt in one matmul) and against its own tokens, with one
softmax over both. It is the same attention summed in another order: float rounding differs, the
probabilities agree to ~1e-7.

Only for models whose every layer is plain causal attention through transformers' attention
interface (`supports`); others keep the copied cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from transformers import AttentionInterface, DynamicCache, PreTrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache, CacheLayerMixin

ATTENTION = "syco_shared_prefix"
# Architectures whose attention layers hand (query, cached keys, cached values) to the attention
# interface unchanged, with no bias, sink or soft-capping term the function below would drop.
MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})

_active: ContextVar[SharedPrefixCache | None] = ContextVar("syco_shared_prefix_cache", default=None)


def supports(config: PreTrainedConfig) -> bool:
    """Whether `config`'s model can decode against a shared prompt cache: a listed architecture with
    full causal attention on every layer (no sliding window)."""
    layer_types = getattr(config, "layer_types", None) or []
    return (config.model_type in MODEL_TYPES and getattr(config, "sliding_window", None) is None
            and all(t == "full_attention" for t in layer_types))


class _SharedPrefixLayer(CacheLayerMixin):
    """One layer: the prompts' keys/values ([P, Hkv, Lp, D]) and a buffer for each row's own tokens
    ([rows, Hkv, capacity, D]), written in place."""

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, rows: int, capacity: int):
        super().__init__()
        self.prefix_keys, self.prefix_values = keys, values
        prompts, heads, _, dim = keys.shape
        self.keys = keys.new_empty(rows, heads, capacity, dim)
        self.values = values.new_empty(rows, heads, capacity, dim)
        self.length = 0
        self.device = keys.device
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass  # allocated in __init__

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + key_states.shape[-2]
        if end > self.keys.shape[-2]:
            raise RuntimeError(f"shared-prefix cache full: {end} tokens past the prompt, room for {self.keys.shape[-2]}")
        self.keys[:, :, self.length : end].copy_(key_states)
        self.values[:, :, self.length : end].copy_(value_states)
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_seq_length(self) -> int:
        return self.prefix_keys.shape[-2] + self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_max_length(self) -> int:
        return self.prefix_keys.shape[-2] + self.keys.shape[-2]


class SharedPrefixCache(Cache):
    """The cache of `draws` rows per prompt (rows prompt-major, as num_return_sequences lays them out)
    that share their prompt's prefilled keys/values; `capacity` tokens of room per row."""

    def __init__(self, prefill: DynamicCache, prefix_mask: torch.Tensor, draws: int, capacity: int):
        prompts = prefix_mask.shape[0]
        super().__init__(layers=[_SharedPrefixLayer(layer.keys, layer.values, prompts * draws, capacity)
                                 for layer in prefill.layers])
        self.draws = draws
        # left padding of the prompts: -inf scores, shaped to add to [P, Hkv, queries, Lp]
        dtype = prefill.layers[0].keys.dtype
        bias = torch.zeros(prefix_mask.shape, dtype=dtype, device=prefix_mask.device)
        self.prefix_bias = bias.masked_fill(prefix_mask == 0, float("-inf"))[:, None, None, :]


@contextmanager
def decoding(model: PreTrainedModel, cache: SharedPrefixCache) -> Iterator[None]:
    """Within: `model` attends through `cache`'s shared prompts (its attention implementation is
    switched for the duration, then restored)."""
    previous = model.config._attn_implementation
    token = _active.set(cache)
    model.config._attn_implementation = ATTENTION
    try:
        yield
    finally:
        model.config._attn_implementation = previous
        _active.reset(token)


def shared_prefix_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                            **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention of one new token per row ([rows, heads, 1, D] queries) over its prompt's shared keys
    and its own keys (`key`/`value`: [rows, Hkv, own tokens, D], the current token included, so every
    row attends to at least one key). `attention_mask` is unused: the prompts' padding is in the cache
    and a row's own tokens are all visible to it. Returns [rows, 1, heads, D], as transformers' sdpa."""
    cache = _active.get()
    if cache is None:
        raise RuntimeError(f"attention implementation {ATTENTION!r} is only for syco.policy.shared_prefix.decoding")
    for name in ("sliding_window", "softcap", "s_aux"):
        if kwargs.get(name) is not None:
            raise ValueError(f"{ATTENTION} attention does not support {name}")
    layer = cache.layers[module.layer_idx]
    rows, heads, q_len, dim = query.shape
    if q_len != 1:
        raise ValueError(f"{ATTENTION} attention decodes one token per row, got {q_len}")
    prompts, kv_heads, prompt_len, _ = layer.prefix_keys.shape
    draws, groups = cache.draws, heads // kv_heads
    scale = dim**-0.5 if scaling is None else scaling
    # kv head h serves query heads h*groups .. h*groups + groups-1 (transformers' repeat_kv order)
    q = query.reshape(rows, kv_heads, groups, dim)
    shared_q = q.view(prompts, draws, kv_heads, groups, dim).transpose(1, 2).reshape(prompts, kv_heads, -1, dim)
    prefix = torch.matmul(shared_q, layer.prefix_keys.transpose(-1, -2)) * scale + cache.prefix_bias
    prefix = prefix.view(prompts, kv_heads, draws, groups, prompt_len).transpose(1, 2)
    own = torch.matmul(q, key.transpose(-1, -2)) * scale  # [rows, Hkv, groups, own]
    scores = torch.cat([prefix.reshape(rows, kv_heads, groups, prompt_len), own], dim=-1)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    shared_w = weights[..., :prompt_len].reshape(prompts, draws, kv_heads, groups, prompt_len)
    shared_w = shared_w.transpose(1, 2).reshape(prompts, kv_heads, -1, prompt_len)
    out = torch.matmul(shared_w, layer.prefix_values).view(prompts, kv_heads, draws, groups, dim).transpose(1, 2)
    out = out.reshape(rows, kv_heads, groups, dim) + torch.matmul(weights[..., prompt_len:], value)
    return out.reshape(rows, 1, heads, dim), None


AttentionInterface.register(ATTENTION, shared_prefix_attention)
