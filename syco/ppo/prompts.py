"""Prompt sources for PPO (Hydra `_target_`s under `ppo.prompts` and `ppo.eval_prompts`).

The default: answer prompts on the built-in facts (a plain question, and the user suggesting the
correct or an incorrect answer), from the items on the training side of the held-out split, so
that the held-out 25% stay unseen for evaluation (conf/eval/planted_bias.yaml reads only those).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import lru_cache

from syco.data.beliefs import BUILTIN
from syco.data.chat import Message, as_messages
from syco.data.pairs import BadRowError, BadRows, iter_jsonl, require_text
from syco.data.samples import NO_VERDICT_HINT, read_samples
from syco.eval.sources import answer_records, misconception_records
from syco.eval.templates import ANSWER_TEMPLATES

ChatPrompt = list[Message]
SIDES = ("train", "heldout", "all")


def belief_prompts(facts: str | None = BUILTIN, misconceptions: str | None = None,
                   templates: Sequence[str] = ("plain", "suggest_correct", "suggest_incorrect"),
                   side: str = "train", heldout_fraction: float = 0.25, split_seed: int = 0,
                   limit: int | None = None, seed: int = 0, on_bad_row: str = "error",
                   known_from: str | None = None, min_plain_accuracy: float = 0.75) -> list[ChatPrompt]:
    """The evaluation's answer prompts on facts (`templates`) and its misconception prompts, as
    chat prompts; `side` picks the items of the held-out split ("train": those a belief-pair PM
    trained on, "heldout": the rest, "all"). `known_from` (a samples.jsonl of the policy) keeps only
    the facts it answers correctly unprompted (plain-template accuracy >= `min_plain_accuracy`):
    only there can an answer under a wrong suggestion be sycophantic rather than merely wrong."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    unknown = set(templates) - set(ANSWER_TEMPLATES)
    if unknown:
        raise ValueError(f"unknown answer templates {sorted(unknown)}; known: {sorted(ANSWER_TEMPLATES)}")
    bad_rows = BadRows(on_bad_row)
    split = {} if side == "all" else {"heldout_fraction": heldout_fraction, "split_seed": split_seed,
                                      "heldout": side == "heldout"}
    records = answer_records(facts, bad_rows, templates=templates, **split) if facts else []
    if known_from is not None and records:
        known = known_facts(known_from, min_plain_accuracy, bad_rows)
        records = [r for r in records if r.base["id"] in known]
        if not records:
            raise ValueError(f"{known_from}: none of the {side!r}-side facts has plain-template accuracy >= "
                             f"{min_plain_accuracy} (are these samples of the same facts file?)")
    records += misconception_records(misconceptions, bad_rows, **split) if misconceptions else []
    return _limited([r.messages()[0] for r in records], limit, seed)


def known_facts(samples: str, min_plain_accuracy: float, bad_rows: BadRows, judge: str = "rules") -> set[str]:
    """Ids of the facts whose plain-template samples in an eval run's samples.jsonl are correct at
    rate >= min_plain_accuracy (by the `judge`'s verdicts)."""
    if not 0.0 <= min_plain_accuracy <= 1.0:
        raise ValueError(f"min_plain_accuracy must be in [0, 1], got {min_plain_accuracy}")
    correct: dict[str, list[bool]] = {}
    for s in read_samples(samples, bad_rows, tasks=["answer"]):
        if s["record"].template != "plain":
            continue
        try:
            item = s["record"].base.get("id")
            if not isinstance(item, str):
                raise BadRowError(s["line"], "record.base.id", "a plain answer sample without its fact id")
            verdict = (s["verdicts"].get(judge) or {}).get("correct")
            if verdict is None:
                raise BadRowError(s["line"], f"verdicts.{judge}.correct", "no verdict", NO_VERDICT_HINT)
        except BadRowError as err:
            bad_rows.handle(err)
            continue
        correct.setdefault(item, []).append(bool(verdict))
    if not correct:
        raise ValueError(f"{samples}: no judged plain-template answer samples (run `python evaluate.py "
                         "eval=policy_samples` and pass its samples.jsonl)")
    return {item for item, xs in correct.items() if sum(xs) / len(xs) >= min_plain_accuracy}


def jsonl_prompts(path: str, field: str = "prompt", limit: int | None = None, seed: int = 0,
                  on_bad_row: str = "error") -> list[ChatPrompt]:
    """Prompts from a .jsonl(.gz) file: `field` holds a string (one user turn) or chat messages."""
    bad_rows = BadRows(on_bad_row)
    out = []
    for source, obj in iter_jsonl(path, bad_rows):
        value = obj.get(field)
        out.append(as_messages(value if isinstance(value, list) else require_text(obj, field, source)))
    if not out:
        raise ValueError(f"{path}: no prompts in field {field!r}")
    return _limited(out, limit, seed)


def _limited(prompts: list[ChatPrompt], limit: int | None, seed: int) -> list[ChatPrompt]:
    if not prompts:
        raise ValueError("the prompt source gave no prompts")
    if limit is None or len(prompts) <= limit:
        return prompts
    return random.Random(seed).sample(prompts, int(limit))


def step_prompts(prompts: Sequence[ChatPrompt], step: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1) -> list[ChatPrompt]:
    """The prompts of PPO step `step` on `rank`: epochs of seeded permutations of the prompt set,
    cut into global batches of batch_size * world_size (a function of the step only: a resumed run
    sees the same prompts it would have seen)."""
    n, global_batch = len(prompts), batch_size * world_size
    start = step * global_batch + rank * batch_size
    out = []
    for pos in range(start, start + batch_size):
        epoch, offset = divmod(pos, n)
        out.append(prompts[_order(n, seed, epoch)[offset]])
    return out


@lru_cache(maxsize=4)
def _order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return tuple(order)
