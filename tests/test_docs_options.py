"""README's table of every option of every config group is the one scripts/config_options.py
generates from conf/: a new option without a description, or a stale table, fails here."""

from __future__ import annotations

import importlib.util
import sys

from conftest import CONF_DIR, REPO_ROOT

_spec = importlib.util.spec_from_file_location("config_options", REPO_ROOT / "scripts" / "config_options.py")
config_options = importlib.util.module_from_spec(_spec)
sys.modules["config_options"] = config_options  # dataclasses look the module up
_spec.loader.exec_module(config_options)


def test_every_option_has_a_description():
    assert config_options.missing_descriptions(config_options.options()) == []


def test_readme_table_is_generated_from_conf():
    block = config_options.readme_block((REPO_ROOT / "README.md").read_text())
    assert block is not None, "README.md has no <!-- generated:options --> block"
    assert block == config_options.markdown(config_options.options()), (
        "README.md's options table is stale: run `python scripts/config_options.py --write`")


def test_every_group_and_option_is_listed():
    opts = config_options.options()
    on_disk = {(p.parent.relative_to(CONF_DIR).as_posix(), p.stem) for p in CONF_DIR.rglob("*.yaml")
               if p.parent != CONF_DIR and p.parent.name != "local"}  # nested groups too (hydra/launcher)
    assert {(o.group, o.name) for o in opts} == on_disk


def test_description_and_defaults(tmp_path):
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "method").mkdir()
    (conf / "train.yaml").write_text("defaults:\n  - model: small\n  - optional local: default\n")
    (conf / "evaluate.yaml").write_text("defaults:\n  - method: eval\n  - model: small\n")
    (conf / "model" / "small.yaml").write_text("# A small | model: <path>\n# here. More detail:\n#   python x.py\nname: s\n")
    (conf / "model" / "big.yaml").write_text("name: b  # no description\n")
    (conf / "method" / "eval.yaml").write_text("# @package _global_\n\n# Plain evaluation, every task:\n#   python evaluate.py\nmethod: {}\n")
    opts = config_options.options(conf)
    assert [(o.group, o.name, o.description, o.default_in) for o in opts] == [
        ("method", "eval", "Plain evaluation, every task", ["evaluate.py"]),
        ("model", "big", None, []),
        ("model", "small", "A small | model: <path> here.", ["train.py", "evaluate.py"]),
    ]
    assert config_options.markdown(opts, conf).splitlines()[2:] == [
        "| `method` (`evaluate.py`) | `eval` (default of evaluate.py) | Plain evaluation, every task |",
        "| `model` (`train.py`, `evaluate.py`) | `big` |  |",
        "|  | `small` (default) | A small \\| model: \\<path> here. |",
    ]
    assert [p.split(":")[1] for p in config_options.missing_descriptions(opts)] == [" no first comment describing the option"]
