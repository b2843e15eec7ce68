"""One base causal LM in memory for PPO: LoRA adapters for the policy and the value function (plus a
scalar value head), the reference, and optionally the PMs.

- policy: adapter "policy" (LoRA B starts at zero, so the policy starts equal to the base);
- value: adapter "value" + `value_head` on the final hidden state (critic "separate"), or
  `value_head` on the policy's final hidden state (critic "shared");
- reference: the base with adapters disabled, or, when the policy starts from a trained adapter
  (`init_adapter`), a frozen copy of it loaded as adapter "reference" (else the first KL is huge);
- a PM exported on the same base loads as one more frozen adapter (`attach_pm`), so its backbone
  is not held twice.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, get_peft_model
from transformers import DynamicCache

from syco.core.indexing import prompt_groups
from syco.data.chat import ChatFormatter
from syco.models.backbone import load_causal_lm, load_tokenizer, refusing_remote_code
from syco.models.lora import REWARD_HEAD, attach_reward_head, check_adapter_folder, lora_config
from syco.pm.model import PreferenceModel, from_meta, read_meta
from syco.policy.generation import stop_token_ids
from syco.tracking import naming_full_disk, publish_dir

POLICY, VALUE, REFERENCE = "policy", "value", "reference"
META_FILE = "syco_ppo.json"
# model-config keys that decide the base weights (two configs equal on these load the same base)
BASE_KEYS = ("source", "name", "name_or_path", "revision", "package", "gguf_file", "seed", "config", "dtype")


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding (as `generate` assigns them)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class ActorCritic(torch.nn.Module):
    def __init__(self, peft: PeftModel, tokenizer: Any, model_cfg: Mapping[str, Any], has_reference: bool,
                 value_head_std: float | None = None, seed: int = 0, share_prompts: bool = True,
                 critic: str = "separate"):
        super().__init__()
        self.critic = critic
        self.share_prompts = share_prompts  # rows with one prompt run it once in every forward
        self.peft = peft
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"  # generation continues from the right edge
        self.model_cfg = dict(model_cfg)
        self.has_reference = has_reference
        self.formatter = ChatFormatter(tokenizer)
        self.stop_ids = stop_token_ids(tokenizer, self.formatter)
        hidden = peft.get_base_model().config.hidden_size
        head = torch.nn.Linear(hidden, 1, bias=True)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            std = value_head_std if value_head_std is not None else 1.0 / (hidden + 1) ** 0.5
            torch.nn.init.normal_(head.weight, std=std)
            torch.nn.init.zeros_(head.bias)
        self.value_head = head.to(device=peft.get_base_model().device, dtype=torch.float32)
        self._trainable = {POLICY: self._adapter_params(POLICY),
                           VALUE: self._adapter_params(VALUE) if critic == "separate" else []}
        self._frozen: dict[str, list[torch.nn.Parameter]] = {}
        if has_reference:
            self._frozen[REFERENCE] = self._adapter_params(REFERENCE)
        self.use(POLICY)

    # construction -------------------------------------------------------------------------------
    @classmethod
    def create(cls, model_cfg: Mapping[str, Any], lora: Mapping[str, Any] | None = None,
               init_adapter: str | Path | None = None, seed: int = 0, cache_dir: Path | None = None,
               value_head_std: float | None = None, share_prompts: bool = True,
               critic: str = "separate") -> ActorCritic:
        model_cfg = dict(model_cfg)
        # dropout off: the ratio of new to old log-probs must be exactly 1 before the first update
        lora_cfg = {**(model_cfg.get("lora") or {}), "dropout": 0.0, **dict(lora or {})}
        tokenizer = load_tokenizer(model_cfg, cache_dir)
        base = load_causal_lm(model_cfg, cache_dir)
        if model_cfg.get("gradient_checkpointing"):
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        config = lora_config(lora_cfg, modules_to_save=())
        with torch.random.fork_rng():  # LoRA init draws from the global RNG: make it a function of seed
            torch.manual_seed(seed)
            if init_adapter:
                # the adapter goes on the base of the run's own config: the folder names no model nor code
                init_adapter = check_adapter_folder(init_adapter, "ppo.init_adapter")
                peft = PeftModel.from_pretrained(base, str(init_adapter), adapter_name=POLICY, is_trainable=True)
                peft.load_adapter(str(init_adapter), adapter_name=REFERENCE, is_trainable=False)
            else:
                peft = get_peft_model(base, config, adapter_name=POLICY)
            if critic == "separate":
                peft.add_adapter(VALUE, lora_config(lora_cfg, modules_to_save=()))
        return cls(peft, tokenizer, model_cfg, has_reference=bool(init_adapter), value_head_std=value_head_std,
                   seed=seed, share_prompts=share_prompts, critic=critic)

    def _adapter_params(self, name: str) -> list[torch.nn.Parameter]:
        params = [p for n, p in self.peft.named_parameters() if f".{name}." in n and "lora_" in n]
        if not params:
            raise RuntimeError(f"adapter {name!r} has no LoRA parameters")
        return params

    # adapters -----------------------------------------------------------------------------------
    def use(self, name: str) -> None:
        """Make `name` the active adapter. peft's set_adapter also changes requires_grad; put it back
        so that policy and value stay trainable and everything else frozen whichever is active."""
        self.peft.set_adapter(name)
        # only policy and value train: everything else is frozen, the reward head a PM adapter brings
        # onto the base included (DDP fails on a trainable parameter that no loss reaches)
        trainable = {id(p) for params in self._trainable.values() for p in params}
        for p in self.peft.parameters():
            p.requires_grad_(id(p) in trainable)

    @contextmanager
    def adapter(self, name: str) -> Iterator[None]:
        previous = self.peft.active_adapter
        self.use(name)
        try:
            yield
        finally:
            self.use(previous)

    def reference(self) -> Any:
        """Context in which the LM computes the reference policy."""
        return self.adapter(REFERENCE) if self.has_reference else self.peft.disable_adapter()

    def parameters_of(self, name: str) -> list[torch.nn.Parameter]:
        """Trainable parameters of "policy" or "value" (the value head included; with the shared
        critic only the head: the trunk is the policy's)."""
        return list(self._trainable[name]) + (list(self.value_head.parameters()) if name == VALUE else [])

    # forward ------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.value_head.weight.device

    def response_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_response: int,
                        temperature: float) -> torch.Tensor:
        """Logits / temperature [batch, n_response, vocab] that predict the last n_response tokens,
        from the active adapter (or the reference inside `reference()`)."""
        logits = self._response_states(self._lm(hidden=False), input_ids, attention_mask, n_response)[0]
        return logits.float() / temperature

    def response_values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_response: int) -> torch.Tensor:
        """V(state before each of the last n_response tokens) [batch, n_response]: the value
        adapter's forward (critic "separate") or the policy's (critic "shared")."""
        base = self.peft.get_base_model()
        decoder = getattr(base, base.base_model_prefix)

        def run(ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: DynamicCache | None,
                keep: int) -> tuple[torch.Tensor, ...]:
            out = decoder(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=cache is not None)
            return (out.last_hidden_state[:, -keep:],)

        with self.adapter(VALUE if self.critic == "separate" else POLICY):
            hidden = self._response_states(run, input_ids, attention_mask, n_response)[0]
        return self.value_head(hidden.float()).squeeze(-1)

    def policy_outputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_response: int,
                       temperature: float, values: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the policy's `response_logits`, `response_values` or None): with the shared critic both
        come from one forward of the policy (its last hidden state feeds the value head)."""
        if not values or self.critic == "separate":
            with self.adapter(POLICY):
                logits = self.response_logits(input_ids, attention_mask, n_response, temperature)
            return logits, self.response_values(input_ids, attention_mask, n_response) if values else None

        with self.adapter(POLICY):
            logits, hidden = self._response_states(self._lm(hidden=True), input_ids, attention_mask, n_response)
        return logits.float() / temperature, self.value_head(hidden.float()).squeeze(-1)

    def _lm(self, hidden: bool) -> Any:
        """The causal LM as `_response_states` runs it: (logits,) or (logits, last hidden state) of
        the last `keep` positions (the last hidden state is after the final norm)."""

        def run(ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: DynamicCache | None,
                keep: int) -> tuple[torch.Tensor, ...]:
            out = self.peft(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache,
                            use_cache=cache is not None, logits_to_keep=keep, output_hidden_states=hidden)
            return (out.logits, out.hidden_states[-1][:, -keep:]) if hidden else (out.logits,)

        return run

    def shared_prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> DynamicCache | None:
        """For `generate` on rows that share prompts: the keys and values of every prompt token but
        the last, computed once per distinct prompt (active adapter) and copied to its rows; None
        when no prompt repeats (or `share_prompts` is off). The samples are what generate draws
        without it (its random stream starts at the same decode step)."""
        if not self.share_prompts or input_ids.shape[1] < 2:
            return None
        groups = prompt_groups(input_ids, attention_mask)
        if groups is None:
            return None
        first, group = groups
        cache = DynamicCache(config=self.peft.get_base_model().config)
        mask = attention_mask[first, :-1]
        self.peft(input_ids=input_ids[first, :-1], attention_mask=mask, position_ids=position_ids(mask), cache=cache,
                  use_cache=True, logits_to_keep=1)
        cache.batch_select_indices(group)
        return cache

    def _response_states(self, run: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         n_response: int) -> tuple[torch.Tensor, ...]:
        """`run`'s outputs (each [batch, n_response, ...]) at the positions that predict the last
        n_response tokens (the prompt's last token and every response token but the last).

        Rows that share a prompt (samples_per_prompt > 1) run it once (`share_prompts`): one row
        computes the prompt's keys and values, every row of the group attends to that copy, and only
        the responses run per row; the same outputs and gradients up to rounding, with fewer tokens
        forward and backward. Gradient checkpointing recomputes without a cache, so it runs each
        row whole."""
        pos = position_ids(attention_mask)
        split = input_ids.shape[1] - n_response
        groups = None
        if self.share_prompts and split > 0 and not self.model_cfg.get("gradient_checkpointing"):
            groups = prompt_groups(input_ids[:, :split], attention_mask[:, :split])
        if groups is None:
            return tuple(x[:, :-1] for x in run(input_ids, attention_mask, pos, None, n_response + 1))
        first, group = groups
        cache = DynamicCache(config=self.peft.get_base_model().config)
        last = [x[group] for x in run(input_ids[first, :split], attention_mask[first, :split], pos[first, :split],
                                      cache, 1)]
        if n_response == 1:
            return tuple(last)
        cache.batch_select_indices(group)  # each row reads its prompt's keys and values (autograd follows)
        rest = run(input_ids[:, split:-1], attention_mask[:, :-1], pos[:, split:-1], cache, n_response - 1)
        return tuple(torch.cat([a, b], dim=1) for a, b in zip(last, rest))

    # PMs on the same base -----------------------------------------------------------------------
    def shares_base(self, pm_path: str | Path) -> bool:
        """Whether the PM at `pm_path` was trained on this base (its syco_pm.json is only compared,
        never loaded from: attached, the PM runs on the base of the run's own config)."""
        pm_cfg = read_meta(pm_path)["model"]
        return all(pm_cfg.get(k) == self.model_cfg.get(k) for k in BASE_KEYS)

    def attach_pm(self, pm_path: str | Path, name: str) -> PreferenceModel:
        """Load an exported PM whose base is this model's base as frozen adapter `name` (its reward
        head rides along as that adapter's copy of `reward_head`)."""
        if not self.shares_base(pm_path):
            raise ValueError(f"PM {pm_path} was trained on another base than the policy's; load it separately")
        if name in (POLICY, VALUE, REFERENCE):
            raise ValueError(f"adapter name {name!r} is taken")
        meta = read_meta(pm_path)
        where = f"PM folder {pm_path}"
        check_adapter_folder(pm_path, where)
        # the PM's own tokenizer, trusted with code only as far as the run's model config says
        trust = bool(self.model_cfg.get("trust_remote_code"))
        with refusing_remote_code(where, "model.trust_remote_code"):
            tokenizer = load_tokenizer({"source": "pretrained", "name_or_path": str(pm_path), "trust_remote_code": trust})
        base = self.peft.get_base_model()
        if not hasattr(base, REWARD_HEAD):
            attach_reward_head(base)
        self.peft.load_adapter(str(pm_path), adapter_name=name, is_trainable=False)
        self._frozen[name] = [p for n, p in self.peft.named_parameters() if f".{name}." in n]
        self.use(self.peft.active_adapter)
        # the folder's own trust_remote_code never travels on with the PM
        meta = {**meta, "model": {**meta["model"], "trust_remote_code": trust}}
        pm = from_meta(self.peft, tokenizer, meta).train(False)  # score() restores this (eval) mode
        return SharedBasePM(self, name, pm)

    # export -------------------------------------------------------------------------------------
    def save_policy(self, path: str | Path, meta: Mapping[str, Any] | None = None) -> Path:
        """The policy adapter in peft format at `path` (loadable by `Policy(adapter=path)`), written
        to a temporary folder and renamed: a crash never leaves a half-written adapter."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
        try:
            with naming_full_disk(path):
                self.peft.save_pretrained(str(tmp), selected_adapters=[POLICY])
                folder = tmp / POLICY  # peft writes a non-default adapter into a sub-folder
                if not (folder / "adapter_config.json").is_file():
                    folder = tmp
                (folder / META_FILE).write_text(json.dumps({"model": self.model_cfg, **(meta or {})}, indent=2,
                                                           default=str))
                publish_dir(folder, path)  # gives the folder the usual permissions
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path


class SharedBasePM(torch.nn.Module):
    """A PM living as adapter `name` of the actor-critic's base: scores with that adapter active."""

    def __init__(self, owner: ActorCritic, name: str, pm: PreferenceModel):
        super().__init__()
        # plain attributes, not sub-modules: the weights belong to (and are saved with) `owner`
        object.__setattr__(self, "owner", owner)
        object.__setattr__(self, "pm", pm)
        self.name = name

    def __getattr__(self, item: str) -> Any:
        try:
            return super().__getattr__(item)
        except AttributeError:
            return getattr(self.__dict__["pm"], item)

    def score(self, *args: Any, **kwargs: Any) -> list[float]:
        with self.owner.adapter(self.name):
            return self.pm.score(*args, **kwargs)
