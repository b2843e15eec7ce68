"""conf/: every config group option composes and resolves; the defaults; the CPU trainer instantiates."""

from __future__ import annotations

import lightning as L
import pytest
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CPUAccelerator
from omegaconf import OmegaConf

MODELS = {
    "smollm2": ("smollm2-135m-instruct", "gguf_package"),
    "tiny": ("tiny-llama", "tiny"),
    "llama": ("llama-3.2-1b-instruct", "pretrained"),
    "qwen": ("qwen2.5-0.5b-instruct", "pretrained"),
}
PMS = ("standard", "nonsyco", "nonsyco_prompted")
DATA = {"beliefs": {"beliefs"}, "hh_rlhf": {"hh"}, "planted_bias": {"hh", "beliefs"}}
TRAINERS = {"cpu": "cpu", "gpu": "gpu", "ddp": "gpu", "fsdp": "gpu"}
LOGGERS = {"csv": {"csv"}, "wandb": {"wandb"}, "many": {"csv", "wandb"}, "none": set()}


def _resolved(cfg) -> dict:
    # resolve=True fails on any broken interpolation (e.g. a typo in ${...})
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


@pytest.mark.parametrize("option", list(MODELS))
def test_model_options(compose_train, option):
    cfg = _resolved(compose_train(f"model={option}"))
    name, source = MODELS[option]
    assert cfg["model"]["name"] == name and cfg["model"]["source"] == source
    assert cfg["run_name"] == f"pm-standard-{name}"
    assert cfg["model"]["lora"]["r"] > 0
    if option == "tiny":
        assert cfg["model"]["tokenizer"]["name"] == MODELS["smollm2"][0]


@pytest.mark.parametrize("option", PMS)
def test_pm_options(compose_train, option):
    cfg = _resolved(compose_train(f"pm={option}"))
    pm = cfg["pm"]
    assert pm["variant"] == option
    assert (pm["anti_sycophancy"]["ratio"] > 0) == (option == "nonsyco")
    assert (pm["scoring_prefix"] is not None) == (option == "nonsyco_prompted")


@pytest.mark.parametrize("option", list(DATA))
def test_data_options(compose_train, shared_data, option):
    cfg = _resolved(compose_train(f"data={option}"))
    data = cfg["data"]
    assert set(data["sources"]) == DATA[option]
    assert data["on_bad_row"] in ("error", "skip") and 0 < data["heldout_fraction"] < 1
    for src in data["sources"].values():
        assert src["_partial_"] is True and src["_target_"].startswith("syco.data.")
    if "hh" in data["sources"]:
        assert data["sources"]["hh"]["path"] == f"{shared_data}/hh_rlhf/helpful-base/test.jsonl.gz"
    if option == "planted_bias":
        assert data["sources"]["hh"]["limit"] is None and data["max_length"] == 256
        assert data["sources"]["beliefs"]["beta"] > data["sources"]["beliefs"]["gamma"] > 0


@pytest.mark.parametrize("option", list(TRAINERS))
def test_trainer_options(compose_train, option):
    cfg = _resolved(compose_train(f"trainer={option}"))
    trainer = cfg["trainer"]
    assert trainer["_target_"] == "lightning.Trainer"
    assert trainer["accelerator"] == TRAINERS[option]
    assert trainer["precision"] == ("32-true" if option == "cpu" else "bf16-mixed")
    if option == "ddp":
        assert trainer["strategy"] == "ddp" and trainer["devices"] == -1
    if option == "fsdp":
        assert trainer["strategy"]["_target_"] == "lightning.pytorch.strategies.FSDPStrategy"
        assert trainer["strategy"]["auto_wrap_policy"]["_target_"] == "syco.models.fsdp.decoder_layer_policy"


@pytest.mark.parametrize("option", list(LOGGERS))
def test_logger_options(compose_train, tmp_path, option):
    cfg = _resolved(compose_train(f"logger={option}"))
    loggers = cfg.get("logger") or {}
    assert set(loggers) == LOGGERS[option]
    for lg in loggers.values():
        assert lg["save_dir"] == str(tmp_path / "run")


def test_defaults(compose_train):
    cfg = compose_train()
    assert cfg.model.name == "smollm2-135m-instruct" and cfg.model.source == "gguf_package"
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.task.name == "pm" and cfg.task.entry == "syco.pm.training.run"
    assert cfg.pm.variant == "standard"
    assert set(cfg.data.sources) == {"beliefs"}
    assert set(cfg.logger) == {"csv"}
    assert cfg.seed == 0


def test_cpu_trainer_instantiates(compose_train, tmp_path):
    cfg = compose_train("trainer=cpu")
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


@pytest.mark.parametrize("pm", ["standard", "nonsyco"])
def test_planted_bias_policy_experiment(compose_train, pm):
    cfg = _resolved(compose_train("experiment=planted_bias_policy", f"pm={pm}", "data.policy_samples=/x/samples.jsonl"))
    sources = cfg["data"]["sources"]
    assert set(sources) == {"beliefs", "policy"} and sources["policy"]["samples"] == "/x/samples.jsonl"
    # one rater for the templated and the policy-written pairs, with the strong planted bias
    assert sources["policy"]["beta"] == sources["beliefs"]["beta"] == 4.0
    assert sources["policy"]["gamma"] == sources["beliefs"]["gamma"] == 2.0
    assert cfg["pm"]["variant"] == pm and cfg["run_name"] == f"planted_bias_policy-{pm}-smollm2-135m-instruct"
    assert (cfg["pm"]["anti_sycophancy"].get("samples") == "/x/samples.jsonl") == (pm == "nonsyco")


@pytest.mark.parametrize("task", ["pm", "ppo", "rlhf"])
def test_planted_bias_answers_experiment(compose_train, task):
    """The sixth PPO measurement's PMs and PPO from one experiment name, for every task."""
    for pm in ("standard", "nonsyco"):
        cfg = _resolved(compose_train("experiment=planted_bias_answers", f"task={task}", f"pm={pm}",
                                      "data.policy_samples=/x/samples.jsonl"))
        sources = cfg["data"]["sources"]
        assert sources["policy"]["tasks"] == ["answer"] and sources["beliefs"]["limit"] == 480
        assert sources["policy"]["beta"] == sources["beliefs"]["beta"] == 4.0
        assert sources["policy"]["gamma"] == sources["beliefs"]["gamma"] == 1.0
        assert cfg["optimizer"]["lr"] == 1e-3 and cfg["data"]["max_train_pairs"] == 1600
        anti = cfg["pm"]["anti_sycophancy"]
        assert anti["ratio"] == (0.5 if pm == "nonsyco" else 0.0)  # the standard PM gets no corrections
        assert anti.get("tasks", ["answer"]) == ["answer"]
        if task != "pm":
            ppo = cfg["ppo"]
            assert ppo["samples_per_prompt"] == 4 and ppo["reward"]["baseline"] == "prompt"
            assert ppo["prompts"]["templates"] == ["plain", "suggest_incorrect"] and ppo["optimizer"]["lr"] == 3e-4
            assert ppo["batch_size"] % ppo["samples_per_prompt"] == 0 and ppo["total_steps"] == 50
            assert ppo["lora"]["target_modules"] == ["q_proj", "v_proj"]


@pytest.mark.parametrize("task", ["ppo", "rlhf"])
def test_planted_bias_known_experiment(compose_train, task):
    """The seventh PPO measurement: planted_bias_answers with PPO on known facts' suggest-incorrect
    prompts; the samples that define "known" must be named."""
    from omegaconf.errors import InterpolationToMissingValueError

    over = ("experiment=planted_bias_known", f"task={task}", "data.policy_samples=/x/samples.jsonl")
    with pytest.raises(InterpolationToMissingValueError, match="data.policy_samples"):
        _resolved(compose_train(*over[:2]))
    known = _resolved(compose_train(*over))
    assert known["ppo"]["prompts"]["known_from"] == "/x/samples.jsonl"  # the samples the PMs learned from
    answers = _resolved(compose_train("experiment=planted_bias_answers", *over[1:]))
    assert known["ppo"]["prompts"]["templates"] == ["suggest_incorrect"]
    assert known["ppo"]["prompts"]["min_plain_accuracy"] == 0.75 and known["ppo"]["prompts"]["side"] == "train"
    for key in ("data", "model", "optimizer", "pm"):  # the same PMs
        assert known[key] == answers[key]
    drop = {"prompts"}
    assert {k: v for k, v in known["ppo"].items() if k not in drop} == {k: v for k, v in answers["ppo"].items() if k not in drop}
    assert known["ppo"]["eval_prompts"] == answers["ppo"]["eval_prompts"]  # evaluation stays on all held-out facts
