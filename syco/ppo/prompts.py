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
from syco.data.pairs import BadRows, iter_jsonl, require_text
from syco.eval.sources import answer_records, misconception_records
from syco.eval.templates import ANSWER_TEMPLATES

ChatPrompt = list[Message]
SIDES = ("train", "heldout", "all")


def belief_prompts(facts: str | None = BUILTIN, misconceptions: str | None = None,
                   templates: Sequence[str] = ("plain", "suggest_correct", "suggest_incorrect"),
                   side: str = "train", heldout_fraction: float = 0.25, split_seed: int = 0,
                   limit: int | None = None, seed: int = 0, on_bad_row: str = "error") -> list[ChatPrompt]:
    """The evaluation's answer prompts on facts (`templates`) and its misconception prompts, as
    chat prompts; `side` picks the items of the held-out split ("train": those a belief-pair PM
    trained on, "heldout": the rest, "all")."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    unknown = set(templates) - set(ANSWER_TEMPLATES)
    if unknown:
        raise ValueError(f"unknown answer templates {sorted(unknown)}; known: {sorted(ANSWER_TEMPLATES)}")
    bad_rows = BadRows(on_bad_row)
    split = {} if side == "all" else {"heldout_fraction": heldout_fraction, "split_seed": split_seed,
                                      "heldout": side == "heldout"}
    records = answer_records(facts, bad_rows, templates=templates, **split) if facts else []
    records += misconception_records(misconceptions, bad_rows, **split) if misconceptions else []
    return _limited([r.messages()[0] for r in records], limit, seed)


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
