"""The preference model: a causal LM backbone with LoRA and a scalar head, plus its scoring API.

`PreferenceModel.create` builds a trainable PM; `save` exports a folder (peft adapter holding the
LoRA weights and the head, tokenizer, `syco_pm.json`); `load` turns that folder back into a PM.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from syco.core.packing import PackedBatch, pack_rows
from syco.data.chat import ChatFormatter, Message, Prompt, as_messages
from syco.models.backbone import folder_model_config, load_causal_lm, load_tokenizer, refusing_remote_code
from syco.models.lora import REWARD_HEAD, apply_lora, attach_reward_head, check_adapter_folder
from syco.tracking import naming_full_disk, publish_dir

FORMAT = "syco-pm/1"
META_FILE = "syco_pm.json"
OWN_FIELDS = {"format", "model", "max_length", "scoring_prefix", "reward_mean", "reward_std", "end_of_turn"}


class PreferenceModel(torch.nn.Module):
    def __init__(
        self,
        lm: PeftModel,
        tokenizer: PreTrainedTokenizerBase,
        model_cfg: Mapping[str, Any],
        max_length: int,
        scoring_prefix: Sequence[Message] | None = None,
        reward_mean: float = 0.0,
        reward_std: float = 1.0,
        info: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.model_cfg = dict(model_cfg)
        self.max_length = int(max_length)
        self.formatter = ChatFormatter(tokenizer, prefix=scoring_prefix)
        self.reward_mean = float(reward_mean)
        self.reward_std = float(reward_std)
        self.info = dict(info or {})

    # construction -------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        model_cfg: Mapping[str, Any],
        max_length: int,
        cache_dir: Path | None = None,
        seed: int = 0,
        scoring_prefix: Sequence[Message] | None = None,
    ) -> PreferenceModel:
        tokenizer = load_tokenizer(model_cfg, cache_dir)
        base = load_causal_lm(model_cfg, cache_dir)
        attach_reward_head(base, seed=seed)
        with torch.random.fork_rng():  # LoRA init draws from the global RNG: make it a function of seed
            torch.manual_seed(seed)
            lm = apply_lora(base, model_cfg.get("lora") or {})
        if model_cfg.get("gradient_checkpointing"):
            # non-reentrant: works with LoRA (frozen inputs) and with DDP
            lm.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return cls(lm, tokenizer, model_cfg, max_length, scoring_prefix)

    @property
    def base(self) -> torch.nn.Module:
        return self.lm.get_base_model()

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    # forward ------------------------------------------------------------------------------------
    def forward(self, batch: PackedBatch) -> torch.Tensor:
        """Rewards [groups, responses] read at each response's last token (NaN where absent)."""
        base = self.base
        decoder = getattr(base, base.base_model_prefix)
        hidden = decoder(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask(),
            position_ids=batch.position_ids,
            use_cache=False,
        ).last_hidden_state
        index = batch.last_index.clamp(min=0)
        last = hidden[batch.group_row[:, None], index]  # [groups, responses, hidden]
        head = getattr(base, REWARD_HEAD)
        rewards = head(last.float()).squeeze(-1)
        return rewards.masked_fill(batch.last_index < 0, float("nan"))

    # scoring API --------------------------------------------------------------------------------
    def with_prefix(self, prefix: Sequence[Message] | None) -> PreferenceModel:
        """The same weights scoring every dialogue behind a prefix (the paper's prompted non-sycophantic PM)."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.formatter = ChatFormatter(self.tokenizer, prefix=prefix)
        return clone

    def encode_response(self, prompt_ids: Sequence[int], response: str) -> list[int]:
        return self.truncate(prompt_ids, self.formatter.response_ids(response))

    def truncate(self, prompt_ids: Sequence[int], response_ids: list[int], where: str = "") -> list[int]:
        room = self.max_length - len(prompt_ids)
        if room < 1:
            raise ValueError(
                f"{where or 'prompt'}: prompt has {len(prompt_ids)} tokens, no room for a response "
                f"within max_length={self.max_length}"
            )
        return response_ids[:room]

    @torch.no_grad()
    def score(
        self,
        prompts: Sequence[Prompt],
        responses: Sequence[str],
        batch_size: int = 16,
        max_row_tokens: int | None = None,
        padding_side: str = "right",
        normalize: bool = False,
    ) -> list[float]:
        """One reward per (prompt, response). Responses that share a prompt are packed behind one
        copy of it, so the prompt is computed once; the result equals scoring each pair alone.
        `batch_size` counts prompt groups (a prompt with up to max_row_tokens of responses) per forward."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        for i, r in enumerate(responses):
            if not isinstance(r, str):
                raise TypeError(f"responses[{i}] is {type(r).__name__}, expected str")
        max_row_tokens = max_row_tokens or 4 * self.max_length
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault(json.dumps(as_messages(p)), []).append(i)
        rows: list[tuple[list[int], list[list[int]], list[int]]] = []
        for indices in groups.values():
            prompt_ids = self.formatter.prompt_ids(prompts[indices[0]])
            encoded = self.formatter.responses_ids([responses[i] for i in indices])
            row_ids: list[list[int]] = []
            row_idx: list[int] = []
            used = len(prompt_ids)
            for i, ids in zip(indices, encoded):
                ids = self.truncate(prompt_ids, ids, where=f"prompts[{i}]")
                if row_ids and used + len(ids) > max_row_tokens:
                    rows.append((prompt_ids, row_ids, row_idx))
                    row_ids, row_idx, used = [], [], len(prompt_ids)
                row_ids.append(ids)
                row_idx.append(i)
                used += len(ids)
            rows.append((prompt_ids, row_ids, row_idx))
        # similar lengths together, and short groups sharing rows: little padding
        rows.sort(key=lambda r: len(r[0]) + sum(map(len, r[1])))
        scores = [0.0] * len(responses)
        was_training = self.training
        self.eval()
        try:
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                packed = pack_rows(
                    [(p, rs) for p, rs, _ in chunk], self.tokenizer.pad_token_id, padding_side, row_capacity=0
                ).to(self.device)
                rewards = self(packed).cpu()
                for b, (_, _, idx) in enumerate(chunk):
                    for k, i in enumerate(idx):
                        scores[i] = float(rewards[b, k])
        finally:
            self.train(was_training)
        if normalize:
            scores = [(s - self.reward_mean) / self.reward_std for s in scores]
        return scores

    # export / load ------------------------------------------------------------------------------
    def save(self, path: str | Path, **info: Any) -> Path:
        """Write the PM folder atomically (a crash never leaves a half-written export; a full disk
        raises DiskFullError naming the folder and leaves any earlier export as it was). The files
        get the usual permissions (0644/0755 under the default umask): the export is meant to be shared."""
        path = Path(path)
        with naming_full_disk(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
        try:
            with naming_full_disk(path):
                self.lm.save_pretrained(tmp)
                self.tokenizer.save_pretrained(tmp)
                if self.model_cfg.get("source") == "tiny":
                    # random-init weights cannot be rebuilt from a name: keep them with the PM
                    self.base.save_pretrained(tmp / "base", state_dict=_base_state_dict(self.lm))
            meta = {
                **self.info,
                **info,
                # the PM's own fields last: they always describe these weights
                "format": FORMAT,
                "model": self.model_cfg,
                "max_length": self.max_length,
                "scoring_prefix": self.formatter.prefix or None,
                "reward_mean": self.reward_mean,
                "reward_std": self.reward_std,
                "end_of_turn": self.formatter.end_of_turn,
            }
            with naming_full_disk(path):
                (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
            publish_dir(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path


def _base_state_dict(lm: PeftModel) -> dict[str, torch.Tensor]:
    """Base weights without LoRA or head entries, with the names a plain model expects."""
    out = {}
    for name, tensor in lm.get_base_model().state_dict().items():
        if "lora_" in name or REWARD_HEAD in name:
            continue
        out[name.replace(".base_layer", "")] = tensor
    return out


def load(
    path: str | Path,
    prefix: Sequence[Message] | None | str = "saved",
    device: str | torch.device | None = None,
    cache_dir: Path | None = None,
    trainable: bool = False,
    trust_remote_code: bool = False,
    trust_key: str = "trust_remote_code",
) -> PreferenceModel:
    """Load an exported PM folder. `prefix="saved"` keeps the scoring prefix it was exported with;
    pass a list of messages to score behind another prefix, or None for none.

    A PM folder never runs code: the `trust_remote_code` its syco_pm.json may hold is ignored (with
    a warning); only the caller's own `trust_remote_code` (from the run's config key `trust_key`,
    named in the error when a base model cannot load without it) lets its base model run code."""
    path = Path(path)
    meta = read_meta(path)
    where = f"PM folder {path}"
    model_cfg = folder_model_config(meta["model"], where, trust_remote_code, trust_key)
    check_adapter_folder(path, where)
    with refusing_remote_code(where, trust_key):
        tokenizer = load_tokenizer({"source": "pretrained", "name_or_path": str(path),
                                    "trust_remote_code": trust_remote_code})
        if model_cfg.get("source") == "tiny":
            # a random-init llama kept in the folder: it never needs code of its own
            base = load_causal_lm(
                {"source": "pretrained", "name_or_path": str(path / "base"), "dtype": model_cfg.get("dtype")}
            )
        else:
            base = load_causal_lm(model_cfg, cache_dir)
    attach_reward_head(base)
    lm = PeftModel.from_pretrained(base, str(path), is_trainable=trainable)
    pm = from_meta(lm, tokenizer, {**meta, "model": model_cfg}, prefix)
    if device is not None:
        pm.to(device)
    return pm.train(trainable)


def read_meta(path: str | Path) -> dict[str, Any]:
    """The `syco_pm.json` of an exported PM folder, checked."""
    meta_file = Path(path) / META_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} is not an exported syco PM (no {META_FILE})")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{meta_file} is not valid JSON ({err}): re-export the PM") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{meta_file}: format {got!r}, expected {FORMAT!r}")
    if not isinstance(meta.get("model"), dict):
        raise ValueError(f"{meta_file} has no 'model' settings (a mapping): re-export the PM")
    return meta


def from_meta(lm: PeftModel, tokenizer: PreTrainedTokenizerBase, meta: Mapping[str, Any],
              prefix: Sequence[Message] | None | str = "saved") -> PreferenceModel:
    """A PM around loaded weights, with the scoring settings of its export."""
    return PreferenceModel(
        lm,
        tokenizer,
        dict(meta["model"]),
        meta["max_length"],
        scoring_prefix=meta.get("scoring_prefix") if prefix == "saved" else prefix,
        reward_mean=meta.get("reward_mean", 0.0),
        reward_std=meta.get("reward_std", 1.0),
        info={k: v for k, v in meta.items() if k not in OWN_FIELDS},
    )
