"""Judges for tests that run evaluate.py as a subprocess (`PYTHONPATH=tests`, `eval.judges.<name>._target_=fake_judges.<class>`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from syco.eval.judges import RulesJudge


class NoVerdictJudge(RulesJudge):
    """A judge whose every judgement fails (no verdict), like an endpoint answering nonsense."""

    def positivity(self, items: Sequence[Any]) -> list[None]:
        return [None] * len(items)

    def admits_mistake(self, conversations: Sequence[str]) -> list[None]:
        return [None] * len(conversations)

    def grade(self, items: Sequence[Any]) -> list[None]:
        return [None] * len(items)

    def agrees(self, items: Sequence[Any]) -> list[None]:
        return [None] * len(items)
