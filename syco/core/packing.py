"""Shared-prefix packing: one prompt followed by several responses in a single row.

A row holds [prompt, response_1, ..., response_k]; each response attends to the prompt and to
itself only, and its position ids restart where the prompt ends. The last hidden state of every
response then equals that of the sequence [prompt, response_i] run alone, while the prompt is
computed once. A Bradley-Terry pair is the case k = 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

PAD_SEGMENT = -1
PROMPT_SEGMENT = 0


@dataclass
class PackedBatch:
    input_ids: torch.Tensor  # [batch, time]
    position_ids: torch.Tensor  # [batch, time]
    segment_ids: torch.Tensor  # [batch, time]: -1 pad, 0 prompt, i for response i (1-based)
    last_index: torch.Tensor  # [batch, max_responses]: position of each response's last token, -1 if absent
    response_lengths: torch.Tensor  # [batch, max_responses]: tokens per response, 0 if absent
    num_tokens: int  # non-pad tokens in the packed rows

    def attention_mask(self) -> torch.Tensor:
        return shared_prefix_attention_mask(self.segment_ids)

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(
            self.input_ids.to(device),
            self.position_ids.to(device),
            self.segment_ids.to(device),
            self.last_index.to(device),
            self.response_lengths.to(device),
            self.num_tokens,
        )


def shared_prefix_attention_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """Boolean mask [batch, 1, time, time]: True where query i may attend to key j.

    Causal, and a response token sees the prompt and its own response only. Padding rows attend
    to themselves so that no softmax row is empty (an empty row yields NaN, and 0 * NaN would leak
    into real positions through the value product).
    """
    seq_len = segment_ids.shape[1]
    idx = torch.arange(seq_len, device=segment_ids.device)
    causal = idx[:, None] >= idx[None, :]
    query = segment_ids[:, :, None]
    key = segment_ids[:, None, :]
    allowed = causal & ((key == PROMPT_SEGMENT) | (key == query)) & (key != PAD_SEGMENT) & (query != PAD_SEGMENT)
    allowed = allowed | torch.eye(seq_len, dtype=torch.bool, device=segment_ids.device)
    return allowed[:, None]


def pack_rows(
    rows: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
    pad_token_id: int,
    padding_side: str = "right",
) -> PackedBatch:
    """Pack (prompt_ids, [response_ids, ...]) rows into one padded batch."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not rows:
        raise ValueError("cannot pack an empty batch")
    lengths = [len(p) + sum(len(r) for r in rs) for p, rs in rows]
    max_len = max(lengths)
    max_resp = max(len(rs) for _, rs in rows)
    batch = len(rows)
    input_ids = torch.full((batch, max_len), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((batch, max_len), dtype=torch.long)
    segment_ids = torch.full((batch, max_len), PAD_SEGMENT, dtype=torch.long)
    last_index = torch.full((batch, max_resp), -1, dtype=torch.long)
    response_lengths = torch.zeros((batch, max_resp), dtype=torch.long)
    for b, ((prompt, responses), length) in enumerate(zip(rows, lengths)):
        if not responses:
            raise ValueError(f"row {b} has no responses")
        if any(len(r) == 0 for r in responses):
            raise ValueError(f"row {b} has an empty response")
        start = max_len - length if padding_side == "left" else 0
        p = len(prompt)
        ids = list(prompt)
        pos = list(range(p))
        seg = [PROMPT_SEGMENT] * p
        for i, resp in enumerate(responses):
            ids.extend(resp)
            pos.extend(range(p, p + len(resp)))
            seg.extend([i + 1] * len(resp))
            last_index[b, i] = start + len(ids) - 1
            response_lengths[b, i] = len(resp)
        input_ids[b, start : start + length] = torch.tensor(ids)
        position_ids[b, start : start + length] = torch.tensor(pos)
        segment_ids[b, start : start + length] = torch.tensor(seg)
    return PackedBatch(input_ids, position_ids, segment_ids, last_index, response_lengths, sum(lengths))
