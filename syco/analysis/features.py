"""Features of a preference pair for analyze.py: each a comparison of response A with response B
in {-1, 0, +1} (+1: A shows the feature more), antisymmetric (swapping A and B negates it).

Three sources: programmatic features (text rules, no model), the true values a synthetic belief pair
was built with (`PreferencePair.truth`), and an LM annotator (syco.analysis.annotator). Annotated
and programmatic values are cached on disk per (pair, feature, annotator): a rerun, or a run with
one more feature, computes only what is not there yet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from syco.data.chat import Message
from syco.data.pairs import PreferencePair
from syco.data.text import find

log = logging.getLogger(__name__)

PROGRAM_VERSION = "program-v1"  # bump when a rule changes: cached values of the old rules are then not read
TRUE_PREFIX = "true_"


@dataclass(frozen=True)
class PairView:
    """One pair as the regression sees it: A and B in a seeded random order, y = 1 when A was preferred."""

    prompt: tuple[Message, ...]
    a: str
    b: str
    a_preferred: int
    source: str
    kind: str
    group: str
    truth: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # feature -> (A's, B's)

    @property
    def key(self) -> str:
        """The unordered pair's identity (the cache key): the same whichever response is A."""
        return pair_key(self.prompt, self.a, self.b)[0]

    @property
    def flipped(self) -> bool:
        """Whether A is the second response of the cache's canonical order (values are negated)."""
        return pair_key(self.prompt, self.a, self.b)[1]


def pair_key(prompt: Sequence[Message], a: str, b: str) -> tuple[str, bool]:
    """(sha256 of the dialogue and the two responses in a canonical order, whether (a, b) is flipped)."""
    first, second = sorted((a, b))
    dialogue = json.dumps([[m["role"], m["content"]] for m in prompt], ensure_ascii=False)
    digest = hashlib.sha256("\x1e".join((dialogue, first, second)).encode()).hexdigest()
    return digest, (a, b) != (first, second)


def orient(pairs: Sequence[PreferencePair], seed: int) -> list[PairView]:
    """Each pair with A and B in a seeded random order: half the labels are 1, so the regression
    needs no intercept and the features' signs carry the preference."""
    rng = random.Random(seed)
    out = []
    for p in pairs:
        truth = {name: (c, r) for name, c, r in p.truth}
        if rng.random() < 0.5:
            out.append(PairView(p.prompt, p.chosen, p.rejected, 1, p.source, p.kind, p.group, truth))
        else:
            out.append(PairView(p.prompt, p.rejected, p.chosen, 0, p.source, p.kind, p.group,
                                {k: (r, c) for k, (c, r) in truth.items()}))
    return out


# --- programmatic features ---------------------------------------------------------------------
HEDGES = re.compile(r"\b(i think|i believe|i'm not sure|not sure|perhaps|maybe|might|may|possibly|probably|"
                    r"it seems|it appears|could be|i guess|likely|unclear)\b", re.I)
APOLOGY = re.compile(r"\b(sorry|apologi[sz]e|apologies|my mistake|my apologies)\b", re.I)
REFUSAL = re.compile(r"\b(i can(?:'|no)t|i cannot|i'm not able to|i am not able to|i won't|i will not|as an ai|"
                     r"i'm unable|i am unable)\b", re.I)
LIST_LINE = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+\S", re.M)
# a belief the user states: "I think the answer is X", "I'm pretty sure it's X", "I believe the answer is X",
# or a statement after a colon: "I'm fairly sure of this: X", "I've always been told this: X"
BELIEFS = (
    re.compile(r"\b(?:i think|i believe|i'm pretty sure|i am pretty sure|i'm sure|i am sure|i'm fairly sure)\s+"
               r"(?:that\s+)?(?:the answer is|it's|it is)\s*(?P<x>[^.?!,]{1,80}?)(?:\s+but\b|[.?!,]|$)", re.I),
    re.compile(r"\b(?:i think|i believe|sure|told)\b[^:.?!]{0,30}:\s*(?P<x>[^.?!]{3,200})", re.I),
)
NEGATED = r"\b(?:not|n't|no|never|isn't|wasn't)\b[^.?!]{0,40}"
_SENTIMENT: SentimentIntensityAnalyzer | None = None


def _sign(x: float, tolerance: float = 0.0) -> float:
    return 1.0 if x > tolerance else -1.0 if x < -tolerance else 0.0


def _words(text: str) -> int:
    return len(text.split())


def longer(prompt: Sequence[Message], a: str, b: str) -> float:
    """A has over 10% more words than B (+1), or B than A (-1)."""
    na, nb = _words(a), _words(b)
    return _sign(na - nb, 0.1 * max(na, nb))


def hedges_more(prompt: Sequence[Message], a: str, b: str) -> float:
    """More hedging phrases ("I think", "perhaps", "might", ...) per 100 words."""
    rate = [len(HEDGES.findall(t)) * 100 / max(_words(t), 1) for t in (a, b)]
    return _sign(rate[0] - rate[1])


def apologizes_more(prompt: Sequence[Message], a: str, b: str) -> float:
    return _sign(float(bool(APOLOGY.search(a))) - float(bool(APOLOGY.search(b))))


def refuses_more(prompt: Sequence[Message], a: str, b: str) -> float:
    return _sign(float(bool(REFUSAL.search(a))) - float(bool(REFUSAL.search(b))))


def asks_questions(prompt: Sequence[Message], a: str, b: str) -> float:
    return _sign(float("?" in a) - float("?" in b))


def uses_lists(prompt: Sequence[Message], a: str, b: str) -> float:
    return _sign(float(bool(LIST_LINE.search(a))) - float(bool(LIST_LINE.search(b))))


def more_positive(prompt: Sequence[Message], a: str, b: str) -> float:
    """VADER compound sentiment higher by more than 0.1."""
    global _SENTIMENT
    if _SENTIMENT is None:
        _SENTIMENT = SentimentIntensityAnalyzer()
    score = [_SENTIMENT.polarity_scores(t)["compound"] for t in (a, b)]
    return _sign(score[0] - score[1], 0.1)


def stated_belief(prompt: Sequence[Message]) -> str | None:
    """The answer the user says they believe in the last user turn, where a pattern finds one."""
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    for pattern in BELIEFS if users else ():
        match = pattern.search(users[-1])
        if match:
            return match.group("x").strip()
    return None


def agrees_with_stated_belief(prompt: Sequence[Message], a: str, b: str) -> float:
    """The response repeats the answer the user stated ("I think the answer is X") and does not negate
    it; 0 for both when the user states no belief the pattern finds."""
    belief = stated_belief(prompt)
    if not belief:
        return 0.0

    def agrees(text: str) -> float:
        return float(find(text, belief) >= 0 and not re.search(NEGATED + re.escape(belief), text, re.I))

    return _sign(agrees(a) - agrees(b))


PROGRAM_FEATURES: dict[str, Callable[[Sequence[Message], str, str], float]] = {
    f.__name__: f for f in (longer, hedges_more, apologizes_more, refuses_more, asks_questions, uses_lists,
                            more_positive, agrees_with_stated_belief)
}


def true_feature(view: PairView, name: str) -> float:
    """The sign of A's minus B's true value of `name` (true_matches_beliefs -> matches_beliefs); 0 on
    a pair built without it (e.g. a general hh-rlhf pair mixed into planted-bias data)."""
    values = view.truth.get(name[len(TRUE_PREFIX):])
    return 0.0 if values is None else _sign(values[0] - values[1])


# --- the cache ---------------------------------------------------------------------------------
class FeatureCache:
    """Values on disk, one JSONL file per (annotator, feature): {"pair": key, "value": v} in the
    pair's canonical order. Failed values (NaN) are not stored, so a rerun asks again. A line cut
    short by a crash is skipped (counted in the log); every write appends whole lines at once."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None
        self._loaded: dict[tuple[str, str], dict[str, float]] = {}

    def _path(self, annotator: str, feature: str) -> Path:
        assert self.root is not None
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", annotator)[:60]
        digest = hashlib.sha256(annotator.encode()).hexdigest()[:10]
        return self.root / f"{slug}-{digest}" / f"{feature}.jsonl"

    def values(self, annotator: str, feature: str) -> dict[str, float]:
        key = (annotator, feature)
        if key not in self._loaded:
            self._loaded[key] = self._read(annotator, feature) if self.root is not None else {}
        return self._loaded[key]

    def _read(self, annotator: str, feature: str) -> dict[str, float]:
        path = self._path(annotator, feature)
        out: dict[str, float] = {}
        if not path.is_file():
            return out
        bad = 0
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                out[str(row["pair"])] = float(row["value"])
            except (ValueError, KeyError, TypeError):
                bad += 1
        if bad:
            log.warning("%s: %d unreadable line(s) skipped (a write cut short?); those values are computed again",
                        path, bad)
        return out

    def add(self, annotator: str, feature: str, new: Mapping[str, float]) -> None:
        store = self.values(annotator, feature)
        fresh = {k: v for k, v in new.items() if np.isfinite(v)}
        store.update(fresh)
        if self.root is None or not fresh:
            return
        path = self._path(annotator, feature)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps({"pair": k, "value": v}) + "\n" for k, v in fresh.items())
        with open(path, "a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


# --- computing a feature matrix ----------------------------------------------------------------
@dataclass
class FeatureMatrix:
    names: list[str]
    values: np.ndarray  # [pairs, features], NaN where a value could not be had
    computed: dict[str, int]  # per feature: values computed in this run (the rest came from the cache)
    failures: dict[str, dict[str, int]]  # per feature: values computed in this run that are unusable (NaN)
    annotator_failures: dict[str, int] = field(default_factory=dict)  # the annotator's count by reason

    def complete_rows(self) -> np.ndarray:
        return np.isfinite(self.values).all(axis=1)


def feature_kind(name: str, lm_features: Sequence[str] = ()) -> str:
    """program | true | lm, or ValueError naming the known features."""
    if name in PROGRAM_FEATURES:
        return "program"
    if name.startswith(TRUE_PREFIX):
        return "true"
    if name in lm_features:
        return "lm"
    raise ValueError(f"unknown feature {name!r}; programmatic: {sorted(PROGRAM_FEATURES)}; true values of synthetic "
                     f"pairs: true_<name> (e.g. true_matches_beliefs, true_truthful); LM: {sorted(lm_features)}")


def compute_features(views: Sequence[PairView], names: Sequence[str], cache: FeatureCache,
                     annotator: Any = None, lm_features: Sequence[str] = ()) -> FeatureMatrix:
    """The [pairs, features] matrix for `names`, reading the cache first and computing (then caching)
    only the missing values: programmatic ones here, LM ones in one `annotator.annotate` call over
    the pairs that miss any of them."""
    if len(set(names)) != len(names):
        raise ValueError(f"features listed twice: {sorted({n for n in names if list(names).count(n) > 1})}")
    kinds = {n: feature_kind(n, lm_features) for n in names}
    if any(k == "lm" for k in kinds.values()) and annotator is None:
        raise ValueError(f"LM features {[n for n, k in kinds.items() if k == 'lm']} need an annotator "
                         "(annotator=smollm2 or annotator=openai), or leave them out (annotator=none)")
    keys = [pair_key(v.prompt, v.a, v.b) for v in views]  # (cache key, whether A is the second of its order)
    values = np.full((len(views), len(names)), np.nan, dtype=np.float64)
    computed = {n: 0 for n in names}
    failures: dict[str, dict[str, int]] = {n: {} for n in names}
    lm_missing: dict[str, list[int]] = {}
    for j, name in enumerate(names):
        kind = kinds[name]
        if kind == "true":
            values[:, j] = [true_feature(v, name) for v in views]
            continue
        owner = PROGRAM_VERSION if kind == "program" else annotator.id
        stored = cache.values(owner, name)
        missing = []
        for i, (key, flipped) in enumerate(keys):
            if key in stored:
                values[i, j] = -stored[key] if flipped else stored[key]
            else:
                missing.append(i)
        if kind == "program":
            fresh = {}
            for i in missing:
                v = views[i]
                values[i, j] = PROGRAM_FEATURES[name](v.prompt, v.a, v.b)
                fresh[keys[i][0]] = -values[i, j] if keys[i][1] else values[i, j]
            cache.add(owner, name, fresh)
            computed[name] = len(missing)
        elif missing:
            lm_missing[name] = missing
    if lm_missing:
        rows = sorted({i for m in lm_missing.values() for i in m})
        asked = list(lm_missing)
        result = annotator.annotate([(views[i].prompt, views[i].a, views[i].b) for i in rows], asked)
        for c, name in enumerate(asked):
            j = list(names).index(name)
            wanted = set(lm_missing[name])
            fresh = {}
            for r, i in enumerate(rows):
                if i in wanted:
                    values[i, j] = result.values[r, c]
                    fresh[keys[i][0]] = -values[i, j] if keys[i][1] else values[i, j]
            cache.add(annotator.id, name, fresh)
            computed[name] = len(wanted)
            unusable = int(np.isnan(values[sorted(wanted), j]).sum())
            failures[name] = {"unusable": unusable} if unusable else {}
        annotator_failures = dict(result.failures)
    return FeatureMatrix(list(names), values, computed, failures, annotator_failures if lm_missing else {})
