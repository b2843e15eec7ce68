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
