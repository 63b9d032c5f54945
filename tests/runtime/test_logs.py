"""Structured logs: the JSON format, the repeat filter, and a real worker's stdout/stderr."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from conftest import no_broker

from streams.runtime.logs import JsonFormatter, RepeatFilter, TextFormatter

REPO = Path(__file__).resolve().parents[2]
KEYS = {"time", "level", "logger", "message", "worker_id"}


def record(name: str, msg: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- the repeat filter


def test_repeats_collapse_into_one_line_per_interval_with_a_count() -> None:
    clock = Clock()
    flt = RepeatFilter(interval=10.0, clock=clock)
    template = 'Unable connect to node with id %s: %s'
    passed = []
    for i in range(150):  # 15 s of a storm, 10 records a second
        clock.now = i / 10
        rec = record("aiokafka", template, 1, f"error {i}")
        if flt.filter(rec):
            passed.append((clock.now, getattr(rec, "repeated", 0)))
    assert passed == [(0.0, 0), (10.0, 99)]


def test_repeat_filter_keys_on_logger_and_template() -> None:
    clock = Clock()
    flt = RepeatFilter(interval=10.0, clock=clock)
    assert flt.filter(record("aiokafka", "Unable to update metadata from %s", 1))
    assert not flt.filter(record("aiokafka", "Unable to update metadata from %s", 2))
    assert flt.filter(record("aiokafka.conn", "Unable to update metadata from %s", 1))
    assert flt.filter(record("aiokafka", "Unable connect to %r", 1))
    # below WARNING nothing is collapsed
    assert all(flt.filter(record("x", "same %s", i, level=logging.INFO)) for i in range(5))


def test_json_line_has_the_fields_and_the_count() -> None:
    rec = record("aiokafka.conn", "Unable connect to %s", "h:1")
    rec.repeated = 7
    line = JsonFormatter("w-1").format(rec)
    obj = json.loads(line)
    assert set(obj) >= KEYS
    assert (obj["level"], obj["logger"], obj["worker_id"], obj["repeated"]) == (
        "WARNING", "aiokafka.conn", "w-1", 7)  # fmt: skip
    assert obj["message"].startswith("Unable connect to h:1") and "7 more" in obj["message"]
    assert obj["time"].endswith("Z")
    assert "7 more" in TextFormatter("w-1").format(rec)


def test_json_mode_turns_every_stray_write_into_json(tmp_path: Path) -> None:
    """prints, library warnings, a traceback printed by hand and an uncaught exception."""
    script = """
import logging, sys, traceback, warnings
from streams.runtime.logs import configure_logging
configure_logging("json", "info", "w-7")
print("a print on stdout")
print("a line on stderr", file=sys.stderr)
warnings.warn("something is deprecated")
logging.getLogger("faust.worker").info("[^Worker]: Ready")
for _ in range(2):  # printed twice: repeats of stray output are kept
    try:
        1 / 0
    except ZeroDivisionError:
        traceback.print_exc()
logging.getLogger("streams").error("failed", exc_info=True)
raise RuntimeError("the end")
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""  # everything is a log line on stderr
    lines = result.stderr.splitlines()
    objects = [json.loads(line) for line in lines]  # every line is JSON
    assert all(set(o) >= KEYS and o["worker_id"] == "w-7" for o in objects)
    messages = [o["message"] for o in objects]
    assert "a print on stdout" in messages and "a line on stderr" in messages
    assert any("something is deprecated" in m for m in messages)
    assert any(o["logger"] == "uncaught" and "the end" in o["message"] for o in objects)
    assert messages.count("Traceback (most recent call last):") == 2  # both printed ones
    assert sum(m.startswith("ZeroDivisionError") for m in messages) == 2


# ---------------------------------------------------------------- a real worker


def start_worker(bootstrap: str, tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path,
                                                                      Path]:  # fmt: skip
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TRACKING_VALIDATOR_LOG_FORMAT": "json"}
    app = f"logs-{uuid.uuid4().hex[:8]}"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker", "--bootstrap", bootstrap,
             "--app-id", app, "--state-dir", str(tmp_path / "state"), "--partitions", "2",
             "--labels-topic", f"{app}-labels", "--scans-topic", f"{app}-scans",
             "--alerts-topic", f"{app}-alerts", "--deadletter-topic", f"{app}-dlq",
             "--worker-id", "w-test", *extra],
            stdout=o, stderr=e, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
    return proc, out, err


def wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert proc.poll() is None, path.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {text!r} in {timeout}s"
        time.sleep(0.2)


def json_lines(*paths: Path) -> list[dict]:
    objects = []
    for path in paths:
        for line in path.read_text().splitlines():
            obj = json.loads(line)  # fails the test on any non-JSON line
            assert set(obj) >= KEYS, line
            objects.append(obj)
    return objects


@pytest.mark.integration
def test_worker_logs_only_json_from_start_to_sigterm(kafka_bootstrap: str,
                                                     tmp_path: Path) -> None:  # fmt: skip
    proc, out, err = start_worker(kafka_bootstrap, tmp_path, "--loglevel", "info")
    try:
        wait_for(err, "Ready", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    assert rc == 0
    objects = json_lines(out, err)
    loggers = {o["logger"].split(".")[0] for o in objects}
    assert {"faust", "mode"} <= loggers or "faust" in loggers, loggers
    assert all(o["worker_id"] == "w-test" for o in objects)
    # start-up and shutdown are both in it
    messages = " ".join(o["message"] for o in objects)
    assert "Ready" in messages and "Signal received" in messages


def wait_ready(url: str, proc: subprocess.Popen, err: Path, timeout: float = 120.0) -> None:
    """Until the worker's /ready answers 200: topics made, partitions assigned, table
    recovered."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass  # not serving yet, or 503
        assert proc.poll() is None, err.read_text()[-3000:]
        assert time.monotonic() < deadline, f"worker not ready in {timeout}s: {url}"
        time.sleep(0.2)


@pytest.mark.integration
def test_a_broker_outage_logs_a_few_lines_not_a_storm(tmp_path: Path) -> None:
    from streams.local.broker import BrokerError, LocalBroker

    try:
        broker = LocalBroker().start()
    except BrokerError as exc:
        no_broker(f"local broker: {exc}")  # fails under CI=true
    proc = None
    outage = 15.0
    try:
        port = free_port()
        proc, _out, err = start_worker(broker.bootstrap_servers, tmp_path,
                                       "--web-host", "127.0.0.1", "--web-port", str(port))
        wait_ready(f"http://127.0.0.1:{port}/ready", proc, err)
        before = len(err.read_text().splitlines())
        broker.stop()
        stopped = time.monotonic()
        deadline = stopped + 90
        while not json_lines(err)[before:]:  # the worker notices (aiokafka's first error)
            assert proc.poll() is None, err.read_text()[-2000:]
            assert time.monotonic() < deadline, "the outage was not logged at all in 90s"
            time.sleep(0.2)
        # then a window of the outage: its length is measured, not assumed
        time.sleep(max(0.0, stopped + outage - time.monotonic()))
        assert proc.poll() is None, err.read_text()[-2000:]
        during = json_lines(err)[before:]
        window = time.monotonic() - stopped
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(timeout=30)
        broker.stop()
    per_template = Counter((o["logger"], _template(o["message"])) for o in during)
    swallowed = sum(o.get("repeated", 0) for o in during)
    print(f"outage {window:.1f}s: {len(during)} lines, {len(per_template)} kinds, "
          f"{swallowed} repeats collapsed")  # fmt: skip
    # at most one line per 10 s for each kind: its first, then one per interval (2 in 15 s)
    most = 1 + int(window // 10)
    assert max(per_template.values()) <= most, per_template
    assert len(during) <= most * len(per_template)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _template(message: str) -> str:
    """The message without its variable parts (numbers, addresses), to group lines."""
    import re

    return re.sub(r"\d+|\(and .*\)$", "#", message)[:60]


def test_text_lines_keep_fausts_partition_tables() -> None:
    """Faust registers argument formatters with mode (a set of partitions becomes a table):
    the text format applies them, as Faust's own handler did."""
    import faust.worker  # noqa: F401 - registers the formatters
    from aiokafka import TopicPartition

    parts = {TopicPartition("labels", 0), TopicPartition("labels", 1)}
    rec = record("aiokafka.consumer", "Setting newly assigned partitions %s", parts,
                 level=logging.INFO)  # fmt: skip
    text = TextFormatter("w").format(rec)
    assert "Topic Partition Set" in text and "{0-1}" in text
