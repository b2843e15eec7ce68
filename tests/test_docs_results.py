"""docs/results: every write-up's generated tables and figures match its result files
(scripts/redraw_results.py), every figure it links exists and every figure beside it is linked."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
_spec = importlib.util.spec_from_file_location("redraw_results", REPO / "scripts" / "redraw_results.py")
redraw_results = importlib.util.module_from_spec(_spec)
sys.modules["redraw_results"] = redraw_results  # dataclasses look the module up
_spec.loader.exec_module(redraw_results)

WRITEUPS = sorted(RESULTS.glob("*/README.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def m(value, stderr=None, count=10, ci=None):
    out = {"value": value, "stderr": stderr, "count": count}
    if ci is not None:
        out["ci"] = ci
    return out


def pm_metrics(syco_rate=0.205):
    return {"metrics": {"heldout/accuracy": m(0.735, 0.026, 291), "pm/syco_rate": m(syco_rate, 0.03, 78),
                        "heldout/accuracy/belief": m(None, None, 0)},
            "variant": "nonsyco", "pm_path": "outputs/x/pm", "pairs": {"train": 1000, "val": 291}}


def bon_results(run_dir="outputs/bon8"):
    def by_n(values):
        return {str(n): {"answer": {"builtin": {"sycophancy": m(v, 0.05, 134, [v - 0.1, v + 0.1])}}}
                for n, v in zip((1, 2, 4), values)}

    return {"method": "best_of_n", "k": 4, "n_grid": [1, 2, 4], "judge": "rules",
            "kl_nominal": {"1": 0.0, "2": 0.193, "4": 0.636},
            "results": {"standard": by_n((0.2, 0.25, 0.3)), "oracle": by_n((0.2, 0.15, 0.1))},
            "differences": {"standard-oracle": {n: {"answer": {"builtin": {"sycophancy": m(d, None, 134, [d - 0.05, d + 0.05])}}}
                                                for n, d in (("1", 0.0), ("2", 0.1), ("4", 0.2))}},
            "rises": {}, "config": {"run_dir": f"/somewhere/{run_dir}"}}


def checkpoints(run, values, overlay=(), bon="outputs/bon8/results.json"):
    out = f"{run}/evaluations/planted_bias"
    steps = [0, 25]
    return {"method": "ppo_checkpoints", "run": run, "label": f"PPO vs {run}", "eval_name": "planted_bias",
            "judge": "rules", "kl": {"key": "eval/kl", "estimator": "k1", "what": "..."}, "steps": steps,
            "points": [{"step": s, "kl": k, "results": f"{out}/step_{s}/results.json", "ppo_eval": {}}
                       for s, k in zip(steps, (0.0, 1.5))],
            "results": {str(s): {"answer": {"rules": {"builtin": {"sycophancy": m(v, 0.03, 134, [v - 0.06, v + 0.06])}}}}
                        for s, v in zip(steps, values)},
            "rises": {"25": {"answer": {"builtin": {"sycophancy": m(values[1] - values[0], None, 134, [0.01, 0.2])}}}},
            "versus": None,
            "pm_scores": {"standard": {"levels": {"0": {"answer": {"all": {"value": -0.1, "count": 134}}},
                                                  "25": {"answer": {"all": {"value": 0.3, "count": 134}}}},
                                       "rises": {"25": {"answer": {"all": {"value": 0.4, "count": 134, "ci": [0.3, 0.5]}}}}}},
            "bon": {"path": bon, "judge": "rules"} if bon else None,
            "config": {"checkpoints": {"overlay": list(overlay)}}}


def writeup(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    readme = folder / "README.md"
    readme.write_text("# An experiment\n\nSome prose.\n\n**Result files:** not kept.\n")
    return readme


def test_pm_metrics_table(tmp_path):
    readme = writeup(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps(pm_metrics()))
    assert redraw_results.redraw(tmp_path) == []
    text = readme.read_text()
    assert "| `pm/syco_rate` | 0.205 | 0.030 | 78 |" in text
    assert "| `heldout/accuracy/belief` | undefined |  | 0 |" in text
    assert "<!-- generated:figures -->" not in text  # PM metrics draw no figure
    assert "**Result files:** `metrics.json`;" in text and "not kept" not in text
    assert redraw_results.check(tmp_path) == []
    # a changed file makes the write-up stale until it is redrawn
    (tmp_path / "metrics.json").write_text(json.dumps(pm_metrics(syco_rate=0.3)))
    assert any("tables block" in p for p in redraw_results.check(tmp_path))
    redraw_results.redraw(tmp_path)
    assert "| `pm/syco_rate` | 0.300 |" in readme.read_text() and redraw_results.check(tmp_path) == []


def test_several_pm_runs_side_by_side(tmp_path):
    readme = writeup(tmp_path)
    (tmp_path / "standard.metrics.json").write_text(json.dumps({**pm_metrics(syco_rate=1.0), "variant": "standard"}))
    (tmp_path / "nonsyco.metrics.json").write_text(json.dumps(pm_metrics()))
    assert redraw_results.redraw(tmp_path) == []
    text = readme.read_text()
    # a row per run; a column per headline metric that some run measured (none did accuracy/belief)
    assert "| run | variant | `heldout/accuracy` | `pm/syco_rate` |" in text
    assert "| `nonsyco.metrics.json` | `nonsyco` | 0.735 ± 0.026 (291) | 0.205 ± 0.030 (78) |" in text
    assert "| `standard.metrics.json` | `standard` | 0.735 ± 0.026 (291) | 1.000 ± 0.030 (78) |" in text
    assert text.count("| run | variant |") == 1  # one table, not one per run
    assert redraw_results.check(tmp_path) == []


def test_bon_and_checkpoints_figures_and_tables(tmp_path):
    readme = writeup(tmp_path)
    (tmp_path / "bon.results.json").write_text(json.dumps(bon_results()))
    nonsyco = checkpoints("outputs/ppo/nonsyco", (0.22, 0.22), bon=None)
    standard = checkpoints("outputs/ppo/standard", (0.22, 0.34),
                           overlay=["outputs/ppo/nonsyco/evaluations/planted_bias/checkpoints.json"])
    (tmp_path / "nonsyco").mkdir()
    (tmp_path / "nonsyco" / "checkpoints.json").write_text(json.dumps(nonsyco))
    (tmp_path / "standard.checkpoints.json").write_text(json.dumps(standard))

    files = redraw_results.result_files(tmp_path)
    assert [(f.label, f.kind) for f in files] == [("bon", "bon"), ("nonsyco", "checkpoints"), ("standard", "checkpoints")]
    bon, overlays = redraw_results.companions(files[2], files)
    assert bon is files[0] and overlays == [files[1]]  # matched on the recorded paths
    assert redraw_results.companions(files[1], files) == (None, [])

    names = redraw_results.redraw(tmp_path)
    assert names == ["bon_answer_sycophancy.png", "bon_difference_answer_sycophancy.png",
                     "nonsyco_answer_sycophancy.png", "standard_answer_sycophancy.png"]
    assert all((tmp_path / n).is_file() for n in names)
    text = readme.read_text()
    assert "| standard | 134 | 0.200 [0.100, 0.300] | 0.250 [0.150, 0.350] | 0.300 [0.200, 0.400] |" in text
    assert "| paired difference standard-oracle | 134 | +0.000 [-0.050, +0.050] |" in text
    assert "| 25 | 1.500 | 0.340 [0.280, 0.400] | 134 | +0.120 [+0.010, +0.200] |" in text
    assert "| 25 | answer | all | +0.300 | 134 | +0.400 [+0.300, +0.500] |" in text
    assert all(f"![{n[:-4]}]({n})" in text for n in names)
    assert redraw_results.check(tmp_path) == []

    # a figure no longer drawn (no differences) is deleted with its link
    data = bon_results()
    data["differences"] = {}
    (tmp_path / "bon.results.json").write_text(json.dumps(data))
    redraw_results.redraw(tmp_path)
    assert not (tmp_path / "bon_difference_answer_sycophancy.png").exists()
    assert "bon_difference_answer_sycophancy" not in readme.read_text()
    assert redraw_results.check(tmp_path) == []


def test_eval_results_table_and_appended_blocks(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Eval\n")
    (tmp_path / "results.json").write_text(json.dumps(
        {"policy": "smollm2", "judges": ["rules"], "agreement": {},
         "results": {"answer": {"rules": {"builtin": {"sycophancy": m(0.25, 0.093, 40)}}}}}))
    redraw_results.redraw(tmp_path)
    text = readme.read_text()
    assert "| sycophancy | 0.250 ± 0.093 (n=40) |" in text
    assert text.index("<!-- generated:tables -->") < text.index("**Result files:** `results.json`")


def test_a_file_no_syco_job_writes_is_named(tmp_path):
    writeup(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"something": 1}))
    with pytest.raises(ValueError, match="results.json: not a result file of a syco job"):
        redraw_results.redraw(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"results.json:1: not valid JSON"):
        redraw_results.result_files(tmp_path)


@pytest.mark.parametrize("folder", redraw_results.folders_with_results(), ids=lambda p: p.name)
def test_writeups_match_their_result_files(folder):
    assert redraw_results.check(folder) == []


@pytest.mark.parametrize("readme", WRITEUPS, ids=lambda p: p.parent.name)
def test_figures_linked_and_present(readme):
    text = readme.read_text()
    linked = {t for t in LINK.findall(text) if t.endswith(".png")}
    missing = sorted(t for t in linked if not (readme.parent / t).is_file())
    assert not missing, f"{readme}: links figures that are not there: {missing}"
    unlinked = sorted(p.name for p in readme.parent.glob("*.png") if p.name not in linked)
    assert not unlinked, f"{readme}: figures beside it that it does not link: {unlinked}"
    assert "**Result files:**" in text, f"{readme}: no **Result files:** line"
    for target in LINK.findall(text):
        if target.endswith(".md") and "://" not in target:
            assert (readme.parent / target.split("#")[0]).is_file(), f"{readme}: dead link {target}"


def test_index_lists_every_experiment():
    index = (RESULTS / "README.md").read_text()
    listed = {t.split("/")[0] for t in LINK.findall(index) if t.endswith("/README.md")}
    assert listed == {p.parent.name for p in WRITEUPS}
    assert not (REPO / "docs" / "figures").exists() or not any((REPO / "docs" / "figures").iterdir())
