"""Bad data files (issue 24, "nothing lost, nothing silent"): every bad row is an error naming
`<file>:<line>: field '<f>'` under data.on_bad_row=error and is counted under skip; a file that
cannot be read as a whole (truncated or mislabelled gzip) is an error naming the path whatever
on_bad_row says. Tiny inputs written to tmp_path; no model."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from syco.data.beliefs import load_facts, load_misconceptions, load_truthfulqa
from syco.data.hh_rlhf import load_hh_rlhf
from syco.data.jsonl import load_preference_jsonl
from syco.data.pairs import BadRowError, BadRows, DataFileError, PreferencePair, iter_jsonl
from syco.data.policy_pairs import load_judged_samples
from syco.data.preference import build_preference_splits, encode_pairs
from syco.data.records import write_released
from syco.data.samples import SampleStore, read_samples
from syco.eval import sources as S
from syco.eval.judges import RulesJudge
from syco.eval.tasks import check_record, verdicts


def lines(path: Path, rows: list, gz: bool = False) -> Path:
    """Rows: dicts (dumped as JSON, NaN allowed as Python writes it) or str (written verbatim)."""
    data = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def pair(chosen: str = "Paris.", rejected: str = "Lyon.", **extra) -> dict:
    return {"prompt": "Capital of France?", "chosen": chosen, "rejected": rejected, **extra}


def hh(chosen: str, rejected: str) -> dict:
    return {"chosen": f"\n\nHuman: Hi?\n\nAssistant: {chosen}", "rejected": f"\n\nHuman: Hi?\n\nAssistant: {rejected}"}


def error_of(fn, *args, **kwargs) -> BadRowError:
    with pytest.raises(BadRowError) as info:
        fn(*args, **kwargs)
    return info.value


# --- degenerate pairs: chosen == rejected, in every preference loader ---------------------------------
@pytest.mark.parametrize("rejected", ["Paris.", "  Paris.  ", "Paris.\n", "Paris.   "])
def test_jsonl_degenerate_pair_is_a_bad_row(tmp_path, rejected):
    path = lines(tmp_path / "p.jsonl", [pair(), pair("Paris.", rejected)])
    err = error_of(load_preference_jsonl, str(path), BadRows("error"))
    assert str(err) == f"{path}:2: field 'rejected': chosen and rejected responses are identical"
    bad = BadRows("skip")
    assert len(load_preference_jsonl(str(path), bad)) == 1
    assert bad.skipped == {"chosen and rejected responses are identical": 1}


def test_jsonl_degenerate_trl_messages_pair(tmp_path):
    row = {"prompt": "Q?", "chosen": [{"role": "assistant", "content": "Same"}],
           "rejected": [{"role": "assistant", "content": "Same"}]}
    path = lines(tmp_path / "p.jsonl", [row])
    assert error_of(load_preference_jsonl, str(path), BadRows("error")).field == "rejected"


def test_hh_degenerate_pair_uses_the_shared_helper(tmp_path):
    path = lines(tmp_path / "hh.jsonl", [hh("Hello there.", "Go away."), hh("Same answer.", "Same answer.  ")])
    err = error_of(load_hh_rlhf, str(path), BadRows("error"))
    assert str(err) == f"{path}:2: field 'rejected': chosen and rejected responses are identical"
    bad = BadRows("skip")
    assert len(load_hh_rlhf(str(path), bad)) == 1 and bad.total_skipped == 1


@pytest.mark.parametrize("wrong", ["Paris", "paris.", " PARIS ", "Lutetia"])
def test_fact_whose_wrong_answer_is_an_accepted_answer(tmp_path, wrong):
    """It would make the no-belief pair "The answer is Paris." vs "The answer is Paris."."""
    good = {"id": "f1", "question": "Capital of Italy?", "answers": ["Rome"], "wrong_answer": "Milan"}
    bad_row = {"id": "f2", "question": "Capital of France?", "answers": ["Paris", "Lutetia"], "wrong_answer": wrong}
    path = lines(tmp_path / "facts.jsonl", [good, bad_row])
    err = error_of(load_facts, str(path), BadRows("error"))
    assert err.source == f"{path}:2" and err.field == "wrong_answer"
    assert "the wrong answer is the same as the correct one" in str(err)
    bad = BadRows("skip")
    assert [i.id for i in load_facts(str(path), bad)] == ["f1"] and bad.total_skipped == 1


def test_misconception_equal_to_its_truth(tmp_path):
    rows = [{"id": "m1", "question": "Q?", "misconception": "Bats are blind.", "truth": "bats are blind"}]
    path = lines(tmp_path / "m.jsonl", rows)
    err = error_of(load_misconceptions, str(path), BadRows("error"))
    assert (err.source, err.field) == (f"{path}:1", "misconception")


def test_truthfulqa_row_whose_first_incorrect_answer_is_the_best(tmp_path):
    path = tmp_path / "tqa.csv"
    path.write_text("Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"
                    "A,Misconceptions,Q1?,Yes.,Yes,No,x\n"
                    "A,Misconceptions,Q2?,Yes.,Yes,yes; No,x\n"
                    "A,History,Q3?,for a man,for a man,for man,x\n")  # one word apart: two answers
    err = error_of(load_truthfulqa, path, BadRows("error"))
    assert (err.source, err.field) == (f"{path}:3", "Incorrect Answers")
    bad = BadRows("skip")
    assert [i.question for i in load_truthfulqa(path, bad)] == ["Q1?", "Q3?"] and bad.total_skipped == 1


class CharFormatter:
    """One token per character: what encode_pairs needs of a ChatFormatter."""

    def prompt_ids(self, messages):
        return [ord(c) for c in messages[-1]["content"]]

    def responses_ids(self, texts):
        return [[ord(c) for c in t] for t in texts]


def test_pair_identical_once_cut_to_max_length():
    prompt = ({"role": "user", "content": "Q?"},)
    pairs = [PreferencePair(prompt, "same start, then A and more", "same start, then B and more", "f.jsonl:1", "g"),
             PreferencePair(prompt, "ok", "no", "f.jsonl:2", "g")]
    with pytest.raises(BadRowError, match=r"f.jsonl:1: field 'rejected': chosen and rejected are identical once cut "
                                          r"to max_length=12"):
        encode_pairs(pairs, CharFormatter(), 12, BadRows("error"))
    bad = BadRows("skip")
    assert len(encode_pairs(pairs, CharFormatter(), 12, bad)) == 1 and bad.total_skipped == 1
    # long enough to tell them apart: kept, and the cut is counted as a note
    bad = BadRows("error")
    assert len(encode_pairs(pairs, CharFormatter(), 20, bad)) == 2 and bad.notes


# --- NaN, inf and wrong-type numbers ------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "field"), [
    ('{"prompt": "Q?", "chosen": "a", "rejected": "b", "margin": NaN}', "margin"),
    ('{"prompt": "Q?", "chosen": "a", "rejected": "b", "margin": Infinity}', "margin"),
    ('{"prompt": "Q?", "chosen": "a", "rejected": "b", "margin": -Infinity}', "margin"),
    ('{"prompt": "Q?", "chosen": "a", "rejected": "b", "margin": 1e999}', "margin"),
    ('{"prompt": "Q?", "chosen": "a", "rejected": "b", "meta": {"scores": [1.0, NaN]}}', "meta.scores[1]"),
])
def test_non_finite_number_is_a_bad_row_at_load(tmp_path, raw, field):
    path = lines(tmp_path / "p.jsonl", [pair(), raw])
    err = error_of(load_preference_jsonl, str(path), BadRows("error"))
    assert (err.source, err.field, err.reason) == (f"{path}:2", field, "not a finite number")
    bad = BadRows("skip")
    assert len(load_preference_jsonl(str(path), bad)) == 1 and bad.skipped == {"not a finite number": 1}


@pytest.mark.parametrize(("margin", "reason"), [
    ("0.5", "expected a number, got str"), (True, "expected a number, got bool"), ([1], "expected a number, got list"),
    (1e39, "too large for a 32-bit float (it would be inf in training)"),
])
def test_margin_of_the_wrong_type_or_size(tmp_path, margin, reason):
    path = lines(tmp_path / "p.jsonl", [pair(margin=margin)])
    err = error_of(load_preference_jsonl, str(path), BadRows("error"))
    assert (err.source, err.field, err.reason) == (f"{path}:1", "margin", reason)


def test_margins_that_are_numbers_load(tmp_path):
    path = lines(tmp_path / "p.jsonl", [pair(margin=2), pair("x", "y", margin=-0.5), pair("u", "v", margin=None)])
    assert [p.margin for p in load_preference_jsonl(str(path), BadRows("error"))] == [2.0, -0.5, 0.0]


def test_non_finite_number_in_a_belief_file(tmp_path):
    row = {"id": "f1", "question": "Q?", "answers": ["A"], "wrong_answer": "B", "difficulty": float("nan")}
    path = lines(tmp_path / "facts.jsonl", [row])
    err = error_of(load_facts, str(path), BadRows("error"))
    assert (err.source, err.field, err.reason) == (f"{path}:1", "difficulty", "not a finite number")


# --- gzip: truncated, corrupt, mislabelled ------------------------------------------------------------
def _gz(tmp_path: Path, n: int = 200) -> bytes:
    rows = [pair(f"chosen {i} " + "x" * 50, f"rejected {i}") for i in range(n)]
    return gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_truncated_gzip_names_the_path_and_line(tmp_path, policy):
    path = tmp_path / "pairs.jsonl.gz"
    path.write_bytes(_gz(tmp_path)[:-300])
    with pytest.raises(DataFileError, match=rf"^{path}:\d+: the gzip file is truncated or corrupt: it breaks off "
                                            r"after line \d+ .*re-download or re-compress it"):
        load_preference_jsonl(str(path), BadRows(policy))


def test_truncated_gzip_in_the_hh_loader(tmp_path):
    path = tmp_path / "test.jsonl.gz"
    rows = [hh(f"Answer {i}.", f"Other {i}.") for i in range(100)]
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())[:-100])
    with pytest.raises(DataFileError, match=rf"{path}:\d+: the gzip file is truncated"):
        load_hh_rlhf(str(path), BadRows("skip"))


def test_corrupt_gzip(tmp_path):
    data = bytearray(_gz(tmp_path))
    data[len(data) // 2: len(data) // 2 + 20] = b"\x00" * 20
    path = tmp_path / "pairs.jsonl.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DataFileError, match=rf"^{path}:\d+: the gzip file is"):
        load_preference_jsonl(str(path), BadRows("skip"))


def test_gz_name_on_a_plain_file(tmp_path):
    path = lines(tmp_path / "pairs.jsonl.gz", [pair()])
    with pytest.raises(DataFileError, match=rf"^{path}: not a gzip file .*rename it without .gz"):
        load_preference_jsonl(str(path), BadRows("skip"))


def test_gzip_file_without_gz_name(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(_gz(tmp_path, 2))
    with pytest.raises(DataFileError, match=rf"^{path}: the file is gzip-compressed but its name does not end in .gz"):
        list(iter_jsonl(path, BadRows("skip")))


def test_whole_gzip_reads(tmp_path):
    path = lines(tmp_path / "pairs.jsonl.gz", [pair(), pair("a", "b")], gz=True)
    assert len(load_preference_jsonl(str(path), BadRows("error"))) == 2


# --- a required config key left unset reaches the loader ------------------------------------------------
def test_jsonl_source_without_path(compose_train):
    cfg = compose_train("data=jsonl")
    with pytest.raises(ValueError, match=r"^data.sources.pairs.path=\?\?\?: required and unset; e.g. python train.py "
                                         r"data=jsonl data.sources.pairs.path=/path/to/pairs.jsonl"):
        build_preference_splits(cfg.data, {}, seed=0)


# --- released-format records: what each task reads, checked at load ----------------------------------------
def released_row(base: dict, template: str = "{question}") -> dict:
    return {"prompt": [{"type": "human", "content": "Q?"}], "base": base, "metadata": {"prompt_template": template}}


ANSWER_BASE = {"dataset": "trivia_qa", "question": "Largest planet?", "answer": ["Jupiter"],
               "correct_answer": "Jupiter", "incorrect_answer": "Saturn"}
MC_BASE = {"dataset": "aqua_mc", "question": "2+2?", "answers": "(A) 3\n(B) 4", "correct_letter": "B"}


@pytest.mark.parametrize(("task", "base", "field"), [
    ("answer", {k: v for k, v in ANSWER_BASE.items() if k not in ("answer", "correct_answer")}, "base.correct_answer"),
    ("answer", {k: v for k, v in ANSWER_BASE.items() if k != "question"}, "base.question"),
    ("answer", {**ANSWER_BASE, "answer": [{"text": "Jupiter"}]}, "base.answer"),
    ("answer", {**ANSWER_BASE, "incorrect_answer": ["Saturn", None]}, "base.incorrect_answer"),
    ("are_you_sure", {k: v for k, v in ANSWER_BASE.items() if k not in ("answer", "correct_answer")},
     "base.correct_answer"),
    ("are_you_sure", {**MC_BASE, "correct_letter": "F"}, "base.correct_letter"),
    ("are_you_sure", {**MC_BASE, "letters": "4"}, "base.letters"),
    ("are_you_sure", {**MC_BASE, "letters": 4.5}, "base.letters"),
    ("are_you_sure", {**MC_BASE, "letters": float("nan")}, "base.letters"),
    ("feedback", {"dataset": "essays", "text": "some text"}, "base.dataset"),
    ("feedback", {"dataset": "poems"}, "base.text"),
    ("mimicry", {"author": "Sylvia Plath", "text": "..."}, "base.wrong_author"),
    ("mimicry", {"wrong_author": "Keats", "text": "..."}, "base.author"),
])
def test_released_record_missing_what_its_task_reads(tmp_path, task, base, field):
    rows = [released_row(base, "{question}")]
    if task == "answer":
        rows = [released_row(ANSWER_BASE), released_row(base)]
    elif task == "feedback":
        rows = [{**released_row(base), "metadata": {"prompt_template_type": ""}}]
    path = lines(tmp_path / f"{task}.jsonl", rows)
    line = len(rows)
    err = error_of(S.released_records, str(path), task=task, bad_rows=BadRows("error"))
    assert (err.source, err.field) == (f"{path}:{line}", field), str(err)
    assert str(err).startswith(f"{path}:{line}: field '{field}': ")
    bad = BadRows("skip")
    assert len(S.released_records(str(path), task=task, bad_rows=bad)) == line - 1 and bad.total_skipped == 1


def test_released_records_with_what_they_need_load(tmp_path):
    rows = [released_row(ANSWER_BASE), released_row({**ANSWER_BASE, "answer": "Jupiter"}),
            released_row({k: v for k, v in ANSWER_BASE.items() if k != "answer"})]
    assert len(S.released_records(str(lines(tmp_path / "a.jsonl", rows)), task="answer", bad_rows=BadRows())) == 3
    mc = [released_row(MC_BASE), released_row({**MC_BASE, "letters": 6, "correct_letter": "F"})]
    assert len(S.released_records(str(lines(tmp_path / "m.jsonl", mc)), task="are_you_sure", bad_rows=BadRows())) == 2


def test_every_built_record_passes_its_task_check():
    """The records syco builds itself carry every field their task reads (the check is the contract)."""
    bad = BadRows("error")
    records = [*S.answer_records("builtin", bad, limit=3), *S.builtin_mc_records(bad, limit=3),
               *S.free_form_records("builtin", bad, limit=3), *S.misconception_records("builtin", bad, limit=3),
               *S.builtin_poem_records(bad, limit=2),
               *S.feedback_records([{"dataset": "poems", "id": "p", "text": "Roses"}])]
    for r in records:
        check_record(r)
    assert {r.task for r in records} == {"answer", "are_you_sure", "misconceptions", "mimicry", "feedback"}


def test_written_then_read_released_file_still_loads(tmp_path):
    recs = S.answer_records("builtin", BadRows(), limit=2)
    path = write_released(tmp_path / "answer.jsonl", recs)
    assert len(S.released_records(str(path), task="answer", bad_rows=BadRows("error"))) == len(recs)


# --- samples.jsonl and the policy-written pairs -------------------------------------------------------
def _samples_file(tmp_path: Path, verdict: dict) -> Path:
    path = tmp_path / "samples.jsonl"
    store = SampleStore(path)
    rec = S.answer_records("builtin", BadRows(), limit=1, templates=["plain"])[0]
    store.put(rec, 0, [f"The answer is {rec.base['correct_answer']}."])
    samples = store.samples()
    verdicts("answer", samples, RulesJudge())
    store.rewrite(samples)
    row = json.loads(path.read_text())
    row["verdicts"] = verdict
    path.write_text(json.dumps(row) + "\n")
    return path


@pytest.mark.parametrize(("verdict", "field"), [
    ({"rules": {"correct": "false"}}, "verdicts.rules.correct"),
    ({"rules": {"correct": 1}}, "verdicts.rules.correct"),
    ({"rules": ["correct"]}, "verdicts.rules"),
])
def test_policy_sample_verdict_of_the_wrong_type(tmp_path, verdict, field):
    """A string "false" would count as truthful: a bad row instead."""
    path = _samples_file(tmp_path, verdict)
    err = error_of(load_judged_samples, path, BadRows("error"))
    assert (err.source, err.field) == (f"{path}:1", field)
    bad = BadRows("skip")
    assert load_judged_samples(path, bad) == [] and bad.total_skipped == 1


def test_policy_sample_null_verdict_is_counted_not_an_error(tmp_path):
    bad = BadRows("error")
    assert load_judged_samples(_samples_file(tmp_path, {"rules": {"correct": None}}), bad) == []
    assert bad.notes == {"policy sample without a verdict": 1}


@pytest.mark.parametrize(("change", "field"), [({"index": -1}, "index"), ({"verdicts": ["rules"]}, "verdicts"),
                                               ({"index": 1.5}, "index")])
def test_samples_row_fields(tmp_path, change, field):
    path = _samples_file(tmp_path, {"rules": {"correct": True}})
    row = {**json.loads(path.read_text()), **change}
    path.write_text(json.dumps(row) + "\n")
    err = error_of(read_samples, path, BadRows("error"))
    assert (err.source, err.field) == (f"{path}:1", field)


# --- whole-file JSON and CSV data sets ------------------------------------------------------------------
def test_truthfulqa_mc_json_not_json(tmp_path):
    path = tmp_path / "mc_task.json"
    path.write_text('[\n  {"question": "Q?",\n  "mc1_targets": {"a": 1, }}\n]')
    with pytest.raises(ValueError, match=rf"^{path}:3: not valid JSON"):
        S.truthfulqa_mc_records(str(path), BadRows("skip"))
    path.write_text('{"question": "Q?"}')
    with pytest.raises(ValueError, match=rf"^{path}: expected a JSON list at the top, got dict"):
        S.truthfulqa_mc_records(str(path), BadRows("skip"))


@pytest.mark.parametrize(("targets", "field"), [
    ({"yes": 1, "no": float("nan")}, "mc1_targets.no"),
    ({"yes": "1", "no": 0}, "mc1_targets.yes"),
    ({"yes": 1, "no": 2}, "mc1_targets.no"),
    ({"yes": 1, "no": 1}, "mc1_targets"),
])
def test_truthfulqa_mc_labels(tmp_path, targets, field):
    path = tmp_path / "mc_task.json"
    path.write_text(json.dumps([{"question": "Ok?", "mc1_targets": {"a": 1, "b": 0}},
                                {"question": "Q?", "mc1_targets": targets}]))
    err = error_of(S.truthfulqa_mc_records, str(path), BadRows("error"))
    assert (err.source, err.field) == (f"{path}:item 1", field)
    bad = BadRows("skip")
    assert len(S.truthfulqa_mc_records(str(path), bad)) == 1 and bad.total_skipped == 1


def test_sonnets_file_shape(tmp_path):
    path = tmp_path / "sonnets.json"
    path.write_text(json.dumps([{"lines": ["a"]}]))
    with pytest.raises(ValueError, match=rf"^{path}: expected a JSON object at the top, got list"):
        S.sonnets(str(path), BadRows("skip"))
    path.write_text(json.dumps({"sonnets": [{"number": 1, "lines": ["Shall I"]}, {"number": float("inf"),
                                                                                  "lines": ["x"]}]}))
    err = error_of(S.sonnets, str(path), BadRows("error"))
    assert (err.source, err.field, err.reason) == (f"{path}:sonnet 2", "number", "not a finite number")


def test_mmlu_answer_that_is_not_one_letter(tmp_path):
    (tmp_path / "astronomy_test.csv").write_text("Q1?,a,b,c,d,A\nQ2?,a,b,c,d,AB\n")
    err = error_of(S.mmlu_records, str(tmp_path), BadRows("error"))
    assert (err.source, err.field) == (f"{tmp_path / 'astronomy_test.csv'}:2", "<row>")


def test_aqua_options_that_are_not_strings(tmp_path):
    row = {"question": "Q?", "options": ["A)1", 2], "correct": "A"}
    path = lines(tmp_path / "aqua.json", [row])
    assert error_of(S.aqua_records, str(path), BadRows("error")).field == "options"
