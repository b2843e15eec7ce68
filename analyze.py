"""What preference data (and trained PMs) reward: `python analyze.py data=<preference data>
[labels=data|pm pm.path=<exported PM>] [annotator=none|smollm2|openai]` fits a Bayesian logistic
regression of which response features predict the preferred response (Sharma et al. 2023, 4.1).

Composes the Hydra config (conf/analyze.yaml) and runs syco.analysis.runner.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from syco.analysis.regression import configure_jax
from syco.analysis.runner import check_features, run
from syco.core.config_checks import check_analyze_config, user_errors
from syco.lifecycle import run_status


@hydra.main(config_path="conf", config_name="analyze", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # NUTS runs its chains in parallel on CPU devices, which jax must be told of before its first computation
    configure_jax(int(cfg.analysis.chains))
    logging.getLogger(__name__).info("analyze: labels=%s run_dir=%s", cfg.labels.name, cfg.run_dir)
    with user_errors(cfg.run_dir):
        check_analyze_config(cfg)  # values that cannot run fail here, naming the key, before any data or model
        check_features(cfg)
        with run_status(cfg.run_dir, "analyze.py", signals=True, resume=""):
            run(cfg)


if __name__ == "__main__":
    main()
