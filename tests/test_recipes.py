"""scripts/: the multi-stage recipes. Their dry-run commands compose against conf/ (each one as printed,
with Hydra's compose API), and the planted-bias pipeline runs end to end on the tiny model, resumes
(skips what is done) and stops at the first failed stage."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from test_config import resolved
from test_policy_pairs import write_samples

RECIPES = sorted((REPO_ROOT / "scripts").glob("planted_bias*.py"))
TINY = [
    "train:model=tiny", "evaluate:policy=tiny",
    "pm:data.max_train_pairs=24", "pm:data.max_val_pairs=16", "pm:data.probe.templates=1",
    "pm:data.policy_stance_pairs=8",
    "bon:bon.k=2", "bon:bon.bootstrap_rounds=10", "bon:eval.answer.sources.builtin.limit=2",
    "bon:eval.generation.max_new_tokens=4",
    "ppo:ppo.total_steps=1", "ppo:ppo.batch_size=4", "ppo:ppo.mini_batch_size=2", "ppo:ppo.ppo_epochs=1",
    "ppo:ppo.max_new_tokens=4", "ppo:ppo.eval.every=1", "ppo:ppo.eval_prompts.limit=2",
    "ppo:ppo.prompts.min_plain_accuracy=0.3",  # the fixture's plain answers: 1 right in 3
    "checkpoints:eval.answer.sources.builtin.limit=2", "checkpoints:eval.generation.max_new_tokens=4",
    "checkpoints:eval.generation.samples_per_prompt=1", "checkpoints:checkpoints.bootstrap_rounds=10",
]


def recipe(script: Path, root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), str(root), *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=900)


def commands(output: str) -> list[list[str]]:
    return [shlex.split(line) for line in output.splitlines() if line and not line.startswith("#")]


@pytest.mark.parametrize("script", RECIPES, ids=lambda p: p.stem)
def test_dry_run_commands_compose(script, tmp_path):
    proc = recipe(script, tmp_path / "root", "--dry-run", "--set", "ppo:ppo.total_steps=75")
    assert proc.returncode == 0, proc.stderr
    cmds = commands(proc.stdout)
    assert cmds and not (tmp_path / "root").exists()  # a dry run writes nothing
    for argv in cmds:
        entry, overrides = Path(argv[1]).stem, argv[2:]
        assert entry in ("train", "evaluate") and (REPO_ROOT / argv[1]).is_file()
        run_dirs = [o for o in overrides if o.startswith("hydra.run.dir=")]
        assert len(run_dirs) == 1 and run_dirs[0].startswith(f"hydra.run.dir={tmp_path / 'root'}")
        cfg = resolved(entry, [o for o in overrides if not o.startswith("hydra.")], tmp_path)
        if cfg.get("task", {}).get("name") == "ppo":
            assert cfg["ppo"]["total_steps"] == 75 and cfg["ppo"]["pm"].startswith(str(tmp_path / "root"))


def test_planted_bias_known_runs_resumes_and_stops_on_failure(tmp_path):
    script = REPO_ROOT / "scripts" / "planted_bias_known.py"
    samples = write_samples(tmp_path / "samples.jsonl", facts=30, misconceptions=6)
    root = tmp_path / "root"
    sets = [a for s in TINY for a in ("--set", s)]
    proc = recipe(script, root, "--samples", str(samples), *sets)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    for done in ("pms/standard/pm/syco_pm.json", "pms/nonsyco/metrics.json", "bon/results.json",
                 "ppo/standard/metrics.json", "ppo/nonsyco/policy/step_1/adapter_config.json",
                 "ppo/standard/evaluations/planted_bias/checkpoints.json",
                 "ppo/nonsyco/evaluations/planted_bias/checkpoints.json"):
        assert (root / done).is_file(), done
    again = recipe(script, root, "--samples", str(samples), *sets)
    assert again.returncode == 0 and again.stdout.count(": done (") == 7  # nothing runs twice
    bad = recipe(script, root, "--samples", str(samples), *sets, "--redo", "bon", "--set", "bon:bon.k=0")
    assert bad.returncode != 0 and "# bon failed" in bad.stdout and "# ppo_standard" not in bad.stdout
