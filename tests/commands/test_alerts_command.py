"""`tracking-validator alerts`: the demo's lines from a real topic, filters, --follow."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any

import orjson
import pytest

from streams.commands.demo import format_alert

pytestmark = pytest.mark.integration


def alert(n: int, *, rule: str = "previously_used", seller: str = "S1", carrier: str = "usps",
          event_time: str = "2025-02-24T10:00:00Z", revision: int = 1) -> dict[str, Any]:
    return {"alert_id": f"al-{n}", "rule": rule, "severity": "critical", "label_id": f"L{n}",
            "seller_id": seller, "order_id": f"O{n}", "tracking_number": f"9400{n:018d}",
            "carrier": carrier, "event_time": event_time,
            "detected_at": "2025-02-24T10:00:01Z", "labels": [],
            "evidence": {"scans": [{"status": "delivered", "occurred_at": "2025-01-02T00:00:00Z",
                                    "postal_code": "60808"}]},
            "actions": [], "status": "open", "revision": revision}


async def produce(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for record in records:
            await producer.send(topic, orjson.dumps(record))
        await producer.flush()
    finally:
        await producer.stop()


def command(bootstrap: str, topic: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "streams", "alerts", "--bootstrap", bootstrap,
            "--alerts-topic", topic, *args]


async def test_prints_the_demos_lines_filtered(kafka_bootstrap: str, create_topic: Any) -> None:
    topic = await create_topic("alerts", 2)
    records = [alert(1), alert(2, rule="duplicate_tracking", seller="S2"),
               alert(3, carrier="ups", event_time="2025-01-01T00:00:00Z"), alert(1)]
    await produce(kafka_bootstrap, topic, records)  # the last: a repeat, printed once

    def run(*args: str) -> list[str]:
        done = subprocess.run(command(kafka_bootstrap, topic, *args), capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    assert sorted(run()) == sorted(format_alert(a) for a in records[:3])
    assert run("--rule", "duplicate_tracking") == [format_alert(records[1])]
    assert run("--carrier", "ups") == [format_alert(records[2])]
    assert sorted(run("--seller", "S1", "--from", "2025-02-01")) == [format_alert(records[0])]
    assert [orjson.loads(line) for line in run("--format", "json", "--seller", "S2")] == [
        records[1]]


async def test_follow_prints_new_alerts_as_they_arrive(
        kafka_bootstrap: str, create_topic: Any) -> None:
    topic = await create_topic("alerts", 1)
    await produce(kafka_bootstrap, topic, [alert(1)])  # history: not printed without --from
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(command(kafka_bootstrap, topic, "--follow", "--rule",
                                       "previously_used"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    try:
        # it says when it follows (from the end it found): only then is a record "new"
        said = await asyncio.to_thread(process.stderr.readline)  # type: ignore[union-attr]
        assert said.startswith(f"alerts: following {topic}"), said
        fresh = [alert(2, rule="duplicate_tracking"), alert(3), alert(3, revision=2)]
        await produce(kafka_bootstrap, topic, fresh)
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while len(lines) < 2 and time.monotonic() < deadline:
            line = await asyncio.to_thread(process.stdout.readline)  # type: ignore[union-attr]
            if not line:
                break
            lines.append(line.rstrip("\n"))
        assert lines == [format_alert(fresh[1]), format_alert(fresh[2])]
        assert "revised (revision 2)" in lines[1]
    finally:
        process.send_signal(signal.SIGTERM)
        rc = process.wait(timeout=30)
    assert rc == 0
