"""`python train.py ...` end to end: the embedded default (SmolLM2), real data from ../shared/data,
W&B offline, the prompted non-sycophantic PM, and the errors a user meets on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_policy_pairs import write_samples

import syco.pm
from syco.models.backbone import ModelUnavailableError, check_available, resolve_model_path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def train(run_dir: Path, *overrides: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "train.py", f"hydra.run.dir={run_dir}", *overrides]
    base = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**base, **(env or {})}, timeout=1200)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def smollm2_run(tmp_path_factory) -> Path:
    """The main job on the embedded default, shrunk: SmolLM2 + built-in belief pairs, W&B offline."""
    run = tmp_path_factory.mktemp("smollm2") / "run"
    home = tmp_path_factory.mktemp("home")  # no ~/.netrc: no W&B credentials
    train(run, "task=pm", "model=smollm2", "pm=standard", "data=beliefs", "trainer=cpu", "logger=wandb",
          "data.max_train_pairs=40", "data.max_val_pairs=40", "checkpoint.every_n_train_steps=2",
          env={"HOME": str(home), "SYCO_CACHE": os.environ.get("SYCO_CACHE", str(Path.home() / ".cache/syco"))})
    return run


@pytest.mark.integration
def test_smollm2_run_writes_metrics_pm_checkpoints_and_offline_wandb(smollm2_run):
    m = metrics(smollm2_run)
    res = m["metrics"]
    assert res["heldout/accuracy"]["count"] == 40 and 0.0 <= res["heldout/accuracy"]["value"] <= 1.0
    assert res["pm/syco_rate"]["count"] > 0 and res["pm/syco_rate"]["stderr"] is not None
    conditions = ("false_belief", "true_belief", "no_belief")
    assert sum(m["pairs"].get(f"train/{c}", 0) for c in conditions) == 40 and m["global_step"] == 5
    assert m["export_roundtrip_max_abs_diff"] < 1e-5
    assert (smollm2_run / "checkpoints" / "last.ckpt").is_file()
    offline = list((smollm2_run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1 and offline[0].stat().st_size > 0
    # the exported PM loads and scores; held-out reward statistics were stored for normalization
    pm = syco.pm.load(smollm2_run / "pm")
    assert pm.reward_std > 0 and pm.reward_mean == pytest.approx(res["heldout/reward_mean"]["value"])
    s = pm.score(["What is the capital of France?"] * 2, ["Paris.", "Lyon."])
    assert len(s) == 2 and s[0] != s[1]


@pytest.mark.integration
def test_prompted_nonsyco_pm_wraps_a_trained_pm(smollm2_run, tmp_path):
    run = tmp_path / "prompted"
    train(run, "model=smollm2", "pm=nonsyco_prompted", f"pm.from_path={smollm2_run / 'pm'}",
          "data.max_train_pairs=8", "data.max_val_pairs=40")
    m = metrics(run)
    assert m["variant"] == "nonsyco_prompted" and m["global_step"] == 0
    plain, prompted = syco.pm.load(smollm2_run / "pm"), syco.pm.load(run / "pm")
    assert prompted.formatter.prefix and not plain.formatter.prefix
    q, r = ["I think the Sun orbits the Earth. Am I right?"], ["Yes, you are right."]
    assert abs(plain.score(q, r)[0] - prompted.score(q, r)[0]) > 1e-4
    assert prompted.with_prefix(None).score(q, r)[0] == pytest.approx(plain.score(q, r)[0], abs=1e-5)


@pytest.mark.integration
def test_hh_rlhf_from_shared_data_with_csv_logger(tmp_path):
    run = tmp_path / "hh"
    train(run, "model=smollm2", "data=hh_rlhf", "data.max_train_pairs=16", "data.max_val_pairs=24",
          "data.max_length=256", "logger=csv", "trainer.log_every_n_steps=1")
    m = metrics(run)
    res = m["metrics"]
    # 24 held-out pairs drawn; those whose prompt exceeds max_length are skipped and counted
    assert m["pairs"]["val/general"] == 24 and 16 <= res["heldout/accuracy/general"]["count"] <= 24
    assert sum(m["bad_rows"]["skipped"].values()) >= 24 - res["heldout/accuracy/general"]["count"]
    (csv,) = (run / "csv").glob("version_*/metrics.csv")
    rows = csv.read_text().splitlines()
    assert "train/loss" in rows[0] and len(rows) > 1


@pytest.mark.integration
def test_truthfulqa_beliefs_and_probe(tmp_path):
    tqa = SHARED / "truthfulqa" / "TruthfulQA.csv"
    run = tmp_path / "tqa"
    train(run, "model=tiny", f"data.sources.beliefs.facts={tqa}", f"data.sources.beliefs.misconceptions={tqa}",
          f"data.probe.misconceptions={tqa}", "data.max_train_pairs=32")
    m = metrics(run)
    assert sum(m["pairs"].get(f"train/{c}", 0) for c in ("false_belief", "true_belief", "no_belief")) == 32
    assert m["metrics"]["pm/syco_rate"]["count"] > 0  # held-out TruthfulQA misconceptions


def test_pm_on_policy_samples_reports_its_stance_on_them(tmp_path):
    samples = write_samples(tmp_path / "samples.jsonl", facts=30, misconceptions=10)
    run = tmp_path / "policy"
    train(run, "model=tiny", "data=policy_beliefs", f"data.policy_samples={samples}", "data.max_train_pairs=24",
          "data.policy_stance_pairs=20")
    m = metrics(run)["metrics"]["policy/prefers_agreeing_over_truthful"]
    assert m["pairs"] == 20 and m["count"] > 0 and 0.0 <= m["value"] <= 1.0 and m["stderr"] is not None


def test_bad_row_names_file_line_and_field_and_skip_counts_it(tmp_path):
    data = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"Is the sky blue? ({i})", "chosen": "Yes, on a clear day.", "rejected": "No."}
            for i in range(12)] + [{"prompt": "Why?", "chosen": "", "rejected": "No."}]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    proc = train(tmp_path / "err", "model=tiny", "data=jsonl", f"data.sources.pairs.path={data}", check=False)
    assert proc.returncode != 0
    assert f"{data}:13: field 'chosen': empty" in proc.stderr
    run = tmp_path / "skip"
    train(run, "model=tiny", "data=jsonl", f"data.sources.pairs.path={data}", "data.on_bad_row=skip")
    skipped = metrics(run)["bad_rows"]["skipped"]
    assert skipped == {"empty": 1, "not valid JSON": 1}


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """A user error: exit 1 and a single `error: ...` line on stderr, no traceback."""
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def test_gated_hub_model_offline_fails_at_start_in_one_line_leaving_no_run_folder(tmp_path):
    """model=llama with the hub off and an empty HF cache: before any data, logger or checkpoint, one
    line naming the key and what to do (licence + login, or a local folder); the run folder is gone."""
    run = tmp_path / "llama"
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "SYCO_SHARED_DATA": str(tmp_path / "none")}
    line = one_error_line(train(run, "model=llama", "pm=nonsyco", "logger=csv", env=env, check=False))
    assert "model.name_or_path=meta-llama/Llama-3.2-1B-Instruct" in line and "HF_HUB_OFFLINE=1" in line
    assert "huggingface-cli login" in line and "licence" in line and "local model folder" in line
    assert not run.exists()


def test_unreachable_hub_model_fails_fast_naming_the_id(tmp_path, monkeypatch):
    proc = train(tmp_path / "qwen", "model=qwen", env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
                 check=False)
    line = one_error_line(proc)
    assert "Qwen/Qwen2.5-0.5B-Instruct" in line and "HF_HUB_OFFLINE=1" in line

    import huggingface_hub

    def refuse(*a, **k):
        raise ConnectionError("Name or service not known")

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "model_info", refuse)
    with pytest.raises(ModelUnavailableError, match="model.name_or_path=meta-llama/Llama-3.2-1B-Instruct: not cached "
                       "locally and the Hugging Face hub is unreachable .*huggingface-cli login"):
        resolve_model_path({"source": "pretrained", "name_or_path": "meta-llama/Llama-3.2-1B-Instruct"})
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        resolve_model_path({"source": "pretrained", "name_or_path": str(tmp_path / "missing-model")})
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(ModelUnavailableError, match="no config.json"):
        check_available({"source": "pretrained", "name_or_path": str(tmp_path / "not-a-model")}, "policy")


def test_gated_model_without_access_says_accept_the_licence_and_log_in(monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    def gated(*a, **k):
        err = GatedRepoError.__new__(GatedRepoError)  # as the hub raises it, without an HTTP response to build
        Exception.__init__(err, "Access to model meta-llama/Llama-3.2-1B-Instruct is restricted")
        raise err

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "model_info", gated)
    with pytest.raises(ModelUnavailableError, match=r"policy.name_or_path=meta-llama/Llama-3.2-1B-Instruct is a gated "
                       r"model .*accept its licence .*huggingface-cli login") as err:
        check_available({"source": "pretrained", "name_or_path": "meta-llama/Llama-3.2-1B-Instruct"}, "policy")
    assert "\n" not in str(err.value) and err.value.__suppress_context__


def test_start_up_check_passes_local_models_and_names_a_pm_base(tmp_path, monkeypatch):
    """The embedded default and the tiny model pass the start-up check; a PPO PM whose base model is
    not there is named by its key (ppo.pm), before anything loads."""
    from conftest import compose_config
    from omegaconf import OmegaConf

    from syco.models.backbone import check_models_available

    def plain(name: str, overrides: list[str]) -> dict:
        cfg = compose_config(name, [f"cache_dir={os.environ.get('SYCO_CACHE', Path.home() / '.cache/syco')}",
                                    *overrides])
        return OmegaConf.to_container(cfg, resolve=False)

    check_models_available(plain("train", ["model=tiny"]), "train.py")
    check_models_available(plain("train", ["model=smollm2"]), "train.py")
    pm = tmp_path / "pm"
    pm.mkdir()
    (pm / "syco_pm.json").write_text(json.dumps({"model": {"source": "pretrained", "name_or_path": "org/absent-model"}}))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelUnavailableError, match=r"ppo.pm=.*: the exported PM's base model .* model.name_or_path=org/absent-model: not in the local"):
        check_models_available(plain("train", ["model=tiny", "task=ppo", f"ppo.pm={pm}"]), "train.py")
    with pytest.raises(ModelUnavailableError, match=r"bon.pms.standard=.*: the exported PM's base model"):
        check_models_available(plain("evaluate", ["method=bon", "policy=tiny", f"+bon.pms.standard={pm}"]), "evaluate.py")
