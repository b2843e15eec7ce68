"""Evaluate a policy: `python evaluate.py policy=... eval=...` (SycophancyEval tasks + misconceptions),
or best-of-n against preference models: `python evaluate.py method=bon bon.k=32 +bon.pms.standard=...`,
or every saved checkpoint of a PPO run: `python evaluate.py method=checkpoints checkpoints.run=<run> eval=...`.

Composes the Hydra config (conf/evaluate.yaml), then runs the method's entry point (`method.entry`).
"""

from __future__ import annotations

import logging

import hydra
from hydra.utils import get_method
from omegaconf import DictConfig

from syco.core.config_checks import check_eval_config, user_errors
from syco.lifecycle import run_status
from syco.models.backbone import check_models_available


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # a config value that cannot run or a model that cannot load: one `error:` line, exit 1
    with user_errors(cfg.run_dir):
        check_eval_config(cfg)  # values that cannot run fail here, naming the key, before any model or data is loaded
        check_models_available(cfg, "evaluate.py")  # and a model that is not there, before any data or logger
        logging.getLogger(__name__).info("method=%s run_dir=%s", cfg.method.name, cfg.run_dir)
        # status.json says how far it got; SIGTERM (or SLURM's pre-timeout signal, which also requeues the
        # job) stops it at a sample boundary with exit status 143
        with run_status(cfg.run_dir, f"evaluate.py method={cfg.method.name}", signals=True, resume="",
                        slurm_requeue=True):
            get_method(cfg.method.entry)(cfg)


if __name__ == "__main__":
    main()
