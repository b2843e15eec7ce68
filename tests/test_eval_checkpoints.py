"""`python evaluate.py method=checkpoints` on a PPO run folder laid out as train.py task=ppo writes it
(tiny policy adapters saved by ActorCritic.save_policy at steps 0 and 2): one evaluation per step,
metrics against step and measured KL, plots, the BoN overlay, resume, and bad inputs."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf
from test_eval_runner import evaluate

from syco.checkpoints.report import curve, plot_checkpoints
from syco.checkpoints.runner import discover, fingerprint, paired_differences, paired_rises, with_interval
from syco.data.records import EvalRecord, turns
from syco.data.samples import SampleStore
from syco.ppo.config import PPOConfig
from syco.ppo.model import POLICY, ActorCritic

KLS = {0: 0.0, 2: 0.75}  # what the fake run "measured" (eval/kl of syco_ppo.json)
SMALL = [
    "method=checkpoints",
    "eval=planted_bias",
    "eval.generation.max_new_tokens=6",
    "eval.answer.sources.builtin.limit=3",
    "eval.misconceptions.sources.builtin.limit=3",
]


def fake_ppo_run(root: Path) -> Path:
    """policy/step_0 (the starting LoRA, B = 0) and policy/step_2 (perturbed), with the metadata
    PPOModule.evaluate_and_save writes, k3 as the run's KL estimator."""
    model_cfg = OmegaConf.to_container(compose_config("model/tiny"), resolve=True)["model"]
    ac = ActorCritic.create(model_cfg, seed=0)
    ppo = PPOConfig.from_mapping({"kl": {"estimator": "k3"}})
    info = {"pm": str(root / "pms" / "standard"), "gold_pm": None, "init_adapter": None, "seed": 0}
    run = root / "ppo_run"
    for step, kl in KLS.items():
        if step:
            with torch.no_grad():
                for p in ac.parameters_of(POLICY):
                    p.add_(0.5 * torch.randn_like(p, generator=None))
        row = {"step": step, "kl_coef": 0.05, "eval/kl": kl, "eval/score": 0.1 * step, "eval/eos_rate": 1.0}
        ac.save_policy(run / "policy" / f"step_{step}", meta={**info, **row, "ppo_config": asdict(ppo)})
    return run


def fake_bon_results(path: Path) -> Path:
    """A BoN results.json with the fields the overlay reads."""
    metric = {"value": 0.2, "ci": [0.1, 0.3], "count": 3}
    results = {pm: {n: {"answer": {"builtin": {"sycophancy": {**metric, "value": 0.1 * int(n)},
                                               "accuracy/plain": metric}}} for n in ("1", "2", "4")}
               for pm in ("standard", "oracle")}
    path.write_text(json.dumps({"method": "best_of_n", "k": 4, "n_grid": [1, 2, 4], "judge": "rules",
                                "kl_nominal": {"1": 0.0, "2": 0.193, "4": 0.636}, "results": results,
                                "config": {"policy": {"name": "tiny-llama", "adapter": None}}}))
    return path


@pytest.fixture(scope="module")
def ckpt_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    run = fake_ppo_run(root)
    bon = fake_bon_results(root / "bon_results.json")
    proc = evaluate(root / "hydra", *SMALL, f"checkpoints.run={run}", f"checkpoints.bon={bon}")
    out = run / "evaluations" / "planted_bias"
    return {"root": root, "run": run, "out": out, "bon": bon, "proc": proc,
            "summary": json.loads((out / "checkpoints.json").read_text())}


def test_one_entry_per_step_against_step_and_measured_kl(ckpt_run):
    s = ckpt_run["summary"]
    assert s["method"] == "ppo_checkpoints" and s["steps"] == [0, 2]
    assert [p["step"] for p in s["points"]] == [0, 2]
    assert [p["kl"] for p in s["points"]] == [KLS[0], KLS[2]]
    assert s["kl"]["estimator"] == "k3" and s["kl"]["key"] == "eval/kl"
    assert s["points"][1]["ppo_eval"]["eval/score"] == pytest.approx(0.2)
    assert s["judge"] == "rules" and s["eval_name"] == "planted_bias" and s["label"] == "PPO vs pms/standard"
    assert set(s["results"]) == {"0", "2"}
    assert "k3" in ckpt_run["proc"].stderr + ckpt_run["proc"].stdout  # the log names the estimator


def test_metrics_equal_the_per_step_results_with_intervals(ckpt_run):
    s, out = ckpt_run["summary"], ckpt_run["out"]
    checked = 0
    for step in (0, 2):
        per_step = json.loads((out / f"step_{step}" / "results.json").read_text())
        assert per_step["policy"].endswith(f"+step_{step}")  # the step's adapter, on the run's base
        assert per_step["config"]["policy"]["adapter"] == str(ckpt_run["run"] / "policy" / f"step_{step}")
        assert set(per_step["results"]) == {"answer", "misconceptions"}
        for task, by_judge in per_step["results"].items():
            for judge, by_dataset in by_judge.items():
                for dataset, metrics in by_dataset.items():
                    for name, m in metrics.items():
                        got = s["results"][str(step)][task][judge][dataset][name]
                        assert {k: got[k] for k in m} == m
                        if m["value"] is not None and m["stderr"] is not None:
                            assert got["ci"] == pytest.approx([m["value"] - 1.96 * m["stderr"],
                                                               m["value"] + 1.96 * m["stderr"]])
                            checked += 1
                        else:
                            assert got["ci"] is None
        pts = {p[0]: p for p in curve(s, "answer", "accuracy/plain")}
        m = per_step["results"]["answer"]["rules"]["builtin"]["accuracy/plain"]
        assert pts[step][1] == KLS[step] and pts[step][2] == m["value"]
    assert checked > 0


def test_plots_and_bon_overlay(ckpt_run):
    plots = ckpt_run["out"] / "plots"
    names = {p.name for p in plots.glob("*.png")}
    assert {"answer_sycophancy.png", "answer_accuracy_plain.png", "answer_accuracy_suggest_incorrect.png",
            "misconceptions_sycophantic.png"} <= names
    assert all((plots / n).stat().st_size > 1000 for n in names)
    assert ckpt_run["summary"]["bon"]["kl_nominal"]["4"] == pytest.approx(0.636)
    # the figure really draws the BoN curves on the KL panel (one line per PM)
    import matplotlib.pyplot as plt

    drawn = []
    real = plt.subplots

    def spy(*a, **k):
        fig, axes = real(*a, **k)
        drawn.append(axes)
        return fig, axes

    bon = json.loads(ckpt_run["bon"].read_text())
    plt.subplots = spy
    try:
        plot_checkpoints(ckpt_run["summary"], ckpt_run["root"] / "plots_again", bon=bon)
    finally:
        plt.subplots = real
    labels = [line.get_label() for line in drawn[0][1].get_lines()]
    assert {"best-of-n, standard", "best-of-n, oracle"} <= set(labels)


def test_csv_logger_gets_a_row_per_step(ckpt_run):
    (csv,) = (ckpt_run["root"] / "hydra" / "csv").glob("version_*/metrics.csv")
    lines = csv.read_text().splitlines()
    header = lines[0].split(",")
    assert "ppo/step" in header and "ppo/kl" in header and "ppo/rules/answer/builtin/accuracy/plain" in header
    assert len(lines) == 3


def test_rerun_skips_done_steps_and_evaluates_new_ones(ckpt_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ckpt_run["run"], run, ignore=shutil.ignore_patterns("evaluations"))
    out = run / "evaluations" / "planted_bias"
    shutil.copytree(ckpt_run["out"] / "step_0", out / "step_0")  # step 0 done, step 2 not yet
    # the copied step 0 names the other run's adapter: what matters is that it is not redone
    before = {p: p.stat().st_mtime_ns for p in (out / "step_0").rglob("*") if p.is_file()}
    evaluate(tmp_path / "hydra", *SMALL, f"checkpoints.run={run}", "logger=none")
    assert {p: p.stat().st_mtime_ns for p in (out / "step_0").rglob("*") if p.is_file()} == before
    assert (out / "step_2" / "results.json").is_file()
    again = json.loads((out / "checkpoints.json").read_text())
    first = ckpt_run["summary"]
    assert again["results"] == first["results"]  # same seed, same adapters: the same samples
    done = {p: p.stat().st_mtime_ns for p in out.rglob("results.json")}
    evaluate(tmp_path / "hydra2", *SMALL, f"checkpoints.run={run}", "logger=none", "checkpoints.steps=[2]")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("results.json")} == done
    assert json.loads((out / "checkpoints.json").read_text())["steps"] == [2]
    # another eval config in the same folder is refused, naming the file; the results stay
    proc = evaluate(tmp_path / "hydra3", *SMALL, f"checkpoints.run={run}", "logger=none",
                    "eval.answer.sources.builtin.limit=2", check=False)
    assert proc.returncode != 0 and str(out / "step_0" / "results.json") in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("results.json")} == done


def test_bad_inputs_name_the_path(ckpt_run, tmp_path):
    empty = tmp_path / "empty"
    (empty / "policy").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=str(empty / "policy")):
        discover(empty)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        discover(tmp_path / "nowhere")
    run = tmp_path / "run"
    shutil.copytree(ckpt_run["run"], run)
    with pytest.raises(FileNotFoundError, match=r"step_5"):
        discover(run, steps=[0, 5])
    (run / "policy" / "step_2" / "syco_ppo.json").unlink()
    with pytest.raises(FileNotFoundError, match=str(run / "policy" / "step_2" / "syco_ppo.json")):
        discover(run)
    (run / "policy" / "step_2" / "adapter_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=str(run / "policy" / "step_2") + ".*adapter_config.json"):
        discover(run)
    # end to end: the CLI fails with the path, and the per-step results already written stay
    done = {p: p.read_bytes() for p in (run / "evaluations").rglob("results.json")}
    assert done
    proc = evaluate(tmp_path / "hydra", *SMALL, f"checkpoints.run={run}", "logger=none", check=False)
    assert proc.returncode != 0 and str(run / "policy" / "step_2") in proc.stderr
    assert {p: p.read_bytes() for p in (run / "evaluations").rglob("results.json")} == done
    proc = evaluate(tmp_path / "hydra2", *SMALL, f"checkpoints.run={ckpt_run['run']}", "logger=none",
                    f"checkpoints.bon={tmp_path / 'no_bon.json'}", check=False)
    assert proc.returncode != 0 and str(tmp_path / "no_bon.json") in proc.stderr
    proc = evaluate(tmp_path / "hydra3", *SMALL, "logger=none", check=False)
    assert proc.returncode != 0 and "checkpoints.run" in proc.stderr


def test_missing_start_is_the_reference_at_kl_zero(ckpt_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ckpt_run["run"] / "policy" / "step_2", run / "policy" / "step_2")
    ckpts = discover(run)
    assert [(c.step, c.kl, c.adapter) for c in ckpts] == [(0, 0.0, None), (2, KLS[2], run / "policy" / "step_2")]
    assert [c.step for c in discover(run, start=False)] == [2]


def test_interval_and_fingerprint_helpers():
    assert with_interval({"value": 0.5, "stderr": 0.1, "count": 9}, 2.0)["ci"] == pytest.approx([0.3, 0.7])
    assert with_interval({"value": 0.5, "stderr": None, "count": 1}, 2.0)["ci"] is None
    a = {"seed": 0, "eval": {"generation": {"max_new_tokens": 6}}, "policy": {"name": "x", "adapter": "a"}}
    b = {"seed": 0, "eval": {"generation": {"max_new_tokens": 6}}, "policy": {"name": "x", "adapter": "b"}}
    assert fingerprint(a) == fingerprint(b)  # the adapter is the step's own, wherever the run lies
    b["eval"]["generation"]["max_new_tokens"] = 7
    assert fingerprint(a) != fingerprint(b)


def test_rises_are_each_step_minus_the_first_paired_by_item(ckpt_run):
    s, out = ckpt_run["summary"], ckpt_run["out"]
    assert set(s["rises"]) == {"2"} and set(s["rises"]["2"]) == {"answer", "misconceptions"}
    first = json.loads((out / "step_0" / "results.json").read_text())["results"]
    later = json.loads((out / "step_2" / "results.json").read_text())["results"]
    checked = 0
    for task, by_dataset in s["rises"]["2"].items():
        for dataset, metrics in by_dataset.items():
            for name, m in metrics.items():
                a, b = later[task]["rules"][dataset][name]["value"], first[task]["rules"][dataset][name]["value"]
                assert m["value"] == pytest.approx(a - b)
                checked += 1
    assert checked > 0


def _answer_step(folder: Path, suggest_correct: list[bool]) -> None:
    """An evaluation folder's samples.jsonl: 4 facts, plain always right, suggest-incorrect right
    where `suggest_correct` says (else the user's wrong answer is adopted)."""
    folder.mkdir(parents=True)
    store, samples = SampleStore(folder / "samples.jsonl"), []
    for i, ok in enumerate(suggest_correct):
        base = {"dataset": "builtin", "id": f"fact-{i}", "correct_answer": "A", "incorrect_answer": "B"}
        for template, correct in (("plain", True), ("suggest_incorrect", ok)):
            record = EvalRecord("answer", template, turns(("human", f"Q{i} {template}")), base)
            store.put(record, 0, ["A" if correct else "B"])
            samples.append({"record": record, "index": 0,
                            "verdicts": {"rules": {"correct": correct, "adopts_incorrect": not correct}}})
    store.rewrite(samples)


def test_paired_rises_exact_small_cases(tmp_path):
    _answer_step(tmp_path / "step_0", [True, True, False, False])
    _answer_step(tmp_path / "step_5", [True, True, False, False])
    _answer_step(tmp_path / "step_9", [True, False, False, False])
    rises = paired_rises({k: tmp_path / f"step_{k}" for k in (0, 5, 9)}, "rules", rounds=50)
    same = rises["5"]["answer"]["builtin"]
    assert same["accuracy/suggest_incorrect"]["value"] == 0 and same["accuracy/suggest_incorrect"]["ci"] == [0, 0]
    moved = rises["9"]["answer"]["builtin"]
    assert moved["accuracy/suggest_incorrect"]["value"] == pytest.approx(-0.25)
    assert moved["adopts_incorrect/suggest_incorrect"]["value"] == pytest.approx(0.25)
    assert moved["accuracy/plain"]["value"] == 0 and moved["accuracy/plain"]["ci"] == [0, 0]
    lo, hi = moved["accuracy/suggest_incorrect"]["ci"]
    assert -1 <= lo <= -0.25 <= hi <= 0  # only item 1 changed: no draw can show a rise
    # the same comparison read as two runs at one step
    assert paired_differences({"9": (tmp_path / "step_9", tmp_path / "step_0")}, "rules", rounds=50) == {"9": rises["9"]}
    (tmp_path / "step_5" / "samples.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="step_5"):
        paired_rises({k: tmp_path / f"step_{k}" for k in (0, 5)}, "rules")


def test_versus_another_run_is_paired_per_step(ckpt_run, tmp_path):
    """checkpoints.versus: this run minus another run's evaluation at each step both have; against
    a copy of its own evaluation every difference is exactly 0. A missing folder is named."""
    run = tmp_path / "run"
    shutil.copytree(ckpt_run["run"], run)
    other = tmp_path / "other_eval"
    shutil.copytree(ckpt_run["out"], other)
    shutil.rmtree(other / "step_2")  # only step 0 is compared
    evaluate(tmp_path / "hydra", *SMALL, f"checkpoints.run={run}", "logger=none", f"checkpoints.versus={other}")
    s = json.loads((run / "evaluations" / "planted_bias" / "checkpoints.json").read_text())
    diffs = s["versus"]["differences"]
    assert s["versus"]["path"] == str(other) and set(diffs) == {"0"}
    values = [m["value"] for by_ds in diffs["0"].values() for by in by_ds.values() for m in by.values()]
    assert values and all(v == 0 for v in values)
    proc = evaluate(tmp_path / "hydra2", *SMALL, f"checkpoints.run={run}", "logger=none",
                    f"checkpoints.versus={tmp_path / 'nowhere'}", check=False)
    assert proc.returncode != 0 and str(tmp_path / "nowhere") in proc.stderr
