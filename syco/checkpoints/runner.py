"""`python evaluate.py method=checkpoints checkpoints.run=<PPO run>`: sycophancy along a PPO run.

Every saved policy adapter (<run>/policy/step_<k>/, written by `train.py task=ppo`) is evaluated
with the chosen eval config by the normal evaluation (`syco.eval.runner.run`), one folder per step
(<checkpoints.out>/step_<k>/: results.json, samples.jsonl, judge_cache; a re-run skips the steps
whose results.json exists and resumes a half-generated one). Each metric then goes against the PPO
step and against the KL to the reference that the run measured at that step on its fixed eval
prompts (syco_ppo.json, the estimator of the run's KL penalty) into checkpoints.json, plots and
the tracker, beside best-of-n (nominal KL) when a BoN results.json is given.
"""

from __future__ import annotations

import gc
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from syco.bon.estimate import bootstrap_difference
from syco.checkpoints.pm_scores import checkpoint_pm_scores, pm_specs
from syco.checkpoints.report import log_summary, plot_checkpoints, report
from syco.data.samples import judged_by_task
from syco.eval.runner import run as evaluate_policy
from syco.models.backbone import folder_model_config
from syco.ppo.model import BASE_KEYS, META_FILE
from syco.tracking import build_loggers, send, write_json_atomic

log = logging.getLogger(__name__)
STEP_DIR = re.compile(r"step_(\d+)")


@dataclass
class Checkpoint:
    step: int
    adapter: Path | None  # None: the starting policy is the bare base
    meta: dict[str, Any]  # the step's syco_ppo.json (or, for an unsaved start, the first saved step's)
    kl: float
    kl_source: str


def _read_meta(folder: Path, step: int) -> dict[str, Any]:
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{folder} has no adapter_config.json: not a saved policy adapter "
                                f"(a PPO step folder holds the peft adapter and {META_FILE})")
    meta_file = folder / META_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"{meta_file} is missing: the step's measured KL is read from it "
                                f"(written by train.py task=ppo beside each adapter)")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_file} is not valid JSON: {e}") from e
    if "step" in meta and int(meta["step"]) != step:
        raise ValueError(f"{meta_file} says step {meta['step']} but its folder is {folder.name}")
    return meta


def discover(run: Path, steps: Sequence[int] | None = None, start: bool = True,
             kl_key: str = "eval/kl") -> list[Checkpoint]:
    """The checkpoints to evaluate, in step order, every one checked before anything is evaluated."""
    policy_dir = run / "policy"
    if not run.is_dir():
        raise FileNotFoundError(f"checkpoints.run={run} is not a folder")
    saved = {int(m.group(1)): p for p in (policy_dir.iterdir() if policy_dir.is_dir() else [])
             if p.is_dir() and (m := STEP_DIR.fullmatch(p.name))}
    if not saved:
        raise FileNotFoundError(f"{policy_dir} has no step_<k>/ folders: checkpoints.run must be a train.py "
                                f"task=ppo run folder (it saves policy/step_<k>/ every ppo.eval.every steps)")
    wanted = sorted({*saved, *([0] if start else [])}) if steps is None else sorted({int(s) for s in steps})
    missing = [s for s in wanted if s not in saved and not (s == 0 and start)]
    if missing:
        raise FileNotFoundError(f"{policy_dir} has no step_{missing[0]}/ (saved steps: {sorted(saved)})")
    out = []
    for step in wanted:
        if step in saved:
            meta = _read_meta(saved[step], step)
            if meta.get(kl_key) is None:
                raise KeyError(f"{saved[step] / META_FILE} has no {kl_key!r} (keys: {sorted(meta)}); "
                               f"set checkpoints.kl_key")
            out.append(Checkpoint(step, saved[step], meta, float(meta[kl_key]), f"{META_FILE} {kl_key}"))
        else:  # the starting policy, never saved: the reference itself
            meta = _read_meta(saved[min(saved)], min(saved))
            init = meta.get("init_adapter")
            out.append(Checkpoint(0, Path(init) if init else None, meta, 0.0,
                                  "start: the policy is the reference (KL 0 by construction)"))
    return out


def model_config(cfg: DictConfig, ckpt: Checkpoint) -> dict[str, Any]:
    """The base model the step's adapter goes on: the run's own (saved with the step), or `policy`
    when checkpoints.model=policy, which must then load the same base weights."""
    saved = ckpt.meta.get("model")
    mode = str(cfg.checkpoints.get("model", "run"))
    if mode not in ("run", "policy"):
        raise ValueError(f"checkpoints.model={mode!r}: choose run or policy")
    if mode == "run":
        if not saved:
            raise KeyError(f"{ckpt.adapter} ({META_FILE}) has no 'model': use checkpoints.model=policy")
        # the step folder's own trust_remote_code is ignored: only this run's config turns code on
        return folder_model_config(saved, f"PPO step folder {ckpt.adapter}",
                                   trust_remote_code=bool(cfg.checkpoints.get("trust_remote_code", False)),
                                   trust_key="checkpoints.trust_remote_code")
    policy = OmegaConf.to_container(cfg.policy, resolve=True)
    policy.pop("adapter", None)
    differ = [k for k in BASE_KEYS if saved and policy.get(k) != saved.get(k)]
    if differ:
        raise ValueError(f"policy={policy.get('name')} is not the base the PPO run trained on "
                         f"({saved.get('name')}; differs in {differ}): drop checkpoints.model=policy")
    return policy


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, Mapping):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def fingerprint(config: Mapping[str, Any]) -> dict[str, Any]:
    """What decides a step's results besides the adapter: eval config (batch size included: it
    changes which random stream a row draws from), seed, base weights. Not eval.probe: only best-of-n
    reads it."""
    policy = config.get("policy") or {}
    return {"seed": config.get("seed"), **{f"eval.{k}": v for k, v in _flat(config.get("eval") or {}).items()
                                           if not k.startswith("probe.")},
            **{f"model.{k}": policy.get(k) for k in BASE_KEYS}}


def step_config(cfg: DictConfig, ckpt: Checkpoint, folder: Path) -> DictConfig:
    """The evaluation config of one step: this one with the step's policy, its folder, no tracker."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container["policy"] = {**model_config(cfg, ckpt), "adapter": str(ckpt.adapter) if ckpt.adapter else None}
    container["run_dir"] = str(folder)
    container["logger"] = None  # the per-step summaries are tracked once, together, by the caller
    return OmegaConf.create(container)


def evaluate_step(cfg: DictConfig, ckpt: Checkpoint, folder: Path) -> dict[str, Any]:
    """The step's results.json: read when it exists (same eval config), else evaluated now."""
    step_cfg = step_config(cfg, ckpt, folder)
    done = folder / "results.json"
    if done.is_file():
        old = json.loads(done.read_text())
        new_fp, old_fp = fingerprint(OmegaConf.to_container(step_cfg)), fingerprint(old.get("config") or {})
        differ = sorted(k for k in set(new_fp) | set(old_fp) if new_fp.get(k) != old_fp.get(k))
        if differ:
            raise ValueError(f"{done} was evaluated with another config (differs in {differ[:5]}): use "
                             f"checkpoints.name=<another name> for this one, or delete {folder} to redo it")
        log.info("step %d: done before, read %s", ckpt.step, done)
        return old
    log.info("step %d: evaluating %s into %s", ckpt.step, ckpt.adapter or "the base model", folder)
    summary = evaluate_policy(step_cfg)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return summary


def with_interval(m: Mapping[str, Any], z: float) -> dict[str, Any]:
    """The metric as results.json has it, plus ci = value +- z * stderr (None without a stderr)."""
    out = dict(m)
    v, se = m.get("value"), m.get("stderr")
    out["ci"] = [v - z * se, v + z * se] if v is not None and se is not None else None
    return out


def collect(checkpoints: Sequence[Checkpoint], summaries: Mapping[int, Mapping[str, Any]], z: float) -> dict[str, Any]:
    """{step: {task: {judge: {dataset: {metric: {value, stderr, count, ci}}}}}}."""
    return {str(c.step): {task: {judge: {dataset: {name: with_interval(m, z) for name, m in metrics.items()}
                                         for dataset, metrics in by_dataset.items()}
                                 for judge, by_dataset in by_judge.items()}
                          for task, by_judge in summaries[c.step]["results"].items()}
            for c in checkpoints}


def paired_differences(pairs: Mapping[str, tuple[Path, Path]], judge: str, rounds: int = 300, level: float = 0.95,
                       seed: int = 0) -> dict[str, Any]:
    """{key: {task: {dataset: {metric: {value, count, ci}}}}}: metric(a) - metric(b) for each
    (a, b) pair of step evaluation folders, on the items both have, with a paired bootstrap
    percentile interval (each round draws the items once and reads both). Separate intervals carry
    the between-item variance twice; "did it rise", "do two runs differ" are these differences."""
    out: dict[str, Any] = {}
    read: dict[Path, dict[str, list[dict[str, Any]]]] = {}  # e.g. step 0 is the b of every rise: read once

    def samples(folder: Path) -> dict[str, list[dict[str, Any]]]:
        if folder not in read:
            read[folder] = judged_by_task(folder / "samples.jsonl", judge)
        return read[folder]

    for key, (a, b) in pairs.items():
        sa, sb = samples(a), samples(b)
        out[key] = {task: bootstrap_difference(task, sa[task], sb[task], judge, rounds=rounds, level=level, seed=seed)
                    for task in sorted(set(sa) & set(sb))}
    return out


def paired_rises(folders: Mapping[int, Path], judge: str, rounds: int = 300, level: float = 0.95,
                 seed: int = 0) -> dict[str, Any]:
    """Each later step minus the first step (paired_differences)."""
    steps = sorted(folders)
    return paired_differences({str(s): (folders[s], folders[steps[0]]) for s in steps[1:]}, judge, rounds, level, seed)


def kl_info(meta: Mapping[str, Any], kl_key: str) -> dict[str, Any]:
    """What the KL axis is: which estimator, measured how (from the run's PPO config)."""
    ppo = meta.get("ppo_config") or {}
    ev = ppo.get("eval") or {}
    estimator = (ppo.get("kl") or {}).get("estimator", "unknown")
    return {"key": kl_key, "estimator": estimator,
            "what": f"KL(policy || reference) per response (sum over tokens of the {estimator} estimate), "
                    f"mean over the PPO run's fixed eval prompts (ppo.eval_prompts), not this evaluation's prompts",
            "temperature": ev.get("temperature") if ev.get("temperature") is not None else ppo.get("temperature"),
            "max_new_tokens": ev.get("max_new_tokens") or ppo.get("max_new_tokens")}


def load_json(path: str | Path, what: str, keys: Sequence[str]) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}={path}: no such file")
    data = json.loads(path.read_text())
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{what}={path} has no {missing}: not the results.json it should be")
    return data


@dataclass
class Inputs:
    """`checkpoints.*` read and checked before any step is evaluated."""

    run: Path  # the PPO run folder
    out: Path  # <out>/step_<k>/: one evaluation per step
    checkpoints: list[Checkpoint]
    kl_key: str
    z: float  # normal interval of each step's metrics: value +- z * stderr
    rounds: int  # bootstrap rounds of the paired rises and differences
    bon: dict[str, Any] | None  # a best-of-n results.json to overlay on the KL axis
    overlays: list[dict[str, Any]]  # other runs' checkpoints.json to plot beside
    versus: Path | None  # another run's evaluations: this run minus that one, per step
    pm_scorers: list[dict[str, Any]]  # PMs that score every step's samples

    def folder(self, step: int) -> Path:
        return self.out / f"step_{step}"


def read_inputs(cfg: DictConfig) -> Inputs:
    ck = cfg.checkpoints
    if OmegaConf.is_missing(ck, "run") or not ck.run:
        raise ValueError("method=checkpoints needs checkpoints.run=<a train.py task=ppo run folder>")
    run, out = Path(str(ck.run)).expanduser(), Path(str(ck.out)).expanduser()
    steps = list(ck.steps) if ck.get("steps") is not None else None
    kl_key = str(ck.get("kl_key", "eval/kl"))
    checkpoints = discover(run, steps, bool(ck.get("start", True)), kl_key)
    bon = load_json(ck.bon, "checkpoints.bon", ("kl_nominal", "results")) if ck.get("bon") else None
    overlays = [load_json(p, "checkpoints.overlay", ("points", "results")) for p in ck.get("overlay") or []]
    versus = Path(str(ck.versus)).expanduser() if ck.get("versus") else None
    if versus is not None and not versus.is_dir():
        raise FileNotFoundError(f"checkpoints.versus={versus}: no such folder (another run's "
                                "<run>/evaluations/<name>, with step_<k>/samples.jsonl)")
    pm_scorers = pm_specs(ck.get("pm_scores"))
    for c in checkpoints:
        model_config(cfg, c)  # a wrong base fails here, before any step is evaluated
    log.info("%d checkpoints of %s: steps %s", len(checkpoints), run, [c.step for c in checkpoints])
    return Inputs(run, out, checkpoints, kl_key, float(ck.get("z", 1.96)), int(ck.get("bootstrap_rounds", 300)), bon,
                  overlays, versus, pm_scorers)


def run_checkpoints(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate every saved step (the normal evaluation, resumable), then each metric against step
    and KL, the paired rises from the first step, this run against another, and PM scores."""
    start = time.time()
    inputs = read_inputs(cfg)
    loggers = build_loggers(cfg)  # a tracker that cannot start fails before any evaluation
    summaries = {c.step: evaluate_step(cfg, c, inputs.folder(c.step)) for c in inputs.checkpoints}
    judge, judges = choose_judge(cfg.checkpoints, summaries[inputs.checkpoints[-1].step])
    summary = {
        **describe(cfg, inputs, judge, judges),
        "results": collect(inputs.checkpoints, summaries, inputs.z),
        **paired_changes(inputs, judge),
        "bon": {"path": str(cfg.checkpoints.bon), "judge": inputs.bon.get("judge"),
                "kl_nominal": inputs.bon["kl_nominal"]} if inputs.bon else None,
        "wall_time_s": time.time() - start,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    _check_bon_policy(inputs.bon, inputs.checkpoints[0], judge)
    write_json_atomic(inputs.out / "checkpoints.json", summary)
    plots = plot_checkpoints(summary, inputs.out / "plots", bon=inputs.bon, overlays=inputs.overlays)
    send(loggers, report(summary, plots, inputs.bon))
    log_summary(summary)
    log.info("wrote %s and %d plots in %s", inputs.out / "checkpoints.json", len(plots), inputs.out / "plots")
    return summary


def choose_judge(ck: Any, last: Mapping[str, Any]) -> tuple[str, list[str]]:
    """`checkpoints.judge`, or the evaluation's first judge; and every judge it has."""
    judges = list(last.get("judges") or [])
    judge = str(ck.judge) if ck.get("judge") else (judges[0] if judges else None)
    if judge not in judges:
        raise ValueError(f"checkpoints.judge={judge!r} is not one of the evaluation's judges {judges}")
    return judge, judges


def describe(cfg: DictConfig, inputs: Inputs, judge: str, judges: list[str]) -> dict[str, Any]:
    """What was evaluated: the run, its PMs, the KL axis and every step's point on it."""
    ck, meta = cfg.checkpoints, inputs.checkpoints[-1].meta
    return {
        "method": "ppo_checkpoints",
        "run": str(inputs.run),
        "pm": meta.get("pm"),
        "gold_pm": meta.get("gold_pm"),
        "init_adapter": meta.get("init_adapter"),
        "label": ck.get("label") or f"PPO vs {'/'.join(Path(str(meta.get('pm') or 'PM')).parts[-2:])}",
        "eval_name": str(ck.name),
        "judge": judge,
        "judges": judges,
        "kl": kl_info(meta, inputs.kl_key),
        "interval": f"value +- {inputs.z} * stderr (normal)",
        "steps": [c.step for c in inputs.checkpoints],
        "points": [{"step": c.step, "kl": c.kl, "kl_source": c.kl_source,
                    "adapter": str(c.adapter) if c.adapter else None,
                    "results": str(inputs.folder(c.step) / "results.json"),
                    "ppo_eval": {k: v for k, v in c.meta.items() if k.startswith("eval/") or k == "kl_coef"}}
                   for c in inputs.checkpoints],
    }


def paired_changes(inputs: Inputs, judge: str) -> dict[str, Any]:
    """Paired by item, with bootstrap percentile intervals: each later step minus the first (rises),
    this run minus checkpoints.versus at each step both evaluated, and the PM scores' levels and rises."""
    folders = {c.step: inputs.folder(c.step) for c in inputs.checkpoints}
    versus = inputs.versus
    return {
        "rises": paired_rises(folders, judge, inputs.rounds) if len(folders) > 1 else {},
        "versus": {"path": str(versus), "differences": paired_differences(
            {str(step): (folder, versus / f"step_{step}") for step, folder in folders.items()
             if (versus / f"step_{step}" / "samples.jsonl").is_file()}, judge, inputs.rounds)} if versus else None,
        "pm_scores": checkpoint_pm_scores(folders, inputs.pm_scorers, judge, inputs.rounds)
        if inputs.pm_scorers else {},
    }


def _check_bon_policy(bon: Mapping[str, Any] | None, first: Checkpoint, judge: str | None) -> None:
    """Warn when the BoN run did not sample from the PPO reference (its KL axis is then another one)."""
    if not bon:
        return
    policy = (bon.get("config") or {}).get("policy") or {}
    model = first.meta.get("model") or {}
    init = first.meta.get("init_adapter")
    differ = [k for k in BASE_KEYS if policy.get(k) != model.get(k)]
    if (policy.get("adapter") or None) != (init or None):
        differ.append(f"adapter ({policy.get('adapter')} against {init})")
    if differ:
        log.warning("the BoN run's policy %s is not the PPO reference %s (differs in %s): the two KL axes are "
                    "not measured from the same starting distribution", policy.get("name"), model.get("name"), differ)
    if bon.get("judge") and judge and bon["judge"] != judge:
        log.warning("BoN metrics use judge %s, the PPO curves %s", bon["judge"], judge)
