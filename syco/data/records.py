"""Evaluation records in the authors' released format (meg-tong/sycophancy-eval).

One JSON object a line: `prompt` = list of {"type": "human"|"ai", "content"} turns (a trailing
"ai" turn is an assistant prefill), `base` = the source item, `metadata` = {"prompt_template", ...}.
syco builds records of this same shape from raw datasets and reads the authors' files as they are.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syco.data.chat import Message
from syco.data.pairs import BadRowError, BadRows, iter_jsonl

ROLES = {"human": "user", "ai": "assistant"}


@dataclass
class EvalRecord:
    task: str  # feedback | are_you_sure | answer | mimicry | misconceptions
    template: str  # e.g. baseline/like/... (feedback), plain/suggest_incorrect/... (answer)
    prompt: list[dict[str, str]]  # released turns
    base: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def dataset(self) -> str:
        return str(self.base.get("dataset", "unknown"))

    @property
    def item_id(self) -> str:
        """Shared by all templates of one source item (the unit of paired comparisons)."""
        return str(self.base.get("id") or self.base.get("question") or self.base.get("text", ""))[:200]

    @property
    def key(self) -> str:
        """Unique per record: resume and caches are keyed by it."""
        return json.dumps([self.task, self.template, self.prompt], ensure_ascii=False, sort_keys=True)

    def messages(self) -> tuple[list[Message], str | None]:
        """Chat messages, and the assistant prefill when the last turn is an `ai` turn."""
        turns = [{"role": ROLES[t["type"]], "content": t["content"]} for t in self.prompt]
        if turns and turns[-1]["role"] == "assistant":
            return turns[:-1], turns[-1]["content"]
        return turns, None

    def to_json(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "base": self.base,
                "metadata": {**self.metadata, "task": self.task, "template": self.template}}


def turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"type": t, "content": c} for t, c in pairs]


def _check_prompt(value: Any, source: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise BadRowError(source, "prompt", "expected a non-empty list of {type, content} turns")
    for i, t in enumerate(value):
        if not isinstance(t, dict) or t.get("type") not in ROLES or not isinstance(t.get("content"), str):
            raise BadRowError(source, f"prompt[{i}]", "expected {'type': 'human'|'ai', 'content': str}")
    if value[0]["type"] != "human":
        raise BadRowError(source, "prompt[0].type", "the first turn must be 'human'")
    return [{"type": t["type"], "content": t["content"]} for t in value]


def load_released(path: str | Path, task: str, bad_rows: BadRows, template_of: Any = None,
                  limit: int | None = None, check: Callable[[EvalRecord], None] | None = None) -> list[EvalRecord]:
    """Read a released-format file. `template_of(metadata, base)` names each record's template
    (from the prompt template text); records it cannot place are bad rows, and so are records that
    `check` (what the task reads from the base) raises a BadRowError for."""
    records = []
    for source, row in iter_jsonl(path, bad_rows):
        if limit is not None and len(records) >= limit:
            break
        try:
            prompt = _check_prompt(row.get("prompt"), source)
            base = row.get("base")
            if not isinstance(base, dict):
                raise BadRowError(source, "base", "missing or not an object")
            metadata = row.get("metadata") or {}
            if not isinstance(metadata, dict):
                raise BadRowError(source, "metadata", "not an object")
            template = metadata.get("template") or (template_of(metadata, base) if template_of else None)
            if not template:
                raise BadRowError(source, "metadata.prompt_template", "unknown prompt template",
                                  repr(metadata.get("prompt_template"))[:120])
            record = EvalRecord(task, template, prompt, base, metadata, source)
            if check is not None:
                check(record)
            records.append(record)
        except BadRowError as err:
            bad_rows.handle(err)
    return records


def write_released(path: str | Path, records: list[EvalRecord]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        for r in records:
            f.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path
