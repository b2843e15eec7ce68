"""Generic preference JSONL: {"prompt": str | [messages], "chosen": str, "rejected": str[, "margin": float]}."""

from __future__ import annotations

from typing import Any

from syco.data.chat import Message
from syco.data.pairs import (
    BadRowError,
    BadRows,
    PreferencePair,
    iter_jsonl,
    prompt_group,
    require_distinct,
    require_number,
    require_text,
)


def _prompt(row: dict[str, Any], source: str) -> tuple[Message, ...]:
    value = row.get("prompt")
    if value is None:
        raise BadRowError(source, "prompt", "missing")
    if isinstance(value, str):
        if not value.strip():
            raise BadRowError(source, "prompt", "empty")
        return ({"role": "user", "content": value},)
    if not isinstance(value, list) or not value:
        raise BadRowError(source, "prompt", f"expected a string or a non-empty list of messages, got {value!r:.80}")
    messages = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise BadRowError(source, f"prompt[{i}]", "expected {'role': str, 'content': str}")
        if m["role"] not in ("system", "user", "assistant"):
            raise BadRowError(source, f"prompt[{i}].role", f"unknown role {m['role']!r}")
        messages.append({"role": m["role"], "content": m["content"]})
    if messages[-1]["role"] == "assistant":
        raise BadRowError(source, "prompt", "the prompt ends with an assistant turn; responses belong in chosen/rejected")
    return tuple(messages)


def _response(row: dict[str, Any], key: str, source: str) -> str:
    value = row.get(key)
    # TRL's conversational format: [{"role": "assistant", "content": ...}]
    if isinstance(value, list):
        if len(value) != 1 or not isinstance(value[0], dict) or value[0].get("role") != "assistant":
            raise BadRowError(source, key, "a list response must be exactly one assistant message")
        return require_text(value[0], "content", f"{source} ({key})")
    return require_text(row, key, source)


def preference_jsonl_pair(row: dict[str, Any], source: str) -> PreferencePair:
    prompt = _prompt(row, source)
    chosen = _response(row, "chosen", source)
    rejected = _response(row, "rejected", source)
    require_distinct(chosen, rejected, source)
    margin = require_number(row, "margin", source, default=0.0)
    group = row.get("group", row.get("id"))
    group = f"jsonl:{group}" if group is not None else prompt_group("jsonl", prompt)
    return PreferencePair(prompt, chosen, rejected, source, group=group, margin=margin)


def load_preference_jsonl(
    path: str, bad_rows: BadRows, limit: int | None = None, kind: str = "general", **_: Any
) -> list[PreferencePair]:
    pairs: list[PreferencePair] = []
    for source, row in iter_jsonl(path, bad_rows):
        if limit is not None and len(pairs) >= limit:
            break
        try:
            pair = preference_jsonl_pair(row, source)
        except BadRowError as err:
            bad_rows.handle(err)
            continue
        pairs.append(pair if kind == "general" else PreferencePair(**{**pair.__dict__, "kind": kind}))
    return pairs
