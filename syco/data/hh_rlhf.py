"""Anthropic hh-rlhf transcripts -> (prompt messages, chosen, rejected)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from syco.data.chat import Message
from syco.data.pairs import (
    BadRowError,
    BadRows,
    PreferencePair,
    iter_jsonl,
    prompt_group,
    require_distinct,
    require_text,
)

_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(text: str, source: str, field: str) -> list[Message]:
    """Split `\\n\\nHuman: ...\\n\\nAssistant: ...` into chat messages."""
    parts = _TURN.split(text)
    if parts[0].strip():
        raise BadRowError(source, field, "text before the first '\\n\\nHuman:' turn")
    turns = [{"role": _ROLES[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]
    if not turns:
        raise BadRowError(source, field, "no '\\n\\nHuman:' / '\\n\\nAssistant:' turns")
    return turns


def hh_pair(row: dict[str, Any], source: str) -> PreferencePair:
    chosen = parse_transcript(require_text(row, "chosen", source), source, "chosen")
    rejected = parse_transcript(require_text(row, "rejected", source), source, "rejected")
    for name, turns in (("chosen", chosen), ("rejected", rejected)):
        if turns[-1]["role"] != "assistant":
            raise BadRowError(source, name, "transcript has no final assistant turn")
        if not turns[-1]["content"]:
            raise BadRowError(source, name, "final assistant turn is empty")
        if len(turns) < 2 or not any(t["role"] == "user" for t in turns[:-1]):
            raise BadRowError(source, name, "no human turn before the final assistant turn")
    if chosen[:-1] != rejected[:-1]:
        raise BadRowError(source, "rejected", "chosen and rejected transcripts do not share the same prompt")
    require_distinct(chosen[-1]["content"], rejected[-1]["content"], source)
    return PreferencePair(
        prompt=tuple(chosen[:-1]),
        chosen=chosen[-1]["content"],
        rejected=rejected[-1]["content"],
        source=source,
        group=prompt_group("hh", chosen[:-1]),
    )


def _hub_rows(dataset_id: str, data_dir: str | None, split: str) -> list[tuple[str, dict[str, Any]]]:
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, data_dir=data_dir, split=split)
    except Exception as err:  # noqa: BLE001 - datasets raises many types for "not reachable"
        raise RuntimeError(
            f"could not load {dataset_id!r} (data_dir={data_dir!r}, split={split!r}) from the hub: {err}. "
            f"Offline? Point data at a local .jsonl/.jsonl.gz file instead."
        ) from err
    name = f"{dataset_id}[{data_dir or ''}/{split}]"
    return [(f"{name}:{i}", dict(row)) for i, row in enumerate(ds)]


def load_hh_rlhf(
    path: str,
    bad_rows: BadRows,
    data_dir: str | None = None,
    split: str = "test",
    limit: int | None = None,
    **_: Any,
) -> list[PreferencePair]:
    """From a local `.jsonl`/`.jsonl.gz` file, or from a hub id such as `Anthropic/hh-rlhf`."""
    is_local = Path(path).suffix in (".jsonl", ".gz", ".json") or Path(path).exists()
    rows = iter_jsonl(path, bad_rows) if is_local else iter(_hub_rows(path, data_dir, split))
    pairs: list[PreferencePair] = []
    for source, row in rows:
        if limit is not None and len(pairs) >= limit:
            break
        try:
            pairs.append(hh_pair(row, source))
        except BadRowError as err:
            bad_rows.handle(err)
    return pairs
