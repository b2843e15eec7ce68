"""The one results walker and tracker: nested results trees to flat keys, reports to loggers; W&B
without a network (fails fast online, falls back to offline in auto mode)."""

from __future__ import annotations

import csv
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from lightning.pytorch.loggers import CSVLogger

from syco.tracking import (
    PPO_AXES,
    Report,
    define_axes,
    flat_metrics,
    send,
    walk_metrics,
    wandb_logger,
    wandb_unreachable,
)

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


# --- W&B without a network ----------------------------------------------------------------------------
def dead_url() -> str:
    """A local port nothing listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_wandb_online_without_network_fails_fast_saying_to_log_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", dead_url())
    monkeypatch.delenv("WANDB_MODE", raising=False)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=r"logger.wandb.mode=online but the W&B server http://127.0.0.1:\d+ "
                                              r"cannot be reached .*logger.wandb.mode=offline \(or WANDB_MODE=offline\)"):
        wandb_logger(mode="online", save_dir=str(tmp_path), check_timeout_s=2)
    monkeypatch.setenv("WANDB_MODE", "online")  # asked for through the environment: named as such
    with pytest.raises(ConnectionError, match=r"^WANDB_MODE=online but"):
        wandb_logger(mode="auto", save_dir=str(tmp_path), check_timeout_s=2)
    assert time.monotonic() - start < 5


def test_wandb_auto_without_network_logs_offline_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", dead_url())
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with caplog.at_level(logging.WARNING, logger="syco.tracking"):
        lg = wandb_logger(mode="auto", save_dir=str(tmp_path), check_timeout_s=2)
    assert lg._wandb_init["mode"] == "offline"
    assert "cannot be reached" in caplog.text and "logging offline" in caplog.text and "wandb sync" in caplog.text


def test_wandb_server_answering_counts_as_reachable(tmp_path, monkeypatch):
    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert wandb_unreachable(url, 2) is None
        assert "ConnectionRefusedError" in wandb_unreachable(dead_url(), 2)
        monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
        monkeypatch.setenv("WANDB_BASE_URL", url)
        monkeypatch.delenv("WANDB_MODE", raising=False)
        assert wandb_logger(mode="auto", save_dir=str(tmp_path), check_timeout_s=2)._wandb_init["mode"] == "online"
    finally:
        server.shutdown()
        server.server_close()


class FakeRun:
    def __init__(self) -> None:
        self.defined: dict[str, str | None] = {}

    def define_metric(self, name: str, step_metric: str | None = None, **_: object) -> None:
        assert "*" not in name  # one exact definition per key, never a glob
        self.defined[name] = step_metric


def test_axes_defined_per_key_first_matching_glob_wins():
    run, seen = FakeRun(), set()
    define_axes(run, PPO_AXES, ["objective/kl", "eval/kl", "eval/score", "eval_by_kl/score", "ppo/step"], seen)
    assert run.defined == {"ppo/step": None, "eval/kl": "ppo/step", "objective/kl": "ppo/step",
                           "eval/score": "ppo/step", "eval_by_kl/score": "eval/kl"}
    assert list(run.defined)[:2] == ["eval/kl", "ppo/step"]  # the x-axes before the metrics plotted against them
    define_axes(run, {"bon/n": None, "bon/*": "bon/kl"}, ["bon/n", "bon/a/b"], seen)
    assert run.defined["bon/n"] is None and run.defined["bon/a/b"] == "bon/kl"
    define_axes(run, {"x/*": "x/n"}, ["other", "eval/kl"], seen)  # no match: left to W&B; known keys stay as defined
    assert "other" not in run.defined and run.defined["eval/kl"] == "ppo/step"


def test_a_resumed_run_logs_into_the_wandb_run_it_began(tmp_path, monkeypatch):
    """Two launches in one run folder (a requeued or resumed job) log into one W&B run: the second
    offline run carries the first one's id, so `wandb sync` joins them; another folder gets its own."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    ids = []
    for folder in ("run", "run", "other"):
        logger = wandb_logger(save_dir=str(tmp_path / folder), name="x", check_timeout_s=0)
        logger.log_metrics({"a": 1.0}, step=0)
        ids.append(logger.experiment.id)
        logger.experiment.finish()
    assert ids[0] == ids[1] != ids[2]
    assert (tmp_path / "run" / "wandb" / "syco_run_id").read_text().strip() == ids[0]
    # offline folders are named by launch time (two launches in one second share one) and by the id
    folders = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert folders and all(f"-{ids[0]}" in f.name for f in folders)  # wandb adds -1, -2 to a taken name
