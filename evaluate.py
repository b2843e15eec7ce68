"""Evaluate a policy: `python evaluate.py policy=... eval=...` (SycophancyEval tasks + misconceptions),
or best-of-n against preference models: `python evaluate.py method=bon bon.k=32 +bon.pms.standard=...`,
or every saved checkpoint of a PPO run: `python evaluate.py method=checkpoints checkpoints.run=<run> eval=...`.

Composes the Hydra config (conf/evaluate.yaml), then runs syco.eval.runner.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from syco.eval.runner import run


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if cfg.method == "bon":
        from syco.bon.runner import run_bon

        run_bon(cfg)
    elif cfg.method == "checkpoints":
        from syco.checkpoints.runner import run_checkpoints

        run_checkpoints(cfg)
    elif cfg.method == "eval":
        run(cfg)
    else:
        raise ValueError(f"method={cfg.method!r}: choose eval, bon or checkpoints")


if __name__ == "__main__":
    main()
