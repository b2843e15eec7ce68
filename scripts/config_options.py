"""The table of every option of every config group in conf/, as markdown (README's options table).

    python scripts/config_options.py            # print the table
    python scripts/config_options.py --write    # rewrite README.md's copy (between the generated markers)

An option is a file conf/<group>/<option>.yaml; its description is the first sentence of the file's
first comment (a `# @package ...` line is skipped), so a new option documents itself where it is written. The
entry-point column says which of train.py (conf/train.yaml) and evaluate.py (conf/evaluate.yaml)
composes the group, and which option each takes by default. conf/local/ (git-ignored, per machine)
is left out.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
README = REPO / "README.md"
ENTRY_POINTS = {"train.py": "train.yaml", "evaluate.py": "evaluate.yaml"}
SKIP_GROUPS = ("local",)
MARKERS = ("<!-- generated:options -->", "<!-- /generated:options -->")


@dataclass
class Option:
    group: str
    name: str
    path: Path
    description: str | None
    default_in: list[str] = field(default_factory=list)  # entry points that take it by default


def description(path: Path) -> str | None:
    """The first sentence of an option file's first comment paragraph (`# @package` directives
    skipped; the paragraph ends at a blank or non-comment line or an indented example line)."""
    lines = []
    for line in path.read_text().splitlines():
        s = line.strip()
        text = s.lstrip("#")
        if s.startswith("#") and text.strip().startswith("@package"):
            continue
        if not s.startswith("#") or not text.strip() or (lines and text.startswith("   ")):
            if lines or (s and not s.startswith("#")):
                break
            continue
        lines.append(text.strip())
    if not lines:
        return None
    joined = " ".join(lines)
    end = re.search(r"\.(?=\s+[A-Z(`\"]|$)", joined)
    sentence = joined[: end.end()] if end else joined
    return sentence.rstrip(":").strip()


def entry_defaults(conf: Path = CONF) -> dict[str, dict[str, str | None]]:
    """{entry point: {group: default option (None: composed only when named)}} from each primary config."""
    out: dict[str, dict[str, str | None]] = {}
    for entry, name in ENTRY_POINTS.items():
        defaults = (yaml.safe_load((conf / name).read_text()) or {}).get("defaults") or []
        groups: dict[str, str | None] = {}
        for item in defaults:
            if isinstance(item, dict):
                for key, value in item.items():
                    group = re.sub(r"^(optional|override)\s+", "", str(key)).strip()
                    groups[group] = None if value is None else str(value)
        out[entry] = groups
    return out


def options(conf: Path = CONF) -> list[Option]:
    defaults = entry_defaults(conf)
    found = []
    for path in sorted(conf.rglob("*.yaml")):
        rel = path.relative_to(conf)
        if len(rel.parts) < 2 or rel.parts[0] in SKIP_GROUPS:
            continue
        group, name = "/".join(rel.parts[:-1]), path.stem
        found.append(Option(group, name, path, description(path),
                            [e for e, groups in defaults.items() if groups.get(group) == name]))
    return found


def used_by(group: str, defaults: dict[str, dict[str, str | None]]) -> str:
    entries = [e for e, groups in defaults.items() if group in groups]
    return ", ".join(f"`{e}`" for e in entries) or "named on the command line"


def markdown(opts: Sequence[Option], conf: Path = CONF) -> str:
    defaults = entry_defaults(conf)
    lines = ["| group | option | description |", "|---|---|---|"]
    last = None
    for o in opts:
        group = f"`{o.group}` ({used_by(o.group, defaults)})" if o.group != last else ""
        last = o.group
        default = f" (default{' of ' + ', '.join(o.default_in) if len(defaults) > 1 and len(o.default_in) == 1 else ''})" \
            if o.default_in else ""
        text = (o.description or "").replace("|", "\\|").replace("<", "\\<")  # markdown: no table break, no tag
        lines.append(f"| {group} | `{o.name}`{default} | {text} |")
    return "\n".join(lines)


def missing_descriptions(opts: Sequence[Option]) -> list[str]:
    return [f"{o.path.relative_to(REPO) if o.path.is_relative_to(REPO) else o.path}: no first comment "
            "describing the option" for o in opts if not o.description]


def _block(text: str) -> re.Match[str] | None:
    return re.search(re.escape(MARKERS[0]) + r"\n(.*?)" + re.escape(MARKERS[1]), text, re.S)


def readme_block(text: str) -> str | None:
    """The table between README's generated markers (None without them)."""
    m = _block(text)
    return m.group(1).rstrip("\n") if m else None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="rewrite the table in README.md between its markers")
    args = ap.parse_args(argv)
    opts = options()
    for problem in missing_descriptions(opts):
        print(problem, file=sys.stderr)
    table = markdown(opts)
    if not args.write:
        print(table)
        return 0
    text = README.read_text()
    m = _block(text)
    if m is None:
        print(f"{README}: no {MARKERS[0]} ... {MARKERS[1]} block", file=sys.stderr)
        return 1
    README.write_text(text[:m.start()] + f"{MARKERS[0]}\n{table}\n{MARKERS[1]}" + text[m.end():])
    return 0


if __name__ == "__main__":
    sys.exit(main())
