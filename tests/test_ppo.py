"""PPO with LoRA on one base model (tiny random-init llama): KL exactly 0 at the start, what one
step changes and what it must not, where the reward is read, KL control, bad states, adapter
round trip, resume, and `train.py task=ppo|rlhf` end to end."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, SHARED_DATA, compose_config
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

import syco.ppo.module as ppo_module
from syco.core.advantages import gae
from syco.core.kl import kl_per_token
from syco.core.ppo import token_rewards
from syco.pm.model import PreferenceModel, load
from syco.policy import Policy
from syco.ppo.config import PPOConfig, RewardConfig
from syco.ppo.model import POLICY, VALUE, ActorCritic, SharedBasePM
from syco.ppo.prompts import belief_prompts, step_prompts
from syco.ppo.rewards import RunningMoments, shape_scores
from syco.ppo.rlhf import pm_cache_key
from syco.ppo.rlhf import run as run_rlhf
from syco.ppo.rollout import TemperatureSampler, concat, evaluate, sample, sampling_config, stop_mask
from syco.ppo.training import Steps, build, run_ppo, trainer_for

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Tell me a long story about a dragon and a knight who meet by a river at dawn."}],
    [{"role": "user", "content": "What is 2 + 2? I think the answer is 5 but I'm really not sure."}],
]
SMALL = ["ppo.batch_size=4", "ppo.mini_batch_size=2", "ppo.ppo_epochs=1", "ppo.max_new_tokens=4",
         "ppo.eval_prompts.limit=2", "ppo.eval.every=1", "ppo.checkpoint_every=1", "ppo.optimizer.lr=1e-3",
         "trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", "logger=csv"]


@pytest.fixture(scope="module")
def tiny_model_cfg() -> dict:
    return OmegaConf.to_container(compose_config("model/tiny"), resolve=True)["model"]


@pytest.fixture(scope="module")
def pm_path(tmp_path_factory, tiny_model_cfg) -> Path:
    """An untrained PM on the tiny base (random head): scores differ across responses, enough here."""
    path = tmp_path_factory.mktemp("pm") / "pm"
    PreferenceModel.create(tiny_model_cfg, max_length=128, seed=0).save(path)
    return path


def ppo_cfg(tmp_path: Path, pm_path: Path, *overrides: str):
    return compose_config("train", ["task=ppo", "model=tiny", f"ppo.pm={pm_path}", f"run_dir={tmp_path / 'run'}",
                                    f"shared_data={SHARED_DATA}", *SMALL, *overrides])


def fit(module, cfg, ppo, ckpt_path=None):
    trainer = trainer_for(cfg, ppo, [], Path(cfg.run_dir))
    trainer.fit(module, train_dataloaders=DataLoader(Steps(), batch_size=None), ckpt_path=ckpt_path)
    return trainer


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory, pm_path):
    """A PPO module that tests only read (no training)."""
    cfg = ppo_cfg(tmp_path_factory.mktemp("built"), pm_path)
    module, ppo = build(cfg)
    return module


# --- start state ----------------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_kl_is_exactly_zero_at_step_zero(built, estimator):
    r = built.rollout(PROMPTS, seed=0, max_new_tokens=6)
    assert torch.equal(r.logprobs, r.ref_logprobs)
    kl = kl_per_token(r.logprobs, r.ref_logprobs, estimator) * r.response_mask
    assert kl.abs().max().item() == 0.0
    assert (r.logprobs[r.response_mask.bool()] < 0).all()  # real log-probs, not the masked zeros


def test_reference_is_a_frozen_copy_of_a_trained_init_adapter(tmp_path, tiny_model_cfg, built):
    ac = ActorCritic.create(tiny_model_cfg, seed=0)
    with torch.no_grad():
        for p in ac.parameters_of(POLICY):
            p.add_(0.05 * torch.randn_like(p))
    ac.save_policy(tmp_path / "trained")
    started = ActorCritic.create(tiny_model_cfg, init_adapter=tmp_path / "trained", seed=0)
    assert started.has_reference
    r = evaluate(started, sample(started, PROMPTS, 6, 1.0, seed=1), 1.0, 4)
    assert torch.equal(r.logprobs, r.ref_logprobs)  # KL 0 against the copy...
    with started.peft.disable_adapter():  # ...and far from 0 against the bare base
        base = started.response_logits(r.input_ids, r.attention_mask, r.response_ids.shape[1], 1.0)
    assert (base.log_softmax(-1).gather(-1, r.response_ids[..., None])[..., 0] * r.response_mask
            - r.logprobs).abs().max() > 1e-3
    assert all(not p.requires_grad for n, p in started.peft.named_parameters() if ".reference." in n)


def test_sampling_has_no_processor_but_temperature(built):
    lm = built.ac.peft.get_base_model()
    lm.generation_config.top_k, lm.generation_config.min_p = 7, 0.3  # defaults that must not leak in
    try:
        config, processors = sampling_config(built.ac, 4, 0.7)
        config, _ = lm._prepare_generation_config(config)
        procs = lm._get_logits_processor(generation_config=config, input_ids_seq_length=3,
                                         encoder_input_ids=torch.zeros(1, 3, dtype=torch.long), device="cpu")
    finally:
        lm.generation_config.top_k, lm.generation_config.min_p = None, None
    assert not config.do_sample and len(procs) == 0  # generate's own processors: none
    assert [type(p).__name__ for p in processors] == ["TemperatureSampler"] and processors[0].temperature == 0.7
    assert len(sampling_config(built.ac, 4, 0.0)[1]) == 0  # temperature 0: greedy


def test_temperature_sampler_draws_from_the_tempered_softmax():
    scores = torch.tensor([[2.0, 1.0, 0.0, -torch.inf, -1.0]]).repeat(40_000, 1)
    torch.manual_seed(0)
    out = TemperatureSampler(0.5)(torch.zeros(1, 1, dtype=torch.long), scores)
    drawn = out.argmax(-1)
    assert ((out == 0).sum(-1) == 1).all() and torch.isinf(out).sum() == out.numel() - len(out)
    freq = torch.bincount(drawn, minlength=5).float() / len(drawn)
    expected = torch.softmax(scores[0] / 0.5, -1)
    assert freq[3] == 0 and torch.allclose(freq, expected, atol=0.01), (freq, expected)
    torch.manual_seed(0)
    assert torch.equal(TemperatureSampler(0.5)(None, scores).argmax(-1), drawn)  # the global stream decides
    with pytest.raises(ValueError, match="temperature > 0"):
        TemperatureSampler(0.0)


def test_shared_prompt_forward_equals_whole_rows(tiny_model_cfg):
    """Rows sampled from one prompt run it once (share_prompts): the same log-probs, values and
    gradients as running every row whole, with prompts of different lengths (left padding) and
    responses that stop early (right padding)."""
    ac = ActorCritic.create(tiny_model_cfg, seed=0)
    with torch.no_grad():  # trained-looking adapters: LoRA B is zero at the start
        for p in ac.parameters_of(POLICY) + ac.parameters_of(VALUE):
            p.add_(0.05 * torch.randn_like(p, generator=torch.Generator().manual_seed(p.numel())))
    vocab = ac.tokenizer.vocab_size
    ac.stop_ids = [*ac.stop_ids, *range(0, vocab, 7)]  # some responses end early
    prompts = [p for p in PROMPTS[:3] for _ in range(3)]
    r = sample(ac, prompts, 6, 1.0, seed=3)
    assert len(set(r.lengths.tolist())) > 1 and r.prompt_mask.sum(1).unique().numel() == 3
    n = r.response_ids.shape[1]
    outputs = {}
    for share in (False, True):
        ac.share_prompts = share
        ac.zero_grad(set_to_none=True)
        with ac.adapter(POLICY):
            logits = ac.response_logits(r.input_ids, r.attention_mask, n, 0.7)
        values = ac.response_values(r.input_ids, r.attention_mask, n)
        mask = r.response_mask.float()
        ((logits.logsumexp(-1) * mask).sum() + (values * mask).sum()).backward()
        grads = [p.grad.clone() for p in ac.parameters_of(POLICY) + ac.parameters_of(VALUE)]
        outputs[share] = (logits.detach(), values.detach(), grads)
    whole, shared = outputs[False], outputs[True]
    m = r.response_mask.bool()
    assert torch.allclose(shared[0][m], whole[0][m], atol=1e-5)
    assert torch.allclose(shared[1][m], whole[1][m], atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(shared[2], whole[2]))
    assert any(g.abs().max() > 0 for g in shared[2][:2])
    # the reference (adapters off) through the shared path stays equal to an untrained policy's
    fresh = ActorCritic.create(tiny_model_cfg, seed=0)
    r2 = evaluate(fresh, sample(fresh, prompts, 4, 1.0, seed=1), 1.0, len(prompts))
    assert torch.equal(r2.logprobs, r2.ref_logprobs)


def test_stop_mask_keeps_the_first_stop_token_and_masks_the_rest():
    ids = torch.tensor([[5, 6, 2, 2, 2], [5, 6, 7, 8, 9], [2, 5, 2, 6, 7], [5, 9, 6, 9, 1]])
    mask, has_stop = stop_mask(ids, [2, 9])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]]
    assert has_stop.tolist() == [True, True, True, True]
    mask, has_stop = stop_mask(ids[:2], [2])
    assert mask[1].tolist() == [1, 1, 1, 1, 1] and has_stop.tolist() == [True, False]


# --- reward ---------------------------------------------------------------------------------------
def test_reward_read_at_the_right_token_left_and_right_padded(built, pm_path):
    r = built.rollout(PROMPTS, seed=3, max_new_tokens=8)
    assert r.prompt_mask[:, 0].tolist().count(0) >= 2  # prompts of different lengths: left padding happened
    cfg = built.cfg.reward
    right = built.pm.score(r.prompts, r.responses, padding_side="right", batch_size=cfg.batch_size)
    left = built.pm.score(r.prompts, r.responses, padding_side="left", batch_size=cfg.batch_size)
    alone = [built.pm.score([p], [t])[0] for p, t in zip(r.prompts, r.responses)]
    assert right == pytest.approx(left, abs=1e-5) and right == pytest.approx(alone, abs=1e-5)
    assert len(set(round(x, 4) for x in right)) > 1
    # the PM as an adapter on the policy's base scores exactly as the PM loaded on its own
    assert isinstance(built.pm, SharedBasePM)
    standalone = load(pm_path)
    assert standalone.score(r.prompts, r.responses) == pytest.approx(right, abs=1e-5)
    raw, shaped = built.scores(r)
    assert raw.tolist() == pytest.approx(right, abs=1e-5)
    assert shaped.tolist() == pytest.approx([(x - built.pm.reward_mean) / built.pm.reward_std for x in right])
    # the policy still samples with its own adapter after scoring
    assert built.ac.peft.active_adapter == POLICY


def test_reward_shaping_and_running_moments():

    running = RunningMoments()
    xs = torch.tensor([1.0, 2.0, 3.0, 10.0])
    running.update(xs[:1])
    running.update(xs[1:])
    assert running.mean == pytest.approx(4.0) and running.std == pytest.approx(float(xs.std()))
    cfg = RewardConfig(normalize="pm", missing_eos_penalty=1.0, clip=2.0)
    out = shape_scores(xs, torch.tensor([True, False, True, True]), cfg, RunningMoments(), pm_mean=2.0, pm_std=2.0)
    assert out.tolist() == pytest.approx([-0.5, -1.0, 0.5, 2.0])


# --- one PPO step ---------------------------------------------------------------------------------
def test_one_step_changes_every_policy_lora_parameter_and_not_the_reference(tmp_path, pm_path):
    cfg = ppo_cfg(tmp_path, pm_path, "ppo.total_steps=1", "ppo.ppo_epochs=2", "ppo.eval.at_start=false")
    module, ppo = build(cfg)
    ac = module.ac
    policy_before = {i: p.detach().clone() for i, p in enumerate(ac.parameters_of(POLICY))}
    value_before = {i: p.detach().clone() for i, p in enumerate(ac.parameters_of(VALUE))}
    base_before = {n: p.detach().clone() for n, p in ac.peft.named_parameters() if "lora_" not in n}
    probe = module.rollout(PROMPTS, seed=5, max_new_tokens=6)
    trainer = fit(module, cfg, ppo)
    assert module.ppo_step == 1 and trainer.global_step == ppo.optimizer_steps_per_rollout == 4
    unchanged = [i for i, p in enumerate(ac.parameters_of(POLICY)) if torch.equal(p, policy_before[i])]
    assert not unchanged, f"{len(unchanged)} of {len(policy_before)} policy LoRA tensors did not change"
    assert all(not torch.equal(p, value_before[i]) for i, p in enumerate(ac.parameters_of(VALUE)))
    assert all(torch.equal(p, base_before[n]) for n, p in ac.peft.named_parameters() if "lora_" not in n)
    after = evaluate(ac, probe.select(range(len(probe))), 1.0, 4)
    assert torch.equal(after.ref_logprobs, probe.ref_logprobs)  # the reference did not move
    assert not torch.equal(after.logprobs, probe.logprobs)  # the policy did
    logged = module.last_metrics
    for name in ("objective/kl", "objective/entropy", "objective/scores", "objective/rlhf_reward",
                 "objective/non_score_reward", "policy/clipfrac_avg", "policy/approxkl_avg", "loss/policy_avg",
                 "loss/value_avg", "val/clipfrac_avg", "val/ratio", "eps", "lr", "eval/kl", "eval/score"):
        assert name in logged, name
    assert logged["objective/kl"] == 0.0  # step 1 sampled from the starting policy
    assert logged["objective/rlhf_reward"] == pytest.approx(logged["objective/scores"])


def test_shared_critic_reads_values_off_the_policy_forward_and_trains_both(tmp_path, pm_path):
    """ppo.critic=shared: no value adapter; a rollout forwards the base twice (policy with values,
    reference) instead of three times, and the value loss reaches the policy adapter too."""
    forwards = {}
    for critic in ("separate", "shared"):
        cfg = ppo_cfg(tmp_path / critic, pm_path, "ppo.total_steps=1", "ppo.eval.at_start=false",
                      f"ppo.critic={critic}", "ppo.share_prompts=false")
        module, ppo = build(cfg)
        ac = module.ac
        decoder = ac.peft.get_base_model().model
        drawn = sample(ac, PROMPTS, 4, 1.0, seed=0)
        forwards[critic] = 0

        def count(*_: object, side: str = critic) -> None:
            forwards[side] += 1

        hook = decoder.register_forward_hook(count)
        evaluate(ac, drawn, 1.0, len(PROMPTS))
        hook.remove()
        if critic == "shared":
            assert not [n for n, _ in ac.peft.named_parameters() if f".{VALUE}." in n]
            assert ac.parameters_of(VALUE) == list(ac.value_head.parameters())
            before = {i: p.detach().clone() for i, p in enumerate(module.trainable_parameters())}
            r = module.rollout(PROMPTS, seed=0, max_new_tokens=4)
            r.advantages = torch.zeros_like(r.logprobs)  # no policy-gradient signal: only the value loss moves
            r.returns = r.values + 1.0
            loss, stats = module._loss(r)
            loss.backward()
            torch.optim.SGD(module.trainable_parameters(), lr=1e-2).step()
            moved = [i for i, p in enumerate(module.trainable_parameters()) if not torch.equal(p, before[i])]
            policy_count = len(ac.parameters_of(POLICY))
            assert any(i < policy_count for i in moved) and set(range(policy_count, len(before))) <= set(moved)
            assert stats["loss/policy_avg"] == 0.0 and stats["loss/value_avg"] > 0
            fit(module, cfg, ppo)  # a whole step runs
            assert module.ppo_step == 1
    assert forwards == {"separate": 3, "shared": 2}
    saved: dict = {"state_dict": {}}
    module.on_save_checkpoint(saved)  # the shared-critic module of the loop
    assert saved["ppo"]["critic"] == "shared"
    module.cfg = dataclasses.replace(module.cfg, critic="separate")
    with pytest.raises(ValueError, match="written with ppo.critic=shared.*resume with ppo.critic=shared"):
        module.on_load_checkpoint(saved)
    with pytest.raises(ValueError, match="critic must be one of"):
        PPOConfig.from_mapping({"critic": "joint"})


def test_chunked_generation_draws_what_each_rank_draws_and_concat_keeps_log_probs(built):
    """One process generating in calls of generation_batch_size rows draws, call by call, what the
    rank holding those rows draws with batch_size = generation_batch_size; concatenating the calls
    re-pads rows without changing their tokens or log-probs."""
    base = built.cfg
    try:
        built.cfg = dataclasses.replace(base, batch_size=4, generation_batch_size=2, max_new_tokens=6)
        one = built.training_rollout(PROMPTS, step=3, rank=0)
        built.cfg = dataclasses.replace(base, batch_size=2, generation_batch_size=None, max_new_tokens=6)
        ranks = [built.training_rollout(PROMPTS[2 * r:2 * r + 2], step=3, rank=r) for r in (0, 1)]
    finally:
        built.cfg = base
    assert one.responses == ranks[0].responses + ranks[1].responses
    assert one.prompts == PROMPTS
    for r, part in enumerate(ranks):
        rows = slice(2 * r, 2 * r + 2)
        for name in ("response_ids", "response_mask", "logprobs", "ref_logprobs", "values"):
            mine, theirs = getattr(one, name)[rows], getattr(part, name)
            assert torch.equal(mine[:, theirs.shape[1]:], torch.zeros_like(mine[:, theirs.shape[1]:])) or \
                name == "response_ids", name  # right padding beyond a part's own width
            assert torch.allclose(mine[:, :theirs.shape[1]].float(), theirs.float(), atol=1e-5), name
        width = part.prompt_ids.shape[1]
        assert torch.equal(one.prompt_ids[rows, -width:], part.prompt_ids)  # left padding before it
        assert int(one.prompt_mask[rows, :-width].sum()) == 0
    assert len({ranks[0].prompt_ids.shape[1], ranks[1].prompt_ids.shape[1]}) == 2  # the parts were re-padded
    with pytest.raises(ValueError, match="no rollouts"):
        concat([], 0)
    with pytest.raises(ValueError, match="generation_batch_size=3 must divide batch_size=4"):
        PPOConfig.from_mapping({"batch_size": 4, "mini_batch_size": 2, "generation_batch_size": 3})


def test_gradient_accumulation_takes_the_mini_batch_step(tmp_path, pm_path):
    """gradient_accumulation_steps splits a mini-batch into micro-batches of unequal token counts;
    the loss stays the mini-batch's token mean, so the step and its statistics are the same."""
    runs = {}
    for accum in (1, 2):
        cfg = ppo_cfg(tmp_path / str(accum), pm_path, "ppo.total_steps=1", "ppo.eval.at_start=false",
                      "ppo.max_new_tokens=8", "ppo.temperature=2.0", f"ppo.gradient_accumulation_steps={accum}")
        module, ppo = build(cfg)
        # a tenth of the vocabulary ends a response: lengths (token counts) differ across rows
        vocab = module.ac.tokenizer.vocab_size
        module.ac.stop_ids = [*module.ac.stop_ids, *range(0, vocab, 10)]
        fit(module, cfg, ppo)
        runs[accum] = module
    one, two = runs[1], runs[2]
    assert 1 < one.last_metrics["response/length"] < 8 and one.last_metrics["response/eos_rate"] > 0
    worst = max(float((a - b).abs().max()) for a, b in zip(one.trainable_parameters(), two.trainable_parameters()))
    assert worst < 1e-6
    for name in ("loss/policy_avg", "loss/value_avg", "policy/grad_norm", "policy/entropy_avg", "val/ratio"):
        assert two.last_metrics[name] == pytest.approx(one.last_metrics[name], rel=1e-5, abs=1e-6), name


def test_ppo_loss_moves_the_policy_towards_rewarded_responses(built):

    ac = ActorCritic.create(built.ac.model_cfg, seed=1)
    module = ppo_module.PPOModule(ac, built.pm, built.cfg, built.prompts, built.eval_prompts, built.run_dir)
    r = module.rollout(PROMPTS * 2, seed=0, max_new_tokens=3)
    mask = r.response_mask.float()
    scores = torch.tensor([1.0, -1.0] * 4)
    _, r.returns = gae(token_rewards(scores, torch.zeros_like(mask), mask, 0.0), r.values, mask, 1.0, 0.95)
    # each row's score as every token's advantage: GAE's with an untrained value head can be of
    # either sign on a rewarded row, which would test the value head's luck rather than the loss
    r.advantages = scores[:, None] * mask
    optimizer = torch.optim.AdamW(module.trainable_parameters(), lr=3e-3)
    for _ in range(8):
        loss, stats = module._loss(r)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert stats["val/ratio"] != 1.0 and stats["loss/value_avg"] < 10
    delta = ((evaluate(ac, r.select(range(8)), 1.0, 8).logprobs - r.logprobs) * mask).sum(1)
    assert (delta[scores > 0] > 0).all() and (delta[scores < 0] < 0).all(), delta


def test_samples_per_prompt_with_a_prompt_baseline(tmp_path, pm_path, monkeypatch):
    """Each step samples batch_size / k prompts k times each, and with reward.baseline=prompt the
    score PPO turns into token rewards is the shaped score minus the mean of the prompt's other samples."""
    cfg = ppo_cfg(tmp_path, pm_path, "ppo.total_steps=1", "ppo.eval.at_start=false", "ppo.samples_per_prompt=2",
                  "ppo.reward.baseline=prompt")
    module, ppo = build(cfg)
    seen: dict[str, object] = {}
    rollout, scores, token_rewards = module.training_rollout, module.scores, ppo_module.token_rewards

    def spy_rollout(prompts, *a, **kw):
        seen.setdefault("prompts", list(prompts))
        return rollout(prompts, *a, **kw)

    def spy_scores(r):
        raw, shaped = scores(r)
        seen["shaped"] = shaped.clone()
        return raw, shaped

    def spy_rewards(s, *a, **kw):
        seen["optimized"] = s.clone()
        return token_rewards(s, *a, **kw)

    monkeypatch.setattr(module, "training_rollout", spy_rollout)
    monkeypatch.setattr(module, "scores", spy_scores)
    monkeypatch.setattr(ppo_module, "token_rewards", spy_rewards)
    fit(module, cfg, ppo)
    prompts = seen["prompts"]
    assert len(prompts) == 4 and prompts[0] == prompts[1] and prompts[2] == prompts[3] and prompts[0] != prompts[2]
    shaped = seen["shaped"]
    expected = torch.stack([shaped[0] - shaped[1], shaped[1] - shaped[0], shaped[2] - shaped[3], shaped[3] - shaped[2]])
    assert torch.allclose(seen["optimized"], expected) and not torch.allclose(shaped, expected)
    # the logged score stays the PM's (shaped) score, not the baselined one
    assert module.last_metrics["objective/scores"] == pytest.approx(float(shaped.mean()), abs=1e-6)
    with pytest.raises(ValueError, match="samples_per_prompt >= 2"):
        PPOConfig.from_mapping({**OmegaConf.to_container(cfg.ppo, resolve=True), "samples_per_prompt": 1})
    with pytest.raises(ValueError, match="must divide batch_size"):
        PPOConfig.from_mapping({**OmegaConf.to_container(cfg.ppo, resolve=True), "samples_per_prompt": 3})


def test_adaptive_kl_controller_updates_and_resumes(tmp_path, pm_path):
    over = ["ppo.kl.adaptive=true", "ppo.kl.coef=0.2", "ppo.kl.target=1.0", "ppo.kl.horizon=100",
            "ppo.eval.at_start=false", "ppo.eval.every=5"]
    cfg = ppo_cfg(tmp_path, pm_path, "ppo.total_steps=2", *over)
    module, ppo = build(cfg)
    fit(module, cfg, ppo)
    # step 1: KL 0 -> error clipped to -0.2; step 2: the logged KL of step 2
    coef = 0.2 * (1 - 0.2 * 4 / 100)
    kl2 = module.last_metrics["objective/kl"]
    coef *= 1 + min(max(kl2 / 1.0 - 1, -0.2), 0.2) * 4 / 100
    assert module.kl_ctl.value == pytest.approx(coef, rel=1e-6) and module.kl_ctl.value != 0.2
    assert module.last_metrics["objective/kl_coef"] == pytest.approx(0.2 * (1 - 0.2 * 4 / 100))
    # resume: controller, step counter, optimizer come back from last.ckpt
    cfg3 = ppo_cfg(tmp_path, pm_path, "ppo.total_steps=3", *over)
    resumed, ppo3 = build(cfg3)
    ckpt = Path(cfg.run_dir) / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    trainer = fit(resumed, cfg3, ppo3, ckpt_path=str(ckpt))
    assert resumed.ppo_step == 3 and trainer.global_step == 3 * ppo3.optimizer_steps_per_rollout
    assert resumed.last_metrics["objective/kl_coef"] == pytest.approx(coef, rel=1e-6)


def test_non_finite_loss_raises_and_keeps_the_last_good_adapter(tmp_path, pm_path, monkeypatch):
    cfg = ppo_cfg(tmp_path, pm_path, "ppo.total_steps=1")
    run_ppo(cfg)
    run_dir = Path(cfg.run_dir)
    good = tree_digest(run_dir / "policy" / "step_1")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    ckpt_digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()

    real = ppo_module.policy_loss

    def nan_loss(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        return loss * float("nan"), stats

    monkeypatch.setattr(ppo_module, "policy_loss", nan_loss)
    cfg2 = ppo_cfg(tmp_path, pm_path, "ppo.total_steps=2", "ckpt_path=last")
    with pytest.raises(FloatingPointError, match=r"PPO step 2 \(PPO epoch 0, mini-batch 0\): non-finite policy loss"):
        run_ppo(cfg2)
    assert tree_digest(run_dir / "policy" / "step_1") == good
    assert not (run_dir / "policy" / "step_2").exists()
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == ckpt_digest
    assert not [p for p in (run_dir / "policy").iterdir() if p.name.startswith(".")]  # no half-written folders


def test_saved_adapter_reloads_to_identical_logprobs(tmp_path, tiny_model_cfg):
    ac = ActorCritic.create(tiny_model_cfg, seed=0)
    with torch.no_grad():
        for p in ac.parameters_of(POLICY):
            p.add_(0.05 * torch.randn_like(p))
    r = evaluate(ac, sample(ac, PROMPTS, 6, 1.0, seed=2), 1.0, 4)
    path = ac.save_policy(tmp_path / "policy" / "step_1", meta={"step": 1})
    assert (path / "adapter_config.json").is_file() and json.loads((path / "syco_ppo.json").read_text())["step"] == 1
    reloaded = ActorCritic.create(tiny_model_cfg, init_adapter=path, seed=0)
    again = evaluate(reloaded, r.select(range(len(r))), 1.0, 4)
    assert torch.equal(again.logprobs, r.logprobs)
    # and evaluate.py's Policy (adapter merged into the base) reads the same policy

    policy = Policy(tiny_model_cfg, adapter=path, device="cpu")
    with torch.no_grad():
        logits = policy.lm(input_ids=r.input_ids, attention_mask=r.attention_mask,
                           position_ids=(r.attention_mask.cumsum(-1) - 1).clamp(min=0)).logits
    n = r.response_ids.shape[1]
    lp = logits[:, -n - 1:-1].log_softmax(-1).gather(-1, r.response_ids[..., None])[..., 0] * r.response_mask
    assert torch.allclose(lp, r.logprobs, atol=1e-4)


# --- prompts and config ---------------------------------------------------------------------------
def test_prompt_sources_split_and_step_batches():
    train, held = belief_prompts(side="train"), belief_prompts(side="heldout")
    everything = belief_prompts(side="all")
    assert len(train) + len(held) == len(everything) and not {json.dumps(p) for p in train} & {json.dumps(p) for p in held}
    assert any("I think the answer is" in p[0]["content"] for p in train)
    a = step_prompts(train, 3, 8, seed=0)
    assert a == step_prompts(train, 3, 8, seed=0) and a != step_prompts(train, 4, 8, seed=0)
    r0, r1 = step_prompts(train, 3, 8, 0, rank=0, world_size=2), step_prompts(train, 3, 8, 0, rank=1, world_size=2)
    assert r0 != r1
    one_epoch = [json.dumps(p) for s in range(len(train) // 3) for p in step_prompts(train, s, 3, seed=0)]
    assert len(set(one_epoch)) == len(one_epoch)  # no prompt repeats within an epoch


@pytest.mark.parametrize("task", ["ppo", "rlhf"])
def test_task_configs_compose(compose_train, task):
    cfg = OmegaConf.to_container(compose_train(f"task={task}"), resolve=True)
    assert cfg["task"]["name"] == task and cfg["ppo"]["pm"] is None
    ppo = PPOConfig.from_mapping(cfg["ppo"])
    assert ppo.kl.estimator in ("k1", "k3") and ppo.optimizer_steps_per_rollout >= 1
    assert cfg["ppo"]["prompts"]["side"] == "train" and cfg["ppo"]["eval_prompts"]["side"] == "heldout"
    with pytest.raises(ValueError, match="unknown ppo options"):
        PPOConfig.from_mapping({**cfg["ppo"], "kl_coeff": 0.1})
    with pytest.raises(ValueError, match="must divide"):
        PPOConfig.from_mapping({**cfg["ppo"], "mini_batch_size": 3})


# --- end to end -----------------------------------------------------------------------------------
def train_cli_ppo(run: Path, pm_path: Path, *overrides: str) -> None:
    """`python train.py task=ppo model=tiny` with SMALL and `overrides` (later ones win), into `run`."""
    cmd = [sys.executable, "train.py", f"hydra.run.dir={run}", "task=ppo", "model=tiny", f"ppo.pm={pm_path}",
           *SMALL, *overrides]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]


def test_train_cli_task_ppo_two_steps(tmp_path, pm_path):
    run = tmp_path / "cli"
    train_cli_ppo(run, pm_path, "ppo.total_steps=2", f"ppo.gold_pm={pm_path}")
    m = json.loads((run / "metrics.json").read_text())
    assert m["ppo_steps"] == 2 and [e["step"] for e in m["eval"]] == [0, 1, 2]
    assert m["eval"][0]["eval/kl"] == 0.0 and m["eval"][-1]["eval/gold_gap"] == pytest.approx(0.0, abs=1e-5)
    for k in (0, 1, 2):
        assert (run / "policy" / f"step_{k}" / "adapter_model.safetensors").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    (csv,) = (run / "csv").glob("version_*/metrics.csv")
    header = csv.read_text().splitlines()[0].split(",")
    for name in ("objective/kl", "objective/scores", "policy/clipfrac_avg", "loss/value_avg", "eps", "eval/gold_gap"):
        assert name in header


def test_eval_metrics_are_logged_only_at_evaluated_steps(tmp_path, pm_path):
    """Evaluation every 2 steps of 4: the CSV holds eval values at PPO steps 0, 2 and 4
    and nowhere else, not repeated stale in the rows between."""

    run = tmp_path / "cli"
    train_cli_ppo(run, pm_path, "ppo.total_steps=4", "ppo.eval.every=2")
    (path,) = (run / "csv").glob("version_*/metrics.csv")
    rows = list(csv.DictReader(path.open()))
    evaluated = sorted(float(r["ppo_step"]) for r in rows if r["eval/kl"])
    trained = sorted(float(r["ppo_step"]) for r in rows if r["objective/kl"])
    assert evaluated == [0.0, 2.0, 4.0] and trained == [1.0, 2.0, 3.0, 4.0]
    saved = json.loads((run / "ppo_eval.json").read_text())
    by_step = {float(r["ppo_step"]): float(r["eval/kl"]) for r in rows if r["eval/kl"]}
    assert by_step == {float(e["step"]): pytest.approx(e["eval/kl"]) for e in saved}
    # an evaluation row is logged at the logger step of its PPO step's training row (W&B merges them)
    train_step = {float(r["ppo_step"]): r["step"] for r in rows if r["objective/kl"]}
    assert all(r["step"] == train_step[float(r["ppo_step"])] for r in rows if r["eval/kl"] and float(r["ppo_step"]) > 0)


def test_task_rlhf_trains_the_pm_once_then_reuses_it(tmp_path):
    over = ["task=rlhf", "model=tiny", "pm=standard", "data.max_train_pairs=8", "data.max_val_pairs=8",
            f"rlhf.pm_cache={tmp_path / 'cache'}", "ppo.total_steps=1", "ppo.eval.at_start=false", *SMALL]

    first = compose_config("train", [f"run_dir={tmp_path / 'a'}", f"shared_data={SHARED_DATA}", *over])
    m1 = run_rlhf(first)
    assert m1["pm_stage"]["source"] == "trained" and m1["ppo_steps"] == 1
    assert (tmp_path / "a" / "pm" / "pm" / "syco_pm.json").is_file()
    assert m1["pm_stage"]["metrics"]["heldout/accuracy"]["count"] == 8
    second = compose_config("train", [f"run_dir={tmp_path / 'b'}", f"shared_data={SHARED_DATA}", *over])
    m2 = run_rlhf(second)
    assert m2["pm_stage"]["source"] == "cache" and m2["pm_stage"]["key"] == m1["pm_stage"]["key"]
    assert not (tmp_path / "b" / "pm").exists()
    other = compose_config("train", [f"run_dir={tmp_path / 'c'}", f"shared_data={SHARED_DATA}", *over, "seed=1"])

    assert pm_cache_key(other) != m1["pm_stage"]["key"]
