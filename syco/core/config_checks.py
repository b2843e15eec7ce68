"""Config values that cannot run, found at start-up before any model is loaded or any data read.

`check_train_config(cfg)` (train.py) and `check_eval_config(cfg)` (evaluate.py) look at the groups
the chosen task or method reads, collect every problem and raise one ConfigError listing each as
`<key>=<value>: <what is wrong>; <what to do>`. They flag only what cannot run (a key left `???`, a
learning rate of 0, a batch of 0 rows, a training length of 0 steps or of forever, a fraction outside
[0, 1)); legitimate settings, however unusual, pass. Pure: omegaconf only, no Lightning, no syco.

`UserError` marks the errors a user fixes by changing the command (ConfigError here, the models'
ModelUnavailableError): `user_errors(run_dir)` around an entry point's main prints them as one
`error: ...` line on stderr and exits 1, without a traceback; any other exception keeps its own.
"""

from __future__ import annotations

import math
import re
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

UNSET = "???"
ABSENT = object()  # the key is not in the config (or cannot be resolved outside the running app)

# what to type for a required key; any other `???` gets the generic `<key>=<value>`
EXAMPLES = {
    "model.name_or_path": "python train.py model=local model.name_or_path=/path/to/model_folder",
    "policy.name_or_path": "python evaluate.py policy=local policy.name_or_path=/path/to/model_folder",
    "data.sources.pairs.path": "python train.py data=jsonl data.sources.pairs.path=/path/to/pairs.jsonl",
    "data.policy_samples": "python train.py data=policy_beliefs data.policy_samples=outputs/policy_samples/samples.jsonl",
    "policy_samples": "python train.py experiment=planted_bias_known policy_samples=outputs/policy_samples/samples.jsonl",
    "checkpoints.run": "python evaluate.py method=checkpoints checkpoints.run=outputs/<train.py task=ppo run folder>",
    "ppo.pm": "python train.py task=ppo ppo.pm=outputs/<train.py task=pm run folder>/pm",
}
PM_GROUPS = ("model", "pm", "data", "optimizer", "trainer", "checkpoint")
PPO_GROUPS = ("model", "ppo", "trainer")
TASK_GROUPS = {"pm": PM_GROUPS, "ppo": PPO_GROUPS, "rlhf": (*PM_GROUPS, "ppo")}
ON_BAD_ROW = ("error", "skip")
_PLAIN = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_.]*)\}$")  # ${a.b}: an interpolation of one other key
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}")  # every ${a.b} inside an interpolation


class UserError(Exception):
    """An error the user fixes by changing the command; its message says what to do (no traceback)."""


@contextmanager
def user_errors(run_dir: str | Path | None) -> Iterator[None]:
    """Print a UserError as one `error: <message>` line on stderr and exit with status 1. Hydra has
    made the run folder before main runs: when the run failed before writing anything of its own
    (the folder holds only Hydra's .hydra/ and the job's .log), it is removed, so that a command that
    could not start leaves no empty run folder behind to be mistaken for a run."""
    try:
        yield
    except UserError as err:
        folder = Path(run_dir) if run_dir else None
        if folder is not None and folder.is_dir() and all(
                (p.name == ".hydra" and p.is_dir()) or (p.suffix == ".log" and p.is_file()) for p in folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


class ConfigError(ValueError, UserError):
    """Every problem of one config, one per line (`problems` keeps them for callers and tests)."""

    def __init__(self, entry: str, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{entry}: {len(problems)} config value(s) cannot run; nothing was loaded:\n{lines}")


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


def _as_int(value: Any) -> int | None:
    """An integer (an integral float or a numeric string too, as int() reads them); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _as_float(value: Any) -> float | None:
    """A number as float() reads it (NaN and inf included: callers check finiteness); None otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except ValueError:
        return None


class Checker:
    def __init__(self, cfg: Mapping[str, Any], entry: str):
        self.cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
        self.entry = entry
        self.problems: list[str] = []
        self._reported: set[str] = set()

    # --- reading ------------------------------------------------------------------------------------
    def get(self, key: str) -> Any:
        """The resolved value; UNSET for `???` (or an interpolation of one); ABSENT when not there."""
        parent_key, _, leaf = key.rpartition(".")
        try:
            parent = OmegaConf.select(self.cfg, parent_key) if parent_key else self.cfg
        except (MissingMandatoryValue, InterpolationToMissingValueError):
            return UNSET
        except Exception:  # noqa: BLE001 - what only the running app resolves: the task reports it
            return ABSENT
        if not isinstance(parent, DictConfig) or leaf not in parent.keys():
            return ABSENT
        if OmegaConf.is_missing(parent, leaf):
            return UNSET
        try:
            value = parent[leaf]
        except (MissingMandatoryValue, InterpolationToMissingValueError):
            return UNSET
        except Exception:  # noqa: BLE001
            return ABSENT
        if isinstance(value, (DictConfig, ListConfig)):
            try:
                return OmegaConf.to_container(value, resolve=True)
            except Exception:  # noqa: BLE001
                return ABSENT
        return value

    def has(self, key: str) -> bool:
        return self.get(key) is not ABSENT

    # --- reporting ----------------------------------------------------------------------------------
    def add(self, key: str, value: Any, what: str, todo: str) -> None:
        """One problem; not again for a key that only interpolates one already reported."""
        if self._origin(key) in self._reported:
            return
        self._reported.add(key)
        self.problems.append(f"{key}={_show(value)}: {what}; {todo}")

    def unset(self, roots: Iterable[str]) -> None:
        """Every `???` under the given top-level keys, and every interpolation that ends at one (reported
        once, under the key that holds the `???`)."""
        for root in roots:
            if root in self.cfg.keys():
                self._walk(self.cfg._get_node(root), root)

    def _walk(self, node: Any, full: str) -> None:
        if node._is_missing():
            self._report_unset(full, full)
        elif node._is_interpolation():
            if self.get(full) == UNSET:
                refs = [self._origin(ref) for ref in _REF.findall(str(node._value()))]
                unset = [ref for ref in refs if (n := self._node(ref)) is not None and n._is_missing()]
                for origin in unset or [full]:
                    self._report_unset(origin, full)
        elif isinstance(node, DictConfig):
            for key in node.keys():
                self._walk(node._get_node(key), f"{full}.{key}")

    def _origin(self, key: str) -> str:
        """The key holding the `???` that a chain of plain `${a.b}` interpolations from `key` ends at."""
        seen: set[str] = set()
        while key not in seen:
            seen.add(key)
            node = self._node(key)
            match = _PLAIN.match(str(node._value())) if node is not None and node._is_interpolation() else None
            if match is None:
                return key
            key = match.group(1)
        return key

    def _node(self, key: str) -> Any:
        parent_key, _, leaf = key.rpartition(".")
        try:
            parent = OmegaConf.select(self.cfg, parent_key) if parent_key else self.cfg
        except Exception:  # noqa: BLE001
            return None
        return parent._get_node(leaf) if isinstance(parent, DictConfig) and leaf in parent.keys() else None

    def _report_unset(self, key: str, read_as: str) -> None:
        if key in self._reported:
            return
        what = "required and unset" + (f" (read as {read_as})" if read_as != key else "")
        example = EXAMPLES.get(key)
        self.add(key, UNSET, what, f"e.g. {example}" if example else
                 f"set it on the command line: python {self.entry} ... {key}=<value>")

    def children(self, root: str) -> list[str]:
        """The names of the non-null entries of the mapping at `root` (resolving nothing)."""
        node = self._node(root)
        if not isinstance(node, DictConfig) or node._is_missing() or node._is_interpolation():
            return []
        return [k for k in node.keys() if not (child := node._get_node(k))._is_none() and not child._is_missing()]

    # --- checks (a key not in the config is not checked) --------------------------------------------
    def integer(self, key: str, minimum: int, optional: bool = False, todo: str = "") -> int | None:
        value = self.get(key)
        if value is ABSENT or value == UNSET or (optional and value is None):
            return None
        n = _as_int(value)
        if n is None or n < minimum:
            what = f"must be an integer >= {minimum}" + (" (or null)" if optional else "")
            self.add(key, value, what, todo or f"e.g. {key}={max(minimum, 1)}")
            return None
        return n

    def number(self, key: str, low: float | None = None, high: float | None = None, low_open: bool = False,
               high_open: bool = False, optional: bool = False, todo: str = "") -> float | None:
        """A finite number in [low, high] (an open end with low_open / high_open)."""
        value = self.get(key)
        if value is ABSENT or value == UNSET or (optional and value is None):
            return None
        x = _as_float(value)
        ok = x is not None and math.isfinite(x)
        if ok and low is not None:
            ok = x > low if low_open else x >= low
        if ok and high is not None:
            ok = x < high if high_open else x <= high
        if not ok:
            bounds = []
            if low is not None:
                bounds.append(f"{'>' if low_open else '>='} {low:g}")
            if high is not None:
                bounds.append(f"{'<' if high_open else '<='} {high:g}")
            what = "must be a finite number" + (" " + " and ".join(bounds) if bounds else "") + \
                (" (or null)" if optional else "")
            self.add(key, value, what, todo or "give a value in range")
            return None
        return x

    def fraction(self, key: str, optional: bool = False) -> None:
        self.number(key, 0.0, 1.0, high_open=True, optional=optional, todo=f"e.g. {key}=0.25")

    def choice(self, key: str, options: Iterable[str]) -> None:
        value = self.get(key)
        options = tuple(options)
        if value is not ABSENT and value != UNSET and value not in options:
            self.add(key, value, f"must be one of {', '.join(options)}", f"e.g. {key}={options[0]}")

    def divides(self, part_key: str, whole_key: str) -> None:
        part, whole = _as_int(self.get(part_key)), _as_int(self.get(whole_key))
        if whole_key in self._reported or part_key in self._reported:
            return
        if part and whole and part >= 1 and whole >= 1 and whole % part:
            self.add(part_key, part, f"must divide {whole_key}={whole}", f"e.g. {part_key}={_divisor(whole, part)}")

    def raise_if_any(self) -> None:
        if self.problems:
            raise ConfigError(self.entry, self.problems)


def _divisor(whole: int, near: int) -> int:
    return min((d for d in range(1, whole + 1) if whole % d == 0), key=lambda d: abs(d - near))


# --- shared ----------------------------------------------------------------------------------------
def _model(c: Checker, root: str) -> None:
    """A model config that loads from a folder or hub id needs name_or_path."""
    if c.get(f"{root}.source") != "pretrained":
        return
    value = c.get(f"{root}.name_or_path")
    if value is None or (isinstance(value, str) and not value.strip()):
        c.add(f"{root}.name_or_path", value, f"{root}.source=pretrained loads a model folder or hub id and none is "
              "given", f"e.g. {EXAMPLES[f'{root}.name_or_path']}")


def _sources(c: Checker, root: str, min_limit: int) -> list[str]:
    """The non-null sources under `root` (a mapping name: source node), their numeric options checked."""
    names = c.children(root)
    for name in names:
        key = f"{root}.{name}"
        c.integer(f"{key}.limit", min_limit, optional=True, todo=f"e.g. {key}.limit=100, or null for all")
        c.fraction(f"{key}.heldout_fraction", optional=True)
        for option in ("beta", "gamma"):
            c.number(f"{key}.{option}", optional=True, todo=f"e.g. {key}.{option}=2.0")
        for option, minimum in (("templates_per_condition", 1), ("pairs_per_prompt", 1), ("arguments", 0),
                                ("poems", 0), ("wrong_per_poem", 0), ("max_options", 2)):
            c.integer(f"{key}.{option}", minimum)
    return names


# --- train.py --------------------------------------------------------------------------------------
def _pm_training(c: Checker) -> None:
    c.integer("data.max_length", 8, todo="a prompt and a response must fit; e.g. data.max_length=256")
    c.integer("data.batch_size", 1)
    c.integer("data.eval_batch_size", 1)
    c.integer("data.num_workers", 0)
    c.choice("data.on_bad_row", ON_BAD_ROW)
    c.fraction("data.heldout_fraction")
    c.integer("data.max_train_pairs", 1, optional=True, todo="e.g. data.max_train_pairs=1000, or null for all")
    c.integer("data.max_val_pairs", 0, optional=True, todo="e.g. data.max_val_pairs=500, or null for all")
    if c._node("data.sources") is not None and not _sources(c, "data.sources", min_limit=1):
        c.add("data.sources", "{}", "no data source is set: nothing to train on",
              "pick a data option, e.g. python train.py data=beliefs")
    c.number("pm.anti_sycophancy.ratio", 0.0, optional=True, todo="e.g. pm.anti_sycophancy.ratio=0.35, or 0 for none")
    c.number("pm.center_rewards_coefficient", 0.0, optional=True, todo="e.g. pm.center_rewards_coefficient=0")
    if c.get("pm.from_path") not in (None, ABSENT):
        return  # a trained PM behind a prompt: no optimizer, no training length
    c.number("optimizer.lr", 0.0, low_open=True, todo="e.g. optimizer.lr=2e-4")
    c.number("optimizer.weight_decay", 0.0, optional=True, todo="e.g. optimizer.weight_decay=0")
    c.number("optimizer.warmup_ratio", 0.0, 1.0, optional=True, todo="e.g. optimizer.warmup_ratio=0.05")
    c.integer("optimizer.warmup_steps", 0, optional=True, todo="e.g. optimizer.warmup_steps=10, or null")
    _betas(c, "optimizer.betas")
    _training_length(c)
    c.integer("trainer.accumulate_grad_batches", 1)
    c.integer("checkpoint.every_n_train_steps", 0,
              todo="e.g. checkpoint.every_n_train_steps=50 (0: only the final checkpoint)")


def _betas(c: Checker, key: str) -> None:
    betas = c.get(key)
    if betas in (ABSENT, UNSET, None):
        return
    values = [_as_float(b) for b in betas] if isinstance(betas, list) else []
    if len(values) != 2 or not all(v is not None and 0.0 <= v < 1.0 for v in values):
        c.add(key, betas, "must be two numbers in [0, 1)", f"e.g. {key}=[0.9,0.999]")


def _training_length(c: Checker) -> None:
    epochs_raw, steps_raw = c.get("trainer.max_epochs"), c.get("trainer.max_steps")
    epochs = None if epochs_raw in (None, ABSENT) else _as_int(epochs_raw)
    steps = -1 if steps_raw in (None, ABSENT) else _as_int(steps_raw)
    if epochs_raw not in (None, ABSENT) and (epochs is None or epochs < -1):
        c.add("trainer.max_epochs", epochs_raw, "must be an integer >= 1, or -1 (no limit: then trainer.max_steps ends "
              "training)", "e.g. trainer.max_epochs=1")
    elif epochs == 0:
        c.add("trainer.max_epochs", 0, "trains nothing (the PM would be exported untrained)",
              "e.g. trainer.max_epochs=1")
    if steps is None or steps < -1:
        c.add("trainer.max_steps", steps_raw, "must be an integer >= 1, or -1 (no limit)", "e.g. trainer.max_steps=-1")
    elif steps == 0:
        c.add("trainer.max_steps", 0, "trains nothing (the PM would be exported untrained)",
              "e.g. trainer.max_steps=-1 (no limit: trainer.max_epochs ends training) or trainer.max_steps=100")
    if epochs == -1 and steps == -1 and c.get("trainer.max_time") in (None, ABSENT):
        c.add("trainer.max_epochs", -1, "with trainer.max_steps=-1 training never stops",
              "e.g. trainer.max_epochs=1, or trainer.max_steps=1000")


def _ppo(c: Checker, needs_pm: bool) -> None:
    if needs_pm and c.get("ppo.pm") in (None, "", ABSENT):
        c.add("ppo.pm", c.get("ppo.pm"), "task=ppo optimizes against an exported PM and none is given",
              f"e.g. {EXAMPLES['ppo.pm']} (or task=rlhf trains the PM first)")
    for key in ("total_steps", "mini_batch_size", "samples_per_prompt", "gradient_accumulation_steps", "ppo_epochs",
                "max_new_tokens", "checkpoint_every", "eval.every", "eval.batch_size", "reward.batch_size"):
        c.integer(f"ppo.{key}", 1)
    c.integer("ppo.batch_size", 2, todo="advantages are whitened over the batch; e.g. ppo.batch_size=8")
    c.integer("ppo.forward_batch_size", 1, optional=True, todo="e.g. ppo.forward_batch_size=8, or null")
    if c.integer("ppo.generation_batch_size", 1, optional=True, todo="e.g. ppo.generation_batch_size=null") is not None:
        c.divides("ppo.generation_batch_size", "ppo.batch_size")
    c.integer("ppo.eval.max_new_tokens", 1, optional=True, todo="e.g. ppo.eval.max_new_tokens=32, or null")
    c.integer("ppo.optimizer.warmup_steps", 0)
    c.divides("ppo.mini_batch_size", "ppo.batch_size")
    c.divides("ppo.samples_per_prompt", "ppo.batch_size")
    c.divides("ppo.gradient_accumulation_steps", "ppo.mini_batch_size")
    c.number("ppo.optimizer.lr", 0.0, low_open=True, todo="e.g. ppo.optimizer.lr=3e-5")
    c.number("ppo.optimizer.weight_decay", 0.0, todo="e.g. ppo.optimizer.weight_decay=0")
    _betas(c, "ppo.optimizer.betas")
    c.number("ppo.temperature", 0.0, low_open=True, todo="e.g. ppo.temperature=1.0")
    c.number("ppo.eval.temperature", 0.0, low_open=True, optional=True, todo="e.g. ppo.eval.temperature=null")
    c.number("ppo.kl.coef", 0.0, todo="e.g. ppo.kl.coef=0.05")
    for key in ("gamma", "lam"):
        c.number(f"ppo.{key}", 0.0, 1.0, todo=f"e.g. ppo.{key}=0.95")
    for key in ("clip_range", "clip_range_value", "vf_coef"):
        c.number(f"ppo.{key}", 0.0, low_open=True, todo=f"e.g. ppo.{key}=0.2")
    strategy = c.get("trainer.strategy")
    name = strategy.get("_target_", "") if isinstance(strategy, Mapping) else str(strategy)
    if "fsdp" in name.lower():
        c.add("trainer.strategy", name, "PPO runs under DDP, not FSDP (each rank generates rollouts of its own "
              "length, which sharded forwards cannot do in lock-step; policy and value are LoRA adapters, small to "
              "replicate)", "use trainer=ddp (trainer=fsdp is for task=pm)")
    for key in ("prompts", "eval_prompts"):
        c.integer(f"ppo.{key}.limit", 1, optional=True, todo=f"e.g. ppo.{key}.limit=16, or null for all")
        c.fraction(f"ppo.{key}.heldout_fraction", optional=True)


def check_train_config(cfg: Mapping[str, Any]) -> None:
    """train.py: the groups the task reads (conf/task/*.yaml), checked before any work."""
    c = Checker(cfg, "train.py")
    task = c.get("task.name")
    groups = TASK_GROUPS.get(task, ("model",)) if isinstance(task, str) else ("model",)
    c.unset(groups)
    _model(c, "model")
    c.fraction("split.heldout_fraction")
    if "data" in groups:
        _pm_training(c)
    if "ppo" in groups:
        _ppo(c, needs_pm=task == "ppo")
    c.raise_if_any()


# --- evaluate.py -----------------------------------------------------------------------------------
def check_eval_config(cfg: Mapping[str, Any]) -> None:
    """evaluate.py: the policy (unless the checkpoints read their own base model), the eval data,
    generation and the method's own options, checked before any work."""
    c = Checker(cfg, "evaluate.py")
    method = c.get("method.name")
    uses_policy = not (method == "checkpoints" and c.get("checkpoints.model") == "run")
    roots = ["eval", "split", *(["policy"] if uses_policy else []), *([method] if method in ("bon", "checkpoints")
                                                                     else [])]
    c.unset(roots)
    if uses_policy:
        _model(c, "policy")
    c.fraction("split.heldout_fraction")
    c.choice("eval.on_bad_row", ON_BAD_ROW)
    for key in ("max_new_tokens", "samples_per_prompt", "batch_size"):
        c.integer(f"eval.generation.{key}", 1)
    c.integer("eval.generation.max_new_tokens_texts", 1, optional=True)
    c.integer("eval.generation.max_rows_per_call", 1, optional=True,
              todo="e.g. eval.generation.max_rows_per_call=128 (null: one seeded group a call)")
    for key in ("temperature_free", "temperature_mc", "temperature_attribution"):
        c.number(f"eval.generation.{key}", 0.0, optional=True, todo=f"e.g. eval.generation.{key}=1.0 (0: greedy)")
    c.integer("eval.generation.top_k", 0, todo="e.g. eval.generation.top_k=0 (off)")
    c.number("eval.generation.top_p", 0.0, 1.0, low_open=True, todo="e.g. eval.generation.top_p=1.0 (off)")
    tasks = c.get("eval.tasks")
    for task in tasks if isinstance(tasks, list) else []:
        _sources(c, f"eval.{task}.sources", min_limit=0)
    c.integer("eval.probe.limit", 0, optional=True, todo="e.g. eval.probe.limit=30, or null for all")
    c.integer("eval.probe.max_new_tokens", 1)
    c.fraction("eval.probe.heldout_fraction", optional=True)
    if method == "bon":
        k = c.integer("bon.k", 1, todo="e.g. bon.k=16")
        c.integer("bon.score_batch_size", 1)
        c.integer("bon.bootstrap_rounds", 1)
        grid = c.get("bon.n_grid")
        if isinstance(grid, list) and not all((n := _as_int(v)) is not None and 1 <= n <= (k or n) for v in grid):
            c.add("bon.n_grid", grid, f"every n must be an integer in [1, bon.k={k}]", "e.g. bon.n_grid=[1,2,4,8,16]")
    if method == "checkpoints":
        c.choice("checkpoints.model", ("run", "policy"))
        c.number("checkpoints.z", 0.0, low_open=True, todo="e.g. checkpoints.z=1.96")
        c.integer("checkpoints.bootstrap_rounds", 1)
    c.raise_if_any()


# --- analyze.py ------------------------------------------------------------------------------------
def check_analyze_config(cfg: Mapping[str, Any]) -> None:
    """analyze.py: the data, labels and regression options, checked before any pair or model is loaded."""
    c = Checker(cfg, "analyze.py")
    c.unset(["data", "labels", "analysis", "split"])
    c.fraction("split.heldout_fraction")
    c.choice("analysis.side", ("all", "train", "heldout"))
    c.choice("labels.name", ("data", "pm"))
    c.integer("analysis.max_pairs", 10, optional=True, todo="e.g. analysis.max_pairs=1000, or null for all")
    for key in ("chains", "draws", "warmup"):
        c.integer(f"analysis.{key}", 1)
    c.number("analysis.holdout_fraction", 0.0, 1.0, low_open=True, high_open=True,
             todo="e.g. analysis.holdout_fraction=0.2")
    c.fraction("analysis.max_missing_fraction")
    grid = c.get("analysis.prior_grid")
    if not isinstance(grid, list) or not grid or not all(
            (x := _as_float(v)) is not None and math.isfinite(x) and x > 0 for v in grid):
        c.add("analysis.prior_grid", grid, "must be a non-empty list of Laplace scales > 0",
              "e.g. analysis.prior_grid=[0.01,0.1,1.0]")
    features = c.get("analysis.features")
    if not isinstance(features, list) or not features:
        c.add("analysis.features", features, "must be a non-empty list of feature names or sets",
              "e.g. analysis.features=[program,truth,lm]")
    if c.get("labels.name") == "pm" and c.get("pm.path") in (None, "", ABSENT):
        c.add("pm.path", c.get("pm.path"), "labels=pm labels the pairs by a trained PM and none is given",
              "e.g. python analyze.py labels=pm pm.path=outputs/<run>/pm")
    c.raise_if_any()
