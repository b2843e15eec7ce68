"""Preference pairs, bad-row handling and the held-out split shared by every data source."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syco.data.chat import Message

log = logging.getLogger(__name__)

# what a pair measures; held-out accuracy is reported per kind. The rated belief pairs carry their
# condition: under "false_belief" (the user states a falsehood) the planted-bias rater's labels
# reward agreement, so a non-sycophantic PM is meant to lose accuracy there and only there;
# "no_belief" accuracy says whether the PM tells the true answer from the false one at all.
# "belief" is a pair of the policy's own samples (data=policy_beliefs).
KINDS = ("general", "belief", "anti_sycophancy", "syco_probe", "false_belief", "true_belief", "no_belief")


@dataclass(frozen=True)
class PreferencePair:
    prompt: tuple[Message, ...]  # chat messages shared by both responses
    chosen: str
    rejected: str
    source: str  # where the row came from, e.g. "test.jsonl.gz:17", for error messages
    group: str  # unit of the held-out split: all pairs of one group fall on the same side
    kind: str = "general"
    margin: float = 0.0


class BadRowError(ValueError):
    """`reason` names the kind of problem (skipped rows are counted by it); `detail` is this row's."""

    def __init__(self, source: str, field: str, reason: str, detail: str = ""):
        self.source, self.field, self.reason = source, field, reason
        super().__init__(f"{source}: field '{field}': {reason}" + (f" ({detail})" if detail else ""))


@dataclass
class BadRows:
    """`on_bad_row=error` raises at the first bad row; `skip` drops it and counts it. Never silent."""

    policy: str = "error"
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    notes: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.policy not in ("error", "skip"):
            raise ValueError(f"data.on_bad_row must be 'error' or 'skip', got {self.policy!r}")

    def handle(self, err: BadRowError) -> None:
        if self.policy == "error":
            raise err
        self.skipped[err.reason] += 1
        self.examples.setdefault(err.reason, str(err))

    def note(self, what: str, n: int = 1) -> None:
        """Count a change that is not an error (e.g. a response truncated to max_length)."""
        self.notes[what] += n

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def report(self) -> dict[str, Any]:
        return {"skipped": dict(self.skipped), "examples": dict(self.examples), "notes": dict(self.notes)}

    def log_summary(self) -> None:
        for reason, n in self.skipped.items():
            log.warning("skipped %d bad rows: %s (first: %s)", n, reason, self.examples[reason])
        for what, n in self.notes.items():
            log.info("%s: %d", what, n)


def prompt_group(prefix: str, prompt: Any) -> str:
    """A split key from the prompt's content: stable wherever the file lives, and pairs that share
    a dialogue stay on one side of the split (no train/held-out leakage through repeated prompts)."""
    text = json.dumps(prompt, sort_keys=True, ensure_ascii=False)
    return f"{prefix}:{hashlib.sha1(text.encode()).hexdigest()[:16]}"


def is_heldout(group: str, fraction: float, seed: int = 0) -> bool:
    """Deterministic split by hashing the group key: stable across runs, machines and ranks."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"held-out fraction must be in [0, 1), got {fraction}")
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def iter_jsonl(path: str | Path, bad_rows: BadRows) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (source, object) for each line of a .jsonl or .jsonl.gz file; bad lines go to `bad_rows`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            source = f"{path}:{line_no}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                bad_rows.handle(BadRowError(source, "<line>", "not valid UTF-8", err.reason))
                continue
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as err:
                bad_rows.handle(BadRowError(source, "<line>", "not valid JSON", err.msg))
                continue
            if not isinstance(obj, dict):
                bad_rows.handle(BadRowError(source, "<line>", "expected a JSON object", f"got {type(obj).__name__}"))
                continue
            yield source, obj


def require_text(obj: dict[str, Any], key: str, source: str) -> str:
    if key not in obj or obj[key] is None:
        raise BadRowError(source, key, "missing")
    value = obj[key]
    if not isinstance(value, str):
        raise BadRowError(source, key, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise BadRowError(source, key, "empty")
    return value
