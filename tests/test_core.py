"""syco.core: Bradley-Terry loss, last-token indexing, shared-prefix packing and its attention mask."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from syco.core.bradley_terry import bradley_terry_loss
from syco.core.indexing import last_token_index, prompt_groups
from syco.core.packing import PAD_SEGMENT, PROMPT_SEGMENT, assign_rows, pack_rows, shared_prefix_attention_mask


def _softplus(x: float) -> float:
    """-log sigmoid(-x) = log(1 + e^x)."""
    return math.log1p(math.exp(x))


# --- Bradley-Terry ----------------------------------------------------------------------------
CHOSEN = torch.tensor([1.0, 0.0, 2.0])
REJECTED = torch.tensor([0.0, 0.0, 3.0])  # differences 1, 0, -1


def test_bt_loss_hand_computed():
    expected = (_softplus(-1.0) + math.log(2.0) + _softplus(1.0)) / 3  # (0.3133 + 0.6931 + 1.3133) / 3
    assert bradley_terry_loss(CHOSEN, REJECTED).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.7732235, abs=1e-6)


def test_bt_loss_single_pair_values():
    assert bradley_terry_loss(torch.tensor([0.0]), torch.tensor([0.0])).item() == pytest.approx(math.log(2), abs=1e-6)
    # a large correct margin costs almost nothing, a large wrong one costs about the margin
    assert bradley_terry_loss(torch.tensor([20.0]), torch.tensor([0.0])).item() == pytest.approx(0.0, abs=1e-6)
    assert bradley_terry_loss(torch.tensor([0.0]), torch.tensor([20.0])).item() == pytest.approx(20.0, abs=1e-6)


def test_bt_loss_scalar_margin():
    # differences minus 1: 0, -1, -2
    expected = (math.log(2.0) + _softplus(1.0) + _softplus(2.0)) / 3
    assert bradley_terry_loss(CHOSEN, REJECTED, margin=1.0).item() == pytest.approx(expected, abs=1e-6)


def test_bt_loss_per_pair_margin():
    margin = torch.tensor([1.0, 0.0, -1.0])  # differences minus margin: 0, 0, 0
    assert bradley_terry_loss(CHOSEN, REJECTED, margin=margin).item() == pytest.approx(math.log(2.0), abs=1e-6)


def test_bt_loss_center_rewards():
    base = bradley_terry_loss(CHOSEN, REJECTED).item()
    # mean((r_c + r_r)^2) = (1 + 0 + 25) / 3
    out = bradley_terry_loss(CHOSEN, REJECTED, center_rewards_coefficient=0.01).item()
    assert out == pytest.approx(base + 0.01 * 26 / 3, abs=1e-6)
    # centering only depends on the sum: shifting both rewards by c changes the loss by the centering term only
    shifted = bradley_terry_loss(CHOSEN + 5, REJECTED + 5, center_rewards_coefficient=0.01).item()
    assert shifted == pytest.approx(base + 0.01 * ((11**2 + 10**2 + 15**2) / 3), abs=1e-5)


def test_bt_loss_gradient_direction():
    chosen = torch.tensor([0.5], requires_grad=True)
    rejected = torch.tensor([0.5], requires_grad=True)
    bradley_terry_loss(chosen, rejected).backward()
    # d/dx -log sigmoid(x) at x = 0 is -1/2
    assert chosen.grad.item() == pytest.approx(-0.5)
    assert rejected.grad.item() == pytest.approx(0.5)


def test_bt_loss_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError):
        bradley_terry_loss(torch.zeros(2, 1), torch.zeros(2))


# --- last token -------------------------------------------------------------------------------
def test_last_token_right_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert last_token_index(mask).tolist() == [2, 4, 0]


def test_last_token_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert last_token_index(mask).tolist() == [4, 4, 4]


def test_last_token_no_padding():
    assert last_token_index(torch.ones(3, 7, dtype=torch.long)).tolist() == [6, 6, 6]


def test_last_token_pad_equals_eos():
    # pad id == eos id == 2, and eos also appears inside the sequence: only the mask decides
    eos = pad = 2
    input_ids = torch.tensor([[5, eos, 7, eos, pad, pad], [eos, 9, 9, 9, 9, eos]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    idx = last_token_index(mask)
    assert idx.tolist() == [3, 5]
    # a search for the first eos (a common mistake) would give 1 and 0 here
    assert [(row == eos).nonzero()[0].item() for row in input_ids] == [1, 0]
    # bool masks work the same
    assert last_token_index(mask.bool()).tolist() == [3, 5]


def test_last_token_empty_row_raises():
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0]])
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        last_token_index(mask)


def test_last_token_bad_shape():
    with pytest.raises(ValueError, match="batch, time"):
        last_token_index(torch.ones(4))


# --- packing ----------------------------------------------------------------------------------
# row 0: prompt [1, 2, 3], responses [4, 5] and [6]       -> 6 tokens
# row 1: prompt [7],       responses [8] and [9, 10, 11]  -> 5 tokens
ROWS = [([1, 2, 3], [[4, 5], [6]]), ([7], [[8], [9, 10, 11]])]
PAD = 0


def test_pack_right_padding_exact():
    b = pack_rows(ROWS, pad_token_id=PAD, padding_side="right")
    assert b.input_ids.tolist() == [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, PAD]]
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 4, 3], [0, 1, 1, 2, 3, 0]]
    assert b.segment_ids.tolist() == [[0, 0, 0, 1, 1, 2], [0, 1, 2, 2, 2, -1]]
    assert b.last_index.tolist() == [[4, 5], [1, 4]]
    assert b.response_lengths.tolist() == [[2, 1], [1, 3]]
    assert b.num_tokens == 11
    assert b.input_ids.dtype == b.position_ids.dtype == b.segment_ids.dtype == torch.long


def test_pack_left_padding_exact():
    b = pack_rows(ROWS, pad_token_id=PAD, padding_side="left")
    assert b.input_ids.tolist() == [[1, 2, 3, 4, 5, 6], [PAD, 7, 8, 9, 10, 11]]
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 4, 3], [0, 0, 1, 1, 2, 3]]
    assert b.segment_ids.tolist() == [[0, 0, 0, 1, 1, 2], [-1, 0, 1, 2, 2, 2]]
    assert b.last_index.tolist() == [[4, 5], [2, 5]]
    assert b.response_lengths.tolist() == [[2, 1], [1, 3]]
    assert b.num_tokens == 11


def test_pack_last_index_points_at_last_response_token():
    for side in ("left", "right"):
        b = pack_rows(ROWS, pad_token_id=PAD, padding_side=side)
        for row, (_, responses) in enumerate(ROWS):
            for i, resp in enumerate(responses):
                pos = b.last_index[row, i].item()
                assert b.input_ids[row, pos].item() == resp[-1]
                assert b.segment_ids[row, pos].item() == i + 1


@pytest.mark.parametrize("side", ["left", "right"])
def test_pack_reads_each_response_at_its_last_token(side):
    """The PM reads a response's score where last_token_index puts it: the last of its own tokens."""
    groups = [([1, 2], [[3, 4], [5]]), ([6], [[7, 8, 9]]), ([1], [[2]])]
    b = pack_rows(groups, 0, side, row_capacity=None)
    for g, (_, responses) in enumerate(groups):
        row = b.group_row[g]
        for k, response in enumerate(responses):
            own = (b.segment_ids[row] == k + 1) & (b.group_ids[row] == g)
            assert b.last_index[g, k] == last_token_index(own[None])[0]
            assert b.input_ids[row, b.last_index[g, k]] == response[-1]


def test_pack_uneven_response_counts():
    b = pack_rows([([1], [[2], [3], [4]]), ([5, 6], [[7]])], pad_token_id=99)
    assert b.input_ids.tolist() == [[1, 2, 3, 4], [5, 6, 7, 99]]
    assert b.last_index.tolist() == [[1, 2, 3], [2, -1, -1]]
    assert b.response_lengths.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b.num_tokens == 7


def test_pack_errors():
    with pytest.raises(ValueError, match="empty batch"):
        pack_rows([], pad_token_id=PAD)
    with pytest.raises(ValueError, match="row 1 has an empty response"):
        pack_rows([([1], [[2], [3]]), ([1], [[2], []])], pad_token_id=PAD)
    with pytest.raises(ValueError, match="row 0 has no responses"):
        pack_rows([([1, 2], [])], pad_token_id=PAD)
    with pytest.raises(ValueError, match="padding_side"):
        pack_rows(ROWS, pad_token_id=PAD, padding_side="middle")


def test_packed_batch_to_and_attention_mask():
    b = pack_rows(ROWS, pad_token_id=PAD)
    moved = b.to("cpu")
    assert torch.equal(moved.input_ids, b.input_ids) and moved.num_tokens == b.num_tokens
    assert torch.equal(b.attention_mask(), shared_prefix_attention_mask(b.segment_ids))


# --- attention mask ---------------------------------------------------------------------------
def test_mask_shape_and_causal():
    for side in ("left", "right"):
        seg = pack_rows(ROWS, pad_token_id=PAD, padding_side=side).segment_ids
        mask = shared_prefix_attention_mask(seg)
        assert mask.shape == (2, 1, 6, 6) and mask.dtype == torch.bool
        future = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1)
        assert not mask[:, 0][:, future].any()
        assert mask[:, 0].diagonal(dim1=-2, dim2=-1).all()  # every row, padding included, sees itself


def test_mask_exact_right_padding():
    seg = pack_rows(ROWS, pad_token_id=PAD, padding_side="right").segment_ids
    mask = shared_prefix_attention_mask(seg)[:, 0].int().tolist()
    # row 0 segments [0, 0, 0, 1, 1, 2]
    assert mask[0] == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 0, 0, 1],  # response 2 sees the prompt, not response 1
    ]
    # row 1 segments [0, 1, 2, 2, 2, -1]
    assert mask[1] == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 0, 1, 0, 0, 0],
        [1, 0, 1, 1, 0, 0],
        [1, 0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],  # padding sees only itself
    ]


def test_mask_exact_left_padding():
    seg = pack_rows(ROWS, pad_token_id=PAD, padding_side="left").segment_ids
    mask = shared_prefix_attention_mask(seg)[1, 0].int().tolist()
    # row 1 segments [-1, 0, 1, 2, 2, 2]: nobody attends to the pad key at position 0
    assert mask == [
        [1, 0, 0, 0, 0, 0],
        [0, 1, 0, 0, 0, 0],
        [0, 1, 1, 0, 0, 0],
        [0, 1, 0, 1, 0, 0],
        [0, 1, 0, 1, 1, 0],
        [0, 1, 0, 1, 1, 1],
    ]


def test_mask_segment_constants():
    seg = torch.tensor([[PROMPT_SEGMENT, 1, 2, PAD_SEGMENT]])
    mask = shared_prefix_attention_mask(seg)[0, 0]
    assert mask[2, 0] and not mask[2, 1]
    assert not mask[3, :3].any() and mask[3, 3]


@pytest.mark.parametrize("side", ["left", "right"])
def test_packed_attention_equals_separate_sequences(side):
    """With the mask and position ids, each response's attention output is that of [prompt, response] alone."""
    g = torch.Generator().manual_seed(0)
    dim, vocab, max_pos = 8, 32, 16
    emb_q, emb_k, emb_v = (torch.randn(vocab, dim, generator=g) for _ in range(3))
    pos_emb = torch.randn(max_pos, dim, generator=g)

    def attend(ids: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = (e[ids] + pos_emb[pos] for e in (emb_q, emb_k, emb_v))
        return F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], attn_mask=mask)[:, 0]

    b = pack_rows(ROWS, pad_token_id=PAD, padding_side=side)
    packed = attend(b.input_ids, b.position_ids, b.attention_mask())
    assert not packed.isnan().any()
    for row, (prompt, responses) in enumerate(ROWS):
        for i, resp in enumerate(responses):
            alone_ids = torch.tensor([prompt + resp])
            n = alone_ids.shape[1]
            causal = torch.tril(torch.ones(n, n, dtype=torch.bool))[None, None]
            alone = attend(alone_ids, torch.arange(n)[None], causal)[0, len(prompt):]
            cols = (b.segment_ids[row] == i + 1).nonzero().flatten()
            torch.testing.assert_close(packed[row, cols], alone)


# --- several groups per row -------------------------------------------------------------------
def test_assign_rows_first_fit_decreasing():
    assert assign_rows([5, 3, 2, 4], None) == [[0], [1], [2], [3]]
    # capacity 0 = the longest group: no row grows beyond it
    assert assign_rows([5, 3, 2, 4], 0) == [[0], [3], [1, 2]]
    assert assign_rows([5, 3, 2, 4], 7) == [[0, 2], [3, 1]]


def test_pack_rows_shares_rows_between_groups():
    groups = [([1, 2, 3], [[4, 5], [6]]), ([7], [[8], [9, 10]]), ([11], [[12]])]  # lengths 6, 4, 2
    b = pack_rows(groups, pad_token_id=0, row_capacity=0)  # capacity = longest group = 6
    assert b.input_ids.tolist() == [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]]
    assert b.group_row.tolist() == [0, 1, 1]
    assert b.last_index.tolist() == [[4, 5], [1, 3], [5, -1]]
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 4, 3], [0, 1, 1, 2, 0, 1]]
    assert b.num_tokens == 12
    # one group per row: same groups, padded
    one = pack_rows(groups, pad_token_id=0)
    assert one.input_ids.shape == (3, 6) and one.group_row.tolist() == [0, 1, 2]


def test_pack_rows_groups_never_see_each_other():
    groups = [([1, 2], [[3], [4, 5]]), ([6], [[7, 8]])]  # lengths 5 and 3; capacity 8 puts both in one row
    b = pack_rows(groups, pad_token_id=0, row_capacity=8)
    assert b.input_ids.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8]]
    assert b.position_ids.tolist() == [[0, 1, 2, 2, 3, 0, 1, 2]]
    assert b.group_ids.tolist() == [[0, 0, 0, 0, 0, 1, 1, 1]]
    assert b.last_index.tolist() == [[2, 4], [7, -1]]
    assert b.group_row.tolist() == [0, 0]
    m = b.attention_mask()[0, 0]
    assert not m[5:, :5].any()  # group 1 never sees group 0
    assert m[6, 5] and m[7, 5] and m[7, 6]  # its response sees its own prompt
    assert m[4, :2].all() and not m[4, 2]  # group 0's second response: prompt, not the first response


def test_prompt_groups_number_prompts_in_order_of_first_appearance():
    pad = 0
    ids = torch.tensor([[pad, 7, 8], [5, 6, 9], [pad, 7, 8], [5, 6, 9], [pad, 7, 8], [pad, 0, 8]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1], [0, 1, 1], [1, 1, 1], [0, 1, 1], [0, 1, 1]])
    first, group = prompt_groups(ids, mask)
    assert first.tolist() == [0, 1, 5] and group.tolist() == [0, 1, 0, 1, 0, 2]
    # a real token equal to the pad id is another prompt than the padding
    same_ids = prompt_groups(torch.tensor([[0, 8], [0, 8]]), torch.tensor([[0, 1], [1, 1]]))
    assert same_ids is None
    assert prompt_groups(ids[:2], mask[:2]) is None  # nothing shared: callers run rows whole
    with pytest.raises(ValueError, match="one \\[batch, time\\] shape"):
        prompt_groups(ids, mask[:, :2])
