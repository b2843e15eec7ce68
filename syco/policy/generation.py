"""Batched chat generation from a policy (any model config, optionally with a peft adapter)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, GenerationConfig, LogitsProcessorList, PreTrainedTokenizerBase

from syco.data.chat import ChatFormatter, Message
from syco.models.backbone import load_causal_lm, load_tokenizer
from syco.models.lora import check_adapter_folder
from syco.policy.sampling import Group, group_sampling, pack
from syco.policy.shared_prefix import SharedPrefixCache, decoding, supports

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
        # pools decode against one copy of their prompt (syco.policy.shared_prefix) where the model allows
        self.shared_attention = supports(self.lm.config)
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
                 min_new_tokens: int = 0, top_k: int = 0, top_p: float = 1.0,
                 max_rows_per_call: int | None = None) -> list[list[str]]:
        """n continuations per request (greedy when temperature == 0, then one copy repeated);
        pure temperature sampling unless top_k > 0 or top_p < 1 (the protocol samples at T=1, and the
        KL of best-of-n is measured against exactly this distribution);
        `stop_strings` end a continuation early (the paper's released notebook stops at "\n").

        With n > 1 the prompt is prefilled once and its n samples decode against that one copy
        (`share_prompt`); the samples are the same as `generate(num_return_sequences=n)` would draw.

        Requests go in order of prompt length, in groups of `batch_size // n`, each group seeded from
        `seed`. `max_rows_per_call` lets consecutive groups share a generate call of up to that many
        rows (n per request; whole groups, at least one), each group drawing from its own generator:
        the samples are those of one call per group (None: one call per group).
        """
        check_max_rows(max_rows_per_call)
        if not requests:
            return []
        greedy = temperature <= 0
        draws = 1 if greedy else n
        encoded = [self.tokenizer(self.prompt_text(m, p), add_special_tokens=False)["input_ids"] for m, p in requests]
        order = sorted(range(len(requests)), key=lambda i: len(encoded[i]))
        settings = dict(
            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None, eos_token_id=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id, stop_strings=list(stop_strings) if stop_strings else None,
        )
        config = GenerationConfig(
            do_sample=not greedy, temperature=temperature if not greedy else None,
            # explicit: None would be filled in from the model's defaults (top_k=50)
            top_k=int(top_k), top_p=float(top_p), min_p=0.0,
            num_return_sequences=1 if share_prompt else draws, **settings,
        )
        # several groups in a call: GroupSampler draws, then greedy selection takes its tokens
        grouped = GenerationConfig(do_sample=False, num_return_sequences=1, **settings)
        generator_seed = torch.Generator().manual_seed(seed)
        per_group = max(1, batch_size // draws)
        groups = [Group(order[s : s + per_group], int(torch.randint(0, 2**31 - 1, (1,), generator=generator_seed)))
                  for s in range(0, len(order), per_group)]
        out: list[list[str]] = [[] for _ in requests]
        with tqdm(total=len(requests), desc=desc, leave=False) as bar:
            for call in pack(groups, draws, max_rows_per_call):
                idx = [i for g in call for i in g.requests]
                batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                if len(call) == 1 or greedy:
                    torch.manual_seed(call[0].seed)  # transformers samples from the global generator
                    seqs = self._decode(batch, draws, config, None, share_prompt)
                else:
                    spans, start = [], 0
                    for g in call:
                        spans.append((start, start + len(g.requests) * draws))
                        start = spans[-1][1]
                    processors = group_sampling(temperature, int(top_k), float(top_p), spans,
                                                [g.seed for g in call], self.device)
                    seqs = self._decode(batch, draws, grouped, processors, share_prompt)
                new = seqs[:, batch["input_ids"].shape[1]:]
                texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
                for j, i in enumerate(idx):
                    samples = [_cut(t, stop_strings) for t in texts[j * draws : (j + 1) * draws]]
                    out[i] = samples * n if greedy else samples
                bar.update(len(idx))
        return out

    def _decode(self, batch: Mapping[str, torch.Tensor], draws: int, config: GenerationConfig,
                processors: LogitsProcessorList | None, share_prompt: bool) -> torch.Tensor:
        """`draws` rows per prompt (prompt-major, as num_return_sequences lays them out): from one
        shared prefill (`share_prompt`), else the prompts expanded by `config`'s num_return_sequences
        or here (greedy-mode configs take no num_return_sequences)."""
        if share_prompt and draws > 1:
            return self._generate_shared(batch, draws, config, processors)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        repeats = draws // config.num_return_sequences
        ids, mask = ids.repeat_interleave(repeats, 0), mask.repeat_interleave(repeats, 0)
        return self.lm.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                                logits_processor=processors, tokenizer=self.tokenizer)

    def _generate_shared(self, batch: Mapping[str, torch.Tensor], draws: int, config: GenerationConfig,
                         processors: LogitsProcessorList | None) -> torch.Tensor:
        """Prefill every prompt but its last token once, then decode `draws` rows per prompt against
        that one copy (`shared_prefix`; models it does not support get the cache copied to each row)."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        rows = dict(input_ids=ids.repeat_interleave(draws, 0), attention_mask=mask.repeat_interleave(draws, 0),
                    generation_config=config, logits_processor=processors, tokenizer=self.tokenizer)
        if ids.shape[1] == 1:
            return self.lm.generate(**rows)
        prefill = DynamicCache(config=self.lm.config)
        # the position ids generate() would use for left-padded rows
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        # only the cache is wanted: logits of the last position only, where the model allows
        keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(self.lm.forward).parameters else {}
        self.lm(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
                cache=prefill, use_cache=True, **keep)
        if not self.shared_attention:
            prefill.batch_repeat_interleave(draws)
            return self.lm.generate(cache=prefill, **rows)
        # room for the last prompt token and every new token fed back
        cache = SharedPrefixCache(prefill, mask[:, :-1], draws, capacity=int(config.max_new_tokens) + 1)
        with decoding(self.lm, cache):
            return self.lm.generate(cache=cache, **rows)


def check_max_rows(value: Any, name: str = "max_rows_per_call") -> None:
    """`value` is None or a whole number of rows >= 1, else a ValueError naming `name`."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name}={value!r}: expected a whole number of rows (samples) >= 1 that one generate "
                         "call may hold, or null for one seeded group (batch_size rows) per call")


def _cut(text: str, stop_strings: Sequence[str] | None) -> str:
    """Drop a stop string and what follows (generation stops after emitting it)."""
    for stop in stop_strings or ():
        head, sep, _ = text.partition(stop)
        if sep and head.strip():
            text = head
    return text.strip()
