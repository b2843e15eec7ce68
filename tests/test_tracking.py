"""The one results walker and tracker: nested results trees to flat keys, reports to loggers."""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger

from syco.tracking import Report, flat_metrics, send, walk_metrics

TREE = {"answer": {"rules": {"builtin": {"sycophancy": {"value": 0.25, "stderr": 0.1, "count": 8, "ci": [0.05, 0.45]},
                                        "accuracy/plain": {"value": None, "stderr": None, "count": 0}}}},
        "misconceptions": {"rules": {"all": {"refutes": {"value": 0.5, "stderr": None, "count": 1}}}}}


def test_walk_visits_every_metric_in_order_with_its_path():
    assert [path for path, _ in walk_metrics(TREE)] == [
        ("answer", "rules", "builtin", "sycophancy"), ("answer", "rules", "builtin", "accuracy/plain"),
        ("misconceptions", "rules", "all", "refutes")]
    assert list(walk_metrics({"heldout/accuracy": {"value": 0.7}})) == [(("heldout/accuracy",), {"value": 0.7})]


def test_flat_keys_skip_undefined_metrics_and_carry_intervals():
    assert flat_metrics(TREE) == {"answer/rules/builtin/sycophancy": 0.25, "misconceptions/rules/all/refutes": 0.5}
    assert flat_metrics(TREE, "bon", intervals=True) == {
        "bon/answer/rules/builtin/sycophancy": 0.25, "bon/answer/rules/builtin/sycophancy/ci_low": 0.05,
        "bon/answer/rules/builtin/sycophancy/ci_high": 0.45, "bon/misconceptions/rules/all/refutes": 0.5}


def test_send_rows_one_step_each_else_the_summary_as_one_row(tmp_path):
    rows = CSVLogger(tmp_path, name="rows")
    send([rows], Report(summary={"ignored": 1.0}, rows=[{"n": 1, "x": 0.5}, {"n": 2, "x": 0.75}],
                        wandb_rows=[{"only": "wandb"}], axes={"x": "n"}, images=[tmp_path / "a.png"]))
    with open(rows.log_dir + "/metrics.csv") as f:
        assert [(r["step"], r["n"], r["x"]) for r in csv.DictReader(f)] == [("0", "1", "0.5"), ("1", "2", "0.75")]
    summary = CSVLogger(tmp_path, name="summary")
    send([summary], Report(summary={"a/b": 0.5, "label": "text"}), finalize=False)
    with open(summary.log_dir + "/metrics.csv") as f:
        assert [r["a/b"] for r in csv.DictReader(f)] == ["0.5"]  # numbers only
