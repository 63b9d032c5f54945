"""`tracking-validator notify`: usage errors exit 2 with a reason, before any Kafka is asked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streams.commands.cli import build_parser
from streams.commands.notify import _topics


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams", "notify", *args],
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture
def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("TRACKING_VALIDATOR_WEBHOOK_SECRET", "TRACKING_VALIDATOR_WEBHOOK_URL")}
    clean["KAFKA_BOOTSTRAP_SERVERS"] = "127.0.0.1:1"  # never reached: usage is checked first
    return clean


def test_no_secret_is_a_usage_error(env: dict[str, str]) -> None:
    done = run(["--url", "https://example.test/hook"], env)
    assert done.returncode == 2
    assert "TRACKING_VALIDATOR_WEBHOOK_SECRET" in done.stderr


def test_a_url_must_be_http_or_https(env: dict[str, str]) -> None:
    env["TRACKING_VALIDATOR_WEBHOOK_SECRET"] = "s"
    done = run(["--url", "ftp://example.test/hook"], env)
    assert done.returncode == 2 and "--url" in done.stderr


def test_topics_default_to_actions_and_incidents_and_take_commas_or_repeats() -> None:
    assert _topics(None) == ["tracking.actions", "tracking.incidents"]
    assert _topics(["tracking.actions,tracking.alerts", "tracking.alerts"]) == [
        "tracking.actions", "tracking.alerts"]
    args = build_parser().parse_args(["notify", "--give-up-after", "90m", "--timeout", "5s"])
    assert args.give_up_after == 5400.0 and args.timeout == 5.0


@pytest.mark.integration
async def test_a_killed_notifier_skips_nothing(kafka_bootstrap: str, create_topic: Any,
                                               tmp_path: Path) -> None:
    """SIGKILL mid-run, then a new notifier of the same group: every record arrives (at least
    once: offsets were committed only past delivered records), each key's in order."""
    import asyncio
    import time

    import orjson
    from aiohttp import web
    from aiokafka import AIOKafkaProducer

    from streams.core import webhooks

    topic = await create_topic("actions", 2)
    secret = b"kill-test-secret"
    got: dict[str, list[int]] = {}
    bad = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal bad
        body = await request.read()
        if not webhooks.verify(request.headers.get(webhooks.SIGNATURE_HEADER, ""), body,
                               secret):
            bad += 1
            return web.Response(status=401)
        record = orjson.loads(body)
        await asyncio.sleep(0.05)  # slow enough to be killed mid-run
        seen = got.setdefault(record["order_id"], [])
        if not seen or seen[-1] != record["revision"]:
            seen.append(record["revision"])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/", hook)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/"

    orders, revisions = 20, 5
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for revision in range(1, revisions + 1):
            for n in range(orders):
                record = {"action_id": f"act-{n}", "action": "refund_label", "status": "due",
                          "revision": revision, "order_id": f"O{n}"}
                await producer.send(topic, orjson.dumps(record), key=f"O{n}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    env = dict(os.environ, TRACKING_VALIDATOR_WEBHOOK_SECRET=secret.decode())
    args = [sys.executable, "-m", "streams", "notify", "--url", url, "--topics", topic,
            "--group", f"kill-test-{time.time_ns()}", "--bootstrap", kafka_bootstrap,
            "--deadletter-topic", f"{topic}-dl", "--concurrency", "4"]
    total = orders * revisions

    def received() -> int:  # distinct revisions: a repeat after the kill is not news
        return sum(len(set(v)) for v in got.values())

    try:
        log = (tmp_path / "notify.log").open("wb")
        first = subprocess.Popen(args, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while received() < total // 3:
            assert first.poll() is None and time.monotonic() < deadline, (
                tmp_path / "notify.log").read_text()
            await asyncio.sleep(0.05)
        first.kill()
        first.wait(timeout=10)
        at_kill = received()
        assert at_kill < total
        second = subprocess.Popen(args, env=env, stdout=log, stderr=log)
        try:
            while received() < total:
                assert second.poll() is None and time.monotonic() < deadline + 60, (
                    tmp_path / "notify.log").read_text()
                await asyncio.sleep(0.1)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=30) == 0
    finally:
        await runner.cleanup()
    assert bad == 0
    # each key's revisions in order: a redelivery after the kill repeats a suffix, never skips
    for order, seen in got.items():
        firsts = list(dict.fromkeys(seen))
        assert firsts == list(range(1, revisions + 1)), (order, seen)
