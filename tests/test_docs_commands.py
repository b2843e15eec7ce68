"""Every `python train.py ...` / `evaluate.py ...` / `analyze.py ...` command in README.md and docs/results/**/*.md
composes against conf/ as written (Hydra's compose API, `${hydra:...}` pinned as in conftest) and
resolves: an unknown key, an unknown option or a key left unset fails, naming the file and line."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO_ROOT, compose_resolvable
from omegaconf import OmegaConf

ENTRY_POINTS = {"train.py": "train", "evaluate.py": "evaluate", "analyze.py": "analyze"}
PLACEHOLDER = re.compile(r"<[^<>\n]*>")  # <exported PM>, <run>, <standard|nonsyco>: a dummy path
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
CONTROL = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1"}
DUMMY = "/placeholder"


@dataclass
class Command:
    file: Path
    line: int  # 1-based line of the command's first physical line
    entry: str  # train.py | evaluate.py
    overrides: list[str]

    def where(self) -> str:
        path = self.file.relative_to(REPO_ROOT) if self.file.is_relative_to(REPO_ROOT) else self.file
        return f"{path}:{self.line}"


class DocumentOnly(ValueError):
    """A form that documents rather than runs ([optional] brackets, a|b alternatives)."""


def code_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(1-based line of the block's first content line, its lines) for every fenced code block."""
    blocks, current, start, fence = [], None, 0, ""
    for i, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if current is None and stripped.startswith(("```", "~~~")):
            current, start, fence = [], i + 1, stripped[:3]
        elif current is not None and stripped.startswith(fence) and stripped.strip("`~") == "":
            blocks.append((start, current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def logical_lines(start: int, lines: list[str]) -> list[tuple[int, str]]:
    """Backslash continuations joined; (line number of the first physical line, text)."""
    out, buf, first = [], [], start
    for i, line in enumerate(lines, start):
        if not buf:
            first = i
        if line.rstrip().endswith("\\"):
            buf.append(line.rstrip()[:-1])
            continue
        buf.append(line)
        out.append((first, " ".join(buf)))
        buf = []
    if buf:
        out.append((first, " ".join(buf)))
    return out


def words(text: str) -> list[str]:
    """Shell words of a line, comments dropped, control operators as their own words."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=";&|<>")
    lex.whitespace_split = True
    lex.commenters = "#"
    return list(lex)


def substitute(text: str, variables: dict[str, str]) -> str:
    for name, value in variables.items():
        text = re.sub(rf"\$\{{{name}\}}|\${name}\b", lambda _, v=value: v, text)
    return text


def scan(path: Path) -> tuple[list[Command], list[str]]:
    """The train.py / evaluate.py commands of a markdown file's code blocks, and its document-only
    forms ([optional] brackets, a|b alternatives, unsplittable lines) as `file:line: ...` problems.
    Variables assigned on a line of their own (`S=outputs/...`) are substituted in the same block;
    leading environment assignments (`OMP_NUM_THREADS=1 python ...`) are dropped; `<placeholder>`s
    become a dummy path."""
    found, problems = [], []
    for start, lines in code_blocks(path.read_text()):
        variables: dict[str, str] = {}
        for line, text in logical_lines(start, lines):
            text = PLACEHOLDER.sub(DUMMY, substitute(text, variables))
            try:
                ws = words(text)
            except ValueError as e:  # unbalanced quotes
                problems.append(f"{path}:{line}: cannot split the line as the shell would: {e}")
                continue
            if ws and all(ASSIGNMENT.match(w) for w in ws):
                variables.update(w.split("=", 1) for w in ws)
                continue
            while ws and ASSIGNMENT.match(ws[0]):
                ws = ws[1:]
            if len(ws) < 2 or not re.fullmatch(r"(\S*/)?python3?", ws[0]) or ws[1] not in ENTRY_POINTS:
                continue
            args = ws[2:]
            cut = next((i for i, w in enumerate(args) if w in CONTROL), len(args))
            if cut < len(args) and args[cut] in {"|", "||"} or any(w.startswith("[") for w in args[:cut]):
                problems.append(f"{path}:{line}: document-only form in a command ([optional] brackets or a|b "
                                "alternatives): write alternatives as separate lines or comments")
                continue
            found.append(Command(path, line, ws[1], args[:cut]))
    return found, problems


def commands(path: Path) -> list[Command]:
    """scan(path)'s commands; DocumentOnly on its first problem."""
    found, problems = scan(path)
    if problems:
        raise DocumentOnly(problems[0])
    return found


def documents() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]


def all_commands() -> list[Command]:
    return [c for doc in documents() for c in scan(doc)[0]]


def unset_keys(cfg, prefix: str = "") -> list[str]:
    out = []
    for key in cfg if OmegaConf.is_dict(cfg) else range(len(cfg)):
        node = cfg._get_node(key)
        if OmegaConf.is_config(node):
            out += unset_keys(node, f"{prefix}{key}.")
        elif node._is_missing():
            out.append(f"{prefix}{key}")
    return out


def check(command: Command, tmp_path: Path) -> None:
    flags = [w for w in command.overrides if w.startswith("-")]
    assert not flags, f"{command.where()}: Hydra flags {flags} in a documented command"
    try:
        cfg = compose_resolvable(ENTRY_POINTS[command.entry], command.overrides, tmp_path / "run")
        missing = unset_keys(cfg)
        assert not missing, f"unset keys (???) the command does not give: {missing}"
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as e:  # noqa: BLE001 - any composition error is the documented command's failure
        raise AssertionError(f"{command.where()}: `python {command.entry} {' '.join(command.overrides)}` "
                             f"does not compose: {type(e).__name__}: {e}") from e


# the extraction itself -------------------------------------------------------------------------------

def test_extraction(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("""# A doc

```bash
S=outputs/samples.jsonl
OMP_NUM_THREADS=1 python train.py data=policy_beliefs data.policy_samples=$S \\
    pm=nonsyco hydra.run.dir=outputs/<run>   # 20 min
# python train.py commented=out
python evaluate.py method=bon '+bon.pms.a={path: <exported PM>, prefix: truthful}' && echo done
.venv/bin/python train.py task=ppo
make demo
```

Text `python train.py not=a_command` outside a block.
""")
    got = [(c.line, c.entry, c.overrides) for c in commands(doc)]
    assert got == [(5, "train.py", ["data=policy_beliefs", "data.policy_samples=outputs/samples.jsonl", "pm=nonsyco",
                                    "hydra.run.dir=outputs//placeholder"]),
                   (8, "evaluate.py", ["method=bon", "+bon.pms.a={path: /placeholder, prefix: truthful}"]),
                   (9, "train.py", ["task=ppo"])]


@pytest.mark.parametrize("line", ["python train.py task=ppo [ppo.gold_pm=<the other PM>]",
                                  "python train.py task=rlhf pm=standard|nonsyco"])
def test_document_only_forms_fail_with_file_and_line(tmp_path, line):
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n\n```\n{line}\n```\n")
    with pytest.raises(DocumentOnly, match=r"doc.md:4: document-only form"):
        commands(doc)


def test_an_unknown_key_fails_with_file_and_line(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("```\npython train.py pm=standard no_such.key=1\n```\n")
    (command,) = commands(doc)
    with pytest.raises(AssertionError, match=r"doc.md:2: `python train.py pm=standard no_such.key=1` does not compose"):
        check(command, tmp_path)
    doc.write_text("```\npython evaluate.py method=no_such_method\n```\n")
    with pytest.raises(AssertionError, match=r"doc.md:2: .* does not compose"):
        check(commands(doc)[0], tmp_path)


# every documented command ----------------------------------------------------------------------------

def test_documents_have_commands():
    found = {c.file.name if c.file.parent == REPO_ROOT else c.file.parent.name for c in all_commands()}
    assert "README.md" in found and len(found) > 10


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_document_only_forms(doc):
    problems = scan(doc)[1]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("command", all_commands(), ids=lambda c: c.where())
def test_documented_command_composes(command, tmp_path):
    check(command, tmp_path)
