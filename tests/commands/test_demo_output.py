"""The demo prints the same thing every run: the sample's alerts in event-time order, in
aligned columns, the same re-issued number looked up; idle, it says that Ctrl-C stops it."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from streams.commands.demo import COLUMNS, Printout, expected_outcome
from streams.tools.offline import Processor
from streams.tools.samples import INCIDENT, read_jsonl, topic_of

REPO = Path(__file__).resolve().parents[2]
TOPICS = {"labels": "demo-x.labels", "scans": "demo-x.scans",
          "alerts": "demo-x.tracking.alerts", "deadletter": "demo-x.tracking.deadletter"}


def _sample() -> list[bytes]:
    return list(read_jsonl(INCIDENT))


def _offline(lines: list[bytes], order: str) -> tuple[list[dict], list[dict]]:
    alerts: list[dict] = []
    dead: list[dict] = []
    proc = Processor(alerts.append, dead.append, order=order)
    for i, line in enumerate(lines):
        try:
            topic = topic_of(orjson.loads(line))
        except orjson.JSONDecodeError:
            topic = "labels"
        proc.feed(line, source=TOPICS[topic], partition=0, offset=i)
    proc.finish()
    return alerts, dead


def _columns(line: str) -> list[int]:
    """Where each column of the header starts."""
    return [line.index(name) for name in COLUMNS]


def test_the_printout_is_the_same_whatever_the_arrival_order() -> None:
    lines = _sample()
    outs = []
    for seed, order in ((1, "event-time"), (2, "input"), (3, "input")):
        shuffled = lines[:]
        random.Random(seed).shuffle(shuffled)
        alerts, dead = _offline(shuffled if order == "input" else lines, order)
        arrivals = [(TOPICS["alerts"], a) for a in alerts]
        arrivals += [(TOPICS["alerts"], a) for a in alerts[:5]]  # at-least-once repeats
        arrivals += [(TOPICS["deadletter"], d) for d in dead]
        random.Random(seed).shuffle(arrivals)
        out = io.StringIO()
        shown = Printout(TOPICS, out)
        for topic, obj in arrivals:
            shown.add(topic, obj)
        shown.print_all()
        outs.append(out.getvalue())
    assert outs[0] == outs[1] == outs[2]
    printed = outs[0].splitlines()
    header, rows = printed[0], [p for p in printed[1:] if not p.startswith("DEAD LETTER")]
    expected = expected_outcome(lines)
    assert len(rows) == len(expected.alert_ids)
    starts = _columns(header)
    for row in rows:  # every column starts where the header's does
        for start in starts[1:]:
            assert row[start - 2:start] == "  " and row[start] != " ", (row, start)
    times = [row[:16] for row in rows]
    assert times == sorted(times)
    assert "revised" not in outs[0]
    dead_lines = [p for p in printed if p.startswith("DEAD LETTER")]
    assert len(dead_lines) == expected.dead_letters
    assert all("demo-x." not in p for p in dead_lines)  # no run prefix
    assert expected.reissued is not None and expected.reissued[1] in outs[0]


def _demo(tmp_path: Path, kafka_bootstrap: str, name: str, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen(
        [sys.executable, "-m", "streams", "demo", "--bootstrap", kafka_bootstrap, *extra],
        stdout=open(tmp_path / f"{name}.out", "wb"),
        stderr=open(tmp_path / f"{name}.err", "wb"),
        stdin=subprocess.DEVNULL, env=env, start_new_session=True)


@pytest.mark.integration
def test_two_demo_runs_print_the_same_and_idle_says_ctrl_c_stops_it(
        tmp_path: Path, kafka_bootstrap: str) -> None:
    first = _demo(tmp_path, kafka_bootstrap, "first", "--exit-after-sample")
    assert first.wait(timeout=240) == 0, (tmp_path / "first.err").read_text()
    second = _demo(tmp_path, kafka_bootstrap, "second")
    try:
        deadline = time.monotonic() + 240
        while "demo: idle" not in (tmp_path / "second.err").read_text():
            assert second.poll() is None, (tmp_path / "second.err").read_text()
            assert time.monotonic() < deadline, (tmp_path / "second.err").read_text()
            time.sleep(0.1)
        second.send_signal(signal.SIGINT)
        assert second.wait(timeout=90) == 130
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    err = (tmp_path / "second.err").read_text()
    assert "Ctrl-C stops it" in err
    one, two = (tmp_path / "first.out").read_text(), (tmp_path / "second.out").read_text()
    assert one == two
    header = one.splitlines()[0]
    assert header.split() == " ".join(COLUMNS).split()
    expected = expected_outcome(_sample())
    assert f"re-issued {expected.reissued[0]} {expected.reissued[1]}: HELD" in one
