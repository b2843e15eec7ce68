"""W&B runs a researcher can compare: the logger (online with credentials, offline without, never a
90 s wait for an unreachable server), each run's resolved config, group, job type, tags and name
(`run_identity`), and x-axes defined per key (`define_axes`; PPO: the PPO step and the measured KL)."""

from __future__ import annotations

import fnmatch
import json
import logging
import netrc
import os
import secrets
import string
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("syco.tracking")

DEFAULT_WANDB_URL = "https://api.wandb.ai"


def wandb_base_url() -> str:
    return os.environ.get("WANDB_BASE_URL") or DEFAULT_WANDB_URL


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urllib.parse.urlparse(wandb_base_url()).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_unreachable(url: str, timeout_s: float) -> str | None:
    """Why the W&B server at `url` cannot be reached within `timeout_s` (None: it answered). Any HTTP
    answer counts as reachable; proxies from the environment are used, as wandb itself does."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s):
            return None
    except urllib.error.HTTPError:
        return None  # the server answered (401, 404, ...): it is there
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return f"{type(reason).__name__}: {reason}"


def wandb_logger(project: str = "syco", mode: str = "auto", save_dir: str = ".", check_timeout_s: float = 5.0,
                 ppo_rows: bool = False, one_run_per_folder: bool = True, **kwargs: Any) -> WandbLogger:
    """W&B logger; `mode=auto` logs online with credentials and offline without (sync later with
    `wandb sync <save_dir>/wandb/offline-run-*`). Before logging online, the W&B server
    (WANDB_BASE_URL, default api.wandb.ai) must answer within `check_timeout_s`: if it does not,
    `mode=online` (or WANDB_MODE=online) fails at once saying to log offline, and `mode=auto` logs
    offline with a warning (a cluster node without internet), instead of wandb's 90 s wait and error.
    `ppo_rows`: PPO's rows (PPORunLogger); `axes`, `renames`: see RunLogger; the rest (name, group, job_type, tags, config) goes to wandb.init.
    `one_run_per_folder`: a relaunch in the same `save_dir` (a resumed or requeued run) logs into the W&B
    run that folder began (its id kept in <save_dir>/wandb/syco_run_id)."""
    if mode not in ("auto", "online", "offline", "disabled"):
        raise ValueError(f"logger.wandb.mode must be auto, online, offline or disabled, got {mode!r}")
    asked = mode
    if mode == "auto":
        asked = os.environ.get("WANDB_MODE") or "auto"
        mode = asked if asked != "auto" else ("online" if wandb_has_credentials() else "offline")
    if mode == "online" and check_timeout_s and check_timeout_s > 0:
        url = wandb_base_url()
        why = wandb_unreachable(url, check_timeout_s)
        if why is not None:
            if asked == "online":
                source = "WANDB_MODE=online" if os.environ.get("WANDB_MODE") == "online" else "logger.wandb.mode=online"
                raise ConnectionError(
                    f"{source} but the W&B server {url} cannot be reached ({why}, {check_timeout_s:g} s timeout). "
                    f"On a machine without internet log offline: logger.wandb.mode=offline (or WANDB_MODE=offline), "
                    f"then `wandb sync {save_dir}/wandb/offline-run-*` where there is a network"
                )
            log.warning("W&B server %s cannot be reached (%s): logging offline into %s/wandb (upload later with "
                        "`wandb sync %s/wandb/offline-run-*`; logger.wandb.mode=online makes this an error)",
                        url, why, save_dir, save_dir)
            mode = "offline"
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if "tags" in kwargs:
        kwargs["tags"] = list(dict.fromkeys(str(t)[:64] for t in kwargs["tags"]))  # W&B: at most 64 characters each
    if one_run_per_folder and "id" not in kwargs and mode != "disabled":
        # one W&B run per run folder: a resumed or requeued run goes on logging into the run it began
        # (offline, its new offline-run-* folder carries the same id, and `wandb sync` joins them)
        kwargs["id"] = run_id(save_dir)
        kwargs.setdefault("resume", "allow")
    cls = PPORunLogger if ppo_rows else RunLogger
    return cls(project=project, save_dir=save_dir, offline=mode == "offline", mode=mode, **kwargs)


RUN_ID_FILE = "syco_run_id"


def run_id(save_dir: str | Path) -> str:
    """The W&B run id of the run folder `save_dir`: read from `<save_dir>/wandb/syco_run_id`, or made
    and written there the first time."""
    path = Path(save_dir) / "wandb" / RUN_ID_FILE
    try:
        found = path.read_text().strip()
        if found:
            return found
    except FileNotFoundError:
        pass
    new = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # as wandb makes them
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{RUN_ID_FILE}.{os.getpid()}.tmp")
    tmp.write_text(new + "\n")
    os.replace(tmp, path)
    return new


def define_axes(run: Any, axes: Mapping[str, str | None], keys: Any, defined: set[str]) -> None:
    """W&B define_metric for each key not yet defined: the first glob of `axes` it matches gives the
    metric it is plotted against (None: none, an x-axis itself). One exact definition per key, so
    that overlapping globs never depend on wandb's own order of matching."""
    if not axes:
        return
    keys = sorted(set(keys) - defined, key=lambda k: (k not in axes.values(), k))  # the x-axes first
    for key in keys:
        defined.add(key)
        axis = next((a for pattern, a in axes.items() if fnmatch.fnmatchcase(key, pattern)), "")
        if axis is None or axis == key:
            run.define_metric(key)
        elif axis:
            run.define_metric(key, step_metric=axis, step_sync=True)


class RunLogger(WandbLogger):
    """A WandbLogger that starts a run of its own (never takes over a run already open in the
    process, e.g. the PM stage's in task=rlhf) and, given `axes` ({glob: the metric plotted against,
    None: an x-axis}, first match wins), defines each logged key's x-axis instead of Lightning's
    `trainer/global_step`; `renames` ({logged key: W&B key}) renames keys in W&B only."""

    def __init__(self, *args: Any, axes: Mapping[str, str | None] | None = None,
                 renames: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._axes = dict(axes) if axes else None
        self._renames = dict(renames or {})
        self._defined: set[str] = set()

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is None and getattr(self, "_attach_id", None) is None:
            import wandb

            self._experiment = wandb.init(**{**self._wandb_init, "reinit": "create_new"})
            if self._axes is None:  # Lightning's x-axis
                self._experiment.define_metric("trainer/global_step")
                self._experiment.define_metric("*", step_metric="trainer/global_step", step_sync=True)
        return super().experiment

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        metrics = {self._renames.get(k, k): v for k, v in metrics.items()}
        if self._axes is not None:
            define_axes(self.experiment, self._axes, [*metrics, *(["trainer/global_step"] if step is not None else [])],
                        self._defined)
        super().log_metrics(metrics, step)

    def sibling(self, name: str, tags: Sequence[str] = (), config: Mapping[str, Any] | None = None) -> Any:
        """A new W&B run beside this one (same project, folder, mode, group, job type, config)."""
        import wandb

        init = {**self._wandb_init, "name": name, "id": None, "reinit": "create_new",
                "tags": list(dict.fromkeys([*(self._wandb_init.get("tags") or []), *(str(t)[:64] for t in tags)])),
                "config": {**(self._wandb_init.get("config") or {}), **dict(config or {})}}
        return wandb.init(**init)

    def finish(self) -> None:
        if self._experiment is not None and rank_zero_only.rank == 0:
            self._experiment.finish()


# W&B x-axes of the PPO rows (syco.ppo.module): everything against the PPO step (`ppo/step`, the
# module's `ppo_step`, in every row), each evaluation metric again as eval_by_kl/* against the
# measured KL (eval/kl)
PPO_AXES: dict[str, str | None] = {"ppo/step": None, "eval/kl": "ppo/step", "eval_by_kl/*": "eval/kl", "*": "ppo/step"}


class PPORunLogger(RunLogger):
    """RunLogger for PPO rows: ppo_step is ppo/step in W&B, eval/<m> is also eval_by_kl/<m>."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        extra = {f"eval_by_kl/{k[5:]}": v for k, v in metrics.items() if k.startswith("eval/") and k != "eval/kl"}
        super().log_metrics({**metrics, **(extra if "eval/kl" in metrics else {})}, step)


def build_loggers(cfg: Mapping[str, Any], **identity: Any) -> list[Logger]:
    """The configured loggers (`cfg.logger`: name -> instantiable config; null entries are off). The
    W&B logger gets the resolved config and, where its config leaves them null, `run_identity`'s name,
    group, job type (its tags are added to the configured ones); `identity` overrides run_identity."""
    from hydra.utils import instantiate

    out: list[Logger] = []
    for c in (cfg.get("logger") or {}).values():
        if c is None:
            continue
        if c.get("_target_") != "syco.tracking.wandb_logger":
            out.append(instantiate(c))
            continue
        kwargs = {k: v for k, v in OmegaConf.to_container(c, resolve=True).items() if k != "_target_"}  # type: ignore[union-attr]
        ident = {**run_identity(cfg), **identity}
        if kwargs.get("group") is None and os.environ.get("WANDB_RUN_GROUP"):
            kwargs["group"] = os.environ["WANDB_RUN_GROUP"]
        kwargs.update({k: ident[k] for k in ("name", "group", "job_type") if kwargs.get(k) is None})
        kwargs["tags"] = [*ident["tags"], *(kwargs.get("tags") or [])]
        kwargs["config"] = resolved(cfg)
        if ident["job_type"] in ("ppo", "rlhf-ppo"):
            kwargs.update(ppo_rows=True, axes=PPO_AXES, renames={"ppo_step": "ppo/step"})
        out.append(wandb_logger(**kwargs))
    return out


def _hydra() -> Any | None:
    return HydraConfig.get() if HydraConfig.initialized() else None


def _get(cfg: Any, key: str) -> Any:
    """cfg.<key> (dotted), None where it is unset, missing (???) or cannot be resolved."""
    try:
        return OmegaConf.select(cfg, key, default=None, throw_on_missing=False) if isinstance(cfg, DictConfig) else None
    except Exception:  # noqa: BLE001 - an interpolation that cannot resolve here
        return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        out = json.loads(path.read_text())
        return out if isinstance(out, dict) else {}
    except (OSError, ValueError):
        return {}


def pm_variant(folder: Any) -> str | None:
    """The `variant` an exported PM folder's syco_pm.json names (standard, nonsyco, ...)."""
    return _read_json(Path(str(folder)).expanduser() / "syco_pm.json").get("variant") if folder else None


def ppo_label(folder: Any) -> str | None:
    """`ppo-<variant of its PM>-seed<k>[-step<k>]` of a PPO step folder (policy/step_<k>/syco_ppo.json)
    or, without the step, of a PPO run folder (any of its steps); None when there is none."""
    folder = Path(str(folder)).expanduser() if folder else None
    if folder is None:
        return None
    step = (folder / "syco_ppo.json").is_file()
    metas = [folder / "syco_ppo.json"] if step else sorted((folder / "policy").glob("step_*/syco_ppo.json"))
    meta = _read_json(metas[-1]) if metas else {}
    if not meta:
        return None
    pm = meta.get("pm")
    label = f"ppo-{pm_variant(pm) or _folder_name(pm) or 'pm'}-seed{meta.get('seed')}"
    return f"{label}-step{meta.get('step')}" if step else label


def _folder_name(folder: Any) -> str | None:
    """A PM folder's name, or its parent's for an export named pm (<run_dir>/pm)."""
    path = Path(str(folder)) if folder else None
    return None if path is None else (path.parent.name if path.name == "pm" else path.name)


def _segment(text: str, old: Any, new: Any) -> str:
    """`text` with its dash-separated segment `old` replaced by `new` (dropped when new is None)."""
    parts = text.split("-")
    if old is None or str(old) not in parts:
        return text if new is None else f"{text}-{new}"
    i = parts.index(str(old))
    return "-".join(parts[:i] + ([] if new is None else [str(new)]) + parts[i + 1:])


def run_identity(cfg: Any) -> dict[str, Any]:
    """{name, group, job_type, tags} of a run of train.py or evaluate.py (see conf/logger/wandb.yaml).
    job_type: the task (pm, ppo; rlhf-pm and rlhf-ppo for task=rlhf's stages) or method (eval, bon,
    checkpoints). name: run_name with the variant actually used and the seed (task=ppo: the variant
    in the loaded PM's syco_pm.json; an evaluated PPO adapter or checkpoints run: its PM's variant,
    its seed and step). group: a Hydra multirun's `<job>-<sweep folder name>`, else the run name
    without the PM variant (train.py; the variants and seeds of one experiment compare) or the run name
    (evaluate.py: eval-<eval>-<policy>, bon-<eval>-<policy>-k<K>, checkpoints-<eval>)."""
    hc = _hydra()
    choices = dict(hc.runtime.choices) if hc is not None else {}
    seed, run_name = _get(cfg, "seed"), str(_get(cfg, "run_name") or "run")
    if _get(cfg, "task.name") is not None:  # train.py
        job, chosen = str(_get(cfg, "task.name")), _get(cfg, "pm.variant")
        if job == "rlhf":
            job = "rlhf-ppo" if _get(cfg, "ppo.pm") else "rlhf-pm"
        variant = chosen
        if job.endswith("ppo"):  # the PM actually loaded
            pm = _get(cfg, "ppo.pm")
            variant = pm_variant(pm) or _folder_name(pm) or chosen
        base, name = _segment(run_name, chosen, None), _segment(run_name, chosen, variant)
        name = f"{name}-pm" if job == "rlhf-pm" else name  # task=rlhf: its PM stage beside its PPO run
        tags = [job, variant, _get(cfg, "model.name"), choices.get("data") if not job.endswith("ppo") else None]
    else:  # evaluate.py
        job = str(_get(cfg, "method.name") or "eval")
        label = {"eval": lambda: ppo_label(_get(cfg, "policy.adapter")) or (
                     Path(str(_get(cfg, "policy.adapter"))).name if _get(cfg, "policy.adapter") else None),
                 "checkpoints": lambda: ppo_label(_get(cfg, "checkpoints.run"))}.get(job, lambda: None)()
        base, name = run_name, run_name if label is None else f"{run_name}-{label}"
        tags = [job, choices.get("eval"), _get(cfg, "policy.name"), *(label.split("-")[:2] if label else [])]
    if seed is not None and not (job == "checkpoints" and name != base):  # checkpoints: the PPO run's seed
        name = f"{name}-seed{seed}"
    if hc is not None and hc.mode == RunMode.MULTIRUN:
        base = f"{hc.job.config_name}-{Path(str(hc.sweep.dir)).name}"
    tags += [choices.get("experiment"), f"seed{seed}" if seed is not None else None]
    return {"name": name, "group": base, "job_type": job, "tags": [str(t) for t in tags if t]}


def resolved(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config as a plain dict, interpolations resolved (left as written where they cannot be)."""
    if not isinstance(cfg, DictConfig):
        return dict(cfg)
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - e.g. ${hydra:...} outside a Hydra app
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]
