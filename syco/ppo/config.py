"""PPO hyperparameters (the `ppo` group, conf/ppo/default.yaml), checked once at start."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from syco.core.kl import ESTIMATORS, AdaptiveKLController, FixedKLController

NORMALIZE = ("none", "pm", "running")
BASELINES = ("none", "prompt")
CRITICS = ("separate", "shared")


@dataclass
class KLConfig:
    estimator: str = "k1"  # k1 | k3: the per-token estimate used in the penalty, and logged
    coef: float = 0.05
    adaptive: bool = False  # Ziegler et al.: move coef so that the measured KL tracks `target`
    target: float = 6.0  # nats per response (sum over tokens)
    horizon: int = 10000  # episodes

    def controller(self) -> FixedKLController | AdaptiveKLController:
        if self.adaptive:
            return AdaptiveKLController(self.coef, self.target, self.horizon)
        return FixedKLController(self.coef)


@dataclass
class RewardConfig:
    normalize: str = "pm"  # none | pm (the export's held-out mean/std) | running (this run's running mean/std)
    missing_eos_penalty: float | None = None  # subtracted from responses that hit max_new_tokens
    clip: float | None = None  # scores clipped to [-clip, clip] (after normalization and penalty)
    batch_size: int = 16  # prompt groups per PM forward
    padding_side: str = "right"  # how the PM pads its rows (the reward is read at the last real token either way)
    # prompt: subtract the mean shaped score of the other samples of the same prompt (needs
    # samples_per_prompt >= 2), before the KL penalty and GAE
    baseline: str = "none"


@dataclass
class OptimizerConfig:
    lr: float = 3.0e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1.0e-8
    scheduler: str = "linear"  # any transformers.get_scheduler name; decays over all optimizer steps
    warmup_steps: int = 0


@dataclass
class EvalConfig:
    every: int = 10  # PPO steps between adapter saves + evaluations on the fixed eval prompts
    at_start: bool = True  # also at step 0 (the starting policy), saved as policy/step_0
    temperature: float | None = None  # None: ppo.temperature (KL is then the one the penalty uses)
    seed: int = 1234  # fixed sampling seed: every evaluation draws with the same random stream
    max_new_tokens: int | None = None  # None: ppo.max_new_tokens
    batch_size: int = 16


@dataclass
class PPOConfig:
    total_steps: int = 50  # PPO steps (rollout batches)
    batch_size: int = 8  # rows (sampled responses) per rollout batch, per device
    samples_per_prompt: int = 1  # batch_size / samples_per_prompt distinct prompts, each sampled this often
    mini_batch_size: int = 4  # rows per optimizer step
    gradient_accumulation_steps: int = 1  # micro-batches per mini-batch
    forward_batch_size: int | None = None  # rows per no-grad forward in a rollout (None: mini_batch_size)
    # rows per generate call, each seeded by its place in the global batch (None: batch_size, one call).
    # One process with batch_size = n x b and this = b draws what n processes with batch_size = b draw.
    generation_batch_size: int | None = None
    ppo_epochs: int = 4
    max_new_tokens: int = 32
    temperature: float = 1.0  # sampling and every log-prob use logits / temperature (top_k=0, top_p=1)
    gamma: float = 1.0
    lam: float = 0.95
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    vf_coef: float = 0.1
    max_grad_norm: float | None = 1.0
    whiten_advantages: bool = True
    kl: KLConfig = field(default_factory=KLConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    init_adapter: str | None = None  # start from a trained policy adapter; reference = frozen copy of it
    pm: str | None = None  # the exported PM optimized against (task=ppo: required; task=rlhf: the PM it trained)
    gold_pm: str | None = None  # the other PM, scored beside the optimized one on the eval prompts
    pm_on_policy_base: str = "auto"  # auto | true | false: load PMs as adapters of the policy's base
    trust_remote_code: bool = False  # a PM loaded as a model of its own may run its base model's code
    lora: dict[str, Any] = field(default_factory=dict)  # overrides of model.lora for policy and value
    value_head_std: float | None = None  # None: 1 / sqrt(hidden + 1)
    # separate: the value function is a LoRA adapter of its own (+ head); shared: a head on the
    # policy's last hidden state (one forward gives log-probs and values; the value loss trains the
    # policy's adapter too, weighted by vf_coef)
    critic: str = "separate"
    share_prompts: bool = True  # rows sampled from one prompt run it once per forward (same result, less work)
    checkpoint_every: int = 10  # PPO steps between Lightning checkpoints (last.ckpt)

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> PPOConfig:
        cfg = dict(cfg)
        nested = {"kl": KLConfig, "reward": RewardConfig, "optimizer": OptimizerConfig, "eval": EvalConfig}
        known = {f.name for f in fields(cls)}
        # prompt sources are instantiated by the caller, not hyperparameters
        unknown = set(cfg) - known - {"prompts", "eval_prompts"}
        if unknown:
            raise ValueError(f"unknown ppo options {sorted(unknown)}; known: {sorted(known)}")
        kwargs: dict[str, Any] = {}
        for name in known & set(cfg):
            value = cfg[name]
            if name in nested:
                sub = nested[name]
                bad = set(value or {}) - {f.name for f in fields(sub)}
                if bad:
                    raise ValueError(f"unknown ppo.{name} options {sorted(bad)}")
                value = sub(**dict(value or {}))
            kwargs[name] = value
        out = cls(**kwargs)
        out.optimizer.betas = tuple(out.optimizer.betas)  # type: ignore[assignment]
        out.check()
        return out

    @property
    def optimizer_steps_per_rollout(self) -> int:
        return self.ppo_epochs * (self.batch_size // self.mini_batch_size)

    @property
    def micro_batch_size(self) -> int:
        return self.mini_batch_size // self.gradient_accumulation_steps

    def check(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"ppo: {msg}")

        need(self.total_steps >= 1 and self.ppo_epochs >= 1, "total_steps and ppo_epochs must be >= 1")
        need(self.batch_size >= 2, "batch_size must be >= 2 (advantages are whitened over the batch)")
        need(self.mini_batch_size >= 1 and self.batch_size % self.mini_batch_size == 0,
             f"mini_batch_size={self.mini_batch_size} must divide batch_size={self.batch_size}")
        need(self.gradient_accumulation_steps >= 1 and self.mini_batch_size % self.gradient_accumulation_steps == 0,
             f"gradient_accumulation_steps={self.gradient_accumulation_steps} must divide "
             f"mini_batch_size={self.mini_batch_size}")
        need(self.generation_batch_size is None or (self.generation_batch_size >= 1
                                                    and self.batch_size % self.generation_batch_size == 0),
             f"generation_batch_size={self.generation_batch_size} must divide batch_size={self.batch_size}")
        need(self.temperature > 0, "temperature must be > 0 (sampling and log-probs both use logits / temperature)")
        need(self.max_new_tokens >= 1, "max_new_tokens must be >= 1")
        need(self.kl.estimator in ESTIMATORS, f"kl.estimator must be one of {ESTIMATORS}")
        need(self.reward.normalize in NORMALIZE, f"reward.normalize must be one of {NORMALIZE}")
        need(self.reward.padding_side in ("left", "right"), "reward.padding_side must be left or right")
        need(self.samples_per_prompt >= 1 and self.batch_size % self.samples_per_prompt == 0,
             f"samples_per_prompt={self.samples_per_prompt} must divide batch_size={self.batch_size}")
        need(self.critic in CRITICS, f"critic must be one of {CRITICS}, got {self.critic!r}")
        need(self.reward.baseline in BASELINES, f"reward.baseline must be one of {BASELINES}")
        need(self.reward.baseline == "none" or self.samples_per_prompt >= 2,
             "reward.baseline=prompt needs samples_per_prompt >= 2 (the other samples of a prompt are its baseline)")
        need(self.eval.every >= 1 and self.checkpoint_every >= 1, "eval.every and checkpoint_every must be >= 1")
        need(str(self.pm_on_policy_base).lower() in ("auto", "true", "false"), "pm_on_policy_base: auto|true|false")
        for name in ("lam", "gamma"):
            need(0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1]")
        for name in ("clip_range", "clip_range_value", "vf_coef"):
            need(math.isfinite(getattr(self, name)) and getattr(self, name) > 0, f"{name} must be > 0")
