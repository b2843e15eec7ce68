"""Two CPU processes under `trainer=ddp trainer.accelerator=cpu trainer.devices=2` (gloo, fp32):
PM training gives the 1-process run's metrics and exported reward statistics at the same global
batch; PPO runs, keeps the replicas equal and whitens and normalizes over the global batch. One
exported PM / adapter, one metrics.json and one W&B run per job, whatever the number of processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from syco.ppo.module import _seed

REPO = Path(__file__).resolve().parents[1]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
# dropout off: each rank draws its own dropout masks, which no single process can reproduce
PM = ["task=pm", "model=tiny", "model.lora.dropout=0", "data=beliefs", "data.max_train_pairs=48",
      "data.max_val_pairs=24", "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "logger=wandb"]
TOLERANCE = 1e-6  # float32 sums added in another order (all-reduce, packing) move the 7th digit
PPO_TOLERANCE = 1e-5


def train(run_dir: Path, *overrides: str, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "SLURM_"))}
    env.update(OMP_NUM_THREADS="1", HOME=str(home), WANDB_MODE="offline", PYTHONPATH=str(REPO / "tests"))
    proc = subprocess.run([sys.executable, "train.py", f"hydra.run.dir={run_dir}", *overrides], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


@pytest.fixture(scope="module")
def pm_runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp_pm")
    runs = {"one": root / "one", "two": root / "two"}
    train(runs["one"], *PM, "data.batch_size=4", home=root)
    train(runs["two"], *PM, "data.batch_size=2", *DDP, home=root)  # 2 x 2 = the same global batch
    return runs


def test_ddp_pm_metrics_and_reward_statistics_equal_one_process(pm_runs):
    one, two = (json.loads((pm_runs[k] / "metrics.json").read_text()) for k in ("one", "two"))
    assert one["global_step"] == two["global_step"] == 24
    assert set(one["metrics"]) == set(two["metrics"])
    for name, m in one["metrics"].items():
        other = two["metrics"][name]
        assert other["count"] == m["count"], name  # no held-out pair counted twice, none lost
        assert other["value"] == pytest.approx(m["value"], abs=TOLERANCE), name
    assert one["metrics"]["heldout/accuracy"]["count"] == 24
    assert one["metrics"]["heldout/reward_mean"]["count"] == 48
    exported = [json.loads((pm_runs[k] / "pm" / "syco_pm.json").read_text()) for k in ("one", "two")]
    for key in ("reward_mean", "reward_std"):
        assert exported[1][key] == pytest.approx(exported[0][key], abs=TOLERANCE), key


def test_ddp_pm_writes_one_export_and_one_wandb_run(pm_runs):
    run = pm_runs["two"]
    assert len(offline_runs(run)) == 1
    assert (run / "pm" / "syco_pm.json").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert json.loads((run / "status.json").read_text())["status"] == "finished"


PPO = ["task=ppo", "model=tiny", "ppo.ppo_epochs=2", "ppo.max_new_tokens=4", "ppo.eval_prompts.limit=2",
       "ppo.eval.every=1", "ppo.checkpoint_every=1", "ppo.optimizer.lr=1e-3", "ppo.total_steps=2",
       "trainer.enable_progress_bar=false", "logger=wandb", "+callbacks.digest._target_=ddp_probe.ParamDigest"]


def adapter_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def test_ddp_ppo_two_steps_equal_one_process(pm_runs, tmp_path):
    """2 processes x (batch 2, mini-batch 1) against 1 process x (batch 4, mini-batch 2) generating in
    calls of 2 rows: the same prompts, samples, global shuffle and token-mean losses, so the same
    two PPO steps. Tolerance PPO_TOLERANCE: rows padded to other widths (generate, PM and forward
    batches) move the float32 sums in the 7th digit, and two Adam steps carry that over."""
    pm = pm_runs["one"] / "pm"
    one, two = tmp_path / "one", tmp_path / "two"
    train(one, *PPO, f"ppo.pm={pm}", "ppo.batch_size=4", "ppo.mini_batch_size=2", "ppo.generation_batch_size=2",
          f"+callbacks.digest.out={tmp_path / 'one_digest'}", home=tmp_path)
    train(two, *PPO, f"ppo.pm={pm}", "ppo.batch_size=2", "ppo.mini_batch_size=1", *DDP,
          f"+callbacks.digest.out={tmp_path / 'two_digest'}", home=tmp_path)
    ranks = [json.loads((tmp_path / f"two_digest.rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # every rank ends with the same policy and value adapters
    single = json.loads((tmp_path / "one_digest.rank0.json").read_text())
    assert ranks[0]["count"] == single["count"]
    assert ranks[0]["sum"] == pytest.approx(single["sum"], rel=PPO_TOLERANCE, abs=PPO_TOLERANCE)
    assert ranks[0]["squares"] == pytest.approx(single["squares"], rel=PPO_TOLERANCE, abs=PPO_TOLERANCE)

    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert m1["ppo_steps"] == m2["ppo_steps"] == 2 and m1["global_step"] == m2["global_step"] == 8
    # the shuffles put both rows of some mini-batch on one rank: the other syncs a zero-weight backward
    layouts = [torch.randperm(4, generator=g).view(-1, 2) // 2
               for g in (torch.Generator().manual_seed(_seed(0, s, 7)) for s in (1, 2)) for _ in range(2)]
    assert any(int(rows.unique().numel()) == 1 for layout in layouts for rows in layout)
    timing = {"eps"}
    assert set(m1["last_step"]) == set(m2["last_step"])
    for name, value in m1["last_step"].items():
        if name not in timing:
            assert m2["last_step"][name] == pytest.approx(value, rel=PPO_TOLERANCE, abs=PPO_TOLERANCE), name
    assert m1["last_step"]["episode"] == m2["last_step"]["episode"] == 8  # 2 steps x a global batch of 4
    e1, e2 = (json.loads((d / "ppo_eval.json").read_text()) for d in (one, two))
    assert [r["step"] for r in e1] == [r["step"] for r in e2] == [0, 1, 2]
    assert e1[0]["eval/kl"] == e2[0]["eval/kl"] == 0.0
    for r1, r2 in zip(e1, e2):
        for name in ("eval/kl", "eval/score", "eval/response_length", "eval/eos_rate"):
            assert r2[name] == pytest.approx(r1[name], rel=PPO_TOLERANCE, abs=PPO_TOLERANCE), (r1["step"], name)
    for step in ("step_1", "step_2"):
        a, b = adapter_tensors(one / "policy" / step), adapter_tensors(two / "policy" / step)
        assert set(a) == set(b)
        worst = max(float((a[k] - b[k]).abs().max()) for k in a)
        assert worst <= PPO_TOLERANCE, (step, worst)
        assert any(not torch.equal(a[k], adapter_tensors(one / "policy" / "step_0")[k]) for k in a)  # it trained
    assert sorted(p.name for p in (two / "policy").iterdir()) == ["step_0", "step_1", "step_2"]
    assert len(offline_runs(two)) == 1
