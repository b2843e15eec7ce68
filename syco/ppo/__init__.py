"""PPO/RLHF with LoRA under Lightning: one base model holding the policy, value and reference
(and PM) adapters; rollouts, KL-penalized rewards, clipped updates; `train.py task=ppo|rlhf`."""

from syco.ppo.config import PPOConfig
from syco.ppo.model import ActorCritic
from syco.ppo.module import PPOModule

__all__ = ["ActorCritic", "PPOConfig", "PPOModule"]
