"""FSDP wrapping: one shard unit per transformer decoder layer, whatever the architecture."""

from __future__ import annotations

from collections.abc import Callable

import torch


def decoder_layer_policy() -> Callable[[torch.nn.Module, bool, int], bool]:
    def policy(module: torch.nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
        if recurse:
            return True
        return type(module).__name__.endswith("DecoderLayer")

    return policy
