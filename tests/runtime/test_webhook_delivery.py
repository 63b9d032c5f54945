"""Webhook delivery against a real HTTP receiver and a real Kafka broker.

The receiver (aiohttp on 127.0.0.1) fails at random (503), answers slowly (past the client's
timeout, after having taken the record), asks for a pause (429 + Retry-After), rejects some
records for good (422), never accepts one key (503 until the notifier gives up), and is
restarted mid-run. Every record must be received or dead-lettered, each key's records must
arrive in the order they were produced, and every request's signature must verify.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import time
from collections import defaultdict
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession, web

from streams.core import webhooks
from streams.runtime.webhooks import Notifier, NotifyConfig

pytestmark = pytest.mark.integration

SECRET = b"test-webhook-secret"


class Receiver:
    """A webhook receiver that misbehaves in every way the notifier must survive."""

    def __init__(self, rng: random.Random, reject: set[str], stuck: set[str]) -> None:
        self.rng = rng
        self.reject = reject  # idempotency keys answered 422
        self.stuck = stuck  # record keys answered 503 forever
        self.accepted: dict[str, list[str]] = defaultdict(list)  # record key -> idem keys
        self.requests = 0
        self.bad_signatures = 0
        self.bad_keys = 0
        self.answers: dict[str, int] = defaultdict(int)
        self.paused: dict[str, float] = {}  # idempotency key -> when it was told 429
        self.pauses: list[float] = []  # seconds from a 429 to that record's next request
        self.runner: web.AppRunner | None = None
        self.port = 0

    @staticmethod
    def key_of(record: dict[str, Any]) -> str:
        if "action_id" in record:  # (an action has an incident_id field too)
            return str(record["order_id"])
        return f"{record['carrier']}:{record['channel']}"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests += 1
        if not webhooks.verify(request.headers.get(webhooks.SIGNATURE_HEADER, ""), body,
                               SECRET, tolerance=300):
            self.bad_signatures += 1
            return self._answer(401)
        record = orjson.loads(body)
        idem = request.headers.get(webhooks.IDEMPOTENCY_HEADER, "")
        if idem != webhooks.idempotency_key(record):
            self.bad_keys += 1
        key = self.key_of(record)
        if idem in self.reject:
            return self._answer(422)
        if key in self.stuck:
            return self._answer(503)
        asked = self.paused.pop(idem, None)
        if asked is not None:
            self.pauses.append(time.monotonic() - asked)
        draw = self.rng.random()
        if draw < 0.10:
            return self._answer(503)
        if draw < 0.17:
            self.paused[idem] = time.monotonic()
            return self._answer(429, {"Retry-After": "1"})
        self._take(key, idem)
        if draw < 0.22:
            await asyncio.sleep(1.5)  # past the client's 1 s timeout: it will send it again
        return self._answer(200)

    def _take(self, key: str, idem: str) -> None:
        seen = self.accepted[key]
        if not seen or seen[-1] != idem:  # a repeat of the last one is a retry, not news
            seen.append(idem)

    def _answer(self, status: int, headers: dict[str, str] | None = None) -> web.Response:
        self.answers[str(status)] += 1
        return web.Response(status=status, headers=headers)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        if not self.port:
            self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def received(self) -> set[str]:
        return {idem for seen in self.accepted.values() for idem in seen}


def action(order: str, kind: str, revision: int) -> dict[str, Any]:
    return {"action_id": webhooks_id(f"{order}|{kind}"), "action": kind,
            "status": "due" if revision % 2 else "cancelled", "revision": revision,
            "order_id": order, "seller_id": "S1", "label_id": f"L-{order}",
            "tracking_number": "9400100000000000000000", "carrier": "usps",
            "channel": "veeqo", "alert_ids": ["a"], "incident_id": None, "refund": None,
            "metrics": None, "message": None, "detected_at": "2025-02-24T10:00:00Z"}


def incident(channel: str, revision: int) -> dict[str, Any]:
    started = "2025-02-24T10:00:00Z"
    return {"incident_id": webhooks_id(f"usps|{channel}|{started}"), "carrier": "usps",
            "channel": channel, "status": "open", "revision": revision,
            "started_at": started, "ended_at": "2025-02-24T11:00:00Z", "resolved_at": None,
            "alerts": 10 + revision, "labels": 10, "sellers": 3, "orders": 10,
            "by_rule": {"previously_used": 10}, "refunds_owed": [], "windows": [],
            "sample": [], "actions": ["hold_label_sales"],
            "detected_at": "2025-02-24T10:00:00Z"}


def webhooks_id(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:32]


async def read_all(bootstrap: str, topic: str) -> list[Any]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        out: list[Any] = []
        while True:
            batch = await consumer.getmany(timeout_ms=300)
            if not batch:
                return out
            for records in batch.values():
                out.extend(records)
    finally:
        await consumer.stop()


async def test_every_record_is_delivered_in_order_or_dead_lettered(
        kafka_bootstrap: str, create_topic: Any) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    rng = random.Random(22)
    actions_topic = await create_topic("actions", 3)
    incidents_topic = await create_topic("incidents", 2)
    deadletter_topic = await create_topic("notify-dl", 1)

    # what is produced, per record key, in order: (topic, key, record or raw bytes)
    produced: list[tuple[str, str, bytes]] = []
    for n in range(24):
        order = f"O{n:03d}"
        for revision in (1, 2):
            for kind in ("refund_label", "notify_buyer"):
                produced.append((actions_topic, order,
                                 orjson.dumps(action(order, kind, revision))))
    for channel in ("veeqo", "buy_shipping", "ebay", ""):
        for revision in (1, 2, 3):
            produced.append((incidents_topic, f"usps:{channel}",
                             orjson.dumps(incident(channel, revision))))
    stuck_key = "O-STUCK"  # one revision: giving up takes give_up_after (10 s) each
    produced.append((actions_topic, stuck_key,
                     orjson.dumps(action(stuck_key, "refund_label", 1))))
    produced.append((actions_topic, "O-BAD", b'{"not": "a record"}'))
    reject = {webhooks.idempotency_key(orjson.loads(produced[i][2])) for i in (5, 17, 40)}

    receiver = Receiver(rng, reject, {stuck_key})
    await receiver.start()
    config = NotifyConfig(
        url=f"http://127.0.0.1:{receiver.port}/hook", secret=SECRET,
        topics=[actions_topic, incidents_topic], group=f"notify-test-{rng.random()}",
        deadletter_topic=deadletter_topic, kafka=kafka_bootstrap, concurrency=6,
        timeout=1.0, give_up_after=10.0, retry_base=0.1, max_retry_wait=1.0,
        commit_interval=0.3, web_port=_free_port())
    notifier = Notifier(config)
    stop = asyncio.Event()
    running = asyncio.ensure_future(notifier.run(stop))

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value in produced:
            await producer.send(topic, value, key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()

    expected = {webhooks.idempotency_key(orjson.loads(v)) for _, _, v in produced
                if v.startswith(b'{"action_id') or v.startswith(b'{"incident_id')}
    stuck = {webhooks.idempotency_key(orjson.loads(v)) for _, k, v in produced if k == stuck_key}
    try:
        # restart the receiver once a third has arrived: refused connections in between
        deadline = time.monotonic() + 120
        while len(receiver.received()) < len(expected) // 3:
            assert time.monotonic() < deadline, "the receiver got too little"
            assert not running.done(), running
            await asyncio.sleep(0.05)
        await receiver.stop()
        await asyncio.sleep(1.5)
        await receiver.start()

        letters: list[dict[str, Any]] = []
        while True:
            assert not running.done(), running
            letters = [orjson.loads(r.value) for r in
                       await read_all(kafka_bootstrap, deadletter_topic)]
            if len(receiver.received()) + len(letters) >= len(expected) + 1:
                break
            assert time.monotonic() < deadline, (
                f"received {len(receiver.received())}, dead letters {len(letters)} "
                f"of {len(expected) + 1}")
            await asyncio.sleep(0.5)

        # every record received or dead-lettered, none both, nothing else
        lettered = {d["idempotency_key"] for d in letters}
        assert receiver.received() | (lettered - {None}) == expected
        assert receiver.received() & lettered == set()
        assert lettered - {None} == reject | stuck
        by_code = {d["idempotency_key"]: d for d in letters}
        for idem in reject:
            assert by_code[idem]["error"]["code"] == "rejected"
            assert by_code[idem]["status"] == 422
        for idem in stuck:
            assert by_code[idem]["error"]["code"] == "gave_up"
            assert by_code[idem]["status"] == 503
            assert by_code[idem]["attempts"] >= 2
        bad = by_code[None]
        assert bad["error"]["code"] == "not_a_record"
        assert base64.b64decode(bad["value_b64"]) == b'{"not": "a record"}'

        # each key's records arrived in the order they were produced
        for key, seen in receiver.accepted.items():
            want = [webhooks.idempotency_key(orjson.loads(v)) for _, k, v in produced
                    if k == key]
            assert seen == [i for i in want if i in set(seen)], key

        # every request signed right, with the record's own key
        assert receiver.bad_signatures == 0 and receiver.bad_keys == 0
        # the receiver misbehaved in each way
        assert receiver.answers["503"] and receiver.answers["429"] and receiver.answers["422"]
        # Retry-After: 1 was honoured (the record waited that long before its next attempt)
        assert receiver.pauses and min(receiver.pauses) >= 0.95

        # offsets: committed up to the end of every partition once all is finished
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            for _ in range(50):
                committed = await admin.list_consumer_group_offsets(config.group)
                if sum(m.offset for m in committed.values()) == len(produced):
                    break
                await asyncio.sleep(0.2)
            assert sum(m.offset for m in committed.values()) == len(produced)
        finally:
            await admin.close()

        # the web views
        async with ClientSession() as http:
            base = f"http://127.0.0.1:{config.web_port}"
            async with http.get(f"{base}/health") as r:
                assert r.status == 200
            async with http.get(f"{base}/ready") as r:
                assert r.status == 200
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
        finished = _metric_sum(text, "tracking_validator_notify_deliveries_total")
        assert finished == len(produced)
        assert _metric_sum(text, "tracking_validator_notify_deliveries_total",
                           'outcome="dead_letter"') == len(letters)
        assert _metric_sum(text, "tracking_validator_notify_attempts_total",
                           'result="connection_error"') > 0 or receiver.answers["503"]
        assert _metric_sum(text, "tracking_validator_notify_lag") == 0
        assert "tracking_validator_notify_request_seconds_bucket" in text
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 30)
        await receiver.stop()


def _metric_sum(text: str, name: str, label: str = "") -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sample.labels.items())
            if sample.name == name and label in labels:
                total += sample.value
    return total


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_tls_is_verified_against_the_system_cas_or_the_ca_file(
        kafka_bootstrap: str, create_topic: Any, tmp_path: Any) -> None:
    """An https receiver with a throwaway CA: with --ca-file the record is delivered; with
    the system's CAs the certificate is refused, retried as a connection error, given up."""
    import ssl

    from streams.local.broker import make_tls_material

    make_tls_material(tmp_path, "127.0.0.1", "unused-password")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    got: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(request.headers[webhooks.IDEMPOTENCY_HEADER])
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/", hook)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls).start()
    url = f"https://127.0.0.1:{runner.addresses[0][1]}/"
    topic = await create_topic("actions", 1)
    try:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, orjson.dumps(action("O-TLS", "refund_label", 1)),
                                         key=b"O-TLS")
        finally:
            await producer.stop()

        for ca_file, group in ((str(tmp_path / "ca.pem"), "with-ca"), (None, "system-cas")):
            deadletters = await create_topic(f"dl-{group}", 1)
            notifier = Notifier(NotifyConfig(
                url=url, secret=SECRET, topics=[topic], group=f"tls-{group}-{time.time_ns()}",
                deadletter_topic=deadletters, kafka=kafka_bootstrap, timeout=2.0,
                give_up_after=1.5, retry_base=0.1, max_retry_wait=0.5, commit_interval=0.2,
                ca_file=ca_file))
            stop = asyncio.Event()
            task = asyncio.ensure_future(notifier.run(stop))
            try:
                deadline = time.monotonic() + 30
                letters: list[Any] = []
                while not (ca_file and got) and not letters:
                    assert time.monotonic() < deadline and not task.done()
                    await asyncio.sleep(0.2)
                    if ca_file is None:
                        letters = await read_all(kafka_bootstrap, deadletters)
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
            if ca_file:
                assert got == [webhooks.idempotency_key(action("O-TLS", "refund_label", 1))]
            else:
                letter = orjson.loads(letters[0].value)
                assert letter["error"]["code"] == "gave_up" and letter["status"] is None
                assert "certificate" in letter["error"]["message"].lower()
                assert len(got) == 1  # nothing reached the receiver without the CA
    finally:
        await runner.cleanup()


async def test_notifiers_of_one_group_share_the_partitions_through_rebalances(
        kafka_bootstrap: str, create_topic: Any) -> None:
    """A second notifier joins mid-run, then the first leaves: every revision arrives, each
    key's in order of first receipt, and both took a share."""
    topic = await create_topic("actions", 4)
    seen: dict[str, list[str]] = defaultdict(list)
    by_notifier: dict[str, set[str]] = defaultdict(set)

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        assert webhooks.verify(request.headers[webhooks.SIGNATURE_HEADER], body, SECRET)
        record = orjson.loads(body)
        await asyncio.sleep(0.1)  # slow: each notifier still has work when the other moves
        idem = request.headers[webhooks.IDEMPOTENCY_HEADER]
        if idem not in seen[record["order_id"]]:
            seen[record["order_id"]].append(idem)
        by_notifier[request.match_info["name"]].add(idem)
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/{name}", hook)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/"

    from aiokafka import AIOKafkaProducer

    produced: dict[str, list[str]] = defaultdict(list)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for revision in range(1, 7):
            for n in range(40):
                record = action(f"G{n:02d}", "notify_buyer", revision)
                produced[record["order_id"]].append(webhooks.idempotency_key(record))
                await producer.send(topic, orjson.dumps(record), key=record["order_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()
    total = sum(len(v) for v in produced.values())

    group = f"share-{time.time_ns()}"

    def notifier(name: str) -> Notifier:  # each posts to its own path: who sent what
        return Notifier(NotifyConfig(
            url=url + name, secret=SECRET, topics=[topic], group=group,
            deadletter_topic=f"{topic}-dl", kafka=kafka_bootstrap, concurrency=2,
            commit_interval=0.2))

    def received() -> int:
        return sum(len(v) for v in seen.values())

    async def until(count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while received() < count:
            assert time.monotonic() < deadline, received()
            await asyncio.sleep(0.05)

    first, second = notifier("a"), notifier("b")
    stops = [asyncio.Event(), asyncio.Event()]
    tasks: list[asyncio.Task[None]] = []
    try:
        tasks.append(asyncio.ensure_future(first.run(stops[0])))
        await until(total // 4)
        tasks.append(asyncio.ensure_future(second.run(stops[1])))
        deadline = time.monotonic() + 30
        while not (second.ready and second.consumer.assignment()):
            assert time.monotonic() < deadline, "the second notifier got no partitions"
            await asyncio.sleep(0.05)
        assert received() < total, "too fast: the first finished before the second joined"
        stops[0].set()  # the first leaves: its partitions go to the second
        await asyncio.wait_for(tasks[0], 30)
        await until(total, 90)
    finally:
        for stop in stops:
            stop.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
        await runner.cleanup()
    for order, want in produced.items():
        assert seen[order] == want, order
    assert by_notifier["a"] and by_notifier["b"]

