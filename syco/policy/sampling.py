"""Several seeded groups of prompts in one generate call, each sampled exactly as in a call of its own.

`Policy.generate` seeds each group of prompts (`batch_size` rows, the prompts one generate call holds
on its own) with its own seed. transformers samples with `torch.multinomial(probs, 1)` over the whole
batch from the global generator, so putting two groups in one call would change every draw. ATen
computes `multinomial(probs, 1)` as `argmax(probs / q)` with `q = empty_like(probs).exponential_(1,
generator)`; drawing that noise over each group's [rows, vocab] block from the group's own generator
draws what a call holding that group alone draws (tests/test_policy.py checks it against the plain
call). A group whose rows have all stopped keeps drawing noise in the larger call: its rows are
padding by then, as they are after its own call stops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


@dataclass(frozen=True)
class Group:
    """The requests (indices, in generation order) one seed samples, and that seed."""

    requests: list[int]
    seed: int


def pack(groups: Sequence[Group], rows_per_request: int, max_rows: int | None) -> list[list[Group]]:
    """Consecutive groups in calls of at most `max_rows` rows; a call holds at least one group (a group
    is never split: its draws depend on its rows being drawn together). None: one group per call."""
    calls: list[list[Group]] = []
    rows = 0
    for group in groups:
        size = len(group.requests) * rows_per_request
        if calls and max_rows is not None and rows + size <= max_rows:
            calls[-1].append(group)
            rows += size
        else:
            calls.append([group])
            rows = size
    return calls


class GroupSampler(LogitsProcessor):
    """The last processor of a greedy-mode generate call: draws each group's next tokens from that
    group's generator (rows `spans[i]` for `seeds[i]`), then leaves only the drawn token finite, which
    greedy selection then picks."""

    def __init__(self, spans: Sequence[tuple[int, int]], seeds: Sequence[int], device: torch.device):
        self.spans = list(spans)
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores, dim=-1)  # as transformers' sampling step
        tokens = torch.empty(scores.shape[0], dtype=torch.long, device=scores.device)
        for (start, end), generator in zip(self.spans, self.generators):
            block = probs[start:end]
            noise = torch.empty_like(block).exponential_(1, generator=generator)
            tokens[start:end] = (block / noise).argmax(dim=-1)
        return torch.full_like(scores, float("-inf")).scatter_(1, tokens[:, None], 0.0)


def group_sampling(temperature: float, top_k: int, top_p: float, spans: Sequence[tuple[int, int]],
                   seeds: Sequence[int], device: torch.device) -> LogitsProcessorList:
    """The warpers transformers applies when sampling with these settings, in its order, then the
    per-group draw. (The sampling config's min_p=0 warper removes nothing: left out.)"""
    warpers: list[LogitsProcessor] = []
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k:
        warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    return LogitsProcessorList([*warpers, GroupSampler(spans, seeds, device)])
