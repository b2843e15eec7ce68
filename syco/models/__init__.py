"""Backbone loading (embedded GGUF default, hub ids, local folders, tiny random models) and LoRA."""

from syco.models.backbone import ModelUnavailableError, load_causal_lm, load_tokenizer

__all__ = ["ModelUnavailableError", "load_causal_lm", "load_tokenizer"]
