"""Answer matching on text: normalization and whole-word phrase search (string rules shared by the
judges, multiple-choice parsing, mimicry and the policy-written pairs)."""

from __future__ import annotations

import re
import unicodedata

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    text = re.sub(r"[^a-z0-9]+", " ", text)
    return " ".join(_ARTICLES.sub(" ", text).split())


def find(text: str, phrase: str) -> int:
    """Position of `phrase` as whole words in `text` after normalization, -1 if absent."""
    t, p = f" {normalize(text)} ", f" {normalize(phrase)} "
    return t.find(p) if p.strip() else -1
