"""Train: `python train.py [task=pm] model=... pm=standard|nonsyco|nonsyco_prompted data=... trainer=... logger=...`,
`python train.py task=ppo ppo.pm=<exported PM> ...` or `python train.py task=rlhf pm=standard|nonsyco ...`.

Composes the Hydra config (conf/train.yaml), runs the task's entry point, and returns the task's
`task.objective` metric to a sweeper.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import hydra
from hydra.utils import get_method
from omegaconf import DictConfig

from syco.core.config_checks import check_train_config, user_errors
from syco.models.backbone import check_models_available


def objective_value(result: Mapping[str, Any] | None, objective: str | None) -> float | None:
    """`result["metrics"][objective]["value"]`: what a sweep optimizes (None when no objective is set)."""
    if not objective:
        return None
    metrics = (result or {}).get("metrics") or {}
    if objective not in metrics:
        raise KeyError(f"task.objective={objective!r} is not among the metrics this task reports "
                       f"({sorted(metrics) or 'none'}): set task.objective to one of them, or null")
    return metrics[objective].get("value")


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    # a config value that cannot run or a model that cannot load: one `error:` line, exit 1
    with user_errors(cfg.run_dir):
        check_train_config(cfg)  # values that cannot run fail here, naming the key, before any model or data is loaded
        check_models_available(cfg, "train.py")  # and a model that is not there, before any data, logger or checkpoint
        logging.getLogger(__name__).info("task=%s run_dir=%s", cfg.task.name, cfg.run_dir)
        result = get_method(cfg.task.entry)(cfg)
    return objective_value(result, cfg.task.get("objective"))


if __name__ == "__main__":
    main()
