"""Policy-written belief pairs: verdicts -> (agrees, truthful), rater labels, anti-sycophancy pairs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from syco.data.pairs import BadRowError, BadRows, is_heldout
from syco.data.policy_pairs import load_judged_samples, policy_anti_sycophancy_pairs, policy_belief_pairs
from syco.data.preference import build_preference_splits
from syco.data.samples import SampleStore
from syco.eval.judges import RulesJudge
from syco.eval.sources import answer_records, misconception_records
from syco.eval.tasks import verdicts
from syco.pm.training import policy_stance


def write_samples(path: Path, facts: int = 12, misconceptions: int = 6, judged: bool = True) -> Path:
    """Per answer prompt: a truthful, an agreeing (wrong answer) and an evasive sample; per
    misconception: one refutation and one agreement; judged by the rules judge and written as a
    finished `evaluate.py` run writes them (verdicts in each row)."""
    store, samples = SampleStore(path), []
    for rec in answer_records("builtin", BadRows(), limit=facts, templates=["plain", "suggest_incorrect"]):
        truth, wrong = rec.base["correct_answer"], rec.base["incorrect_answer"]
        for i, text in enumerate([f"The answer is {truth}.", f"It is {wrong}.", "Let me think about that."]):
            samples.append({"record": rec, "index": i, "responses": [text]})
    for rec in misconception_records("builtin", BadRows(), limit=misconceptions):
        for i, text in enumerate(["Actually, that's a myth: it is not true.", "Yes, that's right, great point!"]):
            samples.append({"record": rec, "index": i, "responses": [text]})
    for s in samples:
        store.put(s["record"], s["index"], s["responses"])
    if judged:
        judge = RulesJudge()
        for task in ("answer", "misconceptions"):
            verdicts(task, [s for s in samples if s["record"].task == task], judge)
        store.rewrite(samples)
    return path


def _judged(samples: Path):
    """(prompt, response) -> judged sample (one response text can appear under several prompts)."""
    return {(_key(s.prompt), s.response): s for s in load_judged_samples(samples, BadRows())}


def _key(prompt) -> str:
    return json.dumps(prompt, sort_keys=True)


@pytest.fixture
def samples(tmp_path) -> Path:
    return write_samples(tmp_path / "samples.jsonl")


def test_judged_samples_classes(samples):
    judged = load_judged_samples(samples, BadRows())
    by_text = Counter((s.matches_belief, s.truthful, s.false_belief, s.response.split()[0]) for s in judged)
    # plain: no belief stated; truthful iff the truth is named
    assert by_text[(0, 1, False, "The")] == 12 and by_text[(0, 0, False, "It")] == 12
    # suggest_incorrect: naming the user's wrong answer agrees; naming neither is (0, 0)
    assert by_text[(0, 1, True, "The")] == 12 and by_text[(1, 0, True, "It")] == 12
    assert by_text[(0, 0, True, "Let")] == 12
    # misconceptions: a refutation is truthful, agreement goes along with the false belief
    assert by_text[(0, 1, True, "Actually,")] == 6 and by_text[(1, 0, True, "Yes,")] == 6
    assert all(s.group.startswith("belief:") for s in judged)


def test_rater_labels_follow_beta_and_gamma(samples):
    sycophant = policy_belief_pairs(BadRows(), str(samples), beta=50.0, gamma=1.0, pairs_per_prompt=10)
    truth_only = policy_belief_pairs(BadRows(), str(samples), beta=0.0, gamma=50.0, pairs_per_prompt=10)
    judged = _judged(samples)
    for pairs, winner in ((sycophant, "matches_belief"), (truth_only, "truthful")):
        assert {p.kind for p in pairs} == {"belief"}
        chosen = [getattr(judged[_key(p.prompt), p.chosen], winner) for p in pairs]
        rejected = [getattr(judged[_key(p.prompt), p.rejected], winner) for p in pairs]
        decided = [(c, r) for c, r in zip(chosen, rejected) if c != r]
        assert decided and all(c == 1 for c, _ in decided)
    # the two samples of a pair always differ in (agrees, truthful), and pairs stay within one prompt
    assert all(p.chosen != p.rejected for p in sycophant)
    assert len({p.group for p in sycophant}) == 12 + 6
    capped = policy_belief_pairs(BadRows(), str(samples), pairs_per_prompt=1)
    assert len(capped) == 2 * 12 + 6  # one pair per prompt


def test_anti_sycophancy_pairs_prefer_not_agreeing(samples):
    judged = _judged(samples)
    anti = policy_anti_sycophancy_pairs(str(samples), 1000, BadRows())
    assert anti and {p.kind for p in anti} == {"anti_sycophancy"}
    # chosen: truthful and not agreeing; rejected: agrees with the falsehood (never a merely off-topic sample)
    assert all(judged[_key(p.prompt), p.rejected].matches_belief == 1 and judged[_key(p.prompt), p.rejected].truthful == 0
               and judged[_key(p.prompt), p.chosen].matches_belief == 0 and judged[_key(p.prompt), p.chosen].truthful == 1
               for p in anti)
    off_topic = [s for s in judged.values() if s.false_belief and not s.matches_belief and not s.truthful]
    assert off_topic and not {s.response for s in off_topic} & {p.chosen for p in anti}
    assert all(judged[_key(p.prompt), p.chosen].false_belief for p in anti)  # only prompts stating a falsehood
    few = policy_anti_sycophancy_pairs(str(samples), 3, BadRows())
    assert len(few) == 3
    some = policy_anti_sycophancy_pairs(str(samples), 1000, BadRows(), keep_group=lambda g: g.endswith("1"))
    assert some and all(p.group.endswith("1") for p in some)


def test_bad_rows_name_file_line_and_field(samples, tmp_path):
    lines = samples.read_text().splitlines()
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([lines[0], "{not json", lines[1]]) + "\n")
    with pytest.raises(BadRowError, match=r"broken.jsonl:2"):
        load_judged_samples(broken, BadRows())
    bad = BadRows("skip")
    assert len(load_judged_samples(broken, bad)) == 2 and sum(bad.skipped.values()) == 1
    row = json.loads(lines[0])
    row["responses"] = []
    broken.write_text(json.dumps(row) + "\n")
    with pytest.raises(BadRowError, match=r"broken.jsonl:1: field 'responses'"):
        load_judged_samples(broken, BadRows())
    with pytest.raises(FileNotFoundError, match="eval=policy_samples"):
        load_judged_samples(tmp_path / "missing.jsonl", BadRows())
    # a sample the judge has not graded: the evaluate.py run that wrote it did not finish
    unjudged = write_samples(tmp_path / "unjudged.jsonl", facts=1, misconceptions=0, judged=False)
    with pytest.raises(BadRowError, match=r"unjudged.jsonl:1: field 'verdicts.rules'.*finish the evaluate.py run"):
        load_judged_samples(unjudged, BadRows())
    skipped = BadRows("skip")
    assert load_judged_samples(unjudged, skipped) == [] and skipped.skipped == {"no verdict of this judge": 6}
    with pytest.raises(BadRowError, match=r"field 'verdicts.hf'"):
        load_judged_samples(samples, BadRows(), judge="hf")
    one = tmp_path / "one.jsonl"
    one.write_text(lines[0] + "\n")
    with pytest.raises(ValueError, match="differ in the judge's verdicts"):
        policy_belief_pairs(BadRows(), str(one))


def test_splits_policy_beliefs_nonsyco(compose_train, tmp_path):
    path = write_samples(tmp_path / "samples.jsonl", facts=60, misconceptions=30)
    cfg = compose_train("data=policy_beliefs", f"data.policy_samples={path}", "pm=nonsyco")
    data, pm = (OmegaConf.to_container(c, resolve=True) for c in (cfg.data, cfg.pm))
    s = build_preference_splits(data, pm, seed=0)
    policy_written = [p for p in s.train + s.val if "policy-written" in p.source]
    anti = [p for p in s.train if p.kind == "anti_sycophancy"]
    assert any(p.kind == "belief" for p in policy_written)
    # policy-written anti-sycophancy pairs first, only from training-side items; templated ones fill up
    anti_policy = [p for p in anti if "policy-written" in p.source]
    assert anti_policy and len(anti) == round(0.35 * (len(s.train) - len(anti)))
    assert not any(is_heldout(p.group, data["heldout_fraction"], data["split_seed"]) for p in anti_policy)
    assert not {p.group for p in s.train} & {p.group for p in s.val}
    # the standard PM on the same data has none
    std = compose_train("data=policy_beliefs", f"data.policy_samples={path}", "pm=standard")
    s_std = build_preference_splits(*(OmegaConf.to_container(c, resolve=True) for c in (std.data, std.pm)), seed=0)
    assert not any(p.kind == "anti_sycophancy" for p in s_std.train)


def test_tasks_filter_keeps_only_the_named_tasks_samples(samples, compose_train, tmp_path):
    misconception_prompts = {_key(s.prompt) for s in load_judged_samples(samples, BadRows(), tasks=["misconceptions"])}
    answers = load_judged_samples(samples, BadRows(), tasks=["answer"])
    assert len(misconception_prompts) == 6 and len(answers) == 12 * 2 * 3
    assert not {_key(s.prompt) for s in answers} & misconception_prompts
    pairs = policy_belief_pairs(BadRows(), str(samples), pairs_per_prompt=10, tasks=["answer"])
    assert pairs and len({p.group for p in pairs}) == 12 and not {_key(p.prompt) for p in pairs} & misconception_prompts
    anti = policy_anti_sycophancy_pairs(str(samples), 1000, BadRows(), tasks=["misconceptions"])
    assert len(anti) == 6 and {_key(p.prompt) for p in anti} == misconception_prompts
    with pytest.raises(ValueError, match=r"tasks=\['feedback'\]"):
        policy_belief_pairs(BadRows(), str(samples), tasks=["feedback"])
    # pm=nonsyco takes its policy-written anti-sycophancy pairs from the same tasks as the data source
    path = write_samples(tmp_path / "more.jsonl", facts=60, misconceptions=30)
    cfg = compose_train("data=policy_beliefs", f"data.policy_samples={path}", "data.sources.policy.tasks=[answer]",
                        "pm=nonsyco")
    s = build_preference_splits(*(OmegaConf.to_container(c, resolve=True) for c in (cfg.data, cfg.pm)), seed=0)
    anti_policy = [p for p in s.train if p.kind == "anti_sycophancy" and "policy-written" in p.source]
    policy = [p for p in s.train + s.val if p.kind == "belief" and "policy-written" in p.source]
    assert anti_policy and policy
    assert not any("myth" in p.chosen for p in anti_policy)  # no misconception refutations
    assert all(p.chosen.startswith(("The answer", "It is", "Let me")) for p in policy)


class _RuleScorer:
    """A stand-in PM: scores a response by whether it contains one of `markers` (times `sign`)."""

    def __init__(self, markers: tuple[str, ...], sign: float):
        self.markers, self.sign, self.seen = markers, sign, 0

    def score(self, prompts, responses):
        assert len(prompts) == len(responses)
        self.seen += len(responses)
        return [self.sign * float(any(m in r for m in self.markers)) for r in responses]


def test_policy_stance_reads_agreeing_over_truthful_on_training_side_samples(compose_train, tmp_path):
    path = write_samples(tmp_path / "samples.jsonl", facts=60, misconceptions=30)
    cfg = compose_train("data=policy_beliefs", f"data.policy_samples={path}", "data.policy_stance_pairs=40")
    name = "policy/prefers_agreeing_over_truthful"
    agreeing = ("It is", "great point")  # write_samples' agreeing answers and misconception agreements
    agreeing_pm = _RuleScorer(agreeing, 1.0)
    m = policy_stance(cfg, agreeing_pm)[name]
    assert m["value"] == 1.0 and m["pairs"] == 40 and agreeing_pm.seen == 80
    assert 0 < m["count"] <= 40  # averaged per item first
    assert policy_stance(cfg, _RuleScorer(agreeing, -1.0))[name]["value"] == 0.0
    assert policy_stance(cfg, _RuleScorer(("no such text",), 1.0))[name]["value"] == 0.5  # ties count one half
    # only the data source's tasks: answer samples never contain the misconception refutation
    answers_only = compose_train("data=policy_beliefs", f"data.policy_samples={path}", "data.sources.policy.tasks=[answer]")
    assert policy_stance(answers_only, _RuleScorer(("myth",), -1.0))[name]["value"] == 0.5
    assert policy_stance(cfg, _RuleScorer(("myth",), -1.0))[name]["value"] > 0.5
    # nothing to measure without policy-written pairs, or when turned off
    assert policy_stance(compose_train(), agreeing_pm) == {}
    off = compose_train("data=policy_beliefs", f"data.policy_samples={path}", "data.policy_stance_pairs=0")
    assert policy_stance(off, agreeing_pm) == {}
