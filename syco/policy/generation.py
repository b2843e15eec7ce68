"""Batched chat generation from a policy (any model config, optionally with a peft adapter)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedTokenizerBase

from syco.data.chat import ChatFormatter, Message
from syco.models.backbone import load_causal_lm, load_tokenizer
from syco.models.lora import check_adapter_folder

Request = tuple[Sequence[Message], str | None]  # chat messages, assistant prefill


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, formatter: ChatFormatter) -> list[int]:
    """Token ids that end an assistant turn: EOS and the chat template's end-of-turn token."""
    stop = {tokenizer.eos_token_id}
    eot = tokenizer.convert_tokens_to_ids(formatter.end_of_turn)
    if isinstance(eot, int) and eot != tokenizer.unk_token_id:
        stop.add(eot)
    return sorted(i for i in stop if i is not None)


class Policy:
    def __init__(self, model_cfg: Mapping[str, Any], adapter: str | Path | None = None,
                 cache_dir: Path | None = None, device: str | torch.device | None = None):
        self.model_cfg = dict(model_cfg)
        if adapter:  # a LoRA adapter folder, checked before any model loads
            check_adapter_folder(adapter, "policy.adapter")
        self.tokenizer = load_tokenizer(model_cfg, cache_dir)
        self.tokenizer.padding_side = "left"  # generation continues from the right edge
        lm = load_causal_lm(model_cfg, cache_dir)
        if adapter:
            from peft import PeftModel

            # merged: generation then runs at the base model's speed
            lm = PeftModel.from_pretrained(lm, str(adapter)).merge_and_unload()
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.lm = lm.to(device).eval()
        self.lm.config.use_cache = True
        self.formatter = ChatFormatter(self.tokenizer)
        self.stop_ids = stop_token_ids(self.tokenizer, self.formatter)
        self.name = str(model_cfg.get("name", "policy")) + (f"+{Path(adapter).name}" if adapter else "")

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def prompt_text(self, messages: Sequence[Message], prefill: str | None = None) -> str:
        """The prompt as the model sees it; a prefill continues as the start of the assistant turn."""
        return self.formatter.prompt_text(list(messages)) + (prefill or "")

    @torch.no_grad()
    def generate(self, requests: Sequence[Request], temperature: float = 1.0, max_new_tokens: int = 128,
                 n: int = 1, batch_size: int = 16, seed: int = 0, desc: str = "generating",
                 stop_strings: Sequence[str] | None = None, share_prompt: bool = True,
                 min_new_tokens: int = 0, top_k: int = 0, top_p: float = 1.0) -> list[list[str]]:
        """n continuations per request (greedy when temperature == 0, then one copy repeated);
        pure temperature sampling unless top_k > 0 or top_p < 1 (the protocol samples at T=1, and the
        KL of best-of-n is measured against exactly this distribution);
        `stop_strings` end a continuation early (the paper's released notebook stops at "\n").

        With n > 1 the prompt is prefilled once and its key/value cache copied to the n samples
        (`share_prompt`); the samples are the same as `generate(num_return_sequences=n)` would draw.
        """
        if not requests:
            return []
        greedy = temperature <= 0
        draws = 1 if greedy else n
        encoded = [self.tokenizer(self.prompt_text(m, p), add_special_tokens=False)["input_ids"] for m, p in requests]
        order = sorted(range(len(requests)), key=lambda i: len(encoded[i]))
        config = GenerationConfig(
            do_sample=not greedy, temperature=temperature if not greedy else None,
            # explicit: None would be filled in from the model's defaults (top_k=50)
            top_k=int(top_k), top_p=float(top_p), min_p=0.0,
            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None, num_return_sequences=1 if share_prompt else draws, eos_token_id=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id, stop_strings=list(stop_strings) if stop_strings else None,
        )
        out: list[list[str]] = [[] for _ in requests]
        generator_seed = torch.Generator().manual_seed(seed)
        rows_per_call = max(1, batch_size // draws)
        with tqdm(total=len(requests), desc=desc, leave=False) as bar:
            for start in range(0, len(order), rows_per_call):
                idx = order[start : start + rows_per_call]
                batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator_seed)))
                if share_prompt and draws > 1:
                    seqs = self._generate_shared(batch, draws, config)
                else:
                    seqs = self.lm.generate(**batch, generation_config=config, tokenizer=self.tokenizer)
                new = seqs[:, batch["input_ids"].shape[1]:]
                texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
                for j, i in enumerate(idx):
                    samples = [_cut(t, stop_strings) for t in texts[j * draws : (j + 1) * draws]]
                    out[i] = samples * n if greedy else samples
                bar.update(len(idx))
        return out

    def _generate_shared(self, batch: Mapping[str, torch.Tensor], draws: int, config: GenerationConfig) -> torch.Tensor:
        """Prefill every prompt but its last token once, copy the cache `draws` times (rows stay in
        num_return_sequences order: all samples of a prompt together), then decode."""
        from transformers import DynamicCache

        ids, mask = batch["input_ids"], batch["attention_mask"]
        cache = DynamicCache(config=self.lm.config)
        if ids.shape[1] > 1:
            # the position ids generate() would use for left-padded rows
            positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
            self.lm(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
                    cache=cache, use_cache=True)
            cache.batch_repeat_interleave(draws)
        else:
            cache = None
        return self.lm.generate(input_ids=ids.repeat_interleave(draws, 0), attention_mask=mask.repeat_interleave(draws, 0),
                                cache=cache, generation_config=config, tokenizer=self.tokenizer)


def _cut(text: str, stop_strings: Sequence[str] | None) -> str:
    """Drop a stop string and what follows (generation stops after emitting it)."""
    for stop in stop_strings or ():
        head, sep, _ = text.partition(stop)
        if sep and head.strip():
            text = head
    return text.strip()
