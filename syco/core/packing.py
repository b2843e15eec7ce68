"""Shared-prefix packing: one prompt followed by several responses, and several such groups per row.

A group is [prompt, response_1, ..., response_k]; each response attends to its own prompt and to
itself only, and its position ids restart where the prompt ends. The last hidden state of every
response then equals that of the sequence [prompt, response_i] run alone, while the prompt is
computed once. A Bradley-Terry pair is a group with k = 2. Groups may share a row (padding-free
packing): a token never attends outside its group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from syco.core.indexing import last_token_index

PAD_SEGMENT = -1
PROMPT_SEGMENT = 0

Group = tuple[Sequence[int], Sequence[Sequence[int]]]


@dataclass
class PackedBatch:
    input_ids: torch.Tensor  # [rows, time]
    position_ids: torch.Tensor  # [rows, time]
    segment_ids: torch.Tensor  # [rows, time]: -1 pad, 0 prompt, i for response i (1-based)
    last_index: torch.Tensor  # [groups, max_responses]: position of each response's last token in its row, -1 if absent
    response_lengths: torch.Tensor  # [groups, max_responses]: tokens per response, 0 if absent
    num_tokens: int  # non-pad tokens
    group_ids: torch.Tensor | None = None  # [rows, time]: which group a token belongs to (-1 pad)
    group_row: torch.Tensor | None = None  # [groups]: the row holding each group

    def __post_init__(self) -> None:
        if self.group_ids is None:  # one group per row
            self.group_ids = torch.where(self.segment_ids == PAD_SEGMENT, -1,
                                         torch.arange(self.segment_ids.shape[0])[:, None].to(self.segment_ids))
        if self.group_row is None:
            self.group_row = torch.arange(self.last_index.shape[0], device=self.last_index.device)

    def attention_mask(self) -> torch.Tensor:
        return shared_prefix_attention_mask(self.segment_ids, self.group_ids)

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(self.input_ids.to(device), self.position_ids.to(device), self.segment_ids.to(device),
                           self.last_index.to(device), self.response_lengths.to(device), self.num_tokens,
                           self.group_ids.to(device), self.group_row.to(device))


def shared_prefix_attention_mask(segment_ids: torch.Tensor, group_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask [rows, 1, time, time]: True where query i may attend to key j.

    Causal, within one group, and a response token sees the prompt and its own response only.
    Padding rows attend to themselves so that no softmax row is empty (an empty row yields NaN,
    and 0 * NaN would leak into real positions through the value product).
    """
    seq_len = segment_ids.shape[1]
    idx = torch.arange(seq_len, device=segment_ids.device)
    causal = idx[:, None] >= idx[None, :]
    query = segment_ids[:, :, None]
    key = segment_ids[:, None, :]
    allowed = causal & ((key == PROMPT_SEGMENT) | (key == query)) & (key != PAD_SEGMENT) & (query != PAD_SEGMENT)
    if group_ids is not None:
        allowed = allowed & (group_ids[:, :, None] == group_ids[:, None, :])
    allowed = allowed | torch.eye(seq_len, dtype=torch.bool, device=segment_ids.device)
    return allowed[:, None]


def group_length(group: Group) -> int:
    return len(group[0]) + sum(len(r) for r in group[1])


def assign_rows(lengths: Sequence[int], capacity: int | None) -> list[list[int]]:
    """First-fit decreasing: group indices per row, each row at most max(capacity, longest group)
    tokens. capacity=None keeps one group per row."""
    if capacity is None:
        return [[i] for i in range(len(lengths))]
    capacity = max(capacity, max(lengths))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def pack_rows(groups: Sequence[Group], pad_token_id: int, padding_side: str = "right",
              row_capacity: int | None = None) -> PackedBatch:
    """Pack (prompt_ids, [response_ids, ...]) groups into one padded batch.

    With row_capacity=None each group gets its own row; with a capacity (0 = the longest group)
    several groups share a row, which removes most padding. Outputs are indexed by group in input
    order either way."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not groups:
        raise ValueError("cannot pack an empty batch")
    for g, (_, responses) in enumerate(groups):
        if not responses:
            raise ValueError(f"row {g} has no responses")
        if any(len(r) == 0 for r in responses):
            raise ValueError(f"row {g} has an empty response")
    lengths = [group_length(g) for g in groups]
    layout = assign_rows(lengths, row_capacity)
    row_lengths = [sum(lengths[i] for i in row) for row in layout]
    max_len = max(row_lengths)
    max_resp = max(len(rs) for _, rs in groups)
    shape = (len(layout), max_len)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    segment_ids = torch.full(shape, PAD_SEGMENT, dtype=torch.long)
    group_ids = torch.full(shape, -1, dtype=torch.long)
    last_index = torch.full((len(groups), max_resp), -1, dtype=torch.long)
    response_lengths = torch.zeros((len(groups), max_resp), dtype=torch.long)
    group_row = torch.zeros(len(groups), dtype=torch.long)
    for r, (row, length) in enumerate(zip(layout, row_lengths)):
        cursor = max_len - length if padding_side == "left" else 0
        for g in row:
            prompt, responses = groups[g]
            p = len(prompt)
            ids = list(prompt)
            pos = list(range(p))
            seg = [PROMPT_SEGMENT] * p
            for k, resp in enumerate(responses):
                ids.extend(resp)
                pos.extend(range(p, p + len(resp)))
                seg.extend([k + 1] * len(resp))
                response_lengths[g, k] = len(resp)
            span = slice(cursor, cursor + len(ids))
            input_ids[r, span] = torch.tensor(ids)
            position_ids[r, span] = torch.tensor(pos)
            segment_ids[r, span] = torch.tensor(seg)
            group_ids[r, span] = g
            group_row[g] = r
            cursor += len(ids)
    # each response's last token: the last position of its own (group, segment) mask in its row
    g_idx, k_idx = (response_lengths > 0).nonzero(as_tuple=True)
    rows = group_row[g_idx]
    own = (group_ids[rows] == g_idx[:, None]) & (segment_ids[rows] == (k_idx + 1)[:, None])
    last_index[g_idx, k_idx] = last_token_index(own)
    return PackedBatch(input_ids, position_ids, segment_ids, last_index, response_lengths, sum(lengths),
                       group_ids, group_row)
