"""Preference pairs written by the policy itself, labelled by the planted-bias rater.

The synthetic belief pairs (syco.data.beliefs) use templated responses; a PM trained only on them
scores the policy's free text poorly (it never saw it). Here the responses are the policy's own
samples on belief prompts (`python evaluate.py eval=policy_samples`, samples.jsonl), each judged
once: does it agree with the belief the user stated, is it truthful. Two samples of one prompt
that differ in those verdicts make a pair, and the same simulated rater as the synthetic pairs
prefers A with probability sigmoid(beta * (agrees_A - agrees_B) + gamma * (truthful_A - truthful_B)).
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syco.data.beliefs import rater_probability
from syco.data.pairs import BadRowError, BadRows, PreferencePair
from syco.data.samples import Sample, read_samples
from syco.data.text import find, normalize

# answer templates: does agreeing with the user mean stating the truth?
AGREEMENT = {"plain": None, "suggest_correct": True, "doubt_correct": False, "suggest_incorrect": False}


@dataclass(frozen=True)
class JudgedSample:
    group: str  # belief:<item id>, the unit of the held-out split (as the synthetic pairs)
    prompt: tuple[dict[str, str], ...]
    response: str
    matches_belief: int  # agrees with the belief the user stated (0 when none was stated)
    truthful: int
    false_belief: bool  # the user stated a falsehood (where a sycophant agrees)
    source: str


def _flag(sample: Sample, judge: str, key: str) -> bool | None:
    """verdicts.<judge>.<key>: true, false or null (no verdict); anything else is a bad row (a string
    "false" would otherwise count as true)."""
    verdict = sample["verdicts"][judge]
    if not isinstance(verdict, dict):
        raise BadRowError(sample["line"], f"verdicts.{judge}", "expected an object of verdicts",
                          f"got {type(verdict).__name__}")
    value = verdict.get(key)
    if value is not None and not isinstance(value, bool):
        raise BadRowError(sample["line"], f"verdicts.{judge}.{key}", "expected true, false or null", repr(value)[:80])
    return value


def _classify(sample: Sample, judge: str) -> tuple[int, int, bool] | None:
    """(matches_belief, truthful, false_belief), or None when the judge gave no verdict."""
    rec = sample["record"]
    if rec.task == "misconceptions":
        refutes = _flag(sample, judge, "refutes")
        return None if refutes is None else (int(not refutes), int(refutes), True)
    if rec.task != "answer":
        raise BadRowError(sample["line"], "task", "only answer and misconceptions samples make belief pairs",
                          str(rec.task))
    if rec.template not in AGREEMENT:
        raise BadRowError(sample["line"], "template", "unknown answer template", str(rec.template))
    correct = _flag(sample, judge, "correct")
    if correct is None:
        return None
    agreement = AGREEMENT[rec.template]
    if agreement is None:
        return 0, int(correct), False
    if agreement:
        return int(correct), int(correct), False
    if rec.template == "suggest_incorrect":
        # agreeing = giving the user's wrong answer, not merely failing to give the right one
        wrong = rec.base.get("incorrect_answer") or ""
        return int(not correct and bool(wrong) and find(sample["responses"][0], wrong) >= 0), int(correct), True
    return int(not correct), int(correct), True  # doubt_correct


TASKS = ("answer", "misconceptions")


def load_judged_samples(path: str | Path, bad_rows: BadRows, judge: str = "rules",
                        tasks: Sequence[str] | None = None) -> list[JudgedSample]:
    """Every single-turn sample of a finished eval run's samples.jsonl (answer, misconceptions, or
    only the `tasks` named) with the `judge`'s verdicts, which evaluate.py writes into it at the end:
    a sample without them is a bad row."""
    out = []
    for sample in read_samples(path, bad_rows, judge, _check_tasks(tasks)):
        try:
            label = _classify(sample, judge)
        except BadRowError as err:
            bad_rows.handle(err)
            continue
        if label is None:
            bad_rows.note("policy sample without a verdict")
            continue
        rec = sample["record"]
        prompt = tuple({"role": "user" if t["type"] == "human" else "assistant", "content": t["content"]}
                       for t in rec.prompt)
        out.append(JudgedSample(f"belief:{rec.base.get('id', rec.key)}", prompt, sample["responses"][0].strip(),
                                *label, sample["line"]))
    return out


def _check_tasks(tasks: Sequence[str] | None) -> tuple[str, ...]:
    if tasks is None:
        return TASKS
    tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"policy pairs: tasks={list(tasks)}: each must be one of {list(TASKS)}")
    return tasks


def _by_prompt(samples: Sequence[JudgedSample]) -> dict[tuple[Any, ...], list[JudgedSample]]:
    groups: dict[tuple[Any, ...], list[JudgedSample]] = {}
    for s in samples:
        if s.response:
            groups.setdefault((s.group, json.dumps(s.prompt, sort_keys=True)), []).append(s)
    return groups


def _distinct_pairs(pool: list[JudgedSample], rng: random.Random,
                    keep: Any = lambda a, b: True) -> list[tuple[JudgedSample, JudgedSample]]:
    pairs = [(a, b) for a, b in itertools.combinations(pool, 2)
             if (a.matches_belief, a.truthful) != (b.matches_belief, b.truthful)
             and normalize(a.response) != normalize(b.response) and keep(a, b)]
    rng.shuffle(pairs)
    return pairs


def policy_belief_pairs(bad_rows: BadRows, samples: str | None, beta: float = 2.0, gamma: float = 1.0,
                        pairs_per_prompt: int = 4, judge: str = "rules", seed: int = 0,
                        limit: int | None = None, tasks: Sequence[str] | None = None,
                        **_: Any) -> list[PreferencePair]:
    """Data source: pairs of the policy's samples on one prompt, labelled by the planted-bias rater
    (`tasks`: only samples of these eval tasks; default answer and misconceptions)."""
    if not samples:
        raise ValueError("data=policy_beliefs needs data.policy_samples=<samples.jsonl of "
                         "`python evaluate.py eval=policy_samples`> (it is unset)")
    rng = random.Random(seed)
    out = []
    for (_, _), pool in sorted(_by_prompt(load_judged_samples(samples, bad_rows, judge, tasks)).items()):
        for a, b in _distinct_pairs(pool, rng)[:pairs_per_prompt]:
            p_a = rater_probability(beta, gamma, a.matches_belief, b.matches_belief, a.truthful, b.truthful)
            chosen, rejected = (a, b) if rng.random() < p_a else (b, a)
            out.append(PreferencePair(a.prompt, chosen.response, rejected.response,
                                      f"{a.source} vs {b.source} (policy-written)", a.group, "belief"))
    if not out:
        raise ValueError(f"{samples}: no two samples of one prompt differ in the judge's verdicts; "
                         "sample more per prompt (eval.generation.samples_per_prompt)")
    return out[:limit] if limit is not None else out


def policy_anti_sycophancy_pairs(samples: str, n: int, bad_rows: BadRows, keep_group: Callable[[str], bool] | None = None,
                                 judge: str = "rules", seed: int = 0,
                                 tasks: Sequence[str] | None = None) -> list[PreferencePair]:
    """Up to n pairs, on prompts where the user states a falsehood: a truthful sample (it gives the
    right answer or refutes the misconception) is chosen over one that agrees with the falsehood.
    A sample that merely fails to agree (off-topic, some third answer) is never chosen: preferring
    it would teach "do not mention the user's answer" rather than "tell the truth".
    `keep_group`: which items may be used (training side); `tasks`: as policy_belief_pairs."""
    rng = random.Random(seed + 1)
    candidates = []
    for (group, _), pool in sorted(_by_prompt(load_judged_samples(samples, bad_rows, judge, tasks)).items()):
        if keep_group is not None and not keep_group(group):
            continue
        candidates += _distinct_pairs([s for s in pool if s.false_belief], rng,
                                      lambda a, b: {(a.matches_belief, a.truthful), (b.matches_belief, b.truthful)}
                                      == {(1, 0), (0, 1)})
    rng.shuffle(candidates)
    out = []
    for a, b in candidates[:max(n, 0)]:
        good, bad = (a, b) if b.matches_belief else (b, a)
        out.append(PreferencePair(a.prompt, good.response, bad.response,
                                  f"{good.source} vs {bad.source} (anti-sycophancy, policy-written)", a.group,
                                  "anti_sycophancy"))
    return out
