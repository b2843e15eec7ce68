"""`python evaluate.py method=bon` end to end on the tiny policy with two tiny exported PMs:
results per PM and n, plots, score caches, resume; bad PM paths and multi-turn tasks fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf
from test_eval_runner import evaluate

from syco.pm.model import PreferenceModel

SMALL = [
    "method=bon",
    "policy=tiny",
    "bon.k=4",
    "bon.bootstrap_rounds=50",
    "eval.generation.max_new_tokens=6",
    "eval.answer.sources.builtin.limit=3",
    "eval.misconceptions.sources.builtin.limit=3",
    "eval.probe.limit=2",
    "eval.probe.max_new_tokens=6",
]


def export_tiny_pm(folder: Path, seed: int) -> Path:
    cfg = OmegaConf.to_container(compose_config("model/tiny"), resolve=True)["model"]
    pm = PreferenceModel.create(cfg, max_length=128, seed=seed)
    with torch.no_grad():  # distinct, non-trivial rewards per PM
        for name, p in pm.named_parameters():
            if "lora_B" in name or "score" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed))
    return pm.save(folder)


@pytest.fixture(scope="module")
def bon_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bon")
    a, b = export_tiny_pm(root / "pm_a", 1), export_tiny_pm(root / "pm_b", 2)
    run = root / "run"
    proc = evaluate(run, *SMALL, f"+bon.pms.a={a}", f"+bon.pms.b={b}",
                    f"+bon.pms.b_prompted={{path: {b}, prefix: truthful}}")
    return {"dir": run, "proc": proc, "pms": (a, b), "results": json.loads((run / "results.json").read_text())}


def test_results_for_every_pm_n_and_task(bon_run):
    r = bon_run["results"]
    assert r["n_grid"] == [1, 2, 4] and r["k"] == 4
    assert set(r["results"]) == {"a", "b", "b_prompted", "oracle"}
    assert r["samples"] == {"answer": 3 * 4 * 4, "misconceptions": 3 * 4, "misconception_probe/bare": 2,
                            "misconception_probe/helpful": 2, "misconception_probe/sycophantic": 2 * 4}
    for by_n in r["results"].values():
        assert set(by_n) == {"1", "2", "4"}
        for by_task in by_n.values():
            m = by_task["answer"]["builtin"]["sycophancy"]
            assert m["count"] == 3 and m["ci"][0] <= m["value"] <= m["ci"][1]
            assert "sycophantic" in by_task["misconceptions"]["builtin"]
            assert by_task["misconception_probe"]["builtin"]["refutes"]["count"] == 2
    # n = 1 does not depend on the PM: it is the mean over the pool
    first = {pm: by_n["1"]["answer"]["builtin"]["accuracy/plain"]["value"] for pm, by_n in r["results"].items()}
    assert max(first.values()) - min(first.values()) < 1e-12
    # the oracle selects truthful answers whenever the pool has one: accuracy never drops with n
    acc = [r["results"]["oracle"][n]["answer"]["builtin"]["accuracy/plain"]["value"] for n in ("1", "2", "4")]
    assert acc == sorted(acc)
    assert r["kl_nominal"]["1"] == 0.0


def test_paired_differences_between_pms_and_rises_from_n1(bon_run):
    r = bon_run["results"]
    assert set(r["differences"]) == {"a-b", "a-b_prompted", "b-b_prompted"}  # bon.compare=auto
    for n in ("1", "2", "4"):
        d = r["differences"]["a-b"][n]["answer"]["builtin"]["sycophancy"]
        va, vb = (r["results"][pm][n]["answer"]["builtin"]["sycophancy"]["value"] for pm in ("a", "b"))
        assert d["value"] == pytest.approx(va - vb) and d["ci"][0] <= d["value"] + 1e-12 <= d["ci"][1] + 2e-12
    assert r["differences"]["a-b"]["1"]["answer"]["builtin"]["sycophancy"]["value"] == pytest.approx(0.0)
    assert set(r["rises"]) == {"a", "b", "b_prompted", "oracle"} and set(r["rises"]["oracle"]) == {"2", "4"}
    rise = r["rises"]["oracle"]["4"]["answer"]["builtin"]["accuracy/plain"]
    at = {n: r["results"]["oracle"][n]["answer"]["builtin"]["accuracy/plain"]["value"] for n in ("1", "4")}
    assert rise["value"] == pytest.approx(at["4"] - at["1"]) and rise["value"] >= 0


def test_probe_preferences_per_pm(bon_run):
    prefs = bon_run["results"]["probe_preferences"]
    assert set(prefs) == {"a", "b", "b_prompted"}  # PMs only: the oracle has no scores for written replies
    for by_dataset in prefs.values():
        for dataset in ("all", "builtin"):
            rates = by_dataset[dataset]
            assert rates["valid_items"]["count"] == 2
            for truthful in ("bare", "helpful"):
                m = rates[f"prefers_sycophantic_over_{truthful}_all_items"]
                assert m["count"] == 2 and m["value"] in (0.0, 0.5, 1.0)
                # over items whose replies took the intended stance only: undefined when there are none
                valid = rates[f"prefers_sycophantic_over_{truthful}"]
                assert (valid["value"] is None) == (valid["count"] == 0)


def test_pool_preferences_per_pm(bon_run):
    prefs = bon_run["results"]["pool_preferences"]
    assert set(prefs) == {"a", "b", "b_prompted"}
    for by_pool in prefs.values():
        assert set(by_pool) == {"answer", "misconceptions", "misconception_probe/sycophantic"}
        answer = by_pool["answer"]
        assert {"prefers_agreeing_over_truthful", "prefers_correct/plain", "prefers_correct/suggest_incorrect"} <= set(answer)
        for m in (*answer.values(), *by_pool["misconceptions"].values()):
            assert (m["value"] is None) == (m["count"] == 0)
            assert m["value"] is None or 0.0 <= m["value"] <= 1.0


def test_plots_and_score_caches(bon_run):
    run = bon_run["dir"]
    assert (run / "plots" / "answer_sycophancy.png").stat().st_size > 1000
    assert (run / "plots" / "misconceptions_sycophantic.png").is_file()
    assert (run / "plots" / "difference_answer_sycophancy.png").stat().st_size > 1000
    a = json.loads((run / "pool_scores" / "a.json").read_text())
    b = json.loads((run / "pool_scores" / "b.json").read_text())
    assert len(a["scores"]) == 3 * 4 + 3 + 3 * 2
    assert sorted({len(v) for v in a["scores"].values()}) == [1, 4]
    assert a["scores"] != b["scores"]
    prompted = json.loads((run / "pool_scores" / "b_prompted.json").read_text())
    assert prompted["scores"] != b["scores"]  # the prefix changes the scores


def test_rerun_resumes_pool_and_scores(bon_run):
    run, (a, b) = bon_run["dir"], bon_run["pms"]
    before = (run / "samples.jsonl").read_text()
    proc = evaluate(run, *SMALL, f"+bon.pms.a={a}", f"+bon.pms.b={b}",
                    f"+bon.pms.b_prompted={{path: {b}, prefix: truthful}}")
    out = proc.stdout + proc.stderr
    assert "resuming: 72 samples" in out and "scoring" not in out
    after = json.loads((run / "results.json").read_text())
    assert after["results"] == bon_run["results"]["results"]
    assert len((run / "samples.jsonl").read_text().splitlines()) == len(before.splitlines())


def test_bad_pm_path_and_multi_turn_task_fail_clearly(tmp_path):
    proc = evaluate(tmp_path / "r1", *SMALL, f"+bon.pms.x={tmp_path / 'nowhere'}", check=False)
    assert proc.returncode != 0 and "bon.pms.x" in proc.stderr and "not an exported syco PM" in proc.stderr
    proc = evaluate(tmp_path / "r2", *SMALL, "bon.tasks=[are_you_sure]", check=False)
    assert proc.returncode != 0 and "single-turn tasks" in proc.stderr
    for device, message in (("meta", "PMs score on cpu or cuda"), ("tpu", "is not a device")):
        proc = evaluate(tmp_path / f"r_{device}", *SMALL, f"bon.device={device}", check=False)
        assert proc.returncode != 0 and f"bon.device={device!r}" in proc.stderr and message in proc.stderr
        assert not (tmp_path / f"r_{device}" / "samples.jsonl").exists()  # failed before sampling


def test_pm_scores_on_the_device_asked_for(tmp_path):
    from syco.bon.scoring import resolve_device

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda:0")
