"""bench/scaling.py's pure parts on synthetic rows: growth exponents, verdicts, tables, the result file,
the figure, the choice of PM pairs, phase timing and the rows made from a worker's result. The sweeps
themselves (minutes of model work) are not run here."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import scaling  # noqa: E402 - bench/ is not a package
import scaling_report as rep  # noqa: E402

from syco.tracking import write_json_atomic  # noqa: E402


def row(sweep: str, size: float, seconds: float, rss: float = 1.0) -> dict:
    return {"sweep": sweep, "job": sweep.split("_")[0], "knob": "k", "size": size, "seconds": seconds,
            "what": "work", "units": size, "unit": "u", "per_unit_s": seconds / size, "peak_rss_gb": rss,
            "notes": {"tokens": 12.0}}


def test_growth_exponent_recovers_powers():
    sizes = [128, 256, 512, 1024]
    assert rep.growth_exponent(sizes, [3e-6 * s**2 for s in sizes]) == pytest.approx(2.0, abs=1e-9)
    assert rep.growth_exponent(sizes, [0.5 * s for s in sizes]) == pytest.approx(1.0, abs=1e-9)
    assert rep.growth_exponent(sizes, [7.0] * 4) == pytest.approx(0.0, abs=1e-9)
    # a fixed cost plus linear work: below 1, approaching 1 as the work dominates
    fixed = [10 + 0.1 * s for s in sizes]
    assert rep.growth_exponent(sizes, fixed) < 1.0
    assert rep.local_exponents(sizes, fixed) == sorted(rep.local_exponents(sizes, fixed))
    # linear, then quadratic: the bend shows between successive sizes, in size order whatever the row order
    bent = {1: 1.0, 2: 2.0, 4: 8.0}
    assert rep.local_exponents([4, 1, 2], [bent[4], bent[1], bent[2]]) == pytest.approx([1.0, 2.0])


@pytest.mark.parametrize("sizes, values", [([8], [1.0]), ([8, 8], [1.0, 2.0]), ([8, 16], [0.0, 1.0])])
def test_growth_exponent_refuses_what_it_cannot_fit(sizes, values):
    with pytest.raises(ValueError, match="growth_exponent needs"):
        rep.growth_exponent(sizes, values)


def test_summary_flags_worse_than_linear_and_tables():
    rows = [row("eval_items", n, 2.0 * n, 1.0) for n in (8, 16, 32)]
    rows += [row("pm_length", n, 1e-4 * n**2, 1.0 + n / 512) for n in (512, 128, 256)]  # out of order
    rows += [row("ppo_batch", n, 5 + 0.1 * n) for n in (4, 8, 16)]
    rows.append(row("bon_k", 4, 3.0))
    summary = {s["sweep"]: s for s in rep.summarize(rows)}
    assert list(summary) == ["pm_length", "bon_k", "ppo_batch", "eval_items"]  # the SWEEPS order
    assert summary["pm_length"]["exponent"] == pytest.approx(2.0)
    assert summary["pm_length"]["verdict"] == "worse than linear"
    assert summary["pm_length"]["sizes"] == [128, 256, 512]
    assert summary["pm_length"]["rss_change_gb"] == pytest.approx(0.75)
    assert summary["eval_items"]["verdict"] == "linear" and summary["eval_items"]["local"] == pytest.approx([1, 1])
    assert summary["ppo_batch"]["verdict"] == "sublinear"
    assert summary["bon_k"]["exponent"] is None and summary["bon_k"]["verdict"] == "one size"
    # the threshold: 1.15 is still linear, just above it is not
    assert rep.verdict(1.15) == "linear" and rep.verdict(1.16) == "worse than linear"

    table = rep.format_summary_table(rows).splitlines()
    assert table[0].startswith("| sweep | sizes | exponent |")
    assert ("| PM training vs data.max_length | 128, 256, 512 | 2.00 | 2.00, 2.00 | **worse than linear** | +0.75 |"
            in table)
    assert "| evaluate.py vs items | 8, 16, 32 | 1.00 | 1.00, 1.00 | linear | +0.00 |" in table
    assert "| best-of-n pool vs K | 4 |  |  | one size |  |" in table
    points = rep.format_rows_table(rows).splitlines()
    assert len(points) == 2 + len(rows)
    assert "| pm_length | k = 128 | 1.64 | 0.0128 / u | 1.25 | tokens 12 |" in points
    assert points.index("| pm_length | k = 128 | 1.64 | 0.0128 / u | 1.25 | tokens 12 |") == 2


def test_rows_round_trip_through_the_result_file_and_the_figure(tmp_path):
    ctx = {"commit": "abc1234", "machine": {"cpus": 2}}
    point = {"job": "bon", "model": "tiny", "pm": "/tmp/x/pm", "k": 8, "items": 1}
    result = {"seconds": 6.4, "what": "pool", "peak_rss_gb": 1.5, "notes": {"prompts": 4}, "extra": {"samples": 32}}
    made = scaling.make_row("bon_k", 8, point, result, ctx)
    # a pool's samples are the units: K x prompts
    assert made["units"] == 32 and made["per_unit_s"] == pytest.approx(0.2) and made["knob"] == "bon.k"
    assert made["settings"] == {"model": "tiny", "k": 8, "items": 1, "pm": "untrained export on the policy's base"}
    assert made["commit"] == "abc1234" and "shared_with" not in made
    shared = scaling.make_row("pm_length", 256, {"job": "pm", "pairs": 16, "max_length": 256},
                              {"seconds": 12.8, "what": "loop", "peak_rss_gb": 2.0}, ctx, shared_with="pm_pairs")
    assert shared["units"] == 256 and shared["per_unit_s"] == pytest.approx(0.05)
    assert shared["shared_with"] == "pm_pairs"

    rows = [made, {**made, "size": 16, "seconds": 14.0, "units": 64}, shared]
    path = write_json_atomic(tmp_path / "scaling.json", rows)
    assert rep.read_rows(path) == json.loads(json.dumps(rows))
    png = rep.plot(rep.read_rows(path), tmp_path / "fig" / "scaling.png")
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    (tmp_path / "bad.json").write_text(json.dumps({"rows": rows}))
    with pytest.raises(ValueError, match="not a bench/scaling.py result file"):
        rep.read_rows(tmp_path / "bad.json")


def test_select_pairs_fills_the_length_band_and_nests():
    pairs = [types.SimpleNamespace(n=n) for n in range(1, 600, 7)]  # lengths 1, 8, ..., 596

    def length(p: types.SimpleNamespace) -> int:
        return p.n

    big = scaling.select_pairs(pairs, length, 256, 12)
    assert len(big) == 12 and all(128 < p.n <= 256 for p in big)
    assert scaling.select_pairs(pairs, length, 256, 5) == big[:5]  # fewer pairs: the first of the larger set
    assert [p.n for p in big] != sorted(p.n for p in big)  # a seeded order, not by length
    with pytest.raises(SystemExit, match=r"only 18 pairs of length \(128, 256\]"):
        scaling.select_pairs(pairs, length, 256, 19)


def test_phases_time_the_wrapped_functions_and_pass_results():
    owner = types.SimpleNamespace(work=lambda x, y=1: x + y, other=lambda: None)
    phases = scaling.Phases()
    phases.wrap(owner, "work")
    phases.wrap(owner, "other", "renamed")
    assert owner.work(2, y=3) == 5 and owner.work(1) == 2
    owner.other()
    assert set(phases.seconds) == {"work", "renamed"} and phases.get("missing") == 0.0
    assert all(v >= 0 and math.isfinite(v) for v in phases.seconds.values())

    def fails() -> None:
        raise RuntimeError("boom")

    owner.fails = fails
    phases.wrap(owner, "fails")
    with pytest.raises(RuntimeError, match="boom"):
        owner.fails()
    assert "fails" in phases.seconds  # a failing call is timed too


def test_points_share_the_same_work_across_sweeps():
    args = types.SimpleNamespace(
        model="tiny", data="hh.jsonl.gz", sweeps=["pm_pairs", "pm_length", "ppo_batch", "ppo_tokens"],
        pm_pairs=[16, 32], pm_max_length=256, pm_lengths=[128, 256], pm_fixed_pairs=16, pm_batch_size=8,
        ppo_batch=[4, 8], ppo_tokens=[16, 32], ppo_fixed_batch=8, ppo_fixed_tokens=32, ppo_steps=2, ppo_warmup=1,
        ppo_mini_batch_size=4, bon_k=[4], bon_items=1, eval_items=[8])
    todo = scaling.points(args, "/tmp/pm")
    assert [(s, n) for s, n, _ in todo] == [("pm_pairs", 16), ("pm_pairs", 32), ("pm_length", 128), ("pm_length", 256),
                                            ("ppo_batch", 4), ("ppo_batch", 8), ("ppo_tokens", 16), ("ppo_tokens", 32)]
    keys = [json.dumps(p, sort_keys=True) for _, _, p in todo]
    # 16 pairs at 256 tokens, and batch 8 at 32 new tokens, are one measurement each
    assert keys[0] == keys[3] and keys[5] == keys[7] and len(set(keys)) == 6
