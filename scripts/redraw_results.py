"""Redraw the figures and tables of docs/results write-ups from the result files beside them.

    python scripts/redraw_results.py docs/results/<experiment> [...]   # one or more folders
    python scripts/redraw_results.py --all                             # every folder with result files
    python scripts/redraw_results.py --check docs/results/<experiment>  # fail when the write-up is stale

A result file is a run's own output, copied into the experiment's folder: `metrics.json` (a PM run of
`train.py task=pm`, or a PPO run), `results.json` (`evaluate.py`, plain or `method=bon`) or
`checkpoints.json` (`evaluate.py method=checkpoints`). Several of one kind get a label, either as a
prefix (`standard.checkpoints.json`) or as a subfolder (`standard/checkpoints.json`); the label prefixes
the figures drawn from the file (`standard_answer_sycophancy.png`).

For each file the script draws its figures with syco's own plotting code (best-of-n:
`syco.bon.report.plot_results`; checkpoints: `plot_checkpoints`, with the best-of-n results.json and the
other runs' checkpoints.json of the same folder that the run named in `checkpoints.bon` / `.overlay`)
and writes markdown tables of the headline metrics (value, interval or standard error, n). In the
write-up it rewrites what sits between `<!-- generated:tables -->` and `<!-- /generated:tables -->`,
between `<!-- generated:figures -->` and `<!-- /generated:figures -->` (a link to every figure drawn;
figures it drew before and no longer draws are deleted) and the `**Result files:**` line; a write-up
without the markers gets them appended.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syco.bon.report import HEADLINE as BON_HEADLINE
from syco.bon.report import dataset_view, plot_results
from syco.checkpoints.report import HEADLINE as CHECKPOINTS_HEADLINE
from syco.checkpoints.report import curve, plot_checkpoints
from syco.eval.report import markdown as eval_markdown

RESULTS_ROOT = Path(__file__).resolve().parents[1] / "docs" / "results"
KINDS = ("metrics.json", "results.json", "checkpoints.json")
BLOCKS = ("tables", "figures")
RESULT_FILES_LINE = re.compile(r"^\*\*Result files:\*\*.*$", re.M)


@dataclass
class ResultFile:
    path: Path
    label: str  # "" for a bare metrics.json / results.json / checkpoints.json
    kind: str  # pm | ppo_run | eval | bon | checkpoints
    data: dict[str, Any]


def classify(path: Path, data: Mapping[str, Any]) -> str:
    """What wrote the file, from its content; a file no syco job writes is an error naming it."""
    if data.get("method") == "best_of_n":
        return "bon"
    if data.get("method") == "ppo_checkpoints":
        return "checkpoints"
    if "judges" in data and "results" in data:
        return "eval"
    if "metrics" in data and "pairs" in data:
        return "pm"
    if "ppo_steps" in data and "eval" in data:
        return "ppo_run"
    raise ValueError(f"{path}: not a result file of a syco job (no method best_of_n / ppo_checkpoints, no eval "
                     "results, no PM metrics, no PPO run summary)")


def result_files(folder: Path) -> list[ResultFile]:
    """The folder's result files (its own and one subfolder deep), in name order."""
    found = []
    for path in sorted([*folder.glob("*.json"), *folder.glob("*/*.json")]):
        kind_name = next((k for k in KINDS if path.name == k or path.name.endswith("." + k)), None)
        if kind_name is None:
            continue
        prefix = path.name[: -len(kind_name)].rstrip(".")
        label = prefix or (path.parent.name if path.parent != folder else "")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from e
        found.append(ResultFile(path, label, classify(path, data), data))
    return found


# tables ---------------------------------------------------------------------------------------------

def num(v: Any, signed: bool = False) -> str:
    if v is None:
        return "undefined"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def with_ci(m: Mapping[str, Any] | None, signed: bool = False) -> str:
    """`value [lo, hi]`, `value ± stderr` without an interval, `undefined` without a value."""
    if not m or m.get("value") is None:
        return "undefined" if m else ""
    ci = m.get("ci")
    if ci:
        return f"{num(m['value'], signed)} [{num(ci[0], signed)}, {num(ci[1], signed)}]"
    se = m.get("stderr")
    return num(m["value"], signed) + (f" ± {se:.3f}" if se is not None else "")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def pm_tables(data: Mapping[str, Any]) -> list[str]:
    """Every metric of a PM run's metrics.json, value ± stderr and n."""
    rows = [(f"`{name}`", num(m.get("value")), "" if m.get("stderr") is None else f"{m['stderr']:.3f}", m.get("count", ""))
            for name, m in sorted(data["metrics"].items())]
    pairs = ", ".join(f"{k} {v}" for k, v in (data.get("pairs") or {}).items() if isinstance(v, int))
    lines = [f"PM `{data.get('variant')}`" + (f"; pairs: {pairs}" if pairs else ""), ""]
    return lines + table(("metric", "value", "stderr", "n"), rows)


def ppo_run_tables(data: Mapping[str, Any]) -> list[str]:
    """The PPO run's own evaluations on its fixed prompts (ppo_eval rows of metrics.json)."""
    keys = sorted({k for row in data["eval"] for k, v in row.items() if k.startswith("eval/") and isinstance(v, (int, float))})
    rows = [(row["step"], *(num(row.get(k)) if k in row else "" for k in keys)) for row in data["eval"]]
    lines = [f"PPO run against `{data.get('pm_path')}` ({data.get('ppo_steps')} steps), its fixed eval prompts", ""]
    return lines + table(("step", *(f"`{k}`" for k in keys)), rows)


def n_cell(m: Mapping[str, Any] | None) -> str:
    return str(m.get("count", "")) if m else ""


def bon_metric(by_n: Mapping[str, Any], n: str, task: str, metric: str) -> Mapping[str, Any] | None:
    view = dataset_view((by_n.get(n) or {}).get(task) or {})
    return view[1].get(metric) if view else None


def bon_tables(data: Mapping[str, Any]) -> list[str]:
    """Per headline metric: each selector, each pair's paired difference and each selector's rise from
    n = 1, at every n (value [95% bootstrap interval]); n = the number of items."""
    grid = [str(n) for n in data["n_grid"]]
    out: list[str] = []
    for task, metric in BON_HEADLINE:
        rows = []
        for what, key in (("", "results"), ("paired difference ", "differences"), ("rise from n = 1, ", "rises")):
            for name, by_n in (data.get(key) or {}).items():
                cells = [with_ci(bon_metric(by_n, n, task, metric), signed=key != "results") for n in grid]
                if any(c and c != "undefined" for c in cells):
                    last = next((bon_metric(by_n, n, task, metric) for n in reversed(grid)
                                 if bon_metric(by_n, n, task, metric)), None)
                    rows.append((f"{what}{name}", n_cell(last), *cells))
        if rows:
            out += [f"**{task}: {metric}** (best-of-n from K = {data['k']}, judge {data.get('judge')}; "
                    "95% bootstrap intervals, paired for differences and rises)", ""]
            out += table(("selected by", "items", *(f"n = {n}" for n in grid)), rows) + [""]
    return out[:-1] if out else ["(no headline metric in this best-of-n run)"]


def checkpoint_metric(by_step: Mapping[str, Any], step: str, task: str, metric: str) -> Mapping[str, Any] | None:
    view = dataset_view((by_step.get(step) or {}).get(task) or {})
    return view[1].get(metric) if view else None


def checkpoints_tables(data: Mapping[str, Any]) -> list[str]:
    """Per headline metric: each step's KL, value [interval] and n, the paired change from the first
    step and, with checkpoints.versus, this run minus the other run; then checkpoints.pm_scores."""
    out: list[str] = []
    versus = (data.get("versus") or {}).get("differences") or {}
    first = str(data["steps"][0])
    for task, metric in CHECKPOINTS_HEADLINE:
        pts = curve(data, task, metric)
        if not pts:
            continue
        rows = []
        for step, kl, value, lo, hi in pts:
            m = (data["results"][str(step)][task][data["judge"]])
            view = dataset_view(m)
            rise = checkpoint_metric(data.get("rises") or {}, str(step), task, metric)
            vs = checkpoint_metric(versus, str(step), task, metric)
            rows.append((step, f"{kl:.3f}", f"{value:.3f} [{lo:.3f}, {hi:.3f}]", n_cell(view[1].get(metric) if view else None),
                         with_ci(rise, signed=True), with_ci(vs, signed=True)))
        header = ["step", "KL", "value [95% interval]", "n", f"change from step {first}, paired"]
        if versus:
            header.append("this run − checkpoints.versus, paired")
        else:
            rows = [r[:-1] for r in rows]
        out += [f"**{task}: {metric}** ({data.get('label')}, eval {data.get('eval_name')}, judge {data.get('judge')}; "
                f"KL: {data['kl']['estimator']} on the run's eval prompts)", ""]
        out += table(header, rows) + [""]
    for name, scores in (data.get("pm_scores") or {}).items():
        rows = []
        for step, by_task in scores["levels"].items():
            for task, by_template in by_task.items():
                for template, level in by_template.items():
                    rise = ((scores.get("rises") or {}).get(step) or {}).get(task, {}).get(template)
                    rows.append((step, task, template, num(level.get("value"), signed=True), level.get("count", ""),
                                 with_ci(rise, signed=True)))
        out += [f"**PM scores: {name}** (PM std units; change from step {first} paired by item)", ""]
        out += table(("step", "task", "template", "mean score", "n", "change from first step"), rows) + [""]
    return out[:-1] if out else ["(no headline metric in this checkpoints.json)"]


TABLES = {"pm": pm_tables, "ppo_run": ppo_run_tables, "eval": lambda d: eval_markdown(d).rstrip().splitlines(),
          "bon": bon_tables, "checkpoints": checkpoints_tables}


def pm_comparison(files: Sequence[ResultFile], folder: Path) -> list[str]:
    """Several PM runs side by side: a row per run, a column per headline metric (held-out accuracy
    overall and per kind, the probe, the policy-sample stance), value ± stderr (n)."""
    headline = ("heldout/accuracy", "pm/syco_rate", "policy/")
    measured = [{name: m for name, m in f.data["metrics"].items() if name.startswith(headline) and m.get("count")}
                for f in files]
    names = sorted({name for metrics in measured for name in metrics})
    rows = [(f"`{f.path.relative_to(folder)}`", f"`{f.data.get('variant')}`",
             *(f"{with_ci(metrics[n])} ({metrics[n]['count']})" if n in metrics else "" for n in names))
            for f, metrics in zip(files, measured)]
    return table(("run", "variant", *(f"`{n}`" for n in names)), rows)


def tables_block(files: Sequence[ResultFile], folder: Path) -> str:
    out: list[str] = []
    pms = [f for f in files if f.kind == "pm"]
    if len(pms) > 1:  # one table for all PM runs, the other files one each
        out += ["#### PM runs: " + ", ".join(f"`{f.path.relative_to(folder)}`" for f in pms), "",
                *pm_comparison(pms, folder), ""]
        files = [f for f in files if f.kind != "pm"]
    for f in files:
        out += [f"#### `{f.path.relative_to(folder)}`", "", *TABLES[f.kind](f.data), ""]
    return "\n".join(out).rstrip()


# figures --------------------------------------------------------------------------------------------

def _same_folder(a: str | Path | None, b: str | Path | None) -> bool:
    """Two recorded folders, one perhaps absolute and one relative: equal on their common tail."""
    if not a or not b:
        return False
    pa, pb = Path(str(a)).parts, Path(str(b)).parts
    k = min(len(pa), len(pb))
    return k > 0 and pa[-k:] == pb[-k:]


def _out_folder(checkpoints: Mapping[str, Any]) -> Path | None:
    """Where a checkpoints.json was written (<out>/step_<k>/results.json of its first point)."""
    points = checkpoints.get("points") or []
    return Path(points[0]["results"]).parent.parent if points and points[0].get("results") else None


def companions(f: ResultFile, files: Sequence[ResultFile]) -> tuple[ResultFile | None, list[ResultFile]]:
    """The best-of-n results and the overlay runs a checkpoints.json was drawn with, among the folder's
    files: matched on the paths it recorded; a single best-of-n file stands in for a recorded one."""
    bons = [g for g in files if g.kind == "bon"]
    bon = None
    if f.data.get("bon"):
        recorded = Path(str(f.data["bon"].get("path"))).parent
        bon = next((g for g in bons if _same_folder(recorded, (g.data.get("config") or {}).get("run_dir"))),
                   bons[0] if len(bons) == 1 else None)
    wanted = ((f.data.get("config") or {}).get("checkpoints") or {}).get("overlay") or []
    overlays = [g for g in files if g.kind == "checkpoints" and g is not f
                and any(_same_folder(Path(str(p)).parent, _out_folder(g.data)) for p in wanted)]
    return bon, overlays


def draw(files: Sequence[ResultFile], out: Path) -> list[str]:
    """Every figure of every file, into `out`, named `<label>_<figure>.png`; returns the names."""
    names = []
    for f in files:
        with tempfile.TemporaryDirectory() as tmp:
            if f.kind == "bon":
                drawn = plot_results(f.data, Path(tmp))
            elif f.kind == "checkpoints":
                bon, overlays = companions(f, files)
                drawn = plot_checkpoints(f.data, Path(tmp), bon=bon.data if bon else None,
                                         overlays=[g.data for g in overlays])
            else:
                drawn = []
            for p in drawn:
                name = f"{f.label}_{p.name}" if f.label else p.name
                if name in names:
                    raise ValueError(f"{f.path}: figure {name} is drawn by two result files; give them labels")
                p.replace(out / name)
                names.append(name)
    return sorted(names)


def figures_block(names: Sequence[str]) -> str:
    return "\n\n".join(f"![{n[:-4]}]({n})" for n in names)


# the write-up ---------------------------------------------------------------------------------------

def block_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"<!-- generated:{name} -->\n(.*?)<!-- /generated:{name} -->", re.S)


def read_block(text: str, name: str) -> str | None:
    m = block_pattern(name).search(text)
    return m.group(1).rstrip() if m else None


def with_blocks(text: str, blocks: Mapping[str, str], files: Sequence[ResultFile], folder: Path) -> str:
    for name, body in blocks.items():
        if not body and not block_pattern(name).search(text):
            continue  # e.g. no figure drawn from PM metrics: no empty section
        new = f"<!-- generated:{name} -->\n{body}\n<!-- /generated:{name} -->"
        if block_pattern(name).search(text):
            text = block_pattern(name).sub(lambda _, new=new: new, text)
        else:
            title = "Tables generated from the result files" if name == "tables" else "Figures drawn from the result files"
            text = text.rstrip() + f"\n\n## {title}\n\n{new}\n"
    line = result_files_line(files, folder)
    text, n = RESULT_FILES_LINE.subn(lambda _: line, text, count=1)
    return text if n else text.rstrip() + f"\n\n{line}\n"


def result_files_line(files: Sequence[ResultFile], folder: Path) -> str:
    names = ", ".join(f"`{f.path.relative_to(folder)}`" for f in files)
    rel = folder.resolve().relative_to(RESULTS_ROOT.parents[1]) if folder.resolve().is_relative_to(RESULTS_ROOT.parents[1]) \
        else folder
    return (f"**Result files:** {names}; `python scripts/redraw_results.py {rel}` redraws every figure and "
            "generated table of this write-up from them.")


def expected(folder: Path, figures_dir: Path) -> tuple[list[ResultFile], dict[str, str], list[str]]:
    files = result_files(folder)
    names = draw(files, figures_dir)
    return files, {"tables": tables_block(files, folder), "figures": figures_block(names)}, names


def redraw(folder: Path) -> list[str]:
    """Redraw the folder's figures in place and rewrite its write-up; returns the figures' names."""
    readme = folder / "README.md"
    if not readme.is_file():
        raise FileNotFoundError(f"{readme}: no write-up in {folder}")
    text = readme.read_text()
    files, blocks, names = expected(folder, folder)
    if not files:
        return []
    old = re.findall(r"\]\(([^)]+\.png)\)", read_block(text, "figures") or "")
    for stale in set(old) - set(names):
        (folder / stale).unlink(missing_ok=True)
    readme.write_text(with_blocks(text, blocks, files, folder))
    return names


def check(folder: Path) -> list[str]:
    """What is stale in the folder's write-up against its result files (nothing written)."""
    readme = folder / "README.md"
    text = readme.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        files, blocks, names = expected(folder, Path(tmp))
    if not files:
        return []
    problems = [f"{readme}: the generated {name} block differs from what {folder} 's result files give "
                "(run scripts/redraw_results.py on it)" for name, body in blocks.items() if (read_block(text, name) or "") != body]
    problems += [f"{readme}: figure {n} is not in the folder (run scripts/redraw_results.py on it)"
                 for n in names if not (folder / n).is_file()]
    if RESULT_FILES_LINE.search(text) is None or RESULT_FILES_LINE.search(text).group(0) != result_files_line(files, folder):
        problems.append(f"{readme}: the **Result files:** line does not list {[f.path.name for f in files]}")
    return problems


def folders_with_results(root: Path = RESULTS_ROOT) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/README.md") if result_files(p.parent))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="*", type=Path)
    ap.add_argument("--all", action="store_true", help="every folder of docs/results with result files")
    ap.add_argument("--check", action="store_true", help="report stale write-ups, write nothing; exit 1 if any")
    args = ap.parse_args(argv)
    if not args.all and not args.folders:
        ap.error("name one or more docs/results/<experiment> folders, or --all")
    folders = folders_with_results() if args.all else args.folders
    if not folders:
        print(f"no result files in any folder of {RESULTS_ROOT}")
    problems = []
    for folder in folders:
        if args.check:
            problems += check(folder)
        else:
            names = redraw(folder)
            print(f"{folder}: {len(result_files(folder))} result files, {len(names)} figures")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
