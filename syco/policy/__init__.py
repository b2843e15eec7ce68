"""Policies: loading (base model + optional LoRA adapter) and batched chat generation."""

from syco.policy.generation import Policy, check_max_rows

__all__ = ["Policy", "check_max_rows"]
