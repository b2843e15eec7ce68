"""What bench/scaling.py measured, read back from its result file: growth exponents, the markdown
tables of the write-up (docs/results/scaling) and the figure, so that both can be redrawn from the
JSON alone (no torch, no model):

    python bench/scaling_report.py docs/results/scaling/scaling.json --png docs/results/scaling/scaling.png

A result file is a list of rows, one per (sweep, size): `sweep` (pm_pairs, pm_length, bon_k,
ppo_batch, ppo_tokens, eval_items), `job`, `knob`, `size`, `seconds` (the measured wall time of the
work; `what` says which), `units` and `unit` (seconds / units = `per_unit_s`), `peak_rss_gb`,
`settings`, `extra` (phases, tokens).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# above this slope of log(seconds) against log(size) a sweep grows worse than linearly; below
# SUBLINEAR fixed costs (loading excluded: per-call set-up, under-filled batches) still dominate
WORSE_THAN_LINEAR = 1.15
SUBLINEAR = 0.85
# the order of the sweeps in tables and panels, and what each varies
SWEEPS = {
    "pm_pairs": "PM training vs pairs",
    "pm_length": "PM training vs data.max_length",
    "bon_k": "best-of-n pool vs K",
    "ppo_batch": "PPO step vs ppo.batch_size",
    "ppo_tokens": "PPO step vs ppo.max_new_tokens",
    "eval_items": "evaluate.py vs items",
}


def growth_exponent(sizes: Sequence[float], values: Sequence[float]) -> float:
    """The least-squares slope of log(value) against log(size): 1 for linear growth, 2 for
    quadratic, 0 for a constant. Needs two distinct positive sizes and positive values."""
    ok = all(isinstance(x, (int, float)) and math.isfinite(x) and x > 0 for x in [*sizes, *values])
    if len(sizes) < 2 or len(sizes) != len(values) or not ok:
        raise ValueError(f"growth_exponent needs two or more positive points, got sizes={list(sizes)} "
                         f"values={list(values)}")
    pts = [(math.log(s), math.log(v)) for s, v in zip(sizes, values)]
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if sxx == 0:
        raise ValueError(f"growth_exponent needs two distinct sizes, got {list(sizes)}")
    return sum((x - mx) * (y - my) for x, y in pts) / sxx


def local_exponents(sizes: Sequence[float], values: Sequence[float]) -> list[float]:
    """The exponent between each pair of successive sizes: where the growth bends."""
    order = sorted(zip(sizes, values))
    return [growth_exponent([a[0], b[0]], [a[1], b[1]]) for a, b in zip(order, order[1:])]


def verdict(exponent: float) -> str:
    if exponent > WORSE_THAN_LINEAR:
        return "worse than linear"
    if exponent < SUBLINEAR:
        return "sublinear"
    return "linear"


def by_sweep(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """{sweep: its rows by size}, sweeps in SWEEPS order (unknown ones after, by name)."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault(str(r["sweep"]), []).append(r)
    names = [s for s in SWEEPS if s in out] + sorted(s for s in out if s not in SWEEPS)
    return {s: sorted(out[s], key=lambda r: float(r["size"])) for s in names}


def summarize(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per sweep: its sizes, growth exponent of the wall time (overall and between
    successive sizes), the verdict and the change of peak RSS from the smallest to the largest size."""
    out = []
    for sweep, rs in by_sweep(rows).items():
        sizes = [float(r["size"]) for r in rs]
        seconds = [float(r["seconds"]) for r in rs]
        entry: dict[str, Any] = {"sweep": sweep, "knob": rs[0]["knob"], "sizes": sizes, "exponent": None,
                                 "local": [], "verdict": "one size", "rss_change_gb": None}
        if len(set(sizes)) >= 2:
            entry["exponent"] = growth_exponent(sizes, seconds)
            entry["local"] = local_exponents(sizes, seconds)
            entry["verdict"] = verdict(entry["exponent"])
            entry["rss_change_gb"] = float(rs[-1]["peak_rss_gb"]) - float(rs[0]["peak_rss_gb"])
        out.append(entry)
    return out


def _num(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def format_rows_table(rows: Iterable[Mapping[str, Any]]) -> str:
    """The markdown table of every point: sweep, knob = size, wall time, per unit, peak RSS, notes."""
    lines = ["| sweep | size | wall time (s) | per unit (s) | peak RSS (GB) | notes |", "|---|---|---|---|---|---|"]
    for sweep, rs in by_sweep(rows).items():
        for r in rs:
            notes = "; ".join(f"{k} {_num(v) if isinstance(v, float) else v}"
                              for k, v in (r.get("notes") or {}).items())
            lines.append(f"| {sweep} | {r['knob']} = {r['size']:g} | {_num(float(r['seconds']))} | "
                         f"{float(r['per_unit_s']):.3g} / {r['unit']} | {float(r['peak_rss_gb']):.2f} | {notes} |")
    return "\n".join(lines)


def format_summary_table(rows: Iterable[Mapping[str, Any]]) -> str:
    """The markdown table of each sweep's growth: exponent, exponents between successive sizes,
    verdict (worse than linear above WORSE_THAN_LINEAR) and the change of peak RSS."""
    lines = ["| sweep | sizes | exponent | between successive sizes | growth | peak RSS change (GB) |",
             "|---|---|---|---|---|---|"]
    for s in summarize(rows):
        sizes = ", ".join(f"{x:g}" for x in s["sizes"])
        exp = "" if s["exponent"] is None else f"{s['exponent']:.2f}"
        local = ", ".join(f"{x:.2f}" for x in s["local"])
        rss = "" if s["rss_change_gb"] is None else f"{s['rss_change_gb']:+.2f}"
        growth = f"**{s['verdict']}**" if s["verdict"] == "worse than linear" else s["verdict"]
        lines.append(f"| {SWEEPS.get(s['sweep'], s['sweep'])} | {sizes} | {exp} | {local} | {growth} | {rss} |")
    return "\n".join(lines)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    rows = json.loads(Path(path).read_text())
    if not isinstance(rows, list) or not all(isinstance(r, dict) and {"sweep", "size", "seconds"} <= set(r)
                                             for r in rows):
        raise ValueError(f"{path}: not a bench/scaling.py result file (a list of rows with sweep, size, seconds)")
    return rows


def plot(rows: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """One panel per sweep: wall time (left axis, log) and peak RSS (right axis) against size (log),
    with a linear-growth reference through the smallest size's time (a point above it grew worse
    than linearly) and the fitted exponent in the title; peak RSS on a linear axis from 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    groups = by_sweep(rows)
    summary = {s["sweep"]: s for s in summarize(rows)}
    cols = min(3, max(1, len(groups)))
    nrows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.9 * nrows), squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    for ax, (sweep, rs) in zip(axes.flat, groups.items()):
        sizes = [float(r["size"]) for r in rs]
        secs = [float(r["seconds"]) for r in rs]
        ax.plot(sizes, secs, "o-", color="tab:blue", label="wall time")
        ax.plot(sizes, [secs[0] * s / sizes[0] for s in sizes], "--", color="gray", label="linear from the first")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(sizes, [f"{s:g}" for s in sizes])
        ax.set_xlabel(str(rs[0]["knob"]))
        ax.set_ylabel(f"seconds ({rs[0].get('what', 'wall time')})" if len(str(rs[0].get("what", ""))) < 28
                      else "seconds", color="tab:blue")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 1-2-5 ticks: labels within a decade too
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        # memory from 0 on a linear axis: the weights are most of it, and what the work adds shows as a rise
        rss = ax.twinx()
        gb = [float(r["peak_rss_gb"]) for r in rs]
        rss.plot(sizes, gb, "s:", color="tab:orange", label="peak RSS")
        rss.set_ylim(0, 1.15 * max(gb))
        rss.set_ylabel("peak RSS (GB)", color="tab:orange")
        s = summary[sweep]
        exp = "" if s["exponent"] is None else f"\nexponent {s['exponent']:.2f} ({s['verdict']})"
        ax.set_title(f"{SWEEPS.get(sweep, sweep)}{exp}", fontsize=10)
        handles = ax.get_legend_handles_labels()[0] + rss.get_legend_handles_labels()[0]
    # one legend for every panel, below them (inside a panel it would hide points)
    fig.legend(handles, [h.get_label() for h in handles], loc="lower center", ncol=3, fontsize=9)
    fig.tight_layout(rect=(0, 0.06 / nrows, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("result", help="a bench/scaling.py result file (JSON)")
    ap.add_argument("--png", help="draw the figure here (default: beside the result file, .png)")
    args = ap.parse_args(argv)
    rows = read_rows(args.result)
    print(format_rows_table(rows) + "\n\n" + format_summary_table(rows))
    print(f"\nfigure: {plot(rows, args.png or Path(args.result).with_suffix('.png'))}")


if __name__ == "__main__":
    main()
