"""Per-token KL estimators and KL controllers for RLHF (pure; no Lightning).

With samples y ~ policy and r = log p_ref(y_t) - log p_policy(y_t):
- k1 = -r (unbiased, can be negative per token),
- k3 = exp(r) - 1 - r (unbiased, always >= 0, lower variance; Schulman 2020).
The penalty and the logged KL use the same estimator.
"""

from __future__ import annotations

import math

import torch

ESTIMATORS = ("k1", "k3")


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL(policy || reference) estimate from the sampled tokens' log-probs (same shape)."""
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(f"logprobs {tuple(logprobs.shape)} and ref_logprobs {tuple(ref_logprobs.shape)} differ")
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; choose from {ESTIMATORS}")


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, coef: float):
        if coef < 0:
            raise ValueError(f"KL coefficient must be >= 0, got {coef}")
        self.value = float(coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Ziegler et al. (2019): move the coefficient so that the measured KL tracks `target`.

    error = clip(KL / target - 1, -0.2, 0.2); coef *= 1 + error * n_steps / horizon."""

    def __init__(self, init_coef: float, target: float, horizon: int):
        if init_coef < 0 or target <= 0 or horizon <= 0:
            raise ValueError(f"need init_coef >= 0, target > 0, horizon > 0; got {init_coef}, {target}, {horizon}")
        self.value, self.target, self.horizon = float(init_coef), float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        if not math.isfinite(current_kl):
            raise ValueError(f"KL is {current_kl}: cannot adapt the coefficient")
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value, self.target, self.horizon = float(state["value"]), float(state["target"]), int(state["horizon"])
