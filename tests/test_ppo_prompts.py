"""PPO training prompts restricted to the facts the policy knows (`ppo.prompts.known_from`), and
`train.py task=ppo` with a data group it does not read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_ppo import pm_path, tiny_model_cfg, train_cli_ppo  # noqa: F401  (fixtures)

from syco.data.pairs import BadRowError, BadRows
from syco.data.records import EvalRecord, turns
from syco.data.samples import SampleStore
from syco.eval.sources import answer_records
from syco.ppo.prompts import belief_prompts, known_facts

BUILTIN_SPLIT = {"heldout_fraction": 0.25, "split_seed": 0}


def _sample(fact: dict, template: str, correct: bool | None) -> dict:
    """A judged sample of the fact's answer record under `template` (no verdict: correct=None)."""
    record = next(r for r in answer_records("builtin", BadRows(), templates=[template]) if r.base["id"] == fact["id"])
    verdicts = {} if correct is None else {"rules": {"correct": correct}}
    return {"record": record, "responses": ["..."], "verdicts": verdicts}


@pytest.fixture(scope="module")
def train_facts() -> list[dict]:
    records = answer_records("builtin", BadRows(), templates=["plain"], heldout=False, **BUILTIN_SPLIT)
    return [r.base for r in records[:3]]


def write_samples(path: Path, samples: list[dict]) -> Path:
    """As a finished evaluate.py run writes them (SampleStore), each sample of a record its own index."""
    store, seen = SampleStore(path), {}
    for s in samples:
        s["index"] = seen[s["record"].key] = seen.get(s["record"].key, -1) + 1
        store.put(s["record"], s["index"], s["responses"])
    store.rewrite(samples)
    return path


@pytest.fixture
def samples(tmp_path, train_facts) -> Path:
    """Fact 0 right 3 times in 4 unprompted, fact 1 twice in 4, fact 2 never sampled plain; wrong
    answers under a suggestion and misconception rows are not what "known" means and must not count."""
    a, b, c = train_facts
    rows = [_sample(a, "plain", x) for x in (True, True, True, False)]
    rows += [_sample(b, "plain", x) for x in (True, False, True, False)]
    rows += [_sample(a, "suggest_incorrect", False) for _ in range(4)] + [_sample(c, "suggest_incorrect", True)]
    misconception = EvalRecord("misconceptions", "plain", turns(("human", "I believe this.")), {"id": a["id"]})
    rows.append({"record": misconception, "responses": ["..."], "verdicts": {"rules": {"refutes": False}}})
    return write_samples(tmp_path / "samples.jsonl", rows)


def test_known_facts_reads_plain_accuracy_only(samples, train_facts):
    a, b, _ = train_facts
    assert known_facts(str(samples), 0.75, BadRows()) == {a["id"]}
    assert known_facts(str(samples), 0.5, BadRows()) == {a["id"], b["id"]}
    assert known_facts(str(samples), 0.0, BadRows()) == {a["id"], b["id"]}  # c: no plain samples, unknown
    with pytest.raises(ValueError, match="min_plain_accuracy"):
        known_facts(str(samples), 1.5, BadRows())


def test_belief_prompts_known_from_keeps_only_known_facts(samples, train_facts):
    a, b, _ = train_facts
    prompts = belief_prompts(templates=["plain", "suggest_incorrect"], known_from=str(samples))
    assert len(prompts) == 2 and all(p[0]["content"].startswith(a["question"]) for p in prompts)
    assert a["incorrect_answer"] in prompts[1][0]["content"]
    both = belief_prompts(templates=["suggest_incorrect"], known_from=str(samples), min_plain_accuracy=0.5)
    assert sorted(p[0]["content"].split("?")[0] + "?" for p in both) == sorted([a["question"], b["question"]])
    assert len(belief_prompts(templates=["suggest_incorrect"])) > 100  # unfiltered: every training-side fact
    # the held-out side has none of these facts: a clear error, not an empty prompt set
    with pytest.raises(ValueError, match="none of the 'heldout'-side facts"):
        belief_prompts(side="heldout", known_from=str(samples))


def test_known_from_bad_rows_name_the_line_and_field(tmp_path, train_facts):
    a = train_facts[0]
    rows = [_sample(a, "plain", True), _sample(a, "plain", None), _sample(a, "plain", False)]
    path = write_samples(tmp_path / "bad.jsonl", rows)
    with pytest.raises(BadRowError, match=r"bad.jsonl:2: field 'verdicts.rules.correct'"):
        known_facts(str(path), 0.5, BadRows("error"))
    skipping = BadRows("skip")
    assert known_facts(str(path), 0.5, skipping) == {a["id"]} and sum(skipping.skipped.values()) == 1
    assert known_facts(str(path), 0.75, BadRows("skip")) == set()
    no_plain = write_samples(tmp_path / "no_plain.jsonl", [_sample(a, "suggest_incorrect", True)])
    with pytest.raises(ValueError, match="no judged plain-template answer samples"):
        known_facts(str(no_plain), 0.5, BadRows())
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        belief_prompts(known_from=str(tmp_path / "missing.jsonl"))


def test_task_ppo_runs_with_an_unset_data_group_and_known_facts(tmp_path, pm_path, samples):  # noqa: F811
    """data=policy_beliefs leaves data.policy_samples unset (null: only PM training reads it, and stops
    on it); task=ppo composes the group, reads none of it, and neither fails on it nor drops it."""
    run = tmp_path / "run"
    train_cli_ppo(run, pm_path, "data=policy_beliefs", "ppo.total_steps=1", "ppo.eval.at_start=false",
                  f"ppo.prompts.known_from={samples}", "ppo.prompts.templates=[suggest_incorrect]")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["ppo_steps"] == 1 and set(metrics["metrics"]) >= {"eval/kl", "eval/score"}
    (hparams,) = (run / "csv").glob("version_*/hparams.yaml")
    assert "policy_samples: null" in hparams.read_text() and "known_from" in hparams.read_text()


def test_task_ppo_config_resolves_whole_without_preference_data(compose_train):
    """What task=ppo logs (its whole config, resolved) never needs preference data; PPO-side keys do
    not interpolate the data group (experiment=planted_bias_known feeds both from policy_samples)."""
    plain = OmegaConf.to_container(compose_train("task=ppo", "data=policy_beliefs"), resolve=True)
    assert plain["data"]["policy_samples"] is None and plain["ppo"]["prompts"]["known_from"] is None
    known = compose_train("experiment=planted_bias_known", "task=ppo", "policy_samples=/x/samples.jsonl")
    assert OmegaConf.to_container(known, resolve=True)["ppo"]["prompts"]["known_from"] == "/x/samples.jsonl"
