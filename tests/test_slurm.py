"""SLURM, for real: a one-node cluster (../shared/tools/local-slurm/start.sh, the `slurm_cluster`
fixture) runs tiny PM trainings submitted the ways a user submits them: a Hydra sweep through
`hydra/launcher=slurm` (one job array), a job sent the pre-timeout signal (it requeues itself and
resumes in its own run folder), a cancelled job (the sweep fails, naming it, instead of hanging), and
a 2-process DDP run of `slurm/train.sbatch` under srun. Also the launcher config without a cluster,
and slurm/planted_bias_gpu.sh's control flow with a stand-in interpreter.

The cluster tests are marked integration and run in CI (`make test`); a cluster that does not start
fails them. Jobs run this interpreter (submitit pickles sys.executable; train.sbatch gets PYTHON)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, SHARED_DATA, compose_config
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from syco.lifecycle import read_status

# a PM in ~10 s: 6 optimizer steps, held-out accuracy on 16 pairs
TINY_PM = ["task=pm", "model=tiny", "data=beliefs", "data.max_train_pairs=24", "data.max_val_pairs=16",
           "data.batch_size=4", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]
# the 2-CPU test cluster: 1 GB a job, so that two jobs run side by side
LAUNCHER = ["hydra/launcher=slurm", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]
HOLD = "+callbacks.hold._target_=slurm_helpers.HoldAt"
JOB_TIMEOUT_S = 420  # generous: other sessions may share the cluster's 2 CPUs


def job_env() -> dict[str, str]:
    """The submitting shell's environment, which sbatch hands to the jobs: W&B offline without a key,
    one thread per process, tests/ importable (slurm_helpers), no SLURM variables of an outer job."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "SLURM_"))}
    return {**base, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT / "tests"),
            "SYCO_SHARED_DATA": str(SHARED_DATA)}


def sweep_cmd(sweep_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "train.py", "-m", *LAUNCHER, f"hydra.sweep.dir={sweep_dir}", *TINY_PM, *overrides]


def start_sweep(sweep_dir: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(sweep_cmd(sweep_dir, *overrides), cwd=REPO_ROOT, env=job_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_marker(marker: Path, proc: subprocess.Popen, timeout: float = JOB_TIMEOUT_S) -> str:
    """The SLURM job id the held job wrote into `marker` (it is then inside trainer.fit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker.is_file() and marker.read_text().strip():
            return marker.read_text().strip()
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the sweep ended (exit {proc.returncode}) before its job reached the hold:\n{err[-4000:]}")
        time.sleep(0.5)
    proc.kill()
    pytest.fail(f"no job reached the hold within {timeout} s; squeue:\n{squeue()}")


def squeue(job: str | None = None) -> str:
    args = ["squeue", "-h", "-o", "%i %T %r"] + (["-j", job] if job else [])
    return subprocess.run(args, capture_output=True, text=True).stdout


def pm_result(run_dir: Path) -> tuple[dict, bytes]:
    """What a finished PM run leaves to compare: its metrics (not timings) and the exported adapter."""
    m = json.loads((run_dir / "metrics.json").read_text())
    weights = b"".join(p.read_bytes() for p in sorted((run_dir / "pm").glob("*.safetensors")))
    return {k: m[k] for k in ("metrics", "global_step", "pairs", "export_roundtrip_max_abs_diff")}, weights


# --- the launcher config, no cluster --------------------------------------------------------------------
def launcher(*overrides: str, entry: str = "train") -> dict:
    cfg = compose_config(entry, ["hydra/launcher=slurm", "run_dir=/tmp/run", f"shared_data={SHARED_DATA}",
                                 *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


def test_launcher_composes_without_conf_local_and_follows_the_trainer():
    plain = launcher()
    assert plain["_target_"].endswith("SlurmLauncher")
    assert plain["partition"] is None and plain["account"] is None and plain["gpus_per_node"] is None
    assert plain["tasks_per_node"] == 1 and plain["nodes"] == 1 and plain["setup"] == []
    # Lightning's auto-requeue listens for USR1: SLURM must send that, not submitit's USR2
    assert plain["additional_parameters"] == {"signal": "USR1@120", "requeue": True}
    ddp = launcher("trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2")
    assert ddp["tasks_per_node"] == 4 and ddp["nodes"] == 2
    # evaluate.py has no trainer group: one task on one node
    evaluation = launcher("method=checkpoints", "checkpoints.run=/tmp/ppo", entry="evaluate")
    assert evaluation["tasks_per_node"] == 1 and evaluation["nodes"] == 1


def test_launcher_reads_the_cluster_from_conf_local():
    """conf/local/example.yaml composed as conf/local/default.yaml would be (`local=example`)."""
    got = launcher("local=example", "hydra.launcher.signal_delay_s=300")
    assert (got["partition"], got["gpus_per_node"], got["cpus_per_task"], got["mem_gb"], got["timeout_min"]) == \
        ("gpu", 1, 8, 64, 240)
    assert any("SYCO_CACHE" in line for line in got["setup"]) and any("HF_HOME" in line for line in got["setup"])
    assert got["additional_parameters"]["signal"] == "USR1@300"


# --- slurm/planted_bias_gpu.sh with a stand-in interpreter ------------------------------------------------
STUB = """#!/bin/bash
# stands in for python: records the command, makes the outputs the script checks, fails on request
echo "$*" >> "$STUB_LOG"
for a in "$@"; do case $a in hydra.run.dir=*) d=${a#hydra.run.dir=}
  mkdir -p "$d/pm" "$d/policy/step_1"; touch "$d/pm/syco_pm.json";; esac; done
if [ "${1:-}" = - ]; then cat > /dev/null; echo /tmp/cache; fi
if [ -n "${STUB_FAIL:-}" ] && [[ "$*" == *"$STUB_FAIL"* ]]; then exit 3; fi
exit 0
"""


@pytest.mark.parametrize("fail", [None, "pm=nonsyco", "method=checkpoints"])
def test_planted_bias_script_runs_best_of_n_and_fails_on_a_failed_stage(tmp_path, fail):
    stub = tmp_path / "python"
    stub.write_text(STUB)
    stub.chmod(0o755)
    (tmp_path / "samples.jsonl").touch()
    env = {**os.environ, "PYTHON": str(stub), "STUB_LOG": str(tmp_path / "calls"), "R": str(tmp_path / "r"),
           "PS": str(tmp_path / "samples.jsonl"), "SMALL": "1", "SYCO_REPO": str(REPO_ROOT)}
    env.pop("SLURM_JOB_ID", None)
    if fail:
        env["STUB_FAIL"] = fail
    proc = subprocess.run(["bash", str(REPO_ROOT / "slurm" / "planted_bias_gpu.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    calls = (tmp_path / "calls").read_text().splitlines()
    if fail is None:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        bon = [c for c in calls if "method=bon" in c]
        assert len(bon) == 2 and any("+bon.pms." in c for c in bon)  # the pools, then both PMs scoring them
        assert sum("task=ppo" in c for c in calls) == 2 and sum("method=checkpoints" in c for c in calls) == 2
        assert all(f"={tmp_path}/r/" in c for c in calls if "hydra.run.dir=" in c)  # absolute run folders
    else:
        assert proc.returncode == 1, proc.stdout[-3000:]
        assert re.search(r"FAILED: \S+ \(rc=3", proc.stdout), proc.stdout[-3000:]
        if fail == "pm=nonsyco":
            assert not any("task=ppo" in c for c in calls)  # nothing runs on a missing PM


# --- the real cluster ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep(slurm_cluster, tmp_path_factory) -> tuple[Path, float]:
    """`train.py -m hydra/launcher=slurm pm=standard,nonsyco logger=wandb`: the sweep folder and its wall time."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    start = time.monotonic()
    proc = subprocess.run(sweep_cmd(sweep_dir, "logger=wandb", "pm=standard,nonsyco"), cwd=REPO_ROOT,
                          env=job_env(), capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return sweep_dir, time.monotonic() - start


@pytest.mark.integration
def test_a_hydra_sweep_lands_as_one_job_array_and_every_run_finishes(sweep):
    sweep_dir, wall = sweep
    print(f"2-job sweep through hydra/launcher=slurm: {wall:.1f} s")
    statuses = [read_status(sweep_dir / str(n)) for n in (0, 1)]
    assert [s["status"] for s in statuses] == ["finished", "finished"]
    assert len({s["slurm_array_job_id"] for s in statuses}) == 1  # one array
    assert sorted(s["slurm_array_task_id"] for s in statuses) == ["0", "1"]
    (script,) = (sweep_dir / ".submitit").rglob("*_submission.sh")
    text = script.read_text()
    assert "#SBATCH --array=0-1" in text and "#SBATCH --signal=USR1@120" in text and "#SBATCH --requeue" in text
    (interpreter,) = re.findall(r"(\S+) -u -m submitit\.core\._submit", text)
    assert Path(interpreter).resolve() == Path(sys.executable).resolve()  # the jobs run this venv's interpreter
    variants = set()
    for n in (0, 1):
        run = sweep_dir / str(n)
        metrics = json.loads((run / "metrics.json").read_text())
        variants.add(metrics["variant"])
        assert metrics["global_step"] >= 6 and metrics["metrics"]["heldout/accuracy"]["count"] == 16
        assert (run / "pm" / "syco_pm.json").is_file()
        offline = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(offline) == 1 and offline[0].stat().st_size > 0, list((run / "wandb").iterdir())
    assert variants == {"standard", "nonsyco"}


@pytest.mark.integration
def test_the_pre_timeout_signal_requeues_the_job_which_resumes_to_the_same_pm(sweep, tmp_path):
    """USR1 (what SLURM sends `signal_delay_s` before the time limit) at optimizer step 3 of 6: Lightning
    saves hpc_ckpt_1.ckpt and requeues the job; the requeue's SIGTERM saves last.ckpt; the requeued
    job reruns the same Hydra job in the same run folder, resumes (ckpt_path=last, the default) and
    ends with the metrics and weights of the uninterrupted pm=standard run of the sweep."""
    sweep_dir, _ = sweep
    marker = tmp_path / "held"
    start = time.monotonic()
    proc = start_sweep(tmp_path / "sweep", "logger=csv", "pm=standard", HOLD, "+callbacks.hold.step=3",
                       f"+callbacks.hold.marker={marker}")
    job = wait_for_marker(marker, proc)
    subprocess.run(["scancel", "--signal=USR1", job], check=True, timeout=30)
    # Slurm holds a requeued job back for a while (PENDING, reason BeginTime: ~2 min in 22.05):
    # start it as soon as it is pending again, so the test does not wait that long
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        if "PENDING BeginTime" in squeue(job):
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True, timeout=30)
        time.sleep(1)
    out, err = proc.communicate(timeout=60)
    print(f"signalled, requeued and resumed: {time.monotonic() - start:.1f} s")
    assert proc.returncode == 0, err[-5000:]
    run = tmp_path / "sweep" / "0"
    status = read_status(run)
    assert status["status"] == "finished" and status["slurm_restart_count"] == "1", status
    assert (run / "hpc_ckpt_1.ckpt").is_file()
    log = (run / "train.log").read_text()
    assert "Handling auto-requeue signal" in log and f"resuming from {run}" in log
    assert pm_result(run) == pm_result(sweep_dir / "0")


@pytest.mark.integration
def test_a_cancelled_job_fails_the_sweep_naming_it(slurm_cluster, tmp_path):
    """scancel on a running job: the sweep does not wait forever (accounting tells submitit the job
    ended without a result); it exits non-zero, naming the job and its CANCELLED state."""
    marker = tmp_path / "held"
    proc = start_sweep(tmp_path / "sweep", "logger=csv", HOLD, "+callbacks.hold.step=2",
                       f"+callbacks.hold.marker={marker}", "+callbacks.hold.seconds=600")
    job = wait_for_marker(marker, proc)
    cancelled = time.monotonic()
    subprocess.run(["scancel", job], check=True, timeout=30)
    out, err = proc.communicate(timeout=180)
    print(f"sweep failed {time.monotonic() - cancelled:.1f} s after the cancel")
    assert proc.returncode != 0
    assert "UncompletedJobError" in err and "CANCELLED" in err and job.split("_")[0] in err, err[-3000:]


@pytest.mark.integration
def test_train_sbatch_runs_two_ddp_processes_under_srun(slurm_cluster, tmp_path):
    """slurm/train.sbatch, 2 tasks on one node: trainer=ddp on the CPU (gloo), world size 2 from SLURM."""
    run, out = tmp_path / "run", tmp_path / "job.out"
    env = {**job_env(), "PYTHON": sys.executable, "RUN_DIR": str(run), "SYCO_REPO": str(REPO_ROOT)}
    proc = subprocess.run(["sbatch", "--wait", "--ntasks-per-node=2", "--cpus-per-task=1", "--mem=3G", "--time=10",
                           f"--output={out}", str(REPO_ROOT / "slurm" / "train.sbatch"), *TINY_PM, "logger=csv",
                           "trainer=ddp", "trainer.accelerator=cpu"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    log = out.read_text() if out.is_file() else ""
    assert proc.returncode == 0, log[-5000:]
    assert "MEMBER: 2/2" in log  # Lightning's two ranks
    assert read_status(run)["status"] == "finished"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] > 0 and metrics["metrics"]["heldout/accuracy"]["count"] == 16


def test_signals_agree():
    """The pre-timeout signal of the launcher and of train.sbatch is the one Lightning requeues on."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    assert SLURMEnvironment().requeue_signal == signal.SIGUSR1
    assert "#SBATCH --signal=USR1@" in (REPO_ROOT / "slurm" / "train.sbatch").read_text()
