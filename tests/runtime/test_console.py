"""The console's server on a real broker: its snapshot, its server-sent events, its token, and
what it says when it loses the broker and when the broker is back."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession, ClientTimeout, CookieJar

from streams.runtime.console import Console, ConsoleConfig

pytestmark = pytest.mark.integration


def alert(n: int, revision: int = 1, status: str = "open", **extra: Any) -> dict[str, Any]:
    record = {"alert_id": f"alert-{n}", "rule": "previously_used", "severity": "critical",
              "label_id": f"L{n}", "seller_id": f"S{n % 3}", "order_id": f"O{n}",
              "tracking_number": f"9400{n:018d}", "carrier": "usps",
              "event_time": "2025-02-24T10:00:00Z",
              "detected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "labels": [{"label_id": f"L{n}", "seller_id": f"S{n % 3}", "order_id": f"O{n}",
                          "channel": "veeqo", "purchased_at": "2025-02-24T10:00:00Z",
                          "cost": {"amount": "5.10", "currency": "USD"}}],
              "evidence": {"scans": [{"status": "delivered", "postal_code": "60808"}]},
              "actions": ["refund_label"], "status": status, "revision": revision}
    record.update(extra)
    return record


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


@contextlib.asynccontextmanager
async def running(config: ConsoleConfig) -> AsyncIterator[Console]:
    console = Console(config)
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.ensure_future(console.run(stop, started))
    waiting = asyncio.ensure_future(started.wait())
    await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiting.cancel()
        await task
    try:
        yield console
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def events(session: ClientSession, url: str) -> AsyncIterator[dict[str, Any]]:
    """The `state` events of the console's stream, parsed."""
    async with session.get(url, timeout=ClientTimeout(total=None, sock_read=30)) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        kind, data = "", b""
        async for line in response.content:
            line = line.rstrip(b"\r\n")
            if line.startswith(b"event: "):
                kind = line[7:].decode()
            elif line.startswith(b"data: "):
                data += line[6:]
            elif not line and data:
                if kind == "state":
                    yield orjson.loads(data)
                kind, data = "", b""


async def test_snapshot_and_live_events_follow_the_topics(
        kafka_bootstrap: str, create_topic: Any) -> None:
    topics = {"alert": await create_topic("alerts", 2),
              "incident": await create_topic("incidents", 1),
              "action": await create_topic("actions", 1)}
    await produce(kafka_bootstrap, topics["alert"], [alert(n) for n in range(5)])
    await produce(kafka_bootstrap, topics["action"], [
        {"action_id": "x1", "action": "refund_label", "status": "due", "revision": 1},
        {"action_id": "x1", "action": "refund_label", "status": "cancelled", "revision": 2},
        {"action_id": "x2", "action": "notify_buyer", "status": "due", "revision": 1}])
    config = ConsoleConfig(kafka=kafka_bootstrap, port=0, topics=topics)
    async with running(config) as console, ClientSession() as http:
        stream = events(http, f"{console.url}/events?rule=previously_used")
        state = await anext(stream)
        deadline = time.monotonic() + 20
        while len(state["alerts"]) < 5 or not state["actions"]:
            assert time.monotonic() < deadline, state
            state = await anext(stream)
        assert state["broker"]["connected"] is True
        assert state["actions"] == {"notify_buyer": {"due": 1, "cancelled": 0},
                                    "refund_label": {"due": 0, "cancelled": 1}}
        assert sum(state["chart"]["counts"]["previously_used"]) == 5

        # a new record reaches an open stream by itself, within a couple of seconds
        produced = time.monotonic()
        await produce(kafka_bootstrap, topics["incident"], [{
            "incident_id": "inc-1", "carrier": "usps", "channel": "veeqo", "status": "open",
            "revision": 1, "started_at": "2025-02-24T10:00:00Z",
            "ended_at": "2025-02-24T11:00:00Z", "resolved_at": None, "alerts": 10,
            "labels": 10, "sellers": 3, "orders": 10, "by_rule": {"previously_used": 10},
            "refunds_owed": [{"currency": "USD", "amount": "51.00"}],
            "windows": [{"start": "2025-02-24T10:00:00Z", "alerts": 10, "sellers": 3}],
            "sample": [], "actions": ["hold_label_sales"], "detected_at": "x"}])
        while not state["incidents"]:
            state = await asyncio.wait_for(anext(stream), 10)
        print(f"incident on the stream {time.monotonic() - produced:.2f}s after producing it")
        assert state["incidents"][0]["incident_id"] == "inc-1"
        assert state["incidents"][0]["hourly"] == [["2025-02-24T10:00:00Z", 10]]

        # the filter in the stream's URL applies; /api/state answers the same
        async with http.get(f"{console.url}/api/state?seller=S1") as response:
            filtered = await response.json()
        assert {a["seller_id"] for a in filtered["alerts"]} == {"S1"}
        async with http.get(f"{console.url}/") as response:
            page = await response.text()
        # one page, nothing fetched from elsewhere: no script, style or image by URL
        assert "EventSource" in page
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
        assert "@import" not in page


async def test_a_token_guards_everything_but_health(
        kafka_bootstrap: str, create_topic: Any) -> None:
    topics = {"alert": await create_topic("alerts", 1), "incident": "absent-incidents",
              "action": "absent-actions"}
    config = ConsoleConfig(kafka=kafka_bootstrap, port=0, topics=topics, token="s3cret")
    # unsafe: keep cookies of an IP address (127.0.0.1), as a browser does
    async with running(config) as console, ClientSession(
            cookie_jar=CookieJar(unsafe=True)) as http:
        for path in ("/", "/api/state", "/events"):
            async with http.get(console.url + path) as response:
                assert response.status == 401, path
        async with http.get(console.url + "/health") as response:
            assert response.status == 200
        headers = {"Authorization": "Bearer s3cret"}
        async with http.get(console.url + "/api/state", headers=headers) as response:
            assert response.status == 200
        async with http.get(console.url + "/api/state",
                            headers={"Authorization": "Bearer nope"}) as response:
            assert response.status == 401
        # a browser: ?token= once sets a cookie, then the page and its stream load with it
        async with http.get(console.url + "/?token=s3cret") as response:
            assert response.status == 200 and "EventSource" in await response.text()
            assert "token" not in str(response.url)
        async with http.get(console.url + "/api/state") as response:
            assert response.status == 200


async def test_it_says_when_it_loses_the_broker_and_when_it_is_back(tmp_path: Path) -> None:
    from streams.local.broker import LocalBroker
    from streams.runtime.kafka_io import ensure_topics

    broker = LocalBroker(data_dir=tmp_path / "kafka").start()
    port, controller = broker.port, broker.controller_port
    try:
        bootstrap = broker.bootstrap_servers
        await ensure_topics(bootstrap, ["tracking.alerts"], 1)
        await produce(bootstrap, "tracking.alerts", [alert(1)])
        async with running(ConsoleConfig(kafka=bootstrap, port=0)) as console, \
                ClientSession() as http:

            async def state() -> dict[str, Any]:
                async with http.get(console.url + "/api/state") as response:
                    return dict(await response.json())

            async def until(check: Any, timeout: float) -> dict[str, Any]:
                deadline = time.monotonic() + timeout
                while True:
                    now = await state()
                    if check(now):
                        return now
                    assert time.monotonic() < deadline, now
                    await asyncio.sleep(0.25)

            await until(lambda s: len(s["alerts"]) == 1 and s["broker"]["connected"], 20)
            broker.stop()
            lost = await until(lambda s: not s["broker"]["connected"], 20)
            assert lost["broker"]["lost_at"] and lost["broker"]["error"]
            assert len(lost["alerts"]) == 1  # the view stays, as of then

            broker = LocalBroker(data_dir=tmp_path / "kafka", port=port,
                                 controller_port=controller).start()
            back = await until(lambda s: s["broker"]["connected"], 60)
            assert back["broker"]["back_at"]
            await produce(bootstrap, "tracking.alerts", [alert(2)])
            await until(lambda s: len(s["alerts"]) == 2, 30)  # and it reads again
    finally:
        broker.stop()


async def test_from_skips_records_published_before_it(
        kafka_bootstrap: str, create_topic: Any) -> None:
    from datetime import UTC, datetime

    topic = await create_topic("alerts", 1)
    await produce(kafka_bootstrap, topic, [alert(1, event_time="2025-01-01T00:00:00Z")])
    await asyncio.sleep(1.1)
    since = datetime.now(UTC)
    await asyncio.sleep(0.1)
    # published after --from, and its event time too: shown
    await produce(kafka_bootstrap, topic, [alert(2, event_time="2099-01-01T00:00:00Z")])
    config = ConsoleConfig(kafka=kafka_bootstrap, port=0, since=since,
                           topics={"alert": topic, "incident": "none-i", "action": "none-a"})
    async with running(config) as console, ClientSession() as http:
        deadline = time.monotonic() + 15
        while True:
            async with http.get(console.url + "/api/state") as response:
                state = await response.json()
            if state["alerts"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert [a["alert_id"] for a in state["alerts"]] == ["alert-2"]
        assert state["records"] == 1  # the earlier record was never read
