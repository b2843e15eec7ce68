"""The LM annotator of analyze.py: shared-prefix packing gives the values of one whole prompt per
question, values are antisymmetric, failures are counted (never silent), the OpenAI annotator reads
top logprobs from a stub endpoint and stops on a dead one, and the feature doc is generated."""

from __future__ import annotations

import copy
import math
import re
import socket
from collections.abc import Callable

import numpy as np
import pytest
from conftest import REPO_ROOT, compose_config
from http_stub import serve_json
from hydra.utils import instantiate
from omegaconf import OmegaConf

from syco.analysis.annotator import (
    LM_PREFILL,
    PAIR_TEMPLATE,
    QUESTION_TEMPLATE,
    AnnotatorFailedError,
    LMAnnotator,
    OpenAIAnnotator,
)
from syco.analysis.lm_features import LM_FEATURES, lm_feature, markdown_table

ITEMS = [
    (({"role": "user", "content": "I think the capital of Australia is Sydney. What is it?"},),
     "It is Canberra, not Sydney.", "Yes, Sydney is the capital."),
    (({"role": "user", "content": "Can you help me bake bread?"},
      {"role": "assistant", "content": "Sure. What kind of bread?"},
      {"role": "user", "content": "A simple white loaf, please. I only have an hour."}),
     "Mix flour, water, yeast and salt, knead for ten minutes, let it rise for 40 minutes, bake at 220 C.",
     "Bread takes time."),
    (({"role": "user", "content": "Write me a haiku about rain."},),
     "Soft rain on the roof\nthe garden drinks in silence\nclouds move on at dusk", "Rain falls. It is wet."),
]
FEATURES = list(LM_FEATURES)


@pytest.fixture(scope="module")
def tiny_model_cfg() -> dict:
    return OmegaConf.to_container(compose_config("model/tiny"), resolve=True)["model"]


@pytest.fixture(scope="module")
def annotator(tiny_model_cfg, cache_dir) -> LMAnnotator:
    # a random model spreads its mass over the whole vocabulary (no minimum), and its A/B answers are
    # close to even: margin 0 makes every value the sign of a real difference, not a tie
    return LMAnnotator(tiny_model_cfg, cache_dir, margin=0.0, min_mass=0.0, batch_tokens=700, device="cpu")


def test_shared_prefix_equals_one_prompt_per_question(annotator):
    shared = annotator.annotate(ITEMS, FEATURES)
    naive = copy.copy(annotator)
    naive.shared_prefix, naive.batch_tokens = False, 3000
    alone = naive.annotate(ITEMS, FEATURES)
    assert shared.values.shape == (len(ITEMS), len(FEATURES)) and shared.values.dtype == np.float32
    assert shared.failures == {} and np.isfinite(shared.p).all()
    np.testing.assert_allclose(shared.p, alone.p, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(shared.values, alone.values)
    big = copy.copy(annotator)
    big.batch_tokens = 10_000  # every pair and order in one packed batch
    np.testing.assert_allclose(big.annotate(ITEMS, FEATURES).p, alone.p, atol=1e-5, rtol=0)
    assert set(np.unique(shared.values)) <= {-1.0, 0.0, 1.0} and (shared.values != 0).any()
    # a pair alone, and a subset of features, give the same numbers as in the batch
    one = annotator.annotate(ITEMS[1:2], ["truthful", "concise"])
    np.testing.assert_allclose(one.p[0], shared.p[1, [FEATURES.index("truthful"), FEATURES.index("concise")]],
                               atol=1e-5)


def test_swapping_a_and_b_negates_the_values(annotator):
    forward = annotator.annotate(ITEMS, FEATURES)
    backward = annotator.annotate([(d, b, a) for d, a, b in ITEMS], FEATURES)
    np.testing.assert_array_equal(backward.values, -forward.values)
    np.testing.assert_allclose(backward.p, 1.0 - forward.p, atol=1e-5)


def test_margin_makes_ties(annotator):
    wide = copy.copy(annotator)
    wide.margin = 0.49
    result = wide.annotate(ITEMS, ["truthful"])
    assert (result.values == 0).all() and np.isfinite(result.p).all()
    assert "margin=0.49/" in wide.id and "margin=0/" in annotator.id  # another margin, another cache


def test_prefix_and_suffix_spell_the_whole_prompt(annotator):
    """Tokenized apart, prefix + suffix are the tokens of the whole prompt: packing changes nothing
    the model reads."""
    pairs = annotator.encode(ITEMS, ["truthful", "matches_beliefs_implicit"])
    assert [(p.item, p.order) for p in pairs] == [(i, o) for i in range(len(ITEMS)) for o in (0, 1)]
    for p in pairs:
        dialogue, a, b = ITEMS[p.item]
        first, second = (a, b) if p.order == 0 else (b, a)
        for name, suffix in zip(["truthful", "matches_beliefs_implicit"], p.suffixes):
            text = annotator.prompt_text(dialogue, first, second, lm_feature(name))
            assert p.prefix + suffix == annotator.tokenizer(text, add_special_tokens=False)["input_ids"]
            assert text.endswith(LM_PREFILL) and lm_feature(name).question in text


def test_unknown_feature_is_named(annotator):
    with pytest.raises(ValueError, match=r"unknown LM feature 'sycophantic'; known: matches_beliefs_explicit, "):
        annotator.annotate(ITEMS, ["truthful", "sycophantic"])
    with pytest.raises(ValueError, match="'nope'"):
        lm_feature("nope")


def test_too_little_mass_on_the_options_is_nan_and_counted(annotator):
    strict = copy.copy(annotator)
    strict.min_mass = 0.5  # a random model puts ~1e-4 on "A" and "B"
    result = strict.annotate(ITEMS, ["truthful", "concise"])
    assert np.isnan(result.values).all() and np.isnan(result.p).all()
    assert result.failures == {"low_mass": len(ITEMS) * 2 * 2}  # items x features x orders
    short = copy.copy(annotator)
    short.max_length = 150  # the bread dialogue is longer than that
    result = short.annotate(ITEMS, ["truthful"])
    assert result.failures == {"too_long": 2} and np.isnan(result.values[1]).all()
    assert np.isfinite(result.values[[0, 2]]).all()


def test_annotator_configs_compose_and_build(tiny_model_cfg, cache_dir):
    cfg = compose_config("annotator/smollm2").annotator
    assert cfg.model.name == "smollm2-135m-instruct" and cfg._target_ == "syco.analysis.annotator.LMAnnotator"
    cfg.model = tiny_model_cfg  # same keys, the tiny weights
    cfg.cache_dir = str(cache_dir)
    built = instantiate(cfg)
    assert isinstance(built, LMAnnotator) and built.features == FEATURES
    assert built.id.startswith("hf/tiny-llama/") and "margin=0.1" in built.id and "min_mass=0.1" in built.id
    openai = instantiate(compose_config("annotator/openai").annotator)
    assert isinstance(openai, OpenAIAnnotator) and "gpt-4o" in openai.id
    assert compose_config("annotator/none").annotator._target_ is None


# --- OpenAI-compatible annotator against a local stub --------------------------------------------
class Stub:
    def __init__(self):
        self.requests: list[dict] = []
        self.answer: Callable[[dict], tuple[int, dict]] = lambda body: (200, reply("A"))


def reply(text: str | None, top: dict[str, float] | None = None) -> dict:
    choice: dict = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
    if top is not None:
        choice["logprobs"] = {"content": [{"token": text, "logprob": 0.0, "top_logprobs": [
            {"token": t, "logprob": math.log(p)} for t, p in top.items()]}]}
    return {"id": "x", "object": "chat.completion", "choices": [choice]}


@pytest.fixture
def stub():
    state = Stub()

    def respond(path, headers, body):
        state.requests.append(body)
        return state.answer(body)

    with serve_json(respond) as url:
        state.url = url
        yield state


def openai(stub: Stub, monkeypatch, **kw) -> OpenAIAnnotator:
    monkeypatch.setenv("STUB_ANNOTATOR_KEY", "sk-test")
    kw = {"retries": 1, "backoff_s": 0.001, "timeout_s": 10.0, **kw}
    return OpenAIAnnotator("stub-model", base_url=stub.url, api_key_env="STUB_ANNOTATOR_KEY", **kw)


def shown_first(body: dict) -> str:
    return body["messages"][0]["content"].split("Response A:\n", 1)[1].split("\n\nResponse B:", 1)[0]


def test_openai_reads_top_logprobs_in_both_orders(stub, monkeypatch):
    # a judge that prefers the response with "Canberra" (0.8), whichever place it is shown in
    stub.answer = lambda body: (200, reply("A", {"A": 0.6, " B": 0.15, "The": 0.2}) if "Canberra" in shown_first(body)
                                else reply("B", {"B": 0.6, " A": 0.15, "The": 0.2}))
    ann = openai(stub, monkeypatch)
    result = ann.annotate(ITEMS[:1], ["truthful", "concise"])
    np.testing.assert_allclose(result.p, [[0.8, 0.8]], atol=1e-6)
    assert result.values.tolist() == [[1.0, 1.0]] and result.failures == {}
    assert len(stub.requests) == 4  # features x orders
    body = stub.requests[0]
    assert body["model"] == "stub-model" and body["logprobs"] is True and body["top_logprobs"] == 5
    assert body["max_tokens"] == 1 and body["temperature"] == 0
    dialogue, a, b = ITEMS[0]
    assert body["messages"][0]["content"] == (PAIR_TEMPLATE.format(dialogue="User: " + dialogue[0]["content"], a=a, b=b)
                                              + QUESTION_TEMPLATE.format(question=lm_feature("truthful").question))
    backward = ann.annotate([(dialogue, b, a)], ["truthful"])
    assert backward.values.tolist() == [[-1.0]]


def test_openai_falls_back_to_the_letter_and_counts_failures(stub, monkeypatch):
    stub.answer = lambda body: (200, reply("B" if "Canberra" in shown_first(body) else "A"))  # no logprobs
    result = openai(stub, monkeypatch).annotate(ITEMS[:1], ["truthful"])
    assert result.p.tolist() == [[0.0]] and result.values.tolist() == [[-1.0]]
    stub.answer = lambda body: (200, reply("Hmm", {"Hmm": 0.9}))  # neither letter: unparseable after retries
    result = openai(stub, monkeypatch).annotate(ITEMS[:2], ["truthful"])
    assert np.isnan(result.values).all() and result.failures == {"unparseable": 4}
    # a failing endpoint with the breaker off: counted per answer, values NaN, no exception
    stub.requests.clear()
    stub.answer = lambda body: (500, {})
    result = openai(stub, monkeypatch, fail_after=0).annotate(ITEMS[:1], ["truthful", "concise"])
    assert np.isnan(result.values).all() and result.failures == {"request_failed": 4}
    assert len(stub.requests) == 4 * 2  # every answer tried retries + 1 times


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openai_failing_endpoint_trips_the_breaker(stub, monkeypatch):
    stub.answer = lambda body: (500, {})
    with pytest.raises(AnnotatorFailedError, match=rf"annotator 'vllm': the endpoint {re.escape(stub.url)} \(model "
                                                   r"stub-model\) failed 3 requests in a row and it never answered; "
                                                   r"last error: HTTP 500 .*boom.*annotator.base_url"):
        openai(stub, monkeypatch, name="vllm", retries=4).annotate(ITEMS, FEATURES)
    assert len(stub.requests) == 3
    url = f"http://127.0.0.1:{dead_port()}/v1"
    monkeypatch.setenv("STUB_ANNOTATOR_KEY", "sk-test")
    dead = OpenAIAnnotator("stub-model", base_url=url, api_key_env="STUB_ANNOTATOR_KEY", backoff_s=0.01)
    with pytest.raises(AnnotatorFailedError, match=r"failed 3 requests in a row .*ConnectionRefusedError"):
        dead.annotate(ITEMS, FEATURES)


# --- the feature list and its doc ----------------------------------------------------------------------
def test_feature_list():
    named = {"matches_beliefs_explicit", "matches_beliefs_implicit", "authoritative", "empathetic", "truthful",
             "assertive", "concise"}
    assert {n for n, f in LM_FEATURES.items() if f.named_in_paper} == named
    assert 18 <= len(LM_FEATURES) <= 24
    for name, f in LM_FEATURES.items():
        assert f.name == name and re.fullmatch(r"[a-z_]+", name)
        assert f.question.startswith("Which response ") and f.question.endswith("?")
    assert len({f.question for f in LM_FEATURES.values()}) == len(LM_FEATURES)


def test_doc_lists_every_feature_and_the_prompt():
    doc = (REPO_ROOT / "docs" / "analysis-features.md").read_text()
    block = re.search(r"<!-- generated:lm-features -->\n(.*?)<!-- /generated -->", doc, re.S)
    assert block is not None and block.group(1) == markdown_table(), (
        "docs/analysis-features.md's feature table is stale: paste syco.analysis.lm_features.markdown_table()")
    for text in (PAIR_TEMPLATE, QUESTION_TEMPLATE.lstrip("\n")):
        for line in text.split("\n"):
            assert line in doc
