"""Policy generation: the shared-prompt pool draws the same samples as num_return_sequences."""

from __future__ import annotations

import pytest
from conftest import compose_config
from omegaconf import OmegaConf

from syco.policy import Policy


@pytest.fixture(scope="module")
def policy(cache_dir):
    cfg = OmegaConf.to_container(compose_config("model/tiny"), resolve=True)["model"]
    return Policy(cfg, cache_dir=cache_dir)


REQUESTS = [
    ([{"role": "user", "content": "What is the capital of France?"}], None),
    ([{"role": "user", "content": "Hi"}], "The answer is ("),
    ([{"role": "user", "content": "Tell me a long story about a dragon and a knight who meet by a river."}], None),
]


def test_shared_prompt_pool_equals_num_return_sequences(policy):
    shared = policy.generate(REQUESTS, temperature=1.0, max_new_tokens=10, n=4, batch_size=12, seed=3)
    plain = policy.generate(REQUESTS, temperature=1.0, max_new_tokens=10, n=4, batch_size=12, seed=3,
                            share_prompt=False)
    assert shared == plain
    assert all(len(s) == 4 for s in shared)
    assert len({tuple(s) for s in shared}) == 3 and len(set(shared[2])) > 1  # real draws, not copies


def test_greedy_repeats_one_continuation(policy):
    out = policy.generate(REQUESTS[:2], temperature=0.0, max_new_tokens=8, n=3)
    assert all(len(set(s)) == 1 and len(s) == 3 for s in out)
    single = policy.generate(REQUESTS[:2], temperature=0.0, max_new_tokens=8, n=1)
    assert [s[0] for s in out] == [s[0] for s in single]


def test_pure_temperature_sampling_unless_asked(policy, monkeypatch):
    """transformers fills top_k/top_p left as None from its defaults (top-k 50): the policy must not."""
    seen = []
    real = policy.lm.generate

    def spy(*args, **kwargs):
        seen.append(kwargs["generation_config"])
        return real(*args, **kwargs)

    monkeypatch.setattr(policy.lm, "generate", spy)
    import torch

    def processors(config):
        config, _ = policy.lm._prepare_generation_config(config)
        procs = policy.lm._get_logits_processor(generation_config=config, input_ids_seq_length=3,
                                                encoder_input_ids=torch.zeros(1, 3, dtype=torch.long), device="cpu")
        return [type(p).__name__ for p in procs]

    policy.generate(REQUESTS[:1], temperature=0.7, max_new_tokens=2, n=2)
    names = processors(seen[-1])
    assert names[0] == "TemperatureLogitsWarper" and set(names[1:]) <= {"MinPLogitsWarper"}
    policy.generate(REQUESTS[:1], temperature=0.7, max_new_tokens=2, n=2, top_k=5)
    assert "TopKLogitsWarper" in processors(seen[-1])


# prompts of different lengths: groups of them are left-padded together
LENGTHS = [([{"role": "user", "content": "word " * k}], None) for k in (1, 9, 4, 15, 2, 7, 12, 5)]


@pytest.mark.parametrize("settings", [
    {"n": 4},
    {"n": 4, "share_prompt": False},
    {"n": 1},
    {"n": 3, "temperature": 0.7, "top_k": 20},
    {"n": 3, "top_p": 0.9},
    {"n": 4, "stop_strings": ["e"]},
], ids=["pool", "num_return_sequences", "n1", "top_k", "top_p", "stop_strings"])
def test_grouped_calls_draw_the_samples_of_one_call_per_group(policy, monkeypatch, settings):
    """Groups of 2 prompts, each seeded, share calls of up to 3 groups' rows: every group draws the
    samples of a call of its own, though rows stop at different steps (frequent stop tokens)."""
    monkeypatch.setattr(policy, "stop_ids", policy.stop_ids + list(range(100, 49000, 23)))
    calls = []
    real = policy.lm.generate

    def spy(*args, **kwargs):
        calls.append(kwargs.get("input_ids", args[0] if args else None))
        return real(*args, **kwargs)

    monkeypatch.setattr(policy.lm, "generate", spy)
    rows = 2 * settings["n"]
    kwargs = {"temperature": 1.0, "max_new_tokens": 12, "seed": 11, "batch_size": rows, **settings}
    alone = policy.generate(LENGTHS, **kwargs)
    assert len(calls) == 4  # one per group
    together = policy.generate(LENGTHS, max_rows_per_call=3 * rows, **kwargs)
    assert len(calls) == 6  # 3 groups, then the last alone
    assert together == alone
    assert len({s for samples in alone for s in samples}) > len(LENGTHS) * min(settings["n"], 2) // 2  # real draws


def test_greedy_grouped_unchanged(policy):
    prefilled = [(m, f"Item {k}:") for k, (m, _) in enumerate(LENGTHS)]
    alone = policy.generate(prefilled, temperature=0.0, max_new_tokens=6, n=2, batch_size=2)
    assert all(s[0] for s in alone)  # not empty
    assert policy.generate(prefilled, temperature=0.0, max_new_tokens=6, n=2, batch_size=2, max_rows_per_call=8) == alone


def test_grouped_sampling_applies_transformers_warpers(policy, monkeypatch):
    """The grouped path applies the warpers transformers adds when it samples (min_p=0 removes nothing)."""
    import torch

    from syco.policy.sampling import group_sampling

    seen = []
    real = policy.lm.generate
    monkeypatch.setattr(policy.lm, "generate", lambda *a, **k: seen.append(k["generation_config"]) or real(*a, **k))
    for temperature, top_k, top_p in [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 5, 0.8)]:
        policy.generate(REQUESTS[:1], temperature=temperature, max_new_tokens=2, n=2, top_k=top_k, top_p=top_p)
        config, _ = policy.lm._prepare_generation_config(seen[-1])
        procs = policy.lm._get_logits_processor(generation_config=config, input_ids_seq_length=3,
                                                encoder_input_ids=torch.zeros(1, 3, dtype=torch.long), device="cpu")
        expected = [type(p).__name__ for p in procs if type(p).__name__ != "MinPLogitsWarper"]
        ours = group_sampling(temperature, top_k, top_p, [(0, 2)], [0], torch.device("cpu"))
        assert [type(p).__name__ for p in ours] == [*expected, "GroupSampler"]


def test_shared_prefix_decoding_matches_the_copied_cache(policy):
    """Decoding against one copy of left-padded prompts gives the logits of a cache copied to each row."""
    import copy

    import torch
    from transformers import DynamicCache

    from syco.policy.shared_prefix import SharedPrefixCache, decoding

    lm, draws = copy.deepcopy(policy.lm), 3
    with torch.no_grad():  # sharper attention than the random init's near-uniform one: errors show
        for layer in lm.model.layers:
            layer.self_attn.q_proj.weight.mul_(20)
            layer.self_attn.k_proj.weight.mul_(20)
    batch = policy.tokenizer.pad({"input_ids": [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14]]}, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    prefill = DynamicCache(config=lm.config)
    with torch.no_grad():
        lm(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1], cache=prefill)
    copied = copy.deepcopy(prefill)
    copied.batch_repeat_interleave(draws)
    shared = SharedPrefixCache(prefill, mask[:, :-1], draws, capacity=4)
    tokens, position = ids[:, -1:].repeat_interleave(draws, 0), positions[:, -1:].repeat_interleave(draws, 0)
    rows_mask = mask.repeat_interleave(draws, 0)
    for step in range(4):
        with torch.no_grad():
            ref = lm(input_ids=tokens, attention_mask=rows_mask, position_ids=position, cache=copied).logits
            with decoding(lm, shared):
                got = lm(input_ids=tokens, attention_mask=rows_mask, position_ids=position, cache=shared).logits
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        assert shared.get_seq_length() == copied.get_seq_length()
        tokens = torch.arange(20 + step, 20 + step + 2 * draws)[:, None]  # each row its own token
        rows_mask = torch.cat([rows_mask, torch.ones_like(tokens)], dim=1)
        position = position + 1
    assert lm.config._attn_implementation != "syco_shared_prefix"  # restored


def test_shared_prefix_only_for_plain_causal_attention():
    from transformers import GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

    from syco.policy.shared_prefix import supports

    assert supports(LlamaConfig()) and supports(Qwen2Config()) and supports(MistralConfig(sliding_window=None))
    assert not supports(MistralConfig(sliding_window=4096)) and not supports(GPT2Config())
    assert not supports(Qwen2Config(use_sliding_window=True, sliding_window=64, max_window_layers=0))


@pytest.mark.parametrize("bad", [0, -4, 2.5, "64", True])
def test_bad_max_rows_per_call_names_the_option(policy, tmp_path, bad):
    from syco.data.samples import SampleStore
    from syco.eval.generation import generate

    with pytest.raises(ValueError, match="max_rows_per_call"):
        policy.generate(REQUESTS[:1], max_new_tokens=2, max_rows_per_call=bad)
    with pytest.raises(ValueError, match=r"eval\.generation\.max_rows_per_call"):
        generate([], 1, policy, SampleStore(tmp_path / "samples.jsonl"), {"max_rows_per_call": bad}, "x")
