"""Preference pairs, bad-row handling and the held-out split shared by every data source."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import re
import zlib
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
FLOAT32_MAX = 3.4028234663852886e38  # margins and scores become float32 tensors: larger is inf there


@dataclass(frozen=True)
class PreferencePair:
    prompt: tuple[Message, ...]  # chat messages shared by both responses
    chosen: str
    rejected: str
    source: str  # where the row came from, e.g. "test.jsonl.gz:17", for error messages
    group: str  # unit of the held-out split: all pairs of one group fall on the same side
    kind: str = "general"
    margin: float = 0.0
    # the true values of features a synthetic pair was built with: ((feature, chosen's, rejected's), ...),
    # e.g. whether a response matches the user's stated belief and whether it is truthful (analyze.py)
    truth: tuple[tuple[str, float, float], ...] = ()


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


class DataFileError(ValueError):
    """A data file that cannot be read as a whole (truncated or mislabelled compression): not one bad
    row, so raised whatever data.on_bad_row says."""


GZIP_MAGIC = b"\x1f\x8b"


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) of a plain or gzip file; a gzip file that is truncated, corrupt or not
    gzip at all is a DataFileError naming the path (and the line where it broke off)."""
    if path.suffix != ".gz":
        with open(path, "rb") as f:
            if f.read(2) == GZIP_MAGIC:
                raise DataFileError(f"{path}: the file is gzip-compressed but its name does not end in .gz; "
                                    f"rename it to {path.name}.gz (or decompress it)")
            f.seek(0)
            yield from enumerate(f, start=1)
        return
    line_no = 0
    with gzip.open(path, "rb") as f:
        while True:
            try:
                raw = f.readline()
            except gzip.BadGzipFile as err:
                if line_no == 0 and "Not a gzipped file" in str(err):
                    raise DataFileError(f"{path}: not a gzip file ({err}); its name ends in .gz: if it is plain "
                                        f"JSONL, rename it without .gz") from err
                raise DataFileError(f"{path}:{line_no + 1}: the gzip file is corrupt ({err}); re-download or "
                                    "re-compress it") from err
            except (EOFError, zlib.error) as err:
                raise DataFileError(f"{path}:{line_no + 1}: the gzip file is truncated or corrupt: it breaks off "
                                    f"after line {line_no} ({err}); re-download or re-compress it") from err
            if not raw:
                return
            line_no += 1
            yield line_no, raw


def nonfinite_field(value: Any, path: str = "") -> str | None:
    """The path (`margin`, `base.letters`, `prompt[0].x`) of the first NaN or infinite number in a
    parsed JSON value, or None. Python's json reads NaN, Infinity and 1e999 without complaint."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "<value>")
    if isinstance(value, dict):
        for k, v in value.items():
            found = nonfinite_field(v, f"{path}.{k}" if path else str(k))
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = nonfinite_field(v, f"{path}[{i}]")
            if found:
                return found
    return None


def _field_value(obj: Any, path: str) -> Any:
    for part in re.findall(r"[^.\[\]]+", path):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


def iter_jsonl(path: str | Path, bad_rows: BadRows) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (source, object) for each line of a .jsonl or .jsonl.gz file; bad lines go to `bad_rows`
    (not UTF-8, not JSON, not an object, a NaN or infinite number anywhere in it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    for line_no, raw in _lines(path):
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
        bad = nonfinite_field(obj)
        if bad:
            bad_rows.handle(BadRowError(source, bad, "not a finite number", repr(_field_value(obj, bad))))
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


def same_text(a: str, b: str) -> bool:
    """Equal once surrounding and repeated whitespace are ignored (what no tokenizer should tell apart)."""
    return " ".join(a.split()) == " ".join(b.split())


def require_distinct(chosen: str, rejected: str, source: str) -> None:
    """A degenerate pair (chosen == rejected) teaches nothing and scores a tie: a bad row of every loader."""
    if same_text(chosen, rejected):
        raise BadRowError(source, "rejected", "chosen and rejected responses are identical")


def require_number(obj: dict[str, Any], key: str, source: str, default: float | None = None) -> float:
    """A finite int or float (not a bool, not a numeric string); `default` when absent or null."""
    value = obj.get(key)
    if value is None:
        if default is None:
            raise BadRowError(source, key, "missing")
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRowError(source, key, f"expected a number, got {type(value).__name__}", repr(value)[:80])
    if not math.isfinite(value):
        raise BadRowError(source, key, "not a finite number", repr(value))
    if abs(value) > FLOAT32_MAX:
        raise BadRowError(source, key, "too large for a 32-bit float (it would be inf in training)", repr(value))
    return float(value)

