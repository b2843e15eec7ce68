"""A Lightning callback for the multi-process tests: at the end of fit each rank writes a digest of
its trainable parameters to `<out>.rank<r>.json`, so a test can check that DDP kept the replicas equal."""

from __future__ import annotations

import json

import lightning as L
import torch


class ParamDigest(L.Callback):
    def __init__(self, out: str):
        self.out = out

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        params = (module.trainable_parameters() if hasattr(module, "trainable_parameters")
                  else [p for p in module.parameters() if p.requires_grad])
        flat = torch.cat([p.detach().double().flatten().cpu() for p in params])
        digest = {"count": flat.numel(), "sum": float(flat.sum()), "squares": float((flat * flat).sum()),
                  "first": flat[:8].tolist()}
        with open(f"{self.out}.rank{trainer.global_rank}.json", "w") as f:
            json.dump(digest, f)
