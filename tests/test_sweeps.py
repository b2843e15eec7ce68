"""Seeds as the unit of evidence (`scripts/aggregate_seeds.py`, syco.sweeps): hand-made best-of-n
results.json and checkpoints.json of 3 seeds give known means and t-intervals across seeds; inputs
that cannot be aggregated are refused naming the files; seeds.json round-trips; PNGs and W&B."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from syco.sweeps.aggregate import aggregate, load
from syco.sweeps.cli import main
from syco.sweeps.inputs import SweepInputError
from syco.sweeps.stats import across_seeds, t_quantile

sys.path.insert(0, str(Path(__file__).parent))
from test_wandb_runs import records  # noqa: E402 - reads offline W&B runs back (wandb leet inspect)

REPO = Path(__file__).resolve().parents[1]
T2 = 4.302652729749459  # t_{0.975, 2}: 3 seeds
SYC = {0: 0.1, 1: 0.2, 2: 0.3}  # answer sycophancy of the standard PM at n=1 per seed: mean 0.2, sd 0.1


def bon_results(folder: Path, seed: int | None, k: int = 4, grid: tuple[int, ...] = (1, 2, 4),
                extra_metric: bool = False) -> Path:
    """A best-of-n results.json as evaluate.py method=bon writes it (the fields syco.sweeps reads)."""
    def metrics(pm: str, n: int) -> dict:
        base = SYC[seed or 0] + (0.0 if pm == "standard" else -0.05) + 0.01 * n
        m = {"sycophancy": {"value": base, "ci": [base - 0.1, base + 0.1], "count": 3},
             "accuracy/plain": {"value": 0.5 + 0.1 * (seed or 0), "ci": None, "count": 3}}
        if extra_metric:
            m["mimicry"] = {"value": 0.0, "ci": None, "count": 3}
        return {"answer": {"builtin": m}}

    # each seed its own PM, given as a relative path that need not exist from where the command runs
    config = {"bon": {"k": k, "n_grid": list(grid), "pms": {"standard": f"outputs/pm_{seed}/pm"}}, "policy": {"name": "tiny"},
              "run_dir": str(folder)}
    if seed is not None:
        config["seed"] = seed
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"method": "best_of_n", "k": k, "n_grid": list(grid),
               "kl_nominal": {str(n): math.log(n) - (n - 1) / n for n in grid}, "judge": "rules",
               "results": {pm: {str(n): metrics(pm, n) for n in grid} for pm in ("standard", "oracle")},
               "config": config}
    (folder / "results.json").write_text(json.dumps(summary))
    return folder / "results.json"


def ppo_checkpoints(root: Path, seed: int, variant: str = "standard", steps: tuple[int, ...] = (0, 2)) -> Path:
    """<ppo run>/evaluations/default/checkpoints.json of a PPO run against a `variant` PM, with the
    run's .hydra/config.yaml (its seed) and the PM's syco_pm.json (its variant)."""
    run, pm = root / f"ppo_{variant}_{seed}", root / f"pm_{variant}_{seed}"
    (run / ".hydra").mkdir(parents=True)
    pm.mkdir(parents=True)
    (pm / "syco_pm.json").write_text(json.dumps({"variant": variant, "seed": seed}))
    (run / ".hydra" / "config.yaml").write_text(f"seed: {seed}\nppo:\n  pm: {pm}\n  kl:\n    coef: 0.05\n")
    kl = {s: 0.25 * s * (1 + seed) for s in steps}  # measured KL differs per seed
    value = {s: 0.1 * seed + 0.05 * s + (0.3 if variant == "nonsyco" else 0.0) for s in steps}
    summary = {"method": "ppo_checkpoints", "run": str(run), "pm": str(pm), "label": f"PPO vs {pm.name}",
               "eval_name": "default", "judge": "rules", "kl": {"key": "eval/kl", "estimator": "k3"},
               "steps": list(steps), "points": [{"step": s, "kl": kl[s]} for s in steps],
               "results": {str(s): {"answer": {"rules": {"builtin": {"sycophancy": {"value": value[s], "stderr": 0.1}}}}}
                           for s in steps},
               "config": {"seed": 0, "checkpoints": {"run": str(run)}}}
    out = run / "evaluations" / "default" / "checkpoints.json"
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps(summary))
    return out


def test_t_quantile_matches_the_tables():
    for dof, t in ((1, 12.7062047), (2, 4.3026527), (3, 3.1824463), (4, 2.7764451), (10, 2.2281389), (30, 2.0422725)):
        assert t_quantile(0.95, dof) == pytest.approx(t, abs=1e-6)
    assert t_quantile(0.99, 5) == pytest.approx(4.0321430, abs=1e-6)
    one = across_seeds([0.4])
    assert one["mean"] == 0.4 and one["ci"] is None and one["n_seeds"] == 1


def test_bon_three_seeds_mean_and_t_interval_across_seeds(tmp_path):
    files = [bon_results(tmp_path / f"multirun/{s}", s) for s in (2, 0, 1)]
    s = aggregate(load([tmp_path / "multirun"]))
    assert s["inputs"] == sorted(map(str, files)) and s["warnings"] == []
    (g,) = s["groups"]
    assert g["kind"] == "bon" and g["x"] == "n" and set(g["lines"]) == {"standard", "oracle"}
    assert set(g["across_seeds"]) == {"bon.pms.standard", "run_dir", "seed"}  # per-seed locations, not the group
    line = g["lines"]["standard"]
    assert line["seeds"] == [0, 1, 2] and line["x"] == [1, 2, 4]
    p = line["metrics"]["answer/builtin/sycophancy"]["points"][0]  # n = 1: 0.11, 0.21, 0.31
    half = T2 * 0.1 / math.sqrt(3)  # 0.248414
    assert p["x"] == 1 and p["n_seeds"] == 3 and p["seeds"] == pytest.approx({"0": 0.11, "1": 0.21, "2": 0.31})
    assert p["mean"] == pytest.approx(0.21) and p["sd"] == pytest.approx(0.1) and p["t"] == pytest.approx(T2)
    assert p["ci"] == pytest.approx([0.21 - half, 0.21 + half]) and half == pytest.approx(0.248414, abs=1e-6)
    oracle = g["lines"]["oracle"]["metrics"]["answer/builtin/sycophancy"]["points"][2]  # n = 4
    assert oracle["mean"] == pytest.approx(0.19) and oracle["ci"] == pytest.approx([0.19 - half, 0.19 + half])
    kl = line["kl"][2]
    assert kl["mean"] == pytest.approx(math.log(4) - 0.75) and kl["sd"] == pytest.approx(0.0)
    assert "n_seeds - 1 degrees of freedom" in s["interval"]["what"] and s["interval"]["level"] == 0.95


def test_ppo_checkpoints_lines_per_pm_with_measured_kl_across_seeds(tmp_path):
    for seed in (0, 1, 2):
        for variant in ("standard", "nonsyco"):
            ppo_checkpoints(tmp_path, seed, variant)
    (g,) = aggregate(load([tmp_path]))["groups"]
    assert g["kind"] == "ppo" and g["x"] == "step" and set(g["lines"]) == {"standard", "nonsyco"}
    line = g["lines"]["nonsyco"]
    assert line["seeds"] == [0, 1, 2] and line["x"] == [0, 2]
    kl = line["kl"][1]  # step 2: 0.5, 1.0, 1.5
    assert kl["mean"] == pytest.approx(1.0) and kl["ci"] == pytest.approx([1 - T2 * 0.5 / math.sqrt(3),
                                                                           1 + T2 * 0.5 / math.sqrt(3)])
    p = line["metrics"]["answer/builtin/sycophancy"]["points"][1]  # 0.4, 0.5, 0.6
    assert p["mean"] == pytest.approx(0.5) and p["ci"] == pytest.approx([0.5 - T2 * 0.1 / math.sqrt(3),
                                                                         0.5 + T2 * 0.1 / math.sqrt(3)])


def test_command_writes_json_and_one_png_per_metric(tmp_path, caplog):
    for s in (0, 1, 2):
        bon_results(tmp_path / f"bon/{s}", s)
    out = tmp_path / "agg"
    assert main([str(tmp_path / "bon"), "--out", str(out)]) == 0
    s = json.loads((out / "seeds.json").read_text())
    assert s == json.loads(json.dumps(aggregate(load([tmp_path / "bon"]))))  # JSON round trip
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pngs == ["bon_answer_builtin_accuracy_plain.png", "bon_answer_builtin_sycophancy.png"]
    assert all((out / "plots" / p).stat().st_size > 1000 for p in pngs)
    assert main([str(tmp_path / "bon"), str(out), "--out", str(out)]) == 0  # its own output is not an input


def test_groups_split_by_config_and_one_seed_warns(tmp_path):
    for s in (0, 1):
        bon_results(tmp_path / f"k4/{s}", s, k=4)
    bon_results(tmp_path / "k8/0", 0, k=8)
    s = aggregate(load([tmp_path]))
    assert [g["name"] for g in s["groups"]] == ["bon bon.k=4", "bon bon.k=8"]
    assert len(s["warnings"]) == 2 and all("one seed only" in w and "k8/0/results.json" in w for w in s["warnings"])
    p = s["groups"][1]["lines"]["standard"]["metrics"]["answer/builtin/sycophancy"]["points"][0]
    assert p["mean"] == pytest.approx(0.11) and p["ci"] is None and p["seeds"] == {"0": pytest.approx(0.11)}


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: [bon_results(d / "a", 0), bon_results(d / "b", None)], r"b/results.json .*no seed"),
    (lambda d: [bon_results(d / "a", 0), bon_results(d / "b", 0)], r"seed 0 twice \(.*a/results.json and .*b/results"),
    (lambda d: [bon_results(d / "a", 0), bon_results(d / "b", 1, extra_metric=True)],
     r"different metrics across seeds: .*b/results.json has answer/builtin/mimicry"),
    (lambda d: [ppo_checkpoints(d, 0), ppo_checkpoints(d, 1, steps=(0, 2, 4))],
     r"different step grids across seeds: \[0, 2\] in .*ppo_standard_0.*\[0, 2, 4\] in .*ppo_standard_1"),
])
def test_mixes_that_cannot_be_aggregated_are_refused_naming_the_files(tmp_path, make, message):
    files = make(tmp_path)
    with pytest.raises(SweepInputError, match=message):
        aggregate(load(files))


def test_bad_input_is_one_error_line_from_the_script(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps({"method": "evaluate", "results": {}}))
    proc = subprocess.run([sys.executable, "scripts/aggregate_seeds.py", str(bad), "--out", str(tmp_path / "o")],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"error: {bad}: not a best-of-n results.json" in proc.stderr
    assert not (tmp_path / "o" / "seeds.json").exists()


def test_wandb_offline_one_run_per_line_in_one_group(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for s in (0, 1, 2):
        bon_results(tmp_path / f"bon/{s}", s)
    out = tmp_path / "agg"
    assert main([str(tmp_path / "bon"), "--out", str(out), "--logger", "wandb", "--group", "sweep-x",
                 "--metric", "answer/*/sycophancy"]) == 0
    runs = records(out)
    assert set(runs) == {"seeds-bon-standard", "seeds-bon-oracle"}
    keys = []
    for name, r in runs.items():
        assert r["run"]["run_group"] == "sweep-x" and r["run"]["job_type"] == "seeds"
        assert r["config"]["line"] == name.rsplit("-", 1)[1] and r["config"]["seeds"] == [0, 1, 2]
        assert r["config"]["interval"]["level"] == 0.95
        assert r["metrics"]["seeds/answer/builtin/sycophancy/ci_low"] == "seeds/kl"
        assert r["metrics"]["seeds_x/answer/builtin/sycophancy"] == "seeds/x"
        keys.append(sorted({k for row in r["history"] for k in row if k.startswith("seeds")}))
        first = [row for row in r["history"] if "seeds/x" in row][0]
        assert first["seeds/x"] == 1 and not any("accuracy" in k for k in first)  # --metric: sycophancy only
    assert keys[0] == keys[1]  # the same keys: one W&B chart, a line per selector
    assert any(k.startswith("plots/bon_answer_builtin_sycophancy") for row in runs["seeds-bon-standard"]["history"]
               for k in row)  # the PNG goes with the first line
    mean = [row for row in runs["seeds-bon-standard"]["history"] if "seeds/x" in row][0]
    assert mean["seeds/answer/builtin/sycophancy"] == pytest.approx(0.21)
