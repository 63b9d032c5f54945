"""The stall watchdog: its rule (flat committed offset + lag + no work, for stall_seconds),
and a real stall of a partition of a real worker: re-seeked, logged once at ERROR, /ready
503 meanwhile.

Run as a script, this file is that worker (`tracking-validator worker`'s flags) with a stall
injected on request (`inject_stall`).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from streams.runtime.watchdog import Watchdog

REPO = Path(__file__).resolve().parents[2]


def test_a_flat_partition_with_lag_and_no_work_is_stalled_once() -> None:
    dog = Watchdog(stall_seconds=30)
    assert not dog.observe("p0", 100, 500, last_work=0, now=0)
    assert not dog.observe("p0", 100, 500, last_work=0, now=29)
    assert dog.observe("p0", 100, 500, last_work=0, now=31)  # alarm: recover it
    assert dog.stalled == {"p0"}
    assert not dog.observe("p0", 100, 500, last_work=0, now=40)  # said once
    assert not dog.observe("p0", 120, 500, last_work=41, now=45)  # advancing again
    assert dog.stalled == set()


def test_caught_up_busy_or_advancing_partitions_are_not_stalled() -> None:
    dog = Watchdog(stall_seconds=30)
    dog.observe("idle", 500, 500, last_work=None, now=0)
    assert not dog.observe("idle", 500, 500, last_work=None, now=100)  # no lag
    dog.observe("busy", 100, 900, last_work=0, now=0)
    assert not dog.observe("busy", 100, 900, last_work=95, now=100)  # a long frame, working
    for t in range(0, 100, 10):
        assert not dog.observe("moving", 100 + t, 900, last_work=None, now=t)


def test_forget_drops_partitions_no_longer_assigned() -> None:
    dog = Watchdog(stall_seconds=1)
    dog.observe("a", 1, 5, None, 0)
    assert dog.observe("a", 1, 5, None, 2)
    dog.forget(set())
    assert dog.stalled == set()
    assert not dog.observe("a", 1, 5, None, 3)  # starts over


def test_a_worker_is_not_ready_before_recovery_or_without_partitions(tmp_path: object) -> None:
    from streams.runtime.app import build_app
    from streams.runtime.stream_config import StreamConfig

    app = build_app(StreamConfig(app_id="ready-unit", store="memory://",
                                 state_dir=tmp_path))  # type: ignore[arg-type]
    readiness = app.tracking["readiness"]
    assert readiness() == "table recovery in progress"
    app.tables.recovery.completed.set()
    assert readiness() == "no partitions assigned"


# ---------------------------------------------------------------- a real stall


def inject_stall(app: Any) -> None:
    """In the worker's process (the script's `serve(on_built=...)`): once the file
    $TV_STALL_GO exists, the records of the worker's first internal partition are dropped by
    the transport's seek guard (faust_transport, fix 2) as if a seek to an offset that never
    comes had just been made: the fetch position moves past records that are never processed,
    acked or committed. That is the seek race's stall, which the guard itself gives up on
    after 60 s; here it never does, so only the watchdog's re-seek can end it."""
    import logging

    go = Path(os.environ["TV_STALL_GO"])
    internal = app.tracking["config"].internal_topic_name

    @app.task
    async def stall() -> None:
        while not go.exists():
            await asyncio.sleep(0.1)
        consumer = app.consumer
        tp = min(tp for tp in consumer.assignment() if tp.topic == internal)
        consumer.seek_guard.seconds = float("inf")
        consumer.seek_guard.seeked(tp, 1 << 62)
        logging.getLogger("stall_injection").warning("stall injected: %s/%d", tp.topic,
                                                     tp.partition)


class StallingWorker:
    """This file run as a script: the worker with `inject_stall`; SIGTERM stops it."""

    def __init__(self, args: list[str], log: Path, go: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "TV_STALL_GO": str(go)}
        with open(log, "ab") as out:
            self.process = subprocess.Popen([sys.executable, __file__, *args],
                                            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                            env=env, start_new_session=True)

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(timeout=10)


def ready(url: str) -> tuple[int, str]:
    """/ready's status and reason ("" when ready); (0, why) when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()).get("reason", "")
    except OSError as exc:
        return 0, str(exc)


def json_log(path: Path) -> list[dict[str, Any]]:
    """The worker's log lines (--log-format json) written so far; the last one only once its
    newline is out."""
    complete = path.read_text().split("\n")[:-1]
    return [json.loads(line) for line in complete if line.startswith("{")]


async def wait_log(path: Path, worker: StallingWorker, pattern: str,
                   timeout: float) -> dict[str, Any]:
    """The first JSON log line whose message matches `pattern`."""
    deadline = time.monotonic() + timeout
    while True:
        for line in json_log(path):
            if re.search(pattern, line["message"]):
                return line
        assert worker.poll() is None, f"worker exited {worker.poll()}; log {path}"
        assert time.monotonic() < deadline, f"no log line {pattern!r} in {timeout}s; log {path}"
        await asyncio.sleep(0.1)


STALL_SECONDS = 6.0  # the watchdog then checks every 2 s: /ready is 503 for about that long


@pytest.mark.integration
async def test_a_stalled_partition_is_reseeked_logged_once_and_not_ready_meanwhile(
    kafka_bootstrap: str, tmp_path: Path,
) -> None:
    from test_outage import split_by_topic
    from test_recovery import workload
    from test_worker_integration import (
        PARTITIONS,
        alerts_of,
        assert_same_alerts,
        new_pipeline,
        offline_standing,
        produce,
        standing_of,
        wait_idle,
        wait_topics,
    )

    from streams.runtime.internal_topic import partition_for

    port = free_port()
    p = new_pipeline(kafka_bootstrap, tmp_path, "stall", extra_args=[
        "--web-host", "127.0.0.1", "--web-port", str(port), "--log-format", "json",
        "--stall-seconds", str(STALL_SECONDS)])
    url = f"http://127.0.0.1:{port}/ready"
    go = tmp_path / "go"
    messages = workload(random.Random(11), 120)

    answers: list[tuple[int, str]] = []  # /ready's answers, in order, every 50 ms

    async def watch_ready(stop: asyncio.Event) -> None:
        while not stop.is_set():
            answer = await asyncio.to_thread(ready, url)
            if not answers or answers[-1] != answer:
                answers.append(answer)
            await asyncio.sleep(0.05)

    worker = StallingWorker(p.worker_args(), p.log, go)
    p.worker = worker  # type: ignore[assignment]  # wait_idle polls it
    stop = asyncio.Event()
    watcher = asyncio.ensure_future(watch_ready(stop))
    try:
        await wait_topics(kafka_bootstrap, [*p.topics.values(), p.internal_topic])
        deadline = time.monotonic() + 120
        while (200, "") not in answers:
            assert worker.poll() is None and time.monotonic() < deadline, f"log {p.log}"
            await asyncio.sleep(0.1)
        since = len(answers) - 1  # from the last answer before the stall: 200
        go.touch()
        injected = await wait_log(p.log, worker, r"^stall injected: ", 60)
        stalled_tp = injected["message"].split(": ", 1)[1]
        labels, scans = split_by_topic(messages)
        await produce(kafka_bootstrap, p.topics["labels"], labels, key=b"k")
        await produce(kafka_bootstrap, p.topics["scans"], scans, key=b"k")
        alarm = await wait_log(p.log, worker, r"stalled at offset", 120 + STALL_SECONDS)
        await wait_idle(p, timeout=180)  # every record of every partition committed
        deadline = time.monotonic() + 60
        while answers[-1] != (200, ""):
            assert time.monotonic() < deadline, f"not ready again: {answers}; log {p.log}"
            await asyncio.sleep(0.1)
        alerts = await alerts_of(p)
    finally:
        stop.set()
        await watcher
        rc = worker.stop()
    assert rc == 0, f"log {p.log}"

    # re-seeked: the partition had lag when it stalled, and every record was processed
    found = re.search(r"partition (\S+) stalled at offset (\d+) with lag \(highwater (\d+)\)",
                      alarm["message"])
    assert found, alarm
    assert found[1] == stalled_tp
    committed, highwater = int(found[2]), int(found[3])
    assert highwater > committed, alarm
    assert_same_alerts(standing_of(alerts), offline_standing(messages))
    # the stalled partition's alerts came only after the re-seek
    partition = stalled_tp.rsplit("/", 1)[1]
    alarm_time = datetime.fromisoformat(alarm["time"])
    on_it = [a for a in alerts
             if partition_for(f"{a['carrier']}:{a['tracking_number']}".encode(), PARTITIONS)
             == int(partition)]
    assert on_it, "no alert about the stalled partition's numbers: grow the workload"
    assert all(datetime.fromisoformat(a["detected_at"]) >= alarm_time for a in on_it)
    # logged once, at ERROR
    lines = [line for line in json_log(p.log) if "stalled" in line["message"]]
    assert [(line["level"], line["message"]) for line in lines] == [
        ("ERROR", alarm["message"])]
    # /ready: 200, then 503 naming the stalled partition while it lasted, then 200 again
    # (an answer that timed out on the loaded machine, status 0, says nothing either way)
    seen = [answer for answer in answers[since:] if answer[0] != 0]
    seen = [a for i, a in enumerate(seen) if i == 0 or seen[i - 1] != a]
    assert seen == [(200, ""), (503, f"stalled partitions: {stalled_tp}"), (200, "")], answers


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":  # the worker of the test above
    import argparse

    from streams.commands import worker as worker_command

    parser = argparse.ArgumentParser()
    worker_command.configure(parser)
    args = parser.parse_args()
    sys.exit(worker_command.serve(worker_command.config_from_args(args), args.loglevel,
                                  on_built=inject_stall))
