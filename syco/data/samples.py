"""samples.jsonl, the one reader and writer: the samples an evaluation generated (one line per
record, sample index and stage reached; the last line of a sample wins) and, once the run has
finished, every judge's verdicts on each.

`SampleStore` is the resumable store the evaluation writes as it generates; `read_samples` reads a
finished evaluation's samples for the code that builds on them (policy-written preference pairs,
PPO's known facts, the evaluation of PPO checkpoints)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from syco.data.pairs import BadRowError, BadRows, iter_jsonl
from syco.data.records import EvalRecord

log = logging.getLogger(__name__)

Sample = dict[str, Any]  # {"record": EvalRecord, "index", "responses", "verdicts", "line": "<file>:<line>"}
NO_VERDICT_HINT = "finish the evaluate.py run with this judge: it writes the verdicts into samples.jsonl at the end"


def check_row(row: dict[str, Any], source: str) -> None:
    """A samples.jsonl row as `SampleStore.put` writes it, or a BadRowError naming the field."""
    if not isinstance(row.get("key"), str):
        raise BadRowError(source, "key", "not a samples.jsonl row: no record key")
    if isinstance(row.get("index"), bool) or not isinstance(row.get("index"), int) or row["index"] < 0:
        raise BadRowError(source, "index", "expected the sample's index (an integer >= 0)", repr(row.get("index"))[:40])
    if not isinstance(row.get("task"), str):
        raise BadRowError(source, "task", "expected the task name")
    record = row.get("record")
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), list):
        raise BadRowError(source, "record", "not a samples.jsonl row: expected the record with its prompt")
    responses = row.get("responses")
    if not isinstance(responses, list) or not responses or not all(isinstance(r, str) for r in responses):
        raise BadRowError(source, "responses", "expected a list with the sampled response")
    verdicts = row.get("verdicts")
    if verdicts is not None and not isinstance(verdicts, dict):
        raise BadRowError(source, "verdicts", "expected an object {judge: verdicts}", f"got {type(verdicts).__name__}")


def to_sample(row: dict[str, Any], source: str) -> Sample:
    """A stored row as the metrics read a sample (record, index, responses, verdicts)."""
    rec = row["record"]
    meta = rec.get("metadata") or {}
    record = EvalRecord(row["task"], row.get("template") or meta.get("template", ""), rec["prompt"],
                        rec.get("base") or {}, meta, row.get("source", ""))
    return {"record": record, "index": int(row["index"]), "responses": list(row["responses"]),
            "verdicts": row.get("verdicts") or {}, "line": source}


class SampleStore:
    """samples.jsonl: one line per (record, sample index) and stage reached; the last line of a
    sample wins. Lines are appended as generation goes, so a re-run resumes where it stopped.

    `bad_rows=None` (resuming a generation): an unreadable line, e.g. one cut by a crash, is
    skipped with a warning and its sample generated again; else bad lines go to `bad_rows`."""

    def __init__(self, path: str | Path, bad_rows: BadRows | None = None):
        self.path = Path(path)
        self.rows: dict[tuple[str, int], dict[str, Any]] = {}
        self.sources: dict[tuple[str, int], str] = {}
        if self.path.exists():
            bad = BadRows("skip") if bad_rows is None else bad_rows
            for source, row in iter_jsonl(self.path, bad):
                try:
                    check_row(row, source)
                except BadRowError as err:
                    bad.handle(err)
                    continue
                self.rows[(row["key"], row["index"])] = row
                self.sources[(row["key"], row["index"])] = source
            if bad_rows is None:
                for reason, n in bad.skipped.items():
                    log.warning("%s: %d unreadable sample lines skipped (regenerated): %s (first: %s)", self.path, n,
                                reason, bad.examples[reason])
        self.resumed = len(self.rows)

    def responses(self, record: EvalRecord, index: int) -> list[str]:
        return list(self.rows.get((record.key, index), {}).get("responses", []))

    def put(self, record: EvalRecord, index: int, responses: list[str]) -> None:
        self.put_many([(record, index, responses)])

    def put_many(self, items: Sequence[tuple[EvalRecord, int, list[str]]]) -> None:
        """Append the samples of one generate call in one write: a run stopped by a signal keeps all
        of them or none, so a rerun never draws again what was kept."""
        lines = []
        for record, index, responses in items:
            row = {"key": record.key, "index": index, "task": record.task, "dataset": record.dataset,
                   "template": record.template, "source": record.source, "record": record.to_json(),
                   "responses": responses}
            self.rows[(record.key, index)] = row
            lines.append(json.dumps(row, ensure_ascii=False) + "\n")
        with open(self.path, "a") as f:
            f.write("".join(lines))

    def samples(self, tasks: Sequence[str] | None = None) -> list[Sample]:
        """Every stored sample (of `tasks`, when given) as the metrics read it, e.g. to recompute the
        metrics of a finished evaluation without generating or judging again."""
        return [to_sample(row, self.sources.get(k, str(self.path))) for k, row in self.rows.items()
                if tasks is None or row["task"] in tasks]

    def rewrite(self, samples: list[Sample]) -> None:
        """Final file: every sample once, with the conversation and each judge's verdicts."""
        for s in samples:
            row = self.rows[(s["record"].key, s["index"])]
            row["verdicts"] = s.get("verdicts", {})
            row["conversation"] = s.get("conversation")
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w") as f:
            for row in self.rows.values():
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, self.path)


def read_samples(path: str | Path, bad_rows: BadRows, judge: str | None = None,
                 tasks: Sequence[str] | None = None) -> list[Sample]:
    """The samples of a finished evaluation (of `tasks`, when given). With `judge`, each must carry
    that judge's verdicts (`verdicts.<judge>`): a sample without is a bad row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"samples file {path} does not exist: `python evaluate.py` writes one into its run "
                                "folder (e.g. eval=policy_samples)")
    out = []
    for s in SampleStore(path, bad_rows).samples(tasks):
        if judge is not None and judge not in s["verdicts"]:
            bad_rows.handle(BadRowError(s["line"], f"verdicts.{judge}", "no verdict of this judge", NO_VERDICT_HINT))
            continue
        out.append(s)
    return out


def judged_by_task(path: str | Path, judge: str) -> dict[str, list[Sample]]:
    """A finished evaluation's samples that carry a verdict of `judge`, by task (samples the judge
    has not seen are left out; an unreadable line is skipped with a warning, as when resuming)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the evaluation that writes it did not finish")
    by_task: dict[str, list[Sample]] = {}
    for s in SampleStore(path).samples():
        if judge in s["verdicts"]:
            by_task.setdefault(s["record"].task, []).append(s)
    return by_task
