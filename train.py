"""Train: `python train.py [task=pm] model=... pm=standard|nonsyco|nonsyco_prompted data=... trainer=... logger=...`,
`python train.py task=ppo pm.path=<exported PM> ...` or `python train.py task=rlhf pm=standard|nonsyco ...`.

Composes the Hydra config (conf/train.yaml), then runs the task's entry point.
"""

from __future__ import annotations

import logging

import hydra
from hydra.utils import get_method
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    logging.getLogger(__name__).info("task=%s run_dir=%s", cfg.task.name, cfg.run_dir)
    result = get_method(cfg.task.entry)(cfg)
    # a sweep's objective for Hydra optimizers: held-out accuracy when the task reports it
    metric = (result or {}).get("metrics", {}).get("heldout/accuracy", {})
    return metric.get("value")


if __name__ == "__main__":
    main()
