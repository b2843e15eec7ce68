"""docs/bad-input.md: at least 30 rows, each naming a test that exists (a test file and a test
function in it), so that every documented behaviour on bad input is held by a test."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "bad-input.md"


def rows() -> list[tuple[str, str, str]]:
    out = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("input", "---") and not set(cells[0]) <= {"-"}:
            out.append((cells[0], cells[1], cells[2]))
    return out


def test_every_row_names_an_existing_test_and_there_are_at_least_30():
    table = rows()
    assert len(table) >= 30, len(table)
    missing = []
    for what, does, test in table:
        assert what and does, test
        m = re.fullmatch(r"(tests/[\w/]+\.py)::(test_\w+)", test)
        assert m, f"row {what!r}: expected tests/<file>.py::<test>, got {test!r}"
        path = ROOT / m.group(1)
        names = {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)} \
            if path.is_file() else set()
        if m.group(2) not in names:
            missing.append(test)
    assert not missing, missing
