"""Shared fixtures: repo paths, the shared data folder, Hydra composition and the tiny model's tokenizer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    # CI always has ../shared/data next to the checkout: a missing folder is a failure, not a skip
    return SHARED_DATA


def compose_config(config_name: str, overrides: list[str] | None = None, **kwargs) -> DictConfig:
    """Compose a config of conf/ outside a Hydra app (the global Hydra state is cleared afterwards)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name=config_name, overrides=list(overrides or []), **kwargs)


def compose_resolvable(config_name: str, overrides: list[str], run_dir: Path) -> DictConfig:
    """`config_name` composed as `python <entry>.py <overrides>` would compose it, with what only a
    running app knows pinned (run_dir, shared_data) and Hydra's runtime config installed, so that
    `${hydra:runtime.choices.<group>}` interpolations resolve. The hydra node itself is left out."""
    pinned = [f"run_dir={run_dir}", f"shared_data={SHARED_DATA}"]
    cfg = compose_config(config_name, [*pinned, *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture
def compose_train(tmp_path: Path) -> Callable[..., DictConfig]:
    """`compose_train("data=beliefs", "pm=nonsyco")`: conf/train.yaml with the `${hydra:...}`
    interpolations (run_dir, shared_data) pinned so that the whole config resolves."""

    def _compose(*overrides: str) -> DictConfig:
        pinned = [f"run_dir={tmp_path / 'run'}", f"shared_data={SHARED_DATA}"]
        return compose_config("train", [*pinned, *overrides])

    return _compose


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    from syco.models.backbone import default_cache_dir

    return default_cache_dir()


@pytest.fixture(scope="session")
def tokenizer(cache_dir: Path):
    """The tiny model's tokenizer (SmolLM2's); never loads model weights."""
    from syco.models.backbone import load_tokenizer

    cfg = OmegaConf.to_container(compose_config("model/tiny"), resolve=True)
    return load_tokenizer(cfg["model"], cache_dir)


LOCAL_SLURM = REPO_ROOT.parent / "shared" / "tools" / "local-slurm" / "start.sh"


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """A real one-node SLURM cluster (partition debug, 2 CPUs, accounting on), started once per session
    by ../shared/tools/local-slurm/start.sh (idempotent: ~1 s when it already runs). A cluster that does
    not start fails the tests that need it, with the script's log tails: CI must not skip them."""
    import os
    import subprocess

    # start.sh sizes the node with `nproc`, which obeys OMP_NUM_THREADS: under OMP_NUM_THREADS=1 it
    # would reconfigure the cluster to one CPU (and a 2-task job would pend forever)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_THREAD_LIMIT")}
    proc = subprocess.run(["bash", str(LOCAL_SLURM)], capture_output=True, text=True, timeout=600, env=env)
    if proc.returncode != 0:
        pytest.fail(f"the local SLURM cluster did not start ({LOCAL_SLURM}, exit {proc.returncode}):\n"
                    f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return "debug"
