"""Kill and resume: a run stopped by SIGTERM (or, under SLURM, its pre-timeout signal) anywhere saves
its state, exits 143 and says in status.json that it is incomplete; resumed with `ckpt_path=last` it
ends with the weights and metrics of the uninterrupted run (bit-identical on this CPU). The signals
are real: a callback sends them to this process at a chosen step."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from signals import SignalAt
from test_eval_checkpoints import SMALL as CKPT_SMALL
from test_eval_checkpoints import fake_ppo_run
from test_pm import make_pm
from test_ppo import pm_path, ppo_cfg, tiny_model_cfg  # noqa: F401  (fixtures)

from syco.data.beliefs import load_items, rated_pairs
from syco.data.pairs import BadRows
from syco.data.preference import PreferenceDataModule, PreferenceSplits
from syco.lifecycle import (
    PREEMPTED_EXIT,
    CorruptCheckpointError,
    Preempted,
    SaveOnPreemption,
    read_status,
    resolve_ckpt_path,
    run_status,
)
from syco.pm.module import PreferenceModelModule
from syco.pm.training import run as run_pm_task
from syco.ppo.training import run as run_ppo_task

REPO = Path(__file__).resolve().parents[1]
SLURM_ENV = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
             "SLURM_NODEID": "0", "SLURM_JOB_NAME": "syco-test"}


def pm_fit(run_dir: Path, ckpt_path: str | None = None, stop_at: int | list[tuple[int, int]] | None = None,
           epochs: int = 3, max_steps: int = -1) -> PreferenceModelModule:
    """Train a tiny PM (12 batches an epoch, dropout on, linear schedule with warm-up) as
    `train.py task=pm` does: periodic checkpoints, a save on SIGTERM, status.json."""
    pm = make_pm(dropout=0.1)
    items = load_items("builtin", "builtin")[:16]
    splits = PreferenceSplits(rated_pairs(items, 2.0, 1.0, 1), [], [], BadRows())
    dm = PreferenceDataModule(splits, pm.formatter, pm.max_length, batch_size=4, group_by_length=True, seed=3)
    module = PreferenceModelModule(pm, {"lr": 1e-2, "scheduler": "linear", "warmup_steps": 4})
    callbacks: list[L.Callback] = [
        L.pytorch.callbacks.ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0,
                                            every_n_train_steps=5),
        SaveOnPreemption(run_dir / "checkpoints")]
    if stop_at is not None:
        callbacks.append(SignalAt([(stop_at, signal.SIGTERM)] if isinstance(stop_at, int) else stop_at))
    L.seed_everything(0)
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, max_steps=max_steps, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=run_dir,
                        limit_val_batches=0, callbacks=callbacks)
    with run_status(run_dir, "test fit", signals=True):
        trainer.fit(module, datamodule=dm, ckpt_path=resolve_ckpt_path(ckpt_path, run_dir))
    module.global_step_done = trainer.global_step
    return module


def same_weights(a: PreferenceModelModule, b: PreferenceModelModule) -> None:
    for (name, x), (_, y) in zip(a.pm.named_parameters(), b.pm.named_parameters()):
        assert torch.equal(x, y), name


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> PreferenceModelModule:
    run = tmp_path_factory.mktemp("straight")
    module = pm_fit(run)
    assert module.global_step_done == 36 and read_status(run)["status"] == "finished"
    return module


@pytest.mark.parametrize("stop_at", [3, 12, 17])  # mid epoch 0 (before the first periodic save), epoch end, mid epoch 1
def test_pm_sigterm_anywhere_resumes_to_the_uninterrupted_weights(straight, tmp_path, stop_at):
    with pytest.raises(SystemExit) as stopped:
        pm_fit(tmp_path, stop_at=stop_at)
    assert stopped.value.code == PREEMPTED_EXIT
    status = read_status(tmp_path)
    assert status["status"] == "interrupted" and "ckpt_path=last" in status["resume"]
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == stop_at
    resumed = pm_fit(tmp_path, ckpt_path="last")
    assert resumed.global_step_done == 36 and read_status(tmp_path)["status"] == "finished"
    same_weights(resumed, straight)


def test_pm_resumed_twice_and_from_the_max_steps_end(straight, tmp_path):
    """Stopped twice, then a run that ended at max_steps extended to the full schedule: the epoch it
    stopped in goes on where it stopped (no batch dropped or repeated)."""
    for stop_at in (7, 20):
        with pytest.raises(SystemExit):
            pm_fit(tmp_path, ckpt_path="last", stop_at=stop_at)
    resumed = pm_fit(tmp_path, ckpt_path="last")
    same_weights(resumed, straight)


def test_slurm_pre_timeout_signal_then_sigterm_resumes_from_the_newest_state(straight, tmp_path, monkeypatch):
    """Under SLURM, the pre-timeout SIGUSR1 makes Lightning save hpc_ckpt_1.ckpt and requeue (which
    fails here: no scontrol) and training goes on; the SIGTERM that stops the job saves last.ckpt
    later. The requeued run resumes from the newer of the two and ends as the uninterrupted run."""
    for k, v in SLURM_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PATH", str(tmp_path / "nobin"))
    with pytest.raises(SystemExit) as stopped:
        pm_fit(tmp_path, stop_at=[(6, signal.SIGUSR1), (9, signal.SIGTERM)])
    assert stopped.value.code == PREEMPTED_EXIT
    hpc = torch.load(tmp_path / "hpc_ckpt_1.ckpt", weights_only=True)
    assert hpc["global_step"] == 6 and resolve_ckpt_path("last", tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")
    same_weights(pm_fit(tmp_path, ckpt_path="last"), straight)


def test_slurm_pre_timeout_checkpoint_newer_than_last_is_the_one_resumed(straight, tmp_path, monkeypatch):
    """SIGUSR1 after the last periodic save, then the job is killed outright (no SIGTERM save): the
    hpc checkpoint is the newest state, and resuming from it ends as the uninterrupted run."""
    for k, v in SLURM_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PATH", str(tmp_path / "nobin"))
    with pytest.raises(SystemExit):
        pm_fit(tmp_path, stop_at=[(7, signal.SIGUSR1), (8, signal.SIGTERM)])
    os.utime(tmp_path / "checkpoints" / "last.ckpt", (1, 1))  # the periodic save of step 5: older
    assert resolve_ckpt_path("last", tmp_path) == str(tmp_path / "hpc_ckpt_1.ckpt")
    (tmp_path / "checkpoints" / "last.ckpt").unlink()  # as if the job had been killed outright
    assert resolve_ckpt_path("last", tmp_path) == str(tmp_path / "hpc_ckpt_1.ckpt")
    same_weights(pm_fit(tmp_path, ckpt_path="last"), straight)


def test_preempted_outside_a_fit_exits_143_and_says_interrupted(tmp_path):
    with pytest.raises(Preempted) as stopped:
        with run_status(tmp_path, "generation", signals=True):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000):
                pass
    assert stopped.value.code == 143 and read_status(tmp_path)["status"] == "interrupted"
    with pytest.raises(ValueError):
        with run_status(tmp_path, "x"):
            raise ValueError("boom")
    assert read_status(tmp_path)["status"] == "failed" and "boom" in read_status(tmp_path)["error"]


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "truncate"])
def test_corrupt_checkpoint_is_named_as_corrupt(straight, tmp_path, content):
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    if content == "truncate":
        torch.save({"state_dict": {"w": torch.zeros(1000)}, "global_step": 3}, ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:2000])
    else:
        ckpt.write_bytes(content)
    with pytest.raises(CorruptCheckpointError, match=rf"checkpoint {ckpt} is corrupt.*ckpt_path=null") as err:
        resolve_ckpt_path("last", tmp_path)
    assert "weights_only" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="ckpt_path=.*does not exist"):
        resolve_ckpt_path(str(tmp_path / "missing.ckpt"), tmp_path)


# train.py end to end ----------------------------------------------------------------------------------
TINY_PM = ["task=pm", "model=tiny", "data=beliefs", "data.max_train_pairs=48", "data.max_val_pairs=24",
           "data.batch_size=4", "trainer.max_epochs=2", "checkpoint.every_n_train_steps=5", "logger=csv",
           "trainer.enable_progress_bar=false"]
STOP = "+callbacks.stop._target_=signals.SignalAt"


def train(run_dir: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "train.py", f"hydra.run.dir={run_dir}", *overrides]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "SLURM_"))}
    env = {**base, "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=900)


def final(run_dir: Path) -> tuple[dict, bytes]:
    """What a finished PM run leaves to compare: its metrics (not its timings) and exported weights."""
    m = json.loads((run_dir / "metrics.json").read_text())
    weights = b"".join(p.read_bytes() for p in sorted((run_dir / "pm").glob("*.safetensors")))
    return {k: m[k] for k in ("metrics", "global_step", "pairs", "export_roundtrip_max_abs_diff")}, weights


@pytest.fixture(scope="module")
def straight_train(tmp_path_factory) -> tuple[dict, bytes]:
    run = tmp_path_factory.mktemp("train") / "straight"
    proc = train(run, *TINY_PM)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_status(run)["status"] == "finished"
    return final(run)


def test_train_py_sigterm_exits_143_incomplete_then_resumes_to_the_same_pm(straight_train, tmp_path):
    run = tmp_path / "run"
    proc = train(run, *TINY_PM, STOP, "+callbacks.stop.plan=[[7,15]]")  # step 7 of 24: mid epoch 0
    assert proc.returncode == PREEMPTED_EXIT, proc.stderr[-3000:]
    assert read_status(run)["status"] == "interrupted"
    assert not (run / "metrics.json").exists() and not (run / "pm").exists()
    proc = train(run, *TINY_PM, "ckpt_path=last")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_status(run)["status"] == "finished"
    assert final(run) == straight_train


def test_train_py_under_slurm_measures_its_own_weights_not_the_requeue_checkpoint(straight_train, tmp_path):
    """The pre-timeout signal leaves hpc_ckpt_1.ckpt (step 5) in the run folder; the requeue fails (no
    scontrol here) and training goes on to the end: metrics.json and pm/ are the final weights'."""
    run = tmp_path / "run"
    env = {**SLURM_ENV, "PATH": f"{tmp_path}:/usr/bin:/bin"}
    proc = train(run, *TINY_PM, STOP, f"+callbacks.stop.plan=[[5,{int(signal.SIGUSR1)}]]", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "hpc_ckpt_1.ckpt").is_file()
    assert final(run) == straight_train


# PPO ---------------------------------------------------------------------------------------------------
def ppo_final(run_dir: Path) -> tuple[dict, bytes]:
    m = json.loads((run_dir / "metrics.json").read_text())
    m["last_step"] = {k: v for k, v in m["last_step"].items() if k != "eps" and "time" not in k}  # timings
    adapter = Path(m["final_adapter"])
    weights = b"".join(p.read_bytes() for p in sorted(adapter.glob("*.safetensors")))
    return {k: m[k] for k in ("ppo_steps", "global_step", "last_step", "metrics")}, weights


def test_ppo_sigterm_between_steps_exits_143_and_resumes_to_the_same_policy(tmp_path, pm_path, monkeypatch):  # noqa: F811
    straight = ppo_cfg(tmp_path / "a", pm_path, "ppo.total_steps=3")
    run_ppo_task(straight)
    stopped = ppo_cfg(tmp_path / "b", pm_path, "ppo.total_steps=3", STOP, f"+callbacks.stop.plan=[[2,{int(signal.SIGTERM)}]]")
    with pytest.raises(SystemExit) as exit_:
        run_ppo_task(stopped)
    run_b = Path(stopped.run_dir)
    assert exit_.value.code == PREEMPTED_EXIT and read_status(run_b)["status"] == "interrupted"
    assert not (run_b / "metrics.json").exists()
    assert torch.load(run_b / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    run_ppo_task(ppo_cfg(tmp_path / "b", pm_path, "ppo.total_steps=3", "ckpt_path=last"))
    assert read_status(run_b)["status"] == "finished"
    assert ppo_final(run_b) == ppo_final(Path(straight.run_dir))
    # under SLURM: the pre-timeout signal after PPO step 1 (hpc_ckpt_1.ckpt), SIGTERM after step 2
    for k, v in SLURM_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PATH", str(fake_scontrol(tmp_path / "bin")))
    plan = f"+callbacks.stop.plan=[[2,{int(signal.SIGUSR1)}],[4,{int(signal.SIGTERM)}]]"
    with pytest.raises(SystemExit):
        run_ppo_task(ppo_cfg(tmp_path / "c", pm_path, "ppo.total_steps=3", STOP, plan))
    run_c = Path(tmp_path / "c" / "run")
    assert (run_c / "hpc_ckpt_1.ckpt").is_file() and (tmp_path / "bin" / "calls").read_text().split() == ["requeue", "4242"]
    run_ppo_task(ppo_cfg(tmp_path / "c", pm_path, "ppo.total_steps=3", "ckpt_path=last"))
    assert ppo_final(run_c) == ppo_final(Path(straight.run_dir))


def test_a_pm_run_that_took_no_step_exports_nothing(compose_train, tmp_path):
    """Values that pass the start-up checks but train nothing (here no batch of the epoch is used)
    fail the run: no pm/ folder that would read as a trained PM, and status.json says failed."""
    cfg = compose_train(*TINY_PM[:6], "logger=none", "+trainer.limit_train_batches=0")
    with pytest.raises(RuntimeError, match="took no optimizer step"):
        run_pm_task(cfg)
    run = Path(cfg.run_dir)
    assert not (run / "pm").exists() and not (run / "metrics.json").exists()
    assert read_status(run)["status"] == "failed"


# evaluate.py: eval and best-of-n -----------------------------------------------------------------------
EVAL_SMALL = ["policy=tiny", "eval.generation.max_new_tokens=6", "eval.generation.max_new_tokens_texts=6",
              "eval.generation.batch_size=2", "eval.feedback.sources.builtin.arguments=2",
              "eval.feedback.sources.builtin.poems=1", "eval.are_you_sure.sources.builtin_mc.limit=2",
              "eval.are_you_sure.sources.builtin_free.limit=2", "eval.answer.sources.builtin.limit=2",
              "eval.mimicry.sources.builtin.limit=2", "eval.misconceptions.sources.builtin.limit=2", "logger=none"]


def evaluate_killed(run_dir: Path, *overrides: str, kill_after: int = 0,
                    env: dict | None = None) -> tuple[subprocess.CompletedProcess, int]:
    """evaluate.py through tests/kill_after.py: (the process, samples it generated and stored)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "SLURM_"))}
    env = {**base, "OMP_NUM_THREADS": "1", "KILL_AFTER_WRITES": str(kill_after), "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "kill_after.py"), f"hydra.run.dir={run_dir}", *overrides],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
    written = [int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("SAMPLES_WRITTEN")]
    return proc, written[-1] if written else -1


def samples_of(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    return {(r["key"], r["index"]): r["responses"] for r in rows}


def fake_scontrol(folder: Path) -> Path:
    """An `scontrol` that records its arguments (the requeue a SLURM job asks for) and succeeds."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "scontrol"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {folder / 'calls'}\n")
    script.chmod(0o755)
    return folder


@pytest.mark.parametrize("method", ["eval", "bon", "eval-slurm"])
def test_evaluate_sigterm_exits_143_and_the_rerun_draws_only_what_was_missing(tmp_path, method):
    """SIGTERM, or under SLURM the pre-timeout SIGUSR1 (which also requeues the job), stops evaluate.py
    at a sample boundary; the rerun draws only the missing samples and ends as the uninterrupted run."""
    env = None
    if method == "eval-slurm":
        bin_ = fake_scontrol(tmp_path / "bin")
        env = {**SLURM_ENV, "KILL_SIGNAL": "SIGUSR1", "PATH": f"{bin_}:{os.environ['PATH']}"}
    overrides = list(EVAL_SMALL)
    if method == "bon":
        overrides += ["method=bon", "bon.k=4", "bon.bootstrap_rounds=50", "eval.probe.limit=2",
                      "eval.probe.max_new_tokens=6"]
    straight, total = evaluate_killed(tmp_path / "straight", *overrides)
    assert straight.returncode == 0, straight.stderr[-3000:]
    result = "results.json"
    stopped, first = evaluate_killed(tmp_path / "run", *overrides, kill_after=3, env=env)
    run = tmp_path / "run"
    assert stopped.returncode == PREEMPTED_EXIT, stopped.stderr[-3000:]
    assert read_status(run)["status"] == "interrupted" and not (run / result).exists()
    if env:
        assert (tmp_path / "bin" / "calls").read_text().split() == ["requeue", "4242"]
        assert "job 4242 requeued" in read_status(run)["reason"]
    assert 0 < first < total
    again, second = evaluate_killed(run, *overrides)
    assert again.returncode == 0, again.stderr[-3000:]
    assert first + second == total  # no stored sample drawn again
    assert samples_of(run) == samples_of(tmp_path / "straight")
    a, b = (json.loads((d / result).read_text()) for d in (tmp_path / "straight", run))
    assert a["results"] == b["results"]
    assert read_status(run)["status"] == "finished"


def test_evaluate_checkpoints_sigterm_mid_step_resumes_to_the_same_curves(tmp_path):
    """method=checkpoints stopped while evaluating a step: the rerun keeps the finished samples and
    ends with the samples and checkpoints.json of the uninterrupted run."""
    runs = {"straight": fake_ppo_run(tmp_path / "straight")}
    runs["stopped"] = tmp_path / "stopped" / "ppo_run"
    shutil.copytree(runs["straight"], runs["stopped"])
    over = [*CKPT_SMALL, "policy=tiny", "logger=none"]
    straight, total = evaluate_killed(tmp_path / "h1", *over, f"checkpoints.run={runs['straight']}")
    assert straight.returncode == 0, straight.stderr[-3000:]
    stopped, first = evaluate_killed(tmp_path / "h2", *over, f"checkpoints.run={runs['stopped']}", kill_after=3)
    assert stopped.returncode == PREEMPTED_EXIT, stopped.stderr[-3000:]
    assert read_status(tmp_path / "h2")["status"] == "interrupted"
    out = {k: r / "evaluations" / "planted_bias" for k, r in runs.items()}
    assert not (out["stopped"] / "checkpoints.json").exists() and 0 < first < total
    again, second = evaluate_killed(tmp_path / "h2", *over, f"checkpoints.run={runs['stopped']}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert first + second == total
    for step in ("step_0", "step_2"):
        assert samples_of(out["stopped"] / step) == samples_of(out["straight"] / step)
    a, b = (json.loads((o / "checkpoints.json").read_text()) for o in (out["straight"], out["stopped"]))
    assert a["results"] == b["results"]
