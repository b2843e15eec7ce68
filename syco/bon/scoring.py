"""Score a pool with preference models, cached on disk per PM (a re-run scores only new records)."""

from __future__ import annotations

import gc
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import syco.pm
from syco.tracking import write_json_atomic

log = logging.getLogger(__name__)


def pm_spec(name: str, spec: Any, prefixes: Mapping[str, Any], where: str = "bon.pms") -> dict[str, Any]:
    """`bon.pms.<name>` (or `<where>.<name>`): an exported PM folder, or {path, prefix: saved | none |
    <name in bon.prefixes>, trust_remote_code: false}. Only `trust_remote_code` here lets the PM's
    base model run code of its own: the folder's syco_pm.json cannot."""
    if isinstance(spec, str):
        spec = {"path": spec}
    if not isinstance(spec, Mapping) or not spec.get("path"):
        raise ValueError(f"{where}.{name}: expected an exported PM folder or {{path, prefix}}, got {spec!r}")
    prefix = spec.get("prefix", "saved")
    if prefix not in ("saved", "none", None) and prefix not in prefixes:
        raise ValueError(f"{where}.{name}.prefix={prefix!r}: use saved, none or one of bon.prefixes {sorted(prefixes)}")
    path = Path(spec["path"])
    if not (path / "syco_pm.json").is_file():
        raise FileNotFoundError(f"{where}.{name}: {path} is not an exported syco PM (no syco_pm.json)")
    messages = None if prefix in ("none", None) else "saved" if prefix == "saved" else list(prefixes[prefix])
    trust = spec.get("trust_remote_code", False)
    if not isinstance(trust, bool):
        raise ValueError(f"{where}.{name}.trust_remote_code={trust!r}: expected true or false")
    return {"name": name, "path": str(path), "prefix": messages, "trust_remote_code": trust,
            "trust_key": f"{where}.{name}.trust_remote_code"}


def fingerprint(spec: Mapping[str, Any]) -> str:
    """Changes when the PM's weights, metadata or scoring prefix change."""
    h = hashlib.sha256(json.dumps(spec["prefix"], sort_keys=True).encode())
    for f in sorted(Path(spec["path"]).glob("*")):
        if f.is_file() and f.suffix in (".json", ".safetensors"):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def resolve_device(device: str | None) -> str:
    """`bon.device`: auto (the GPU when there is one), cpu, cuda, cuda:<i>; checked before any scoring."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(str(device))
    except RuntimeError as e:
        raise ValueError(f"bon.device={device!r} is not a device (use auto, cpu, cuda or cuda:<index>)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"bon.device={device!r} but no CUDA device is available here (use auto or cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"bon.device={device!r}: PMs score on cpu or cuda")
    return str(dev)


def score_pools(spec: Mapping[str, Any], pools: Sequence[Mapping[str, Any]], cache_file: Path,
                cache_dir: Path | None = None, batch_size: int = 16, chunk: int = 32,
                device: str | None = "auto") -> dict[str, np.ndarray]:
    """{record key: [K] scores} for every pool; `pools[j]` = {"record", "samples", optional "prompt": the
    messages the PM scores the samples behind, when they differ from the record's own}. `device`:
    auto (the GPU when there is one), cpu, cuda, cuda:1, ..."""
    device = resolve_device(device)
    fp = fingerprint(spec)
    cached: dict[str, list[float]] = {}
    if cache_file.is_file():
        data = json.loads(cache_file.read_text())
        if data.get("fingerprint") == fp:
            cached = data["scores"]
        else:
            log.info("%s: the PM changed since %s was written; rescoring", spec["name"], cache_file)
    todo = [p for p in pools if len(cached.get(p["record"].key, [])) != len(p["samples"])]
    if todo:
        pm = syco.pm.load(spec["path"], prefix=spec["prefix"], cache_dir=cache_dir, device=device,
                          trust_remote_code=bool(spec.get("trust_remote_code", False)),
                          trust_key=spec.get("trust_key", "trust_remote_code"))
        log.info("%s: scoring %d pools (%d responses)", spec["name"], len(todo), sum(len(p["samples"]) for p in todo))
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            prompts, responses, owners = [], [], []
            for p in part:
                messages, prefill = p["record"].messages()
                if p.get("prompt") is not None:  # the PM sees another prompt than the policy did
                    messages, prefill = p["prompt"], None
                for s in p["samples"]:
                    prompts.append(messages)
                    responses.append((prefill or "") + s["responses"][0])
                owners.append((p["record"].key, len(p["samples"])))
            flat = pm.score(prompts, responses, batch_size=batch_size)
            at = 0
            for key, k in owners:
                cached[key] = flat[at : at + k]
                at += k
            # written after every chunk: an interrupted run keeps what it scored
            write_json_atomic(cache_file, {"pm": spec["path"], "fingerprint": fp, "scores": cached})
        del pm
        gc.collect()
    return {p["record"].key: np.asarray(cached[p["record"].key], dtype=np.float64) for p in pools}
