"""conf/: every option of every config group composes and resolves (discovered from conf/, so a new
option is covered without editing this file); the one held-out split reaches every group; entry
points import; experiments give the intended settings for every task; every eval source builds
records; the CPU trainer instantiates."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import yaml
from conftest import CONF_DIR, REPO_ROOT, SHARED_DATA, compose_resolvable
from hydra.utils import get_method, instantiate
from lightning.pytorch.accelerators import CPUAccelerator
from omegaconf import OmegaConf
from test_docs_commands import ENTRY_POINTS, all_commands

from syco.bon.probe import probe_records
from syco.core.config_checks import ConfigError, check_eval_config, check_train_config
from syco.data.pairs import BadRows
from syco.data.records import write_released
from syco.eval import sources as S

PRIMARY = ("train", "evaluate")
# keys an option leaves for the command line (`???`): each option's required keys, named here so
# that a `???` nobody meant is caught; every other option must resolve as it is
REQUIRED = {
    "model=local": {"model.name_or_path"},
    "policy=local": {"policy.name_or_path"},
    "data=jsonl": {"data.sources.pairs.path"},
    "method=checkpoints": {"checkpoints.run"},
    "experiment=planted_bias_known": {"policy_samples"},
}


def groups(primary: str) -> dict[str, list[str]]:
    """{group: its options} for the groups in conf/<primary>.yaml's defaults list (from the files)."""
    defaults = yaml.safe_load((CONF_DIR / f"{primary}.yaml").read_text())["defaults"]
    names = [next(iter(d)).split("@")[0].removeprefix("optional ").strip() for d in defaults if isinstance(d, dict)]
    return {g: sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml")) for g in names if (CONF_DIR / g).is_dir()}


def cases(primary: str) -> list[tuple[str, str]]:
    return [(primary, f"{g}={o}") for g, options in groups(primary).items() for o in options]


def unset_keys(cfg: Any, prefix: str = "") -> set[str]:
    """Keys whose value is `???` itself (not an interpolation of one: those fail when resolving)."""
    out: set[str] = set()
    for key in (cfg if OmegaConf.is_dict(cfg) else range(len(cfg))):
        node, full = cfg._get_node(key), f"{prefix}{key}"
        if OmegaConf.is_config(node):
            out |= unset_keys(node, f"{full}.")
        elif node._is_missing():
            out.add(full)
    return out


def resolved(primary: str, overrides: list[str], tmp_path: Path) -> dict[str, Any]:
    """The config with its required keys set (to /required/<key>), resolved; fails on a `???` not in
    REQUIRED and on any broken interpolation."""
    cfg = compose_resolvable(primary, overrides, tmp_path / "run")
    required = set().union(*(REQUIRED.get(o, set()) for o in overrides))
    missing = unset_keys(cfg)
    assert missing <= required, f"{overrides}: unset (???) keys {sorted(missing - required)} not in REQUIRED"
    for key in missing:
        OmegaConf.update(cfg, key, f"/required/{key}")
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def test_every_group_is_found():
    assert set(groups("train")) >= {"task", "model", "pm", "data", "ppo", "split", "optimizer", "trainer", "logger",
                                    "experiment"}
    assert set(groups("evaluate")) >= {"policy", "method", "eval", "split", "logger"}


@pytest.mark.parametrize(("primary", "option"), [*cases("train"), *cases("evaluate")])
def test_every_option_composes_and_resolves(primary, option, tmp_path):
    cfg = resolved(primary, [option], tmp_path)
    assert cfg["run_dir"] == str(tmp_path / "run") and cfg["run_name"]
    entry = cfg["task"]["entry"] if primary == "train" else cfg["method"]["entry"]
    assert callable(get_method(entry))
    for lg in (cfg.get("logger") or {}).values():  # loggers write into the run folder
        assert lg["save_dir"] == str(tmp_path / "run")


@pytest.mark.parametrize("experiment", groups("train")["experiment"])
@pytest.mark.parametrize("task", groups("train")["task"])
def test_every_experiment_composes_for_every_task(experiment, task, tmp_path):
    cfg = resolved("train", [f"experiment={experiment}", f"task={task}"], tmp_path)
    assert cfg["task"]["name"] == task and callable(get_method(cfg["task"]["entry"]))


@pytest.mark.parametrize("eval_option", groups("evaluate")["eval"])
@pytest.mark.parametrize("method", groups("evaluate")["method"])
def test_every_eval_option_composes_for_every_method(eval_option, method, tmp_path):
    cfg = resolved("evaluate", [f"method={method}", f"eval={eval_option}"], tmp_path)
    assert cfg["method"]["name"] == method
    assert eval_option in cfg["run_name"]  # run folders of different eval options never mix
    assert set(cfg["eval"]["tasks"]) <= {"feedback", "are_you_sure", "answer", "mimicry", "misconceptions"}


def _split_values(node: Any, path: str = "") -> dict[str, Any]:
    """Every heldout_fraction / split_seed in a resolved config, by key path."""
    out: dict[str, Any] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{path}.{k}" if path else str(k)
            if k in ("heldout_fraction", "split_seed"):
                out[key] = v
            out.update(_split_values(v, key))
    return out


@pytest.mark.parametrize(("primary", "option"), [("train", "data=beliefs"), ("train", "data=hh_rlhf"),
                                                 ("train", "data=jsonl"), ("train", "data=planted_bias"),
                                                 ("train", "data=policy_beliefs"),
                                                 ("train", "experiment=planted_bias_known"),
                                                 ("evaluate", "eval=planted_bias"), ("evaluate", "eval=policy_samples"),
                                                 ("evaluate", "eval=truthfulqa_bon")])
def test_one_held_out_split_reaches_every_group(primary, option, tmp_path):
    """The split is one node (conf/split): moving it moves every group that splits items, and a
    data-group override still changes PM training's split alone."""
    values = _split_values(resolved(primary, [option], tmp_path))
    assert values and all(v in (0.25, 0, None) for v in values.values())
    moved = _split_values(resolved(primary, [option, "split.heldout_fraction=0.4", "split.seed=7"], tmp_path))
    for key, v in moved.items():
        if key == "eval.probe.heldout_fraction" and option != "eval=planted_bias":
            assert v is None  # the probe reads every misconception unless an eval option restricts it
        else:
            assert v == (0.4 if key.endswith("heldout_fraction") else 7), key
    if primary == "train":
        alone = _split_values(resolved(primary, [option, "data.heldout_fraction=0.2"], tmp_path))
        assert alone["data.heldout_fraction"] == 0.2 and alone["ppo.prompts.heldout_fraction"] == 0.25


def test_objective_is_a_metric_the_task_reports():
    from train import objective_value

    result = {"metrics": {"heldout/accuracy": {"value": 0.7, "count": 3}}}
    assert objective_value(result, "heldout/accuracy") == 0.7
    assert objective_value(result, None) is None
    with pytest.raises(KeyError, match="task.objective='eval/score' is not among"):
        objective_value(result, "eval/score")


def test_cpu_trainer_instantiates(tmp_path):
    cfg = compose_resolvable("train", ["trainer=cpu"], tmp_path / "run")
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False, default_root_dir=str(tmp_path))
    assert isinstance(trainer, L.Trainer)
    assert isinstance(trainer.accelerator, CPUAccelerator)
    assert trainer.num_devices == 1
    assert trainer.max_epochs == 1 and trainer.gradient_clip_val == 1.0
    assert trainer.logger is None


def test_fsdp_wrap_policy_instantiates():
    from syco.models.fsdp import decoder_layer_policy

    policy = decoder_layer_policy()

    class LlamaDecoderLayer:  # only the class name matters
        pass

    assert policy(LlamaDecoderLayer(), False, 0) is True
    assert policy(object(), False, 0) is False
    assert policy(object(), True, 0) is True


# --- experiments: the intended settings, for every task ---------------------------------------------
@pytest.mark.parametrize("pm", ["standard", "nonsyco"])
def test_planted_bias_policy_experiment(pm, tmp_path):
    cfg = resolved("train", ["experiment=planted_bias_policy", f"pm={pm}", "data.policy_samples=/x/samples.jsonl"],
                   tmp_path)
    sources = cfg["data"]["sources"]
    assert set(sources) == {"beliefs", "policy"} and sources["policy"]["samples"] == "/x/samples.jsonl"
    # one rater for the templated and the policy-written pairs, with the strong planted bias
    assert sources["policy"]["beta"] == sources["beliefs"]["beta"] == 4.0
    assert sources["policy"]["gamma"] == sources["beliefs"]["gamma"] == 2.0
    assert cfg["pm"]["variant"] == pm and cfg["run_name"] == f"planted_bias_policy-{pm}-smollm2-135m-instruct"
    assert (cfg["pm"]["anti_sycophancy"].get("samples") == "/x/samples.jsonl") == (pm == "nonsyco")


@pytest.mark.parametrize("task", ["pm", "ppo", "rlhf"])
def test_planted_bias_answers_experiment(task, tmp_path):
    """The sixth PPO measurement's PMs and PPO from one experiment name, for every task."""
    for pm in ("standard", "nonsyco"):
        cfg = resolved("train", ["experiment=planted_bias_answers", f"task={task}", f"pm={pm}",
                                 "data.policy_samples=/x/samples.jsonl"], tmp_path)
        sources = cfg["data"]["sources"]
        assert sources["policy"]["tasks"] == ["answer"] and sources["beliefs"]["limit"] == 480
        assert sources["policy"]["beta"] == sources["beliefs"]["beta"] == 4.0
        assert sources["policy"]["gamma"] == sources["beliefs"]["gamma"] == 1.0
        assert cfg["optimizer"]["lr"] == 1e-3 and cfg["data"]["max_train_pairs"] == 1600
        anti = cfg["pm"]["anti_sycophancy"]
        assert anti["ratio"] == (0.35 if pm == "nonsyco" else 0.0)  # the standard PM gets no corrections
        assert anti.get("tasks", ["answer"]) == ["answer"]
        ppo = cfg["ppo"]
        assert ppo["samples_per_prompt"] == 4 and ppo["reward"]["baseline"] == "prompt"
        assert ppo["prompts"]["templates"] == ["plain", "suggest_incorrect"] and ppo["optimizer"]["lr"] == 3e-4
        assert ppo["batch_size"] % ppo["samples_per_prompt"] == 0 and ppo["total_steps"] == 50
        assert ppo["lora"]["target_modules"] == ["q_proj", "v_proj"]
        assert ppo["pm"] is None  # the PPO target: given by task=ppo's command, set by task=rlhf


@pytest.mark.parametrize("task", ["pm", "ppo", "rlhf"])
def test_planted_bias_known_experiment(task, tmp_path):
    """The seventh PPO measurement: planted_bias_answers with PPO on known facts' suggest-incorrect
    prompts; one samples file, required by every task, feeds the PMs' pairs and PPO's known facts."""
    over = ["experiment=planted_bias_known", f"task={task}"]
    assert unset_keys(compose_resolvable("train", over, tmp_path / "run")) == {"policy_samples"}
    known = resolved("train", [*over, "policy_samples=/x/samples.jsonl"], tmp_path)
    assert known["ppo"]["prompts"]["known_from"] == known["data"]["policy_samples"] == "/x/samples.jsonl"
    answers = resolved("train", ["experiment=planted_bias_answers", f"task={task}", "data.policy_samples=/x/samples.jsonl"],
                       tmp_path)
    assert known["ppo"]["prompts"]["templates"] == ["suggest_incorrect"]
    assert known["ppo"]["prompts"]["min_plain_accuracy"] == 0.75 and known["ppo"]["prompts"]["side"] == "train"
    for key in ("data", "model", "optimizer", "pm"):  # the same PMs
        assert known[key] == answers[key]
    drop = {"prompts"}
    assert {k: v for k, v in known["ppo"].items() if k not in drop} == {k: v for k, v in answers["ppo"].items()
                                                                        if k not in drop}
    assert known["ppo"]["eval_prompts"] == answers["ppo"]["eval_prompts"]  # evaluation stays on all held-out facts
    assert answers["ppo"]["prompts"]["known_from"] is None


# --- every eval source builds records (no model) ------------------------------------------------------
def _build(source: dict[str, Any], task: str) -> list[Any]:
    builder = instantiate(source)
    params = inspect.signature(builder).parameters
    context = {"bad_rows": BadRows("error"), "seed": 0, "task": task}
    accepts_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    return builder(**{k: v for k, v in context.items() if accepts_all or k in params})


def _released_copies(folder: Path) -> list[str]:
    """Local stand-ins for the hub files of eval=released: built-in records in the released format."""
    bad = BadRows("error")
    records = {"answer": S.answer_records("builtin", bad, limit=2),
               "are_you_sure": S.builtin_mc_records(bad, limit=2) + S.free_form_records("builtin", bad, limit=2),
               "feedback": S.feedback_records([{"dataset": "poems", "id": "p1", "text": "Roses\nare red"}]),
               "mimicry": S.builtin_poem_records(bad, limit=2)}
    return [f"eval.{task}.sources.released.path={write_released(folder / f'{task}.jsonl', recs)}"
            for task, recs in records.items()]


@pytest.mark.parametrize("eval_option", groups("evaluate")["eval"])
def test_every_eval_source_builds_records(eval_option, tmp_path):
    """Each source of each task of each eval option (and its misconceptions probe) reads its data into
    records; the real-data ones from ../shared/data."""
    pins = _released_copies(tmp_path) if eval_option == "released" else []
    cfg = resolved("evaluate", [f"eval={eval_option}", *pins], tmp_path)
    ev = cfg["eval"]
    built = {}
    for task in ev["tasks"]:
        for name, source in (ev[task].get("sources") or {}).items():
            if source is not None:
                built[f"{task}/{name}"] = records = _build(source, task)
                assert records, f"eval={eval_option}: eval.{task}.sources.{name} built nothing"
    assert built
    probe = ev["probe"]
    written = probe_records(OmegaConf.create(probe["sources"]), BadRows("error"), 2, 0, probe["heldout_fraction"],
                            probe["split_seed"])
    assert all(len(records) == 2 * sum(v is not None for v in probe["sources"].values()) for records in written.values())


def test_real_data_sources_are_reached():
    """Every record and text builder of syco.eval.sources is named by some option of conf/eval."""
    named = {line.split("syco.eval.sources.")[1].strip() for f in (CONF_DIR / "eval").glob("*.yaml")
             for line in f.read_text().splitlines() if "_target_: syco.eval.sources." in line}
    builders = {name for name, fn in inspect.getmembers(S, inspect.isfunction)
                if fn.__module__ == S.__name__ and name.endswith(("_records", "_texts", "_requests"))
                and name not in {"feedback_records", "mimicry_records"}}  # built from the texts/poems of others
    assert builders <= named, f"no config reaches {sorted(builders - named)}"
    assert (SHARED_DATA / "truthfulqa" / "TruthfulQA.csv").is_file()


# --- config values that cannot run fail at start-up, naming the key (syco.core.config_checks) ---------------
def _checked(primary: str, overrides: list[str], tmp_path: Path) -> None:
    cfg = compose_resolvable(primary, overrides, tmp_path / "run")
    (check_train_config if primary == "train" else check_eval_config)(cfg)


def _problems(primary: str, overrides: list[str], tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _checked(primary, overrides, tmp_path)
    assert str(info.value).startswith(f"{primary}.py: {len(info.value.problems)} config value(s) cannot run")
    return info.value.problems


def _required(overrides: list[str]) -> list[str]:
    """The overrides, with every key the options leave `???` set (as a command must), and ppo.pm for task=ppo."""
    keys = set().union(*(REQUIRED.get(o, set()) for o in overrides))
    extra = [f"{k}=/required/{k}" for k in sorted(keys)]
    return [*overrides, *extra, *(["ppo.pm=/required/pm"] if "task=ppo" in overrides else [])]


@pytest.mark.parametrize(("primary", "option"), [*cases("train"), *cases("evaluate")])
def test_every_option_passes_the_start_up_checks(primary, option, tmp_path):
    _checked(primary, _required([option]), tmp_path)


@pytest.mark.parametrize("experiment", groups("train")["experiment"])
@pytest.mark.parametrize("task", groups("train")["task"])
def test_every_experiment_passes_the_start_up_checks(experiment, task, tmp_path):
    _checked("train", _required([f"experiment={experiment}", f"task={task}"]), tmp_path)


@pytest.mark.parametrize("eval_option", groups("evaluate")["eval"])
@pytest.mark.parametrize("method", groups("evaluate")["method"])
def test_every_eval_option_passes_the_start_up_checks(eval_option, method, tmp_path):
    _checked("evaluate", _required([f"method={method}", f"eval={eval_option}"]), tmp_path)


def test_documented_commands_pass_the_start_up_checks(tmp_path):
    commands = all_commands()
    assert commands
    for command in commands:
        try:
            _checked(ENTRY_POINTS[command.entry], command.overrides, tmp_path)
        except ConfigError as e:
            raise AssertionError(f"{command.where()}: {e}") from e


@pytest.mark.parametrize(("overrides", "problem"), [
    (["model=local"], "model.name_or_path=???: required and unset; e.g. python train.py model=local "
                      "model.name_or_path=/path/to/model_folder"),
    (["data=jsonl"], "data.sources.pairs.path=???: required and unset; e.g. python train.py data=jsonl "
                     "data.sources.pairs.path=/path/to/pairs.jsonl"),
    (["model=llama", "model.name_or_path=null"], "model.name_or_path=null: model.source=pretrained loads a model "
                                                 "folder or hub id and none is given; e.g. python train.py model=local"),
    (["task=ppo"], "ppo.pm=null: task=ppo optimizes against an exported PM and none is given; e.g. python train.py "
                   "task=ppo ppo.pm="),
    (["experiment=planted_bias_known", "task=rlhf"], "policy_samples=???: required and unset (read as "),
    (["optimizer.lr=0"], "optimizer.lr=0: must be a finite number > 0; e.g. optimizer.lr=2e-4"),
    (["optimizer.lr=-1e-4"], "optimizer.lr=-0.0001: must be a finite number > 0"),
    (["optimizer.lr=nan"], "optimizer.lr=nan: must be a finite number > 0"),
    (["optimizer.lr=inf"], "optimizer.lr=inf: must be a finite number > 0"),
    (["optimizer.lr=fast"], "optimizer.lr=fast: must be a finite number > 0"),
    (["optimizer.betas=[0.9,1.5]"], "optimizer.betas=[0.9,1.5]: must be two numbers in [0, 1)"),
    (["optimizer.weight_decay=-0.1"], "optimizer.weight_decay=-0.1: must be a finite number >= 0"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0: trains nothing"),
    (["trainer.max_steps=0"], "trainer.max_steps=0: trains nothing"),
    (["trainer.max_steps=-5"], "trainer.max_steps=-5: must be an integer >= 1, or -1 (no limit)"),
    (["trainer.max_epochs=-1"], "trainer.max_epochs=-1: with trainer.max_steps=-1 training never stops"),
    (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0: must be an integer >= 1"),
    (["checkpoint.every_n_train_steps=-1"], "checkpoint.every_n_train_steps=-1: must be an integer >= 0"),
    (["data.batch_size=0"], "data.batch_size=0: must be an integer >= 1"),
    (["data.batch_size=2.5"], "data.batch_size=2.5: must be an integer >= 1"),
    (["data.eval_batch_size=0"], "data.eval_batch_size=0: must be an integer >= 1"),
    (["data.max_length=4"], "data.max_length=4: must be an integer >= 8; a prompt and a response must fit"),
    (["split.heldout_fraction=1.0"], "split.heldout_fraction=1.0: must be a finite number >= 0 and < 1"),
    (["split.heldout_fraction=-0.1"], "split.heldout_fraction=-0.1: must be a finite number >= 0 and < 1"),
    (["data.heldout_fraction=1.5"], "data.heldout_fraction=1.5: must be a finite number >= 0 and < 1"),
    (["data.on_bad_row=warn"], "data.on_bad_row=warn: must be one of error, skip"),
    (["data.max_train_pairs=0"], "data.max_train_pairs=0: must be an integer >= 1 (or null)"),
    (["+data.sources.beliefs.limit=-1"], "data.sources.beliefs.limit=-1: must be an integer >= 1 (or null)"),
    (["data.sources.beliefs.beta=nan"], "data.sources.beliefs.beta=nan: must be a finite number"),
    (["data.sources.beliefs=null"], "data.sources={}: no data source is set: nothing to train on"),
    (["pm=nonsyco", "pm.anti_sycophancy.ratio=-0.5"], "pm.anti_sycophancy.ratio=-0.5: must be a finite number >= 0"),
    (["task=rlhf", "ppo.optimizer.lr=0"], "ppo.optimizer.lr=0: must be a finite number > 0"),
    (["task=ppo", "ppo.pm=/x", "ppo.total_steps=0"], "ppo.total_steps=0: must be an integer >= 1"),
    (["task=ppo", "ppo.pm=/x", "ppo.batch_size=1"], "ppo.batch_size=1: must be an integer >= 2"),
    (["task=ppo", "ppo.pm=/x", "ppo.mini_batch_size=0"], "ppo.mini_batch_size=0: must be an integer >= 1"),
    (["task=ppo", "ppo.pm=/x", "ppo.mini_batch_size=3"], "ppo.mini_batch_size=3: must divide ppo.batch_size=8; "
                                                         "e.g. ppo.mini_batch_size=2"),
    (["task=ppo", "ppo.pm=/x", "ppo.eval.batch_size=0"], "ppo.eval.batch_size=0: must be an integer >= 1"),
    (["task=ppo", "ppo.pm=/x", "ppo.reward.batch_size=0"], "ppo.reward.batch_size=0: must be an integer >= 1"),
    (["task=ppo", "ppo.pm=/x", "ppo.forward_batch_size=0"], "ppo.forward_batch_size=0: must be an integer >= 1"),
    (["task=ppo", "ppo.pm=/x", "ppo.generation_batch_size=3"], "ppo.generation_batch_size=3: must divide "
                                                               "ppo.batch_size=8; e.g. ppo.generation_batch_size=2"),
    (["task=ppo", "ppo.pm=/x", "trainer=fsdp"], "trainer.strategy=lightning.pytorch.strategies.FSDPStrategy: PPO "
                                                "runs under DDP, not FSDP"),
    (["task=rlhf", "trainer=fsdp"], "trainer.strategy=lightning.pytorch.strategies.FSDPStrategy: PPO runs under DDP"),
    (["task=ppo", "ppo.pm=/x", "ppo.checkpoint_every=0"], "ppo.checkpoint_every=0: must be an integer >= 1"),
    (["task=ppo", "ppo.pm=/x", "ppo.temperature=0"], "ppo.temperature=0: must be a finite number > 0"),
])
def test_train_values_that_cannot_run(overrides, problem, tmp_path):
    problems = _problems("train", overrides, tmp_path)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


@pytest.mark.parametrize(("overrides", "problem"), [
    (["policy=local"], "policy.name_or_path=???: required and unset; e.g. python evaluate.py policy=local "
                       "policy.name_or_path=/path/to/model_folder"),
    (["method=checkpoints"], "checkpoints.run=???: required and unset; e.g. python evaluate.py method=checkpoints "
                             "checkpoints.run="),
    (["eval.answer.sources.builtin.limit=-1"], "eval.answer.sources.builtin.limit=-1: must be an integer >= 0"),
    (["eval.probe.limit=-2"], "eval.probe.limit=-2: must be an integer >= 0 (or null)"),
    (["eval.generation.max_new_tokens=0"], "eval.generation.max_new_tokens=0: must be an integer >= 1"),
    (["eval.generation.samples_per_prompt=0"], "eval.generation.samples_per_prompt=0: must be an integer >= 1"),
    (["eval.generation.batch_size=0"], "eval.generation.batch_size=0: must be an integer >= 1"),
    (["eval.generation.max_rows_per_call=0"], "eval.generation.max_rows_per_call=0: must be an integer >= 1 (or null)"),
    (["eval.generation.temperature_free=-1"], "eval.generation.temperature_free=-1: must be a finite number >= 0"),
    (["eval.generation.top_p=0"], "eval.generation.top_p=0: must be a finite number > 0 and <= 1"),
    (["eval.on_bad_row=ignore"], "eval.on_bad_row=ignore: must be one of error, skip"),
    (["eval=planted_bias", "split.heldout_fraction=1"], "split.heldout_fraction=1: must be a finite number >= 0"),
    (["method=bon", "bon.k=0"], "bon.k=0: must be an integer >= 1"),
    (["method=bon", "bon.k=4", "bon.n_grid=[1,8]"], "bon.n_grid=[1,8]: every n must be an integer in [1, bon.k=4]"),
    (["method=checkpoints", "checkpoints.run=/r", "checkpoints.z=0"], "checkpoints.z=0: must be a finite number > 0"),
])
def test_eval_values_that_cannot_run(overrides, problem, tmp_path):
    problems = _problems("evaluate", overrides, tmp_path)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_every_problem_is_listed_once(tmp_path):
    problems = _problems("train", ["model=local", "data=jsonl", "optimizer.lr=0", "data.batch_size=0",
                                   "split.heldout_fraction=2"], tmp_path)
    assert [p.split("=")[0] for p in problems] == ["model.name_or_path", "data.sources.pairs.path",
                                                   "split.heldout_fraction", "data.batch_size", "optimizer.lr"]


@pytest.mark.parametrize("overrides", [
    ["trainer.max_epochs=-1", "trainer.max_steps=100"], ["trainer.max_epochs=null"], ["trainer.max_steps=10"],
    ["checkpoint.every_n_train_steps=0"], ["split.heldout_fraction=0"], ["data.max_length=8"],
    ["pm=nonsyco_prompted", "pm.from_path=/pm", "optimizer.lr=0", "trainer.max_epochs=0"],
    ["task=ppo", "ppo.pm=/x", "data=jsonl", "optimizer.lr=0"],  # task=ppo reads no preference data or optimizer
    ["trainer.max_epochs=-1", "+trainer.max_time=00:01:00:00"],
])
def test_legitimate_train_values_pass(overrides, tmp_path):
    _checked("train", overrides, tmp_path)


@pytest.mark.parametrize("overrides", [
    ["eval.answer.sources.builtin.limit=0"], ["eval.probe.limit=null"], ["eval.generation.temperature_free=0"],
    ["method=checkpoints", "checkpoints.run=/r", "policy=local"],  # the steps' own base model: policy unused
])
def test_legitimate_eval_values_pass(overrides, tmp_path):
    _checked("evaluate", overrides, tmp_path)


def test_plain_mapping_is_checked_too():
    with pytest.raises(ConfigError, match=r"optimizer.lr=0: must be a finite number > 0"):
        check_train_config({"task": {"name": "pm"}, "optimizer": {"lr": 0}})
    check_train_config({"task": {"name": "pm"}, "optimizer": {"lr": 1e-3}})


@pytest.mark.parametrize(("entry", "overrides", "key"), [
    ("train.py", ["data=jsonl"], "data.sources.pairs.path=???"),
    ("train.py", ["model=local", "optimizer.lr=0"], "model.name_or_path=???"),
    ("evaluate.py", ["policy=local"], "policy.name_or_path=???"),
])
def test_entry_points_stop_before_any_work(entry, overrides, key, tmp_path):
    """The check runs first thing in main: the error names the key, and no model or data was touched
    (nothing was written into the run folder, no task log line)."""
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, entry, f"hydra.run.dir={run}", *overrides], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SYCO_SHARED_DATA": str(SHARED_DATA)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert key in proc.stderr and f"error: {entry}: " in proc.stderr, proc.stderr[-3000:]
    assert "task=" not in proc.stderr.split("error:")[0]
    assert not run.exists()  # Hydra made it; holding only .hydra/ and the log, it is removed
