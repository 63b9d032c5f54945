"""The demo prints the same thing every run: the sample's alerts in event-time order, in
aligned columns, its incident as the offline mode derives it (opened, resolved, alerts,
sellers, orders, refunds owed), the same re-issued number looked up; idle, it says that
Ctrl-C stops it."""

from __future__ import annotations

import io
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest

from streams.commands.demo import COLUMNS, Printout, expected_outcome
from streams.core import response
from streams.core.incidents import epoch
from streams.tools.offline import Processor
from streams.tools.samples import INCIDENT, read_jsonl, topic_of

REPO = Path(__file__).resolve().parents[2]
TOPICS = {"labels": "demo-x.labels", "scans": "demo-x.scans",
          "alerts": "demo-x.tracking.alerts", "deadletter": "demo-x.tracking.deadletter",
          "incidents": "demo-x.tracking.incidents", "actions": "demo-x.tracking.actions"}


def _sample() -> list[bytes]:
    return list(read_jsonl(INCIDENT))


class Offline(NamedTuple):
    alerts: list[dict]
    dead: list[dict]
    incidents: list[dict]
    watermark: int  # the greatest event time of the input


def _offline(lines: list[bytes], order: str = "event-time") -> Offline:
    """The offline mode's alerts, dead letters and incidents (streams.core.response.derive
    at the sample's greatest event time, as `scan --incidents` writes them)."""
    alerts: list[dict] = []
    dead: list[dict] = []
    proc = Processor(alerts.append, dead.append, order=order)
    for i, line in enumerate(lines):
        try:
            topic = topic_of(orjson.loads(line))
        except orjson.JSONDecodeError:
            topic = "labels"
        proc.feed(line, source=TOPICS[topic], partition=0, offset=i)
    summary = proc.finish()
    incidents, _ = response.derive(alerts, summary.watermark, proc.settings)
    return Offline(alerts, dead, incidents, summary.watermark)


def _incident_revisions(run: Offline) -> list[dict]:
    """The incident records a response stage publishes for the run's alerts arriving one by
    one, each followed by its event time as the watermark, then the input's last: every
    revision (open, then grown, then resolved), with a detected_at of their own."""
    states: dict[str, bytes] = {}
    published: list[dict] = []
    settings = Processor(lambda a: None, lambda d: None).settings
    items: list[dict | response.Watermark] = []
    for alert in run.alerts:
        items += [alert, response.Watermark(epoch(alert["event_time"]))]
    for item in [*items, response.Watermark(run.watermark)]:
        result = response.step(states.get, item, settings)
        for key, value in result.states.items():
            if value is None:
                states.pop(key, None)
            else:
                states[key] = value
        published += [{**r, "detected_at": f"2026-01-01T00:00:{len(published) % 60:02d}Z"}
                      for r in result.incidents]
    return published


def _incident_blocks(text: str) -> dict[str, list[tuple[str, str]]]:
    """The printed incident blocks: heading -> [(label, value)], and that their values line
    up."""
    blocks: dict[str, list[tuple[str, str]]] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("incident "):
            continue
        body = []
        for row in lines[i + 1:]:
            if not re.match(r"  \S", row):
                break
            label, value = re.split(r"\s{2,}", row.strip(), maxsplit=1)
            body.append((label, value))
            assert row.index(value, len(label) + 2) == lines[i + 1].index(body[0][1]), row
        blocks[line] = body
    return blocks


def _as_printed(incident: dict) -> tuple[str, list[tuple[str, str]]]:
    """What the demo must print for an incident record of the offline mode."""
    def minute(value: str) -> str:
        return value.replace("T", " ").removesuffix("Z")[:16]

    refunds = ", ".join(f"{m['amount']} {m['currency']}" for m in incident["refunds_owed"])
    resolved = minute(incident["resolved_at"]) if incident["status"] == "resolved" else "open"
    return (f"incident {incident['carrier']}/{incident['channel']} (UTC):",
            [("opened", minute(incident["started_at"])), ("resolved", resolved),
             ("alerts", str(incident["alerts"])), ("sellers", str(incident["sellers"])),
             ("orders", str(incident["orders"])), ("refunds owed", refunds or "none")])


def _columns(line: str) -> list[int]:
    """Where each column of the header starts."""
    return [line.index(name) for name in COLUMNS]


def test_the_printout_is_the_same_whatever_the_arrival_order() -> None:
    lines = _sample()
    outs = []
    for seed, order in ((1, "event-time"), (2, "input"), (3, "input")):
        shuffled = lines[:]
        random.Random(seed).shuffle(shuffled)
        run = _offline(shuffled if order == "input" else lines, order)
        alerts, dead, incidents = run.alerts, run.dead, _incident_revisions(run)
        arrivals = [(TOPICS["alerts"], a) for a in alerts]
        arrivals += [(TOPICS["alerts"], a) for a in alerts[:5]]  # at-least-once repeats
        arrivals += [(TOPICS["deadletter"], d) for d in dead]
        arrivals += [(TOPICS["incidents"], i) for i in incidents]
        arrivals += [(TOPICS["incidents"], i) for i in incidents[:3]]
        random.Random(seed).shuffle(arrivals)
        out = io.StringIO()
        shown = Printout(TOPICS, out)
        for topic, obj in arrivals:
            shown.add(topic, obj)
        shown.print_all()
        outs.append(out.getvalue())
    assert outs[0] == outs[1] == outs[2]
    printed = outs[0].splitlines()
    blocks = _incident_blocks(outs[0])
    header = printed[0]
    rows = [p for p in printed[1:] if not p.startswith(("DEAD LETTER", "incident ", "  "))]
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
    # the incident as the offline mode derives it, once, after the alerts and dead letters
    incidents = _offline(lines).incidents
    assert [i["status"] for i in incidents] == ["resolved"]  # the sample's one, resolved
    assert blocks == dict(_as_printed(i) for i in incidents)
    assert printed[-7].startswith("incident ")  # last: its heading and six lines
    assert "revision" not in outs[0] and "2026-01-01" not in outs[0]  # nor detected_at


def test_an_open_incident_is_printed_open_and_later_revisions_as_they_come() -> None:
    revisions = _incident_revisions(_offline(_sample()))
    opened = next(r for r in revisions if r["status"] == "open")
    out = io.StringIO()
    shown = Printout(TOPICS, out)
    shown.add(TOPICS["incidents"], opened)
    shown.print_all()
    assert _incident_blocks(out.getvalue()) == dict([_as_printed(opened)])
    # after the printout: a revision that only counts more prints nothing, the
    # resolution prints the block again
    out.seek(0)
    out.truncate()
    grown = [r for r in revisions if r["status"] == "open" and r["revision"] > 1]
    assert grown
    for record in grown:
        shown.add(TOPICS["incidents"], record)
    assert out.getvalue() == ""
    resolved = revisions[-1]
    assert resolved["status"] == "resolved"
    shown.add(TOPICS["incidents"], resolved)
    assert _incident_blocks(out.getvalue()) == dict([_as_printed(resolved)])


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
    # the incident the worker published, as the offline mode derives it
    incidents = _offline(_sample()).incidents
    assert _incident_blocks(one) == dict(_as_printed(i) for i in incidents)
    assert f"all {len(expected.alert_ids)} alerts and 1 incident of the sample" in err
