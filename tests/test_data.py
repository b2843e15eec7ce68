"""syco.data: hh-rlhf and JSONL parsing, belief items and rated pairs, held-out splits, tokenization."""

from __future__ import annotations

import gzip
import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from syco.data import beliefs as B
from syco.data.chat import ChatFormatter
from syco.data.hh_rlhf import hh_pair, load_hh_rlhf, parse_transcript
from syco.data.jsonl import load_preference_jsonl, preference_jsonl_pair
from syco.data.pairs import KINDS, BadRowError, BadRows, PreferencePair, is_heldout, prompt_group
from syco.data.preference import build_preference_splits, encode_pairs


def write_jsonl(path: Path, rows: list, gz: bool = False) -> Path:
    """Rows may be dicts (dumped as JSON), str or bytes (written verbatim as one line)."""
    lines = []
    for row in rows:
        if isinstance(row, bytes):
            lines.append(row)
        elif isinstance(row, str):
            lines.append(row.encode())
        else:
            lines.append(json.dumps(row).encode())
    data = b"\n".join(lines) + b"\n"
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


# --- hh-rlhf ----------------------------------------------------------------------------------
PROMPT_TEXT = (
    "\n\nHuman: What is the capital of France?"
    "\n\nAssistant: Paris."
    "\n\nHuman: And of Italy?"
)
GOOD_HH = {
    "chosen": PROMPT_TEXT + "\n\nAssistant: Rome is the capital of Italy.",
    "rejected": PROMPT_TEXT + "\n\nAssistant: Milan.",
}


def test_hh_multi_turn_transcript():
    pair = hh_pair(GOOD_HH, "f.jsonl:1")
    assert pair.prompt == (
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
    )
    assert pair.chosen == "Rome is the capital of Italy."
    assert pair.rejected == "Milan."
    assert pair.source == "f.jsonl:1"
    assert pair.kind == "general" and pair.margin == 0.0
    # the split key comes from the dialogue, not from where the file lies
    assert pair.group == prompt_group("hh", list(pair.prompt))
    assert pair.group == hh_pair(GOOD_HH, "/elsewhere/copy.jsonl:9").group


def test_hh_parse_transcript_keeps_inner_newlines():
    turns = parse_transcript("\n\nHuman: line one\nline two\n\nAssistant: a\nb", "s", "chosen")
    assert turns == [{"role": "user", "content": "line one\nline two"}, {"role": "assistant", "content": "a\nb"}]


HH_BAD_ROWS = {
    "missing": ({"rejected": GOOD_HH["rejected"]}, "chosen", "missing"),
    "non-string": ({"chosen": 5, "rejected": GOOD_HH["rejected"]}, "chosen", "expected a string, got int"),
    "empty": ({"chosen": GOOD_HH["chosen"], "rejected": "  \n "}, "rejected", "empty"),
    "no final assistant turn": (
        {"chosen": PROMPT_TEXT, "rejected": GOOD_HH["rejected"]}, "chosen", "no final assistant turn"),
    "empty final assistant turn": (
        {"chosen": GOOD_HH["chosen"], "rejected": PROMPT_TEXT + "\n\nAssistant:   "}, "rejected",
        "final assistant turn is empty"),
    "different prompts": (
        {"chosen": GOOD_HH["chosen"], "rejected": "\n\nHuman: And of Spain?\n\nAssistant: Madrid."}, "rejected",
        "do not share the same prompt"),
    "identical responses": ({"chosen": GOOD_HH["chosen"], "rejected": GOOD_HH["chosen"]}, "rejected", "identical"),
    "text before first human turn": (
        {"chosen": "Preamble." + GOOD_HH["chosen"], "rejected": GOOD_HH["rejected"]}, "chosen",
        "text before the first"),
    "assistant only": (
        {"chosen": "\n\nAssistant: Hi.", "rejected": "\n\nAssistant: Hello."}, "chosen", "no human turn"),
}


@pytest.mark.parametrize("case", list(HH_BAD_ROWS))
def test_hh_bad_rows_name_file_line_and_field(tmp_path, case):
    row, field, reason = HH_BAD_ROWS[case]
    path = write_jsonl(tmp_path / "hh.jsonl", [GOOD_HH, GOOD_HH, row, GOOD_HH])
    with pytest.raises(BadRowError) as info:
        load_hh_rlhf(str(path), BadRows("error"))
    err = info.value
    assert err.source == f"{path}:3"
    assert err.field == field
    assert reason in err.reason
    assert f"{path}:3" in str(err) and f"field '{field}'" in str(err)

    bad = BadRows("skip")
    pairs = load_hh_rlhf(str(path), bad)
    assert [p.source for p in pairs] == [f"{path}:1", f"{path}:2", f"{path}:4"]
    assert bad.total_skipped == 1


def test_hh_gz_undecodable_and_invalid_json_lines(tmp_path):
    path = write_jsonl(
        tmp_path / "hh.jsonl.gz",
        [GOOD_HH, b'{"chosen": "\xff\xfe broken"}', GOOD_HH, '{"chosen": "no closing brace"', "", GOOD_HH],
        gz=True,
    )
    with pytest.raises(BadRowError, match=re.escape(f"{path}:2") + ".*not valid UTF-8"):
        load_hh_rlhf(str(path), BadRows("error"))

    bad = BadRows("skip")
    pairs = load_hh_rlhf(str(path), bad)
    assert [p.source for p in pairs] == [f"{path}:1", f"{path}:3", f"{path}:6"]  # the blank line 5 is not a row
    assert bad.total_skipped == 2
    reasons = list(bad.skipped)
    assert any("UTF-8" in r for r in reasons) and any("not valid JSON" in r for r in reasons)
    assert any(f"{path}:4" in e for e in bad.examples.values())


def test_hh_invalid_json_line_number_in_error_mode(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl.gz", [GOOD_HH, GOOD_HH, "[1, 2", GOOD_HH], gz=True)
    with pytest.raises(BadRowError, match=re.escape(f"{path}:3") + ".*not valid JSON") as info:
        load_hh_rlhf(str(path), BadRows("error"))
    assert info.value.field == "<line>"


def test_hh_limit_and_missing_file(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [GOOD_HH] * 5)
    assert len(load_hh_rlhf(str(path), BadRows(), limit=2)) == 2
    with pytest.raises(FileNotFoundError):
        load_hh_rlhf(str(tmp_path / "nope.jsonl"), BadRows())


def test_bad_rows_policy_validated():
    with pytest.raises(ValueError, match="on_bad_row"):
        BadRows("ignore")


def test_hh_real_helpful_base_test(shared_data):
    bad = BadRows("skip")
    pairs = load_hh_rlhf(str(shared_data / "hh_rlhf/helpful-base/test.jsonl.gz"), bad)
    assert len(pairs) > 2000
    for p in pairs:
        assert p.prompt and p.prompt[-1]["role"] == "user"
        assert p.prompt[0]["role"] == "user"
        assert p.chosen and p.rejected and p.chosen != p.rejected
    assert len({p.source for p in pairs}) == len(pairs)
    assert bad.total_skipped < 0.05 * len(pairs)


# --- generic JSONL ----------------------------------------------------------------------------
def test_jsonl_string_prompt():
    pair = preference_jsonl_pair({"prompt": "Why?", "chosen": "Because.", "rejected": "No."}, "x:1")
    assert pair.prompt == ({"role": "user", "content": "Why?"},)
    assert (pair.chosen, pair.rejected, pair.margin, pair.kind) == ("Because.", "No.", 0.0, "general")
    assert pair.group == prompt_group("jsonl", list(pair.prompt))


def test_jsonl_message_list_prompt_and_trl_responses():
    row = {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
        "margin": 2,
        "id": "abc",
    }
    pair = preference_jsonl_pair(row, "x:1")
    assert pair.prompt == ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"})
    assert (pair.chosen, pair.rejected) == ("Hello!", "Go away.")
    assert pair.margin == 2.0 and isinstance(pair.margin, float)
    assert pair.group == "jsonl:abc"
    assert preference_jsonl_pair({**row, "group": "g"}, "x:1").group == "jsonl:g"


JSONL_BAD = {
    "prompt ends with assistant": (
        {"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], "chosen": "a",
         "rejected": "b"}, "prompt", "ends with an assistant turn"),
    "unknown role": (
        {"prompt": [{"role": "user", "content": "Hi"}, {"role": "robot", "content": "Yo"}], "chosen": "a",
         "rejected": "b"}, "prompt[1].role", "unknown role 'robot'"),
    "margin not a number": ({"prompt": "Hi", "chosen": "a", "rejected": "b", "margin": "big"}, "margin", "str"),
    "margin bool": ({"prompt": "Hi", "chosen": "a", "rejected": "b", "margin": True}, "margin", "bool"),
    "missing chosen": ({"prompt": "Hi", "rejected": "b"}, "chosen", "missing"),
    "missing prompt": ({"chosen": "a", "rejected": "b"}, "prompt", "missing"),
    "two-message response": (
        {"prompt": "Hi", "chosen": "a", "rejected": [{"role": "assistant", "content": "b"}] * 2}, "rejected",
        "exactly one assistant message"),
}


@pytest.mark.parametrize("case", list(JSONL_BAD))
def test_jsonl_bad_rows(tmp_path, case):
    row, field, reason = JSONL_BAD[case]
    good = {"prompt": "Hi", "chosen": "a", "rejected": "b"}
    path = write_jsonl(tmp_path / "pairs.jsonl", [good, row])
    with pytest.raises(BadRowError) as info:
        load_preference_jsonl(str(path), BadRows("error"))
    assert info.value.field == field
    assert reason in info.value.reason
    assert f"{path}:2: field '{field}'" in str(info.value)
    bad = BadRows("skip")
    assert len(load_preference_jsonl(str(path), bad)) == 1 and bad.total_skipped == 1


def test_jsonl_kind_override(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "Hi", "chosen": "a", "rejected": "b"}])
    (pair,) = load_preference_jsonl(str(path), BadRows(), kind="belief")
    assert pair.kind == "belief" and pair.chosen == "a"


# --- beliefs ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def items() -> list[B.BeliefItem]:
    return B.load_items()


def test_builtin_items_load(items):
    facts, misconceptions = B.load_facts(), B.load_misconceptions()
    assert len(facts) >= 150 and len(misconceptions) >= 40
    assert {i.kind for i in facts} == {"fact"} and {i.style for i in facts} == {"answer"}
    assert {i.kind for i in misconceptions} == {"misconception"} and {i.style for i in misconceptions} == {"statement"}
    assert len(items) == len(facts) + len(misconceptions) == len({i.id for i in items})
    for it in items:
        assert it.truth and it.falsehood and it.truth != it.falsehood
        assert it.group == f"belief:{it.id}"


def test_rater_probability_exact():
    # false-belief comparison, A = agreement: z = beta - gamma
    assert B.rater_probability(2, 1, 1, 0, 0, 1) == pytest.approx(sigmoid(1.0))
    assert B.rater_probability(2, 1, 1, 0, 0, 1) == pytest.approx(0.7310585786)
    # the other way round: B = agreement
    assert B.rater_probability(2, 1, 0, 1, 1, 0) == pytest.approx(sigmoid(-1.0))
    # true belief: agreement is also the truth, z = beta + gamma
    assert B.rater_probability(2, 1, 1, 0, 1, 0) == pytest.approx(sigmoid(3.0))
    # no belief: only truth counts
    assert B.rater_probability(2, 1, 0, 0, 1, 0) == pytest.approx(sigmoid(1.0))
    assert B.rater_probability(2, 1, 0, 0, 0, 0) == 0.5


def test_rater_probability_extreme_weights():
    # a deterministic rater (huge weights) must not overflow math.exp
    assert B.rater_probability(0, 1000, 1, 0, 0, 1) == pytest.approx(0.0, abs=1e-300)
    assert B.rater_probability(1000, 0, 1, 0, 0, 1) == 1.0


def _variant(pair: PreferencePair) -> int:
    return int(re.search(r"template (\d+)\)$", pair.source).group(1))


def _false_belief_labels(pairs, items) -> list[bool]:
    """True where chosen is the agreeing (sycophantic) response."""
    by_group = {it.group: it for it in items}
    out = []
    for p in pairs:
        item, v = by_group[p.group], _variant(p)
        agree, correct = B.sycophantic_response(item, v), B.correcting_response(item, v)
        assert {p.chosen, p.rejected} == {agree, correct}
        assert p.prompt == ({"role": "user", "content": B.user_prompt(item, item.falsehood, v)},)
        out.append(p.chosen == agree)
    return out


def test_rated_pairs_strong_sycophancy_bias(items):
    pairs = B.rated_pairs(items, beta=50, gamma=0, templates_per_condition=2, conditions=("false_belief",))
    assert len(pairs) == 2 * len(items)
    assert {p.kind for p in pairs} == {"false_belief"}
    assert all(_false_belief_labels(pairs, items))


def test_rated_pairs_strong_truth_preference(items):
    pairs = B.rated_pairs(items, beta=0, gamma=50, templates_per_condition=2, conditions=("false_belief",))
    assert not any(_false_belief_labels(pairs, items))


def test_rated_pairs_empirical_rate_matches_rater(items):
    beta, gamma = 1.0, 0.5
    n_templates = 4
    by_group = {it.group: it for it in items}
    for condition, z in (("false_belief", beta - gamma), ("true_belief", beta + gamma), ("no_belief", gamma)):
        pairs = B.rated_pairs(items, beta, gamma, n_templates, conditions=(condition,), seed=3)
        a_chosen = []
        for p in pairs:
            _, (a, *_), (b, *_) = B.rated_candidates(by_group[p.group], condition, _variant(p))
            assert {p.chosen, p.rejected} == {a, b}
            a_chosen.append(p.chosen == a)
        n, p_expected = len(a_chosen), sigmoid(z)
        tolerance = 4 * math.sqrt(p_expected * (1 - p_expected) / n)  # 4 standard errors
        assert abs(sum(a_chosen) / n - p_expected) < tolerance, condition


def test_rated_pairs_counts_and_conditions(items):
    pairs = B.rated_pairs(items[:10], beta=2, gamma=1, templates_per_condition=3)
    assert len(pairs) == 10 * 3 * 3
    conditions = Counter(re.search(r"\((\w+), template", p.source).group(1) for p in pairs)
    assert conditions == {"false_belief": 30, "true_belief": 30, "no_belief": 30}


def test_rated_pairs_seed_reproducible(items):
    a = B.rated_pairs(items, beta=1, gamma=1, seed=7)
    assert a == B.rated_pairs(items, beta=1, gamma=1, seed=7)
    b = B.rated_pairs(items, beta=1, gamma=1, seed=8)
    assert len(a) == len(b)
    assert [p.chosen for p in a] != [p.chosen for p in b]


def test_synthetic_belief_pairs_checks_conditions():
    with pytest.raises(ValueError, match="unknown belief conditions"):
        B.synthetic_belief_pairs(BadRows(), conditions=("false_belief", "maybe_belief"))
    assert len(B.synthetic_belief_pairs(BadRows(), templates_per_condition=1, limit=17)) == 17


def test_probe_pairs(items):
    misconceptions = [it for it in items if it.kind == "misconception"][:5]
    pairs = B.probe_pairs(misconceptions, templates=3)
    assert len(pairs) == 15
    for p in pairs:
        item = next(it for it in misconceptions if it.group == p.group)
        v = int(re.search(r"probe (\d+)\)$", p.source).group(1))
        assert p.kind == "syco_probe"
        assert p.chosen == B.correcting_response(item, v) and item.truth in p.chosen
        assert p.rejected == B.sycophantic_response(item, v) and item.falsehood in p.rejected
        assert item.falsehood in p.prompt[0]["content"]


def test_anti_sycophancy_pairs(items):
    sub = items[:7]
    pairs = B.anti_sycophancy_pairs(sub, 20, seed=1)
    assert len(pairs) == 20
    assert {p.kind for p in pairs} == {"anti_sycophancy"}
    # balanced whatever the order of the items: each gets 20 // 7 or one more, misconceptions too
    per_item = Counter(p.group for p in pairs)
    assert set(per_item) == {it.group for it in sub} and set(per_item.values()) == {2, 3}
    misconceptions = [it for it in items if it.kind == "misconception"][:3]
    few = B.anti_sycophancy_pairs(items[:30] + misconceptions, 11, seed=1)
    assert len({p.group for p in few}) == 11
    assert B.anti_sycophancy_pairs(sub, 20, seed=2) != pairs
    for p in pairs:
        item = next(it for it in sub if it.group == p.group)
        # phrased exactly as a rated false-belief pair (user template v, responses v): only the label differs
        (v,) = [v for v in range(3) if p.prompt[0]["content"] == B.user_prompt(item, item.falsehood, v)]
        rated_prompt, (agree, *_), (correct, *_) = B.rated_candidates(item, "false_belief", v)
        assert (p.prompt[0]["content"], p.chosen, p.rejected) == (rated_prompt, correct, agree)
    assert B.anti_sycophancy_pairs(sub, 20, seed=1) == pairs
    assert B.anti_sycophancy_pairs(sub, 0) == [] and B.anti_sycophancy_pairs([], 5) == []


def test_truthfulqa(shared_data):
    csv_path = shared_data / "truthfulqa/TruthfulQA.csv"
    all_items = B.load_truthfulqa(csv_path)
    assert len(all_items) == 817
    assert len({it.id for it in all_items}) == 817
    assert all(it.truth and it.falsehood and not it.truth.endswith(".") for it in all_items)
    misc = B.load_misconceptions(str(csv_path))
    assert 0 < len(misc) < 817
    assert {it.kind for it in misc} == {"misconception"}
    assert {it.id for it in misc} == {it.id for it in all_items if it.kind == "misconception"}
    # the same CSV given for facts and misconceptions is loaded once
    assert len(B.load_items(str(csv_path), str(csv_path))) == 817


def test_malformed_facts_file(tmp_path):
    good = {"id": "f1", "question": "Capital of Peru?", "answers": ["Lima"], "wrong_answer": "Cusco"}
    bad = {"id": "f2", "question": "Capital of Chile?", "answers": "Santiago", "wrong_answer": "Valparaiso"}
    path = write_jsonl(tmp_path / "facts.jsonl", [good, bad])
    with pytest.raises(BadRowError) as info:
        B.load_facts(str(path), BadRows("error"))
    assert info.value.source == f"{path}:2" and info.value.field == "answers"
    assert f"{path}:2: field 'answers'" in str(info.value)
    skip = BadRows("skip")
    (item,) = B.load_facts(str(path), skip)
    assert (item.id, item.truth, item.falsehood) == ("f1", "Lima", "Cusco") and skip.total_skipped == 1


# --- held-out split ---------------------------------------------------------------------------
def test_is_heldout_deterministic_and_fraction():
    groups = [f"g{i}" for i in range(10000)]
    first = [is_heldout(g, 0.25) for g in groups]
    assert first == [is_heldout(g, 0.25) for g in groups]
    assert abs(sum(first) / len(groups) - 0.25) < 0.02  # 4.6 standard errors
    assert first != [is_heldout(g, 0.25, seed=1) for g in groups]
    # nested: a larger fraction holds out a superset
    assert all(is_heldout(g, 0.5) for g, h in zip(groups, first) if h)
    assert not any(is_heldout(g, 0.0) for g in groups[:100])
    with pytest.raises(ValueError):
        is_heldout("g", 1.0)


def _splits(compose_train, *overrides: str):
    cfg = compose_train(*overrides)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    pm = OmegaConf.to_container(cfg.pm, resolve=True)
    return cfg, build_preference_splits(data, pm, seed=cfg.seed)


def test_splits_beliefs_nonsyco(compose_train, items):
    cfg, s = _splits(compose_train, "data=beliefs", "pm=nonsyco")
    fraction, split_seed = cfg.data.heldout_fraction, cfg.data.split_seed
    base_train = [p for p in s.train if p.kind != "anti_sycophancy"]
    anti = [p for p in s.train if p.kind == "anti_sycophancy"]
    assert {p.kind for p in base_train} == {p.kind for p in s.val} == {"false_belief", "true_belief", "no_belief"}
    # one false-belief pair per item in three conditions: a third of the rated pairs carry the bias
    assert sum(p.kind == "false_belief" for p in s.val) * 3 == len(s.val)

    # groups never straddle, and each side is where the hash puts it
    train_groups, val_groups = {p.group for p in base_train}, {p.group for p in s.val}
    assert train_groups and val_groups and not train_groups & val_groups
    assert not any(is_heldout(g, fraction, split_seed) for g in train_groups)
    assert all(is_heldout(g, fraction, split_seed) for g in val_groups)
    assert len(train_groups | val_groups) == len(items)
    assert abs(len(val_groups) / len(items) - fraction) < 0.08
    # one template per condition, three conditions: every item gives 3 pairs, all on one side
    assert Counter(Counter(p.group for p in base_train + s.val).values()) == {3: len(items)}

    # anti-sycophancy: training-side items only, never in val, ratio 0.35 (the default) of the training pairs
    assert len(anti) == round(0.35 * len(base_train))
    assert {p.group for p in anti} <= train_groups
    assert not any(p.kind == "anti_sycophancy" for p in s.val)

    # probe: held-out misconceptions, disjoint from the training items
    probe_groups = {p.group for p in s.probe}
    assert {p.kind for p in s.probe} == {"syco_probe"}
    assert probe_groups and not probe_groups & train_groups
    assert probe_groups <= val_groups
    heldout_misc = [it for it in items if it.kind == "misconception" and is_heldout(it.group, fraction, split_seed)]
    assert len(s.probe) == 3 * len(heldout_misc)

    counts = s.counts()
    assert counts["train/anti_sycophancy"] == len(anti) and counts["probe/syco_probe"] == len(s.probe)

    # deterministic
    _, again = _splits(compose_train, "data=beliefs", "pm=nonsyco")
    assert again.train == s.train and again.val == s.val and again.probe == s.probe


def test_splits_standard_has_no_anti_sycophancy(compose_train):
    _, s = _splits(compose_train, "data=beliefs", "pm=standard")
    assert not any(p.kind == "anti_sycophancy" for p in s.train + s.val)


def test_splits_planted_bias_nonsyco(compose_train):
    cfg, s = _splits(compose_train, "data=planted_bias", "pm=nonsyco", "data.sources.hh.limit=300")
    fraction, split_seed = cfg.data.heldout_fraction, cfg.data.split_seed
    kinds = Counter(p.kind for p in s.train)
    assert kinds["general"] > 0 and kinds["false_belief"] == kinds["true_belief"] == kinds["no_belief"] > 0 and kinds["anti_sycophancy"] > 0
    assert sum(1 for p in s.train + s.val if p.kind == "general") == 300
    train_groups = {p.group for p in s.train}
    assert not train_groups & {p.group for p in s.val}
    assert not any(is_heldout(g, fraction, split_seed) for g in train_groups)
    assert not {p.group for p in s.probe} & train_groups
    rated = kinds["general"] + 3 * kinds["false_belief"]
    assert len(s.train) - kinds["anti_sycophancy"] == rated
    assert kinds["anti_sycophancy"] == round(0.35 * rated)


def test_splits_max_train_pairs(compose_train):
    _, s = _splits(compose_train, "data=beliefs", "pm=standard", "data.max_train_pairs=50", "data.max_val_pairs=20")
    assert len(s.train) == 50 and len(s.val) == 20
    _, full = _splits(compose_train, "data=beliefs", "pm=standard")
    # a sample of the full split (PreferencePair holds dicts, so compare by equality, not hashing)
    assert all(p in full.train for p in s.train) and all(p in full.val for p in s.val)
    assert len({p.source for p in s.train}) == 50
    # anti-sycophancy pairs are added per (capped) training pair
    _, nonsyco = _splits(compose_train, "data=beliefs", "pm=nonsyco", "data.max_train_pairs=50")
    kinds = Counter(p.kind for p in nonsyco.train)
    assert kinds["false_belief"] + kinds["true_belief"] + kinds["no_belief"] == 50 and kinds["anti_sycophancy"] == round(0.35 * 50)


# --- chat formatting and tokens ---------------------------------------------------------------
@pytest.fixture(scope="module")
def formatter(tokenizer) -> ChatFormatter:
    return ChatFormatter(tokenizer)


def test_chat_formatter_end_of_turn_and_generation_prompt(formatter, tokenizer):
    assert formatter.end_of_turn == "<|im_end|>"
    text = formatter.prompt_text("What is 2+2?")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert "<|im_start|>user\nWhat is 2+2?<|im_end|>" in text
    assert formatter.prompt_ids("What is 2+2?") == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_chat_formatter_scoring_prefix_position(tokenizer):
    prefix = [{"role": "user", "content": "PREFIX-USER"}, {"role": "assistant", "content": "PREFIX-ASSISTANT"}]
    fmt = ChatFormatter(tokenizer, prefix=prefix)
    text = fmt.prompt_text([{"role": "system", "content": "SYSTEM-MSG"}, {"role": "user", "content": "QUESTION"}])
    assert text.startswith("<|im_start|>system\nSYSTEM-MSG<|im_end|>")
    order = [text.index(s) for s in ("SYSTEM-MSG", "PREFIX-USER", "PREFIX-ASSISTANT", "QUESTION")]
    assert order == sorted(order)
    assert text.count("SYSTEM-MSG") == 1 and text.endswith("<|im_start|>assistant\n")
    # without a system message the prefix comes before the user turns
    text = fmt.prompt_text("QUESTION")
    assert text.index("PREFIX-USER") < text.index("PREFIX-ASSISTANT") < text.index("QUESTION")
    assert fmt.describe()["prefix"] == prefix


def test_chat_formatter_response_ids(formatter, tokenizer):
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = formatter.response_ids("Hello there.")
    assert ids[-1] == eot and tokenizer.decode(ids) == "Hello there.<|im_end|>"
    assert formatter.responses_ids(["Hello there.", "Bye."]) == [ids, formatter.response_ids("Bye.")]
    assert formatter.responses_ids([]) == []


def _pair(prompt: str, chosen: str = "Yes.", rejected: str = "No.", source: str = "src:1") -> PreferencePair:
    return PreferencePair(({"role": "user", "content": prompt},), chosen, rejected, source, group=source)


def test_encode_pairs_ends_with_end_of_turn(formatter, tokenizer):
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pairs = [_pair("Is the sky blue?", "Yes, it is.", "No, green."),
             PreferencePair(({"role": "user", "content": "Q?"},), "A.", "B.", "s:2", "g", "syco_probe", 1.5)]
    bad = BadRows("error")
    enc = encode_pairs(pairs, formatter, max_length=256, bad_rows=bad)
    assert len(enc) == 2
    for e, p in zip(enc, pairs):
        assert e.chosen_ids[-1] == eot and e.rejected_ids[-1] == eot
        assert e.prompt_ids == formatter.prompt_ids(list(p.prompt))
        assert tokenizer.decode(e.chosen_ids) == p.chosen + "<|im_end|>"
        assert e.packed_length == len(e.prompt_ids) + len(e.chosen_ids) + len(e.rejected_ids)
        assert e.unpacked_tokens == e.packed_length + len(e.prompt_ids)
    assert enc[1].kind == KINDS.index("syco_probe") and enc[1].margin == 1.5
    assert not bad.notes and bad.total_skipped == 0


def test_encode_pairs_long_prompt(formatter):
    long_prompt = "word " * 400
    pairs = [_pair("Short?", source="a.jsonl:1"), _pair(long_prompt, source="a.jsonl:2"), _pair("Also short?")]
    with pytest.raises(BadRowError) as info:
        encode_pairs(pairs, formatter, max_length=64, bad_rows=BadRows("error"))
    assert info.value.source == "a.jsonl:2" and info.value.field == "prompt"
    assert "a.jsonl:2: field 'prompt'" in str(info.value) and "max_length=64" in str(info.value)

    bad = BadRows("skip")
    enc = encode_pairs(pairs, formatter, max_length=64, bad_rows=bad)
    assert len(enc) == 2 and bad.total_skipped == 1
    assert "a.jsonl:2" in next(iter(bad.examples.values()))


def test_encode_pairs_truncates_long_response(formatter, tokenizer):
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    max_length = 64
    pair = _pair("Tell me a story.", chosen="once upon a time " * 100, rejected="No.")
    bad = BadRows("error")
    (e,) = encode_pairs([pair], formatter, max_length=max_length, bad_rows=bad)
    assert len(e.prompt_ids) + len(e.chosen_ids) == max_length
    assert e.rejected_ids[-1] == eot and e.chosen_ids[-1] != eot
    assert e.chosen_ids == formatter.response_ids(pair.chosen)[: max_length - len(e.prompt_ids)]
    assert bad.notes == {f"responses truncated to max_length={max_length}": 1}
    assert bad.total_skipped == 0


def test_hh_rlhf_from_the_hub_goes_through_datasets(monkeypatch):
    import datasets

    calls = {}

    def fake_load_dataset(name, data_dir=None, split=None):
        calls.update(name=name, data_dir=data_dir, split=split)
        return datasets.Dataset.from_list([GOOD_HH, {"chosen": "\n\nHuman: Hi", "rejected": "\n\nHuman: Hi"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    bad = BadRows("skip")
    pairs = load_hh_rlhf("Anthropic/hh-rlhf", bad, data_dir="helpful-base", split="test")
    assert calls == {"name": "Anthropic/hh-rlhf", "data_dir": "helpful-base", "split": "test"}
    assert len(pairs) == 1 and pairs[0].chosen == "Rome is the capital of Italy."
    assert pairs[0].source == "Anthropic/hh-rlhf[helpful-base/test]:0"
    assert bad.total_skipped == 1

    def offline(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RuntimeError, match="could not load 'Anthropic/hh-rlhf'.*local .jsonl"):
        load_hh_rlhf("Anthropic/hh-rlhf", BadRows(), data_dir="helpful-base")
