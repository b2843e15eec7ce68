"""Bad input never runs code nor passes silently: a PM or adapter folder cannot turn on
trust_remote_code (nor name a hub kernel, nor have a package imported), shared files get the usual
permissions, a full disk is named and keeps the old file. Tiny random-init models only."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import transformers.dynamic_module_utils as dynamic_modules
from conftest import compose_config
from omegaconf import OmegaConf

import syco.tracking as tracking
from syco.bon.scoring import pm_spec, score_pools
from syco.models.backbone import RemoteCodeRefusedError, _gguf_package_file, folder_model_config
from syco.models.lora import check_adapter_folder
from syco.pm import PreferenceModel, load
from syco.pm.model import read_meta
from syco.ppo.model import ActorCritic
from syco.tracking import DiskFullError, publish_dir, save_figure_atomic, write_json_atomic

REPO = Path(__file__).resolve().parents[1]
PROMPTS, RESPONSES = ["What is the capital of France?", "Hi"], ["Paris.", "Hello!"]


def tiny_cfg() -> dict:
    return OmegaConf.to_container(compose_config("model/tiny"), resolve=True)["model"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """One exported tiny PM folder; tests copy it before editing it."""
    path = tmp_path_factory.mktemp("pm") / "pm"
    PreferenceModel.create(tiny_cfg(), max_length=64).save(path)
    return path


@pytest.fixture
def modules_cache(tmp_path, monkeypatch) -> Path:
    """transformers copies remote code it runs into its modules cache: keep that in tmp_path."""
    cache = tmp_path / "hf_modules"
    monkeypatch.setattr(dynamic_modules, "HF_MODULES_CACHE", str(cache))
    monkeypatch.setattr(sys, "path", list(sys.path))
    return cache


def evil_pm(exported: Path, tmp_path: Path, model_type: str = "llama") -> tuple[Path, Path]:
    """A copy of the export edited to load its base from a folder whose config.json maps the model
    to a python file that writes a marker when imported, with trust_remote_code=true in its meta."""
    pm = tmp_path / "pm"
    shutil.copytree(exported, pm)
    evil = tmp_path / "evil_base"
    shutil.copytree(exported / "base", evil)
    marker = tmp_path / "code_ran"
    (evil / "evil_code.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        f"class EvilConfig(LlamaConfig):\n    model_type = {model_type!r}\n"
        "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n")
    config = json.loads((evil / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {"AutoConfig": "evil_code.EvilConfig", "AutoModelForCausalLM": "evil_code.EvilModel"}
    (evil / "config.json").write_text(json.dumps(config))
    meta = json.loads((pm / "syco_pm.json").read_text())
    meta["model"] = {"name": "evil", "source": "pretrained", "name_or_path": str(evil), "trust_remote_code": True,
                     "dtype": "float32"}
    (pm / "syco_pm.json").write_text(json.dumps(meta))
    return pm, marker


# --- a PM folder never runs code ------------------------------------------------------------------
def test_pm_folder_asking_for_remote_code_loads_without_running_it(exported, tmp_path, modules_cache, caplog):
    pm_dir, marker = evil_pm(exported, tmp_path)
    with caplog.at_level(logging.WARNING, logger="syco.models.backbone"):
        pm = load(pm_dir)
    assert not marker.exists(), "loading a PM folder ran the folder's own code"
    assert not modules_cache.exists()
    assert "trust_remote_code=true: ignored" in caplog.text and str(pm_dir) in caplog.text
    assert pm.model_cfg["trust_remote_code"] is False
    assert len(pm.score(PROMPTS, RESPONSES)) == 2  # the llama base loaded with the built-in code


def test_pm_folder_that_cannot_load_without_its_code_is_refused_by_name(exported, tmp_path, modules_cache):
    pm_dir, marker = evil_pm(exported, tmp_path, model_type="evil_model")
    with pytest.raises(RemoteCodeRefusedError, match=r"PM folder .*pm: .*set bon\.pms\.x\.trust_remote_code=true"):
        load(pm_dir, trust_key="bon.pms.x.trust_remote_code")
    assert not marker.exists()
    # only the caller's own config turns it on
    load(pm_dir, trust_remote_code=True)
    assert marker.exists()


def evil_tokenizer(exported: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the export whose tokenizer_config.json maps the tokenizer to a python file of the folder."""
    pm = tmp_path / "pm"
    shutil.copytree(exported, pm)
    marker = tmp_path / "code_ran"
    (pm / "evil_tok.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
                                    "from transformers import PreTrainedTokenizerFast\n"
                                    "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n")
    config = json.loads((pm / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="EvilTokenizer", auto_map={"AutoTokenizer": [None, "evil_tok.EvilTokenizer"]})
    (pm / "tokenizer_config.json").write_text(json.dumps(config))
    return pm, marker


def test_pm_folder_whose_tokenizer_names_its_own_code_is_refused(exported, tmp_path, modules_cache):
    pm_dir, marker = evil_tokenizer(exported, tmp_path)
    with pytest.raises(RemoteCodeRefusedError, match=r"PM folder .*pm: .*set ppo.trust_remote_code=true"):
        load(pm_dir, trust_key="ppo.trust_remote_code")
    # attached to a policy on the same base: its tokenizer is trusted only as far as the run's model config
    ac = ActorCritic.create(tiny_cfg(), seed=0)
    assert ac.shares_base(pm_dir)
    with pytest.raises(RemoteCodeRefusedError, match=r"set model.trust_remote_code=true"):
        ac.attach_pm(pm_dir, "pm")
    assert not marker.exists()


def test_attached_pm_does_not_carry_the_folders_trust(exported, tmp_path):
    pm_dir = tmp_path / "pm"
    shutil.copytree(exported, pm_dir)
    meta = json.loads((pm_dir / "syco_pm.json").read_text())
    meta["model"]["trust_remote_code"] = True  # not a base key: still shares the base
    (pm_dir / "syco_pm.json").write_text(json.dumps(meta))
    ac = ActorCritic.create(tiny_cfg(), seed=0)
    pm = ac.attach_pm(pm_dir, "pm")
    assert pm.model_cfg["trust_remote_code"] is False
    assert len(pm.score(PROMPTS, RESPONSES)) == 2


def test_bon_pm_trust_comes_from_the_bon_config_only(exported, tmp_path, modules_cache):
    pm_dir, marker = evil_pm(exported, tmp_path, model_type="evil_model")
    spec = pm_spec("gold", {"path": str(pm_dir)}, {})
    assert spec["trust_remote_code"] is False and spec["trust_key"] == "bon.pms.gold.trust_remote_code"
    record = SimpleNamespace(key="r1", messages=lambda: ([{"role": "user", "content": "Hi"}], None))
    pools = [{"record": record, "samples": [{"responses": ["Hello!"]}]}]
    with pytest.raises(RemoteCodeRefusedError, match=r"set bon.pms.gold.trust_remote_code=true"):
        score_pools(spec, pools, tmp_path / "scores.json", device="cpu")
    assert not marker.exists() and not (tmp_path / "scores.json").exists()
    with pytest.raises(ValueError, match=r"bon.pms.gold.trust_remote_code='yes': expected true or false"):
        pm_spec("gold", {"path": str(pm_dir), "trust_remote_code": "yes"}, {})


def test_folder_model_config_keeps_only_the_callers_trust_and_no_hub_kernel(caplog):
    folder = {"source": "pretrained", "name_or_path": "org/model", "trust_remote_code": True,
              "attn_implementation": "someone/evil-kernel", "tokenizer": {"trust_remote_code": True}}
    with caplog.at_level(logging.WARNING, logger="syco.models.backbone"):
        safe = folder_model_config(folder, "PM folder /x", trust_key="ppo.trust_remote_code")
    assert safe["trust_remote_code"] is False and safe["tokenizer"]["trust_remote_code"] is False
    assert "attn_implementation" not in safe
    assert "ppo.trust_remote_code=true" in caplog.text and "someone/evil-kernel" in caplog.text
    assert folder_model_config({**folder, "attn_implementation": "sdpa"}, "x")["attn_implementation"] == "sdpa"
    trusted = folder_model_config(folder, "x", trust_remote_code=True)
    assert trusted["trust_remote_code"] is True and trusted["attn_implementation"] == "someone/evil-kernel"


def test_adapter_folder_must_be_a_lora_adapter(exported, tmp_path):
    assert check_adapter_folder(exported, "ppo.init_adapter") == exported
    with pytest.raises(FileNotFoundError, match=r"ppo.init_adapter=.*nowhere has no adapter_config.json"):
        check_adapter_folder(tmp_path / "nowhere", "ppo.init_adapter")
    pm_dir = tmp_path / "pm"
    shutil.copytree(exported, pm_dir)
    config = json.loads((pm_dir / "adapter_config.json").read_text())
    (pm_dir / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "XLORA"}))
    with pytest.raises(ValueError, match=r"PM folder .*'XLORA' adapter; syco loads only LoRA"):
        load(pm_dir)
    (pm_dir / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"adapter_config.json is not valid JSON"):
        load(pm_dir)


def test_broken_pm_meta_is_named(exported, tmp_path):
    pm_dir = tmp_path / "pm"
    shutil.copytree(exported, pm_dir)
    (pm_dir / "syco_pm.json").write_text('{"format": "syco-pm/1", "model": ')
    with pytest.raises(ValueError, match=r"syco_pm.json is not valid JSON .*re-export the PM"):
        read_meta(pm_dir)
    (pm_dir / "syco_pm.json").write_text(json.dumps({"format": "syco-pm/1", "model": "llama"}))
    with pytest.raises(ValueError, match=r"syco_pm.json has no 'model' settings"):
        load(pm_dir)


def test_gguf_package_name_never_imports_a_package(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    pkg = tmp_path / "site" / "evilpkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "model.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    found = _gguf_package_file({"name": "m", "package": "evilpkg.sub", "gguf_file": "model.gguf"})
    assert found == pkg / "sub" / "model.gguf"
    assert not marker.exists() and "evilpkg" not in sys.modules


# --- shared files get the usual permissions -------------------------------------------------------
def usual(mode: int, directory: bool = False) -> bool:
    return (mode & 0o777) == ((0o777 if directory else 0o666) & ~tracking.umask())


def test_results_and_figures_have_the_usual_permissions(tmp_path):
    written = write_json_atomic(tmp_path / "metrics.json", {"a": 1})
    assert usual(written.stat().st_mode)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = save_figure_atomic(plt.figure(), tmp_path / "plot.png")
    assert usual(figure.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "plot.png"]


def test_umask_is_respected(tmp_path):
    old = os.umask(0o027)
    try:
        assert tracking.umask() == 0o027
        assert (write_json_atomic(tmp_path / "m.json", {}).stat().st_mode & 0o777) == 0o640
    finally:
        os.umask(old)


def test_published_folder_and_pm_export_have_the_usual_permissions(exported, tmp_path):
    import tempfile

    tmp = Path(tempfile.mkdtemp(dir=tmp_path))  # 0700, as every export starts
    (tmp / "sub").mkdir()
    fd, name = tempfile.mkstemp(dir=tmp / "sub")  # 0600
    os.close(fd)
    out = publish_dir(tmp, tmp_path / "out")
    assert usual(out.stat().st_mode, True) and usual((out / "sub").stat().st_mode, True)
    assert usual((out / "sub" / Path(name).name).stat().st_mode)
    # a PM export (safetensors writes its weights 0600)
    assert usual(exported.stat().st_mode, True)
    for f in exported.rglob("*"):
        assert usual(f.stat().st_mode, f.is_dir()), f


# --- a full disk is named and keeps the old file ----------------------------------------------------
def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_json_write_is_named_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = write_json_atomic(tmp_path / "run" / "metrics.json", {"old": 1})
    monkeypatch.setattr(tracking.os, "fdopen", full_disk)
    with pytest.raises(DiskFullError, match=r"disk is full .* no space left in .*run .*metrics.json is as it was") as e:
        write_json_atomic(path, {"new": 2})
    assert e.value.errno == errno.ENOSPC and isinstance(e.value, OSError)
    assert json.loads(path.read_text()) == {"old": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]  # no temp file left


def test_full_disk_publish_keeps_the_old_folder(tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "weights").write_text("old")
    new = tmp_path / ".new"
    new.mkdir()
    (new / "weights").write_text("new")
    real_replace = os.replace

    def replace(src, dst):
        if Path(src) == new:
            full_disk()
        real_replace(src, dst)

    monkeypatch.setattr(tracking.os, "replace", replace)
    with pytest.raises(DiskFullError, match=r"out"):
        publish_dir(new, tmp_path / "out")
    assert (tmp_path / "out" / "weights").read_text() == "old"


def test_full_disk_pm_save_is_named_and_keeps_the_old_export(exported, tmp_path, monkeypatch):
    path = tmp_path / "pm"
    shutil.copytree(exported, path)
    before = {f.name: f.read_bytes() for f in path.iterdir() if f.is_file()}
    pm = load(path)
    monkeypatch.setattr(type(pm.tokenizer), "save_pretrained", full_disk)
    with pytest.raises(DiskFullError, match=r"disk is full .*where .*pm goes"):
        pm.save(path)
    assert {f.name: f.read_bytes() for f in path.iterdir() if f.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pm"]  # no half-written export left


# --- an evaluation whose judge endpoint is down fails, keeping what it wrote ------------------------------
def test_eval_with_an_unreachable_judge_fails_fast_and_keeps_the_samples(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"  # closed when the block ends: refused
    run = tmp_path / "run"
    cmd = [sys.executable, "evaluate.py", f"hydra.run.dir={run}", "policy=tiny", "eval=openai_judge",
           f"eval.judges.openai.base_url={url}", "eval.judges.openai.backoff_s=0.01", "eval.tasks=[misconceptions]",
           "eval.misconceptions.sources.builtin.limit=3", "eval.generation.max_new_tokens=8", "logger=none"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0, "a run whose judge cannot be reached must not exit 0"
    assert f"JudgeFailedError: judge 'openai': the endpoint {url} (model gpt-4) failed 3 requests" in proc.stderr
    assert "ConnectionRefusedError" in proc.stderr
    assert not (run / "results.json").exists()  # no results that look complete
    assert len((run / "samples.jsonl").read_text().splitlines()) == 3  # generation kept: a rerun resumes
    assert len((run / "judge_cache" / "rules.jsonl").read_text().splitlines()) == 3
