"""KL estimators and controllers, whitening, GAE and PPO losses on small exact cases."""

from __future__ import annotations

import math

import pytest
import torch

from syco.core.advantages import (
    gae,
    leave_one_out_baseline,
    masked_mean,
    masked_moments,
    masked_var,
    masked_whiten,
    moments_mean_var,
    token_mean,
)
from syco.core.kl import AdaptiveKLController, FixedKLController, kl_per_token
from syco.core.ppo import entropy_from_logits, policy_loss, token_rewards, value_loss


def test_kl_estimators_exact_and_zero_at_equal_policies():
    lp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    assert kl_per_token(lp, ref, "k1").tolist() == pytest.approx([0.5, -1.0])
    r = ref - lp
    assert kl_per_token(lp, ref, "k3").tolist() == pytest.approx((torch.exp(r) - 1 - r).tolist())
    assert (kl_per_token(lp, ref, "k3") >= 0).all()
    for est in ("k1", "k3"):
        assert kl_per_token(lp, lp.clone(), est).abs().max() == 0.0
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_per_token(lp, ref, "k2x")
    with pytest.raises(ValueError, match="differ"):
        kl_per_token(lp, ref[:1])


def test_k1_and_k3_agree_in_expectation():
    torch.manual_seed(0)
    p = torch.distributions.Categorical(logits=torch.randn(6))
    q = torch.distributions.Categorical(logits=torch.randn(6))
    y = p.sample((200_000,))
    exact = torch.distributions.kl_divergence(p, q).item()
    for est in ("k1", "k3"):
        assert kl_per_token(p.log_prob(y), q.log_prob(y), est).mean().item() == pytest.approx(exact, abs=0.01)


def test_kl_controllers():
    fixed = FixedKLController(0.1)
    assert fixed.update(100.0, 8) == 0.1
    ada = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    # KL 12 = 2x target: error clipped to 0.2 -> coef *= 1 + 0.2 * 256 / 10000
    assert ada.update(12.0, 256) == pytest.approx(0.2 * (1 + 0.2 * 256 / 10000))
    before = ada.value
    assert ada.update(3.0, 256) == pytest.approx(before * (1 - 0.2 * 256 / 10000))
    state = ada.state_dict()
    other = AdaptiveKLController(1.0, 1.0, 1)
    other.load_state_dict(state)
    assert other.state_dict() == state
    with pytest.raises(ValueError, match="cannot adapt"):
        ada.update(float("nan"), 1)


def test_masked_statistics_and_whitening():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    assert masked_mean(x, mask).item() == pytest.approx(2.5)
    assert masked_var(x, mask).item() == pytest.approx(5 / 3)  # var of 1,2,3,4, unbiased
    w = masked_whiten(x, mask)
    assert w[:, 2].abs().max() == 0
    assert masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_var(w, mask).item() == pytest.approx(1.0, abs=1e-5)
    assert masked_mean(x, mask, dim=1).tolist() == pytest.approx([1.5, 3.5])


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.25, 0.75]])
    mask = torch.ones(1, 3)
    gamma, lam = 0.9, 0.8
    d2 = 1.0 - 0.75
    d1 = 0.0 + gamma * 0.75 - 0.25
    d0 = 0.0 + gamma * 0.25 - 0.5
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    adv, ret = gae(rewards, values, mask, gamma, lam)
    assert adv[0].tolist() == pytest.approx([a0, a1, a2])
    assert ret[0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.25, a2 + 0.75])
    # gamma = lam = 1: the advantage is the return to go minus the value
    adv1, _ = gae(rewards, values, mask, 1.0, 1.0)
    assert adv1[0].tolist() == pytest.approx([1 - 0.5, 1 - 0.25, 1 - 0.75])


def test_gae_ignores_padding_on_either_side():
    rewards = torch.tensor([[0.1, -0.2, 1.0]])
    values = torch.tensor([[0.3, 0.2, 0.6]])
    ref_adv, ref_ret = gae(rewards, values, torch.ones(1, 3), 0.95, 0.9)
    right = gae(torch.cat([rewards, torch.tensor([[7.0, 7.0]])], 1), torch.cat([values, torch.tensor([[9.0, 9.0]])], 1),
                torch.tensor([[1, 1, 1, 0, 0]]), 0.95, 0.9)
    left = gae(torch.cat([torch.tensor([[7.0]]), rewards], 1), torch.cat([torch.tensor([[9.0]]), values], 1),
               torch.tensor([[0, 1, 1, 1]]), 0.95, 0.9)
    assert right[0][0, :3].tolist() == pytest.approx(ref_adv[0].tolist())
    assert right[0][0, 3:].abs().max() == 0 and right[1][0, 3:].abs().max() == 0
    assert left[0][0, 1:].tolist() == pytest.approx(ref_adv[0].tolist())
    assert left[1][0, 1:].tolist() == pytest.approx(ref_ret[0].tolist())


def test_token_rewards_put_the_score_on_the_last_real_token():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]])
    right = torch.tensor([[1, 1, 0], [1, 1, 1]])
    r = token_rewards(torch.tensor([2.0, -1.0]), kl, right, kl_coef=0.5)
    assert r.flatten().tolist() == pytest.approx([-0.05, -0.1 + 2.0, 0.0, -0.25, -0.25, -0.25 - 1.0])
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    r = token_rewards(torch.tensor([2.0, -1.0]), kl, left, kl_coef=0.0)
    assert r[0].tolist() == [0.0, 0.0, 2.0]
    with pytest.raises(ValueError, match="no tokens"):
        token_rewards(torch.tensor([1.0]), kl[:1], torch.zeros(1, 3, dtype=torch.long), 0.1)


def test_policy_loss_clipping_by_hand():
    adv = torch.tensor([[1.0, -1.0]])
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 1.5]]))  # ratio 1.5 on both tokens
    mask = torch.ones(1, 2)
    loss, stats = policy_loss(new, old, adv, mask, clip_range=0.2)
    # token 0 (A=+1): max(-1.5, -1.2) = -1.2 (clipped); token 1 (A=-1): max(1.5, 1.2) = 1.5
    assert loss.item() == pytest.approx((-1.2 + 1.5) / 2)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    assert stats["ratio"].item() == pytest.approx(1.5)
    # at ratio 1 the loss is -mean(A) and nothing is clipped
    loss0, stats0 = policy_loss(old, old, adv, mask)
    assert loss0.item() == pytest.approx(0.0) and stats0["clipfrac"].item() == 0.0


def test_value_loss_clipping_by_hand():
    old = torch.tensor([[0.0, 0.0]])
    new = torch.tensor([[1.0, 0.1]])
    ret = torch.tensor([[1.0, 1.0]])
    loss, stats = value_loss(new, old, ret, torch.ones(1, 2), clip_range_value=0.2)
    # token 0: max((1-1)^2, (0.2-1)^2) = 0.64; token 1: max(0.81, 0.81) = 0.81
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81) / 2)
    assert stats["clipfrac"].item() == pytest.approx(0.5)


def test_losses_of_row_parts_add_up_to_the_mini_batch_token_mean():
    """With the mini-batch's token count, any split of its rows (micro-batches, ranks) gives parts
    whose losses, gradients and statistics add up to the whole's: gradient accumulation and DDP then
    take the step one large batch takes, however unequal the parts' token counts."""
    g = torch.Generator().manual_seed(0)
    new = torch.randn(5, 4, generator=g).requires_grad_()
    old, adv = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]])
    whole, stats = policy_loss(new, old, adv, mask)
    (grad,) = torch.autograd.grad(whole, new)
    tokens = mask.sum()
    parts = [policy_loss(new[rows], old[rows], adv[rows], mask[rows], tokens=tokens) for rows in ([0, 3], [1, 2, 4])]
    assert float(sum(p[0] for p in parts)) == pytest.approx(float(whole), abs=1e-6)
    (split,) = torch.autograd.grad(sum(p[0] for p in parts), new)
    assert torch.allclose(split, grad, atol=1e-7)
    for k in stats:
        assert float(sum(p[1][k] for p in parts)) == pytest.approx(float(stats[k]), abs=1e-6), k
    # the per-part token mean (what a micro-batch's own mean would be) is not the mini-batch's
    own = [policy_loss(new[rows], old[rows], adv[rows], mask[rows])[0] for rows in ([0, 3], [1, 2, 4])]
    assert abs(float(sum(own)) / 2 - float(whole)) > 1e-3
    v, vold, ret = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    vwhole = value_loss(v, vold, ret, mask)[0]
    vparts = sum(value_loss(v[r], vold[r], ret[r], mask[r], tokens=tokens)[0] for r in ([0, 3], [1, 2, 4]))
    assert float(vparts) == pytest.approx(float(vwhole), abs=1e-6)
    assert token_mean(torch.ones(2, 2), torch.ones(2, 2), tokens=8).item() == 0.5
    assert token_mean(torch.full((1, 2), 3.0), torch.tensor([[1, 0]])).item() == 3.0  # no count: its own mean
    with pytest.raises(ValueError, match="0.0 tokens"):
        token_mean(torch.ones(1, 1), torch.ones(1, 1), tokens=0)


def test_entropy():
    assert entropy_from_logits(torch.zeros(4)).item() == pytest.approx(math.log(4))
    assert entropy_from_logits(torch.tensor([100.0, 0.0, 0.0])).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(3, 7, 11, generator=torch.Generator().manual_seed(0))
    whole = -(logits.log_softmax(-1).exp() * logits.log_softmax(-1)).sum(-1)
    assert torch.allclose(entropy_from_logits(logits, chunk=4), whole, atol=1e-6)  # chunks of positions
    assert entropy_from_logits(logits, chunk=4).shape == (3, 7)


def test_leave_one_out_baseline_by_hand():
    scores = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0, 60.0])
    out = leave_one_out_baseline(scores, 3)
    # 1 - (2+3)/2, 2 - (1+3)/2, 3 - (1+2)/2; 10 - 40, 20 - 35, 60 - 15
    assert out.tolist() == pytest.approx([-1.5, 0.0, 1.5, -30.0, -15.0, 45.0])
    # a shift shared by every sample of a prompt (how the PM rates the question) cancels
    shift = torch.tensor([5.0, 5.0, 5.0, -7.0, -7.0, -7.0])
    assert torch.allclose(leave_one_out_baseline(scores + shift, 3), out)
    assert leave_one_out_baseline(torch.tensor([4.0, 1.0]), 2).tolist() == [3.0, -3.0]
    with pytest.raises(ValueError, match=">= 2 samples"):
        leave_one_out_baseline(scores, 1)
    with pytest.raises(ValueError, match="groups of 4"):
        leave_one_out_baseline(scores, 4)


def test_whitening_over_ranks_equals_whitening_the_whole_batch():
    """Two ranks adding up their masked moments whiten exactly as one process with both halves."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g)
    mask = (torch.rand(6, 5, generator=g) > 0.3).float()
    whole = masked_whiten(x, mask)
    moments = masked_moments(x[:3], mask[:3]) + masked_moments(x[3:], mask[3:])
    halves = torch.cat([masked_whiten(x[:3], mask[:3], moments=moments), masked_whiten(x[3:], mask[3:], moments=moments)])
    assert torch.allclose(halves, whole, atol=1e-6)
    assert float(moments_mean_var(masked_moments(x, mask))[0]) == pytest.approx(float(masked_mean(x, mask)), abs=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        moments_mean_var(masked_moments(x[:1, :1], torch.ones(1, 1)))
