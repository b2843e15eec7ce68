"""Policies: loading (base model + optional LoRA adapter) and batched chat generation."""

from syco.policy.generation import Policy

__all__ = ["Policy"]
