"""Evaluate a policy: `python evaluate.py policy=... eval=...` (SycophancyEval tasks + misconceptions).

Composes the Hydra config (conf/evaluate.yaml), then runs syco.eval.runner.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from syco.eval.runner import run


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
