"""Evaluation records, per task, from the built-in data and from raw datasets in ../shared/data,
in the released format (see records.py). Each builder takes its own options and a BadRows."""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from syco.data.beliefs import BUILTIN, BeliefItem, load_facts, load_misconceptions, load_truthfulqa, split_items
from syco.data.pairs import BadRowError, BadRows, iter_jsonl, nonfinite_field, require_text
from syco.data.records import EvalRecord, load_released, turns
from syco.eval import templates as T
from syco.eval.tasks import check_record


def _sample(items: list, limit: int | None, seed: int) -> list:
    if limit is None or len(items) <= limit:
        return items
    return random.Random(seed).sample(items, limit)


def _items(source: str, kind: str, bad_rows: BadRows, heldout_fraction: float | None = None,
           split_seed: int = 0, heldout: bool = True) -> list[BeliefItem]:
    """`builtin` or a TruthfulQA.csv path; kind 'fact' or 'misconception'. With `heldout_fraction`,
    only the items a PM trained on belief pairs (same fraction and split seed) never saw; with
    `heldout=False` the other side: the items such a PM may train on (e.g. its policy-written pairs)."""
    if source == BUILTIN:
        items = load_facts(BUILTIN, bad_rows) if kind == "fact" else load_misconceptions(BUILTIN, bad_rows)
    elif Path(source).suffix == ".csv":
        items = load_truthfulqa(source, bad_rows)
        items = items if kind == "fact" else [i for i in items if i.kind == "misconception"]
    else:
        items = load_facts(source, bad_rows) if kind == "fact" else load_misconceptions(source, bad_rows)
    if heldout_fraction is None:
        return items
    return split_items(items, float(heldout_fraction), int(split_seed), heldout=heldout)


def _dataset_name(source: str) -> str:
    return "builtin" if source == BUILTIN else Path(source).stem.lower()


# --- answer sycophancy -------------------------------------------------------------------------
def answer_records(source: str, bad_rows: BadRows, limit: int | None = None, seed: int = 0,
                   templates: Sequence[str] = tuple(T.ANSWER_TEMPLATES), heldout_fraction: float | None = None,
                   split_seed: int = 0, heldout: bool = True) -> list[EvalRecord]:
    items = _sample(_items(source, "fact", bad_rows, heldout_fraction, split_seed, heldout), limit, seed)
    out = []
    for it in items:
        base = {"dataset": _dataset_name(source), "id": it.id, "question": it.question, "correct_answer": it.truth,
                "incorrect_answer": it.falsehood, "answer": list(it.answers),
                "incorrect_answers": list(it.wrong_answers or (it.falsehood,))}
        for name in templates:
            text = T.ANSWER_TEMPLATES[name].format(question=it.question, correct_answer=it.truth,
                                                   incorrect_answer=it.falsehood)
            out.append(EvalRecord("answer", name, turns(("human", text)), base,
                                  {"prompt_template": T.ANSWER_TEMPLATES[name]}, it.source))
    return out


def answer_template_of(metadata: dict[str, Any], base: dict[str, Any]) -> str | None:
    template = metadata.get("prompt_template")
    return next((k for k, v in T.ANSWER_TEMPLATES.items() if v == template), None)


# --- are you sure? ------------------------------------------------------------------------------
def _mc_record(dataset: str, item_id: str, question: str, options: list[str], correct: int,
               source: str) -> EvalRecord:
    answers = T.mc_answers(options)
    base = {"dataset": dataset, "id": item_id, "question": question, "answers": answers,
            "correct_letter": chr(65 + correct), "correct_answer": options[correct], "letters": len(options)}
    prompt = turns(("human", T.MC_QUESTION.format(question=question, answers=answers)), ("ai", T.MC_PREFILL))
    return EvalRecord("are_you_sure", "mc", prompt, base, {"prompt_template": T.MC_QUESTION}, source)


def builtin_mc_records(bad_rows: BadRows, limit: int | None = None, seed: int = 0) -> list[EvalRecord]:
    """Built-in facts as four-option questions: the answer, its plausible wrong answer, and two
    answers of other facts of the same category."""
    facts = load_facts(BUILTIN, bad_rows)
    rng = random.Random(seed)
    by_cat: dict[str, list[BeliefItem]] = {}
    for f in facts:
        by_cat.setdefault(f.category, []).append(f)
    out = []
    for f in _sample(facts, limit, seed):
        others = [o.truth for o in by_cat[f.category] if o.id != f.id and o.truth not in (f.truth, f.falsehood)]
        if len(others) < 2:
            continue
        options = [f.truth, f.falsehood, *rng.sample(others, 2)]
        rng.shuffle(options)
        out.append(_mc_record("builtin_mc", f.id, f.question, options, options.index(f.truth), f.source))
    return out


def read_json(path: str, expected: type) -> Any:
    """A whole-file JSON data set (TruthfulQA's mc_task.json, the sonnets): a missing file, invalid JSON or
    the wrong top-level type is an error naming the path (and line)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno})") from err
    if not isinstance(data, expected):
        raise ValueError(f"{path}: expected a JSON {'list' if expected is list else 'object'} at the top, "
                         f"got {type(data).__name__}")
    return data


def _check_item(row: Any, source: str) -> None:
    if not isinstance(row, dict):
        raise BadRowError(source, "<item>", "expected a JSON object", f"got {type(row).__name__}")
    bad = nonfinite_field(row)
    if bad:
        raise BadRowError(source, bad, "not a finite number")


def truthfulqa_mc_records(path: str, bad_rows: BadRows, limit: int | None = None, seed: int = 0,
                          max_options: int = 5) -> list[EvalRecord]:
    """TruthfulQA's mc1 task (one true option): options shuffled with the seed, capped at max_options."""
    if isinstance(max_options, bool) or not isinstance(max_options, int) or max_options < 2:
        raise ValueError(f"truthfulqa_mc_records: max_options={max_options!r}: expected an integer >= 2")
    data = read_json(path, list)
    rng = random.Random(seed)
    out = []
    for i, row in enumerate(data):
        source = f"{path}:item {i}"
        try:
            _check_item(row, source)
            targets = row.get("mc1_targets")
            if not isinstance(targets, dict):
                raise BadRowError(source, "mc1_targets", "expected an object {option: 0 or 1}")
            for option, v in targets.items():
                if isinstance(v, bool) or v not in (0, 1):
                    raise BadRowError(source, f"mc1_targets.{option[:40]}", "expected the label 0 or 1", repr(v)[:40])
            if sum(v == 1 for v in targets.values()) != 1:
                raise BadRowError(source, "mc1_targets", "expected an object with exactly one option labelled 1")
            question = require_text(row, "question", source)
        except BadRowError as err:
            bad_rows.handle(err)
            continue
        true = next(k for k, v in targets.items() if v == 1)
        false = [k for k, v in targets.items() if v != 1][: max_options - 1]
        options = [true, *false]
        rng.shuffle(options)
        out.append(_mc_record("truthfulqa_mc", f"tqa-mc-{i:03d}", question, options, options.index(true), source))
    return _sample(out, limit, seed)


def aqua_records(path: str, bad_rows: BadRows, limit: int | None = None, seed: int = 0) -> list[EvalRecord]:
    out = []
    for source, row in iter_jsonl(path, bad_rows):
        try:
            question = require_text(row, "question", source)
            options = row.get("options")
            if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) for o in options):
                raise BadRowError(source, "options", "expected a list of 'A)...' options (strings)")
            texts = [re.sub(r"^\s*[A-E]\s*\)\s*", "", o) for o in options]
            letter = require_text(row, "correct", source).strip().upper()
            if not re.fullmatch(r"[A-E]", letter) or ord(letter) - 65 >= len(texts):
                raise BadRowError(source, "correct", f"not one of the option letters ({letter!r})")
        except BadRowError as err:
            bad_rows.handle(err)
            continue
        out.append(_mc_record("aqua", f"aqua-{source.rsplit(':', 1)[-1]}", question, texts, ord(letter) - 65, source))
    return _sample(out, limit, seed)


def mmlu_records(folder: str, bad_rows: BadRows, limit: int | None = None, seed: int = 0,
                 subjects: Sequence[str] | None = None) -> list[EvalRecord]:
    out = []
    for file in sorted(Path(folder).glob("*_test.csv")):
        subject = file.name[: -len("_test.csv")]
        if subjects and subject not in subjects:
            continue
        with open(file, newline="", encoding="utf-8") as f:
            for line_no, row in enumerate(csv.reader(f), start=1):
                source = f"{file}:{line_no}"
                if len(row) != 6 or row[5] not in ("A", "B", "C", "D"):
                    bad_rows.handle(BadRowError(source, "<row>", "expected question, A, B, C, D, answer letter"))
                    continue
                out.append(_mc_record("mmlu", f"mmlu-{subject}-{line_no}", row[0], row[1:5], ord(row[5]) - 65, source))
    return _sample(out, limit, seed)


def free_form_records(source: str, bad_rows: BadRows, limit: int | None = None, seed: int = 0) -> list[EvalRecord]:
    out = []
    for it in _sample(_items(source, "fact", bad_rows), limit, seed):
        base = {"dataset": _dataset_name(source) + "_free", "id": it.id, "question": it.question,
                "correct_answer": it.truth, "answer": list(it.answers),
                "incorrect_answers": list(it.wrong_answers or (it.falsehood,))}
        out.append(EvalRecord("are_you_sure", "free", turns(("human", it.question)), base,
                              {"prompt_template": "{question}"}, it.source))
    return out


def are_you_sure_template_of(metadata: dict[str, Any], base: dict[str, Any]) -> str | None:
    return "mc" if base.get("correct_letter") else "free"


# --- feedback ----------------------------------------------------------------------------------
def feedback_records(texts: Sequence[dict[str, Any]]) -> list[EvalRecord]:
    """Five framings of each text: {dataset: arguments|math|poems, id, text, ...}."""
    out = []
    for base in texts:
        for framing in T.FEEDBACK_FRAMINGS:
            prompt = T.feedback_prompt(base["dataset"], base["text"], framing)
            extra = T.FEEDBACK_FRAMINGS[framing]
            noun = T.FEEDBACK_NOUNS[base["dataset"]][0]
            out.append(EvalRecord("feedback", framing, turns(("human", prompt)), dict(base),
                                  {"prompt_template_type": extra.format(noun=noun) if extra else ""},
                                  base.get("source", "")))
    return out


def feedback_template_of(metadata: dict[str, Any], base: dict[str, Any]) -> str | None:
    kind = metadata.get("prompt_template_type", "")
    for name, sentence in T.FEEDBACK_FRAMINGS.items():
        noun = T.FEEDBACK_NOUNS.get(base.get("dataset", ""), ("", ""))[0]
        if (sentence is None and not kind) or (sentence and kind == sentence.format(noun=noun)):
            return name
    return None


def gsm8k_texts(path: str, bad_rows: BadRows, limit: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """GSM8K worked solutions as math texts (calculator annotations removed)."""
    out = []
    for source, row in iter_jsonl(path, bad_rows):
        try:
            question = require_text(row, "question", source)
            answer = require_text(row, "answer", source)
        except BadRowError as err:
            bad_rows.handle(err)
            continue
        solution, _, final = answer.partition("####")
        text = re.sub(r"<<[^>]*>>", "", solution).strip() + (f"\nThe answer is {final.strip()}." if final else "")
        out.append({"dataset": "math", "id": f"gsm8k-{source.rsplit(':', 1)[-1]}", "question": question,
                    "text": f"Question: {question}\nSolution: {text}", "source": source})
    return _sample(out, limit, seed)


def sonnet_texts(path: str, bad_rows: BadRows, limit: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    return [{"dataset": "poems", "id": p["id"], "text": p["text"], "source": p["source"]}
            for p in sonnets(path, bad_rows, limit, seed)]


# --- mimicry -----------------------------------------------------------------------------------
def builtin_poems(bad_rows: BadRows) -> list[dict[str, Any]]:
    path = Path(str(resources.files("syco.data") / "builtin" / "poems.jsonl"))
    out = []
    for source, row in iter_jsonl(path, bad_rows):
        try:
            wrong = row.get("wrong_authors")
            if not isinstance(wrong, list) or not wrong or not all(isinstance(w, str) and w.strip() for w in wrong):
                raise BadRowError(source, "wrong_authors", "expected a non-empty list of names")
            out.append({"id": require_text(row, "id", source), "title": require_text(row, "title", source),
                        "author": require_text(row, "author", source),
                        "first_line": require_text(row, "first_line", source), "wrong_authors": wrong,
                        "source": source})
        except BadRowError as err:
            bad_rows.handle(err)
    for p in out:
        p["text"] = f"{p['title']}\n{p['first_line']} ..."
    return out


def sonnets(path: str, bad_rows: BadRows, limit: int | None = None, seed: int = 0,
            wrong_authors: Sequence[str] = ("John Keats", "John Milton", "William Wordsworth", "Edmund Spenser")
            ) -> list[dict[str, Any]]:
    sonnet_list = read_json(path, dict).get("sonnets")
    if not isinstance(sonnet_list, list):
        raise ValueError(f"{path}: expected {{\"sonnets\": [...]}} at the top")
    out = []
    for i, s in enumerate(sonnet_list):
        source = f"{path}:sonnet {i + 1}"
        try:
            _check_item(s, source)
            lines = s.get("lines")
            if not isinstance(lines, list) or not lines or not all(isinstance(x, str) for x in lines):
                raise BadRowError(source, "lines", "expected a list of strings")
        except BadRowError as err:
            bad_rows.handle(err)
            continue
        out.append({"id": f"sonnet-{s.get('number', i + 1)}", "title": f"Sonnet {s.get('number', i + 1)}",
                    "author": "William Shakespeare", "first_line": lines[0].rstrip(",;:."),
                    "wrong_authors": list(wrong_authors), "text": "\n".join(lines), "source": source})
    return _sample(out, limit, seed)


def mimicry_records(poems: Sequence[dict[str, Any]], dataset: str, wrong_per_poem: int = 2,
                    closing: str = T.MIMICRY_CLOSING) -> list[EvalRecord]:
    """Per poem: one attribution check (who wrote it?) and prompts misattributing it."""
    out = []
    for p in poems:
        base = {"dataset": dataset, "id": p["id"], "title": p["title"], "author": p["author"], "text": p["text"]}
        ask = T.ATTRIBUTION_QUESTION.format(first_line=p["first_line"])
        out.append(EvalRecord("mimicry", "attribution", turns(("human", ask)), base,
                              {"prompt_template": T.ATTRIBUTION_QUESTION}, p["source"]))
        for wrong in p["wrong_authors"][:wrong_per_poem]:
            prompt = T.mimicry_prompt(p["text"], wrong, closing)
            out.append(EvalRecord("mimicry", "misattributed", turns(("human", prompt)), {**base, "wrong_author": wrong},
                                  {"prompt_template": T.MIMICRY_OPENING}, p["source"]))
    return out


# --- misconceptions ----------------------------------------------------------------------------
def misconception_records(source: str, bad_rows: BadRows, limit: int | None = None, seed: int = 0,
                          heldout_fraction: float | None = None, split_seed: int = 0,
                          heldout: bool = True) -> list[EvalRecord]:
    out = []
    for it in _sample(_items(source, "misconception", bad_rows, heldout_fraction, split_seed, heldout), limit, seed):
        claim = it.falsehood if it.falsehood.endswith((".", "?", "!")) else it.falsehood + "."
        base = {"dataset": _dataset_name(source), "id": it.id, "question": it.question, "misconception": claim,
                "truth": it.truth}
        out.append(EvalRecord("misconceptions", "stated", turns(("human", T.MISCONCEPTION_PROMPT.format(
            misconception=claim))), base, {"prompt_template": T.MISCONCEPTION_PROMPT}, it.source))
    return out


# --- texts the policy writes for the feedback task -----------------------------------------------
def writing_requests(bad_rows: BadRows, arguments: int = 8, poems: int = 8, seed: int = 0,
                     claims: str = BUILTIN) -> list[EvalRecord]:
    """Requests whose answers become the feedback texts: arguments for (false) claims from the
    misconceptions, and poems on built-in topics."""
    out = []
    items = _sample(_items(claims, "misconception", bad_rows), arguments, seed)
    for it in items:
        out.append(EvalRecord("feedback_texts", "arguments", turns(("human", T.ARGUMENT_REQUEST.format(
            claim=it.falsehood))), {"dataset": "arguments", "id": f"argument-{it.id}", "claim": it.falsehood},
            {}, it.source))
    for i, topic in enumerate(T.POEM_TOPICS[:poems]):
        out.append(EvalRecord("feedback_texts", "poems", turns(("human", T.POEM_REQUEST.format(topic=topic))),
                              {"dataset": "poems", "id": f"poem-topic-{i}", "topic": topic}, {}, "builtin"))
    return out


def released_records(path: str, task: str, bad_rows: BadRows, limit: int | None = None, **_: Any) -> list[EvalRecord]:
    """The authors' files (meg-tong/sycophancy-eval: answer.jsonl, are_you_sure.jsonl, feedback.jsonl,
    mimicry.jsonl), read as they are."""
    template_of = {"answer": answer_template_of, "are_you_sure": are_you_sure_template_of,
                   "feedback": feedback_template_of, "mimicry": lambda m, b: "misattributed"}[task]
    return load_released(hub_file(path), task, bad_rows, template_of, limit, check=check_record)


def hub_file(path: str) -> str:
    """`hf://<owner>/<dataset>/<file>` (e.g. hf://meg-tong/sycophancy-eval/answer.jsonl) is fetched from
    the hub's dataset repo (or its local cache); any other path is returned as it is."""
    if not path.startswith("hf://"):
        return path
    parts = path[len("hf://"):].split("/", 2)
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"{path}: expected hf://<owner>/<dataset>/<file>")
    from huggingface_hub import hf_hub_download

    repo_id, filename = f"{parts[0]}/{parts[1]}", parts[2]
    try:
        return hf_hub_download(repo_id, filename, repo_type="dataset")
    except Exception as err:  # offline, missing file, gated repo: say which and what to do instead
        raise FileNotFoundError(
            f"cannot fetch {filename} from the hub dataset {repo_id} ({type(err).__name__}: {err}); "
            f"without the hub, download it elsewhere and point the source's path at the local file") from err


def builtin_poem_records(bad_rows: BadRows, limit: int | None = None, seed: int = 0,
                         wrong_per_poem: int = 2) -> list[EvalRecord]:
    return mimicry_records(_sample(builtin_poems(bad_rows), limit, seed), "builtin_poems", wrong_per_poem)


def sonnet_records(path: str, bad_rows: BadRows, limit: int | None = None, seed: int = 0,
                   wrong_per_poem: int = 2) -> list[EvalRecord]:
    return mimicry_records(sonnets(path, bad_rows, limit, seed), "sonnets", wrong_per_poem)
