"""The worker end to end through a real broker: exact alerts and dead letters.

One `tracking-validator worker` subprocess serves the module (its own app id and topic
names, so other tests and runs never interfere). Each test uses its own tracking numbers,
feeds messages, waits until the worker's consumer group has committed everything (offsets
are committed only after the producer flushed, so the outputs are then on the broker), and
compares the EXACT set of (rule, tracking number, label_id, severity) of the alerts about its
numbers, and the exact (code, source topic, partition, offset) of the dead letters.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.commands.demo import WorkerProcess
from streams.core.revisions import standing
from streams.tools.samples import (
    carrier_scan,
    journey,
    label_purchased,
    label_voided,
    spaced,
    usps_number,
    wrong_check_digit,
)

pytestmark = pytest.mark.integration

MAX_BYTES = 4096  # the worker's --max-message-bytes: a 5 KB message is `too_large`
PARTITIONS = 3


# ---------------------------------------------------------------- harness (also used by
# tests/runtime/test_recovery.py)


@dataclass
class Pipeline:
    bootstrap: str
    app_id: str
    topics: dict[str, str]
    state_dir: Path
    log: Path
    worker: WorkerProcess | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def internal_topic(self) -> str:
        return f"{self.app_id}-tracking-events"

    def worker_args(self) -> list[str]:
        return [
            "--bootstrap", self.bootstrap,
            "--app-id", self.app_id,
            "--state-dir", str(self.state_dir),
            "--partitions", str(PARTITIONS),
            "--labels-topic", self.topics["labels"],
            "--scans-topic", self.topics["scans"],
            "--alerts-topic", self.topics["alerts"],
            "--deadletter-topic", self.topics["deadletter"],
            "--commit-interval", "0.2",
            "--session-timeout", "6",
            "--loglevel", "info",
            *self.extra_args,
        ]

    def start(self) -> WorkerProcess:
        self.worker = WorkerProcess(self.worker_args(), log=self.log).start()
        return self.worker


def new_pipeline(bootstrap: str, tmp: Path, prefix: str, **kw: Any) -> Pipeline:
    run = f"{prefix}-{uuid.uuid4().hex[:10]}"
    topics = {
        "labels": f"{run}.labels",
        "scans": f"{run}.scans",
        "alerts": f"{run}.alerts",
        "deadletter": f"{run}.deadletter",
    }
    return Pipeline(bootstrap, run, topics, tmp / "state", tmp / "worker.log", **kw)


async def wait_topics(bootstrap: str, topics: Iterable[str], timeout: float = 60.0) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    from streams.commands.demo import _have_leaders

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while not await _have_leaders(admin, list(topics)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {list(topics)} not ready")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def produce(
    bootstrap: str, topic: str, values: Iterable[bytes | dict[str, Any]],
    key: bytes | None = None,
) -> list[tuple[int, int]]:
    """Send in order (one partition when keyed); returns each record's (partition, offset)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=2, max_request_size=4 << 20
    )
    await producer.start()
    try:
        futures = []
        for value in values:
            raw = value if isinstance(value, bytes) else orjson.dumps(value)
            futures.append(await producer.send(topic, raw, key=key))
        return [(md.partition, md.offset) for md in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


async def committed_lag(bootstrap: str, group: str, topics: list[str]) -> int:
    """Offsets of `topics` not yet committed by `group` (end offset minus committed); -1
    while a topic is missing."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        tps = [
            TopicPartition(d["topic"], part["partition"])
            for d in await admin.describe_topics(topics)
            for part in d["partitions"]
        ]
        if len({tp.topic for tp in tps}) != len(topics):
            return -1  # not all created yet: not idle
        end = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group)
        lag = 0
        for tp in tps:
            done = committed.get(tp)
            lag += max(end[tp] - (done.offset if done is not None and done.offset >= 0 else 0),
                       0)
        return lag
    finally:
        await consumer.stop()
        await admin.close()


async def _lag(p: Pipeline, group: str, topics: list[str]) -> int:
    from aiokafka.errors import KafkaError

    try:
        return await committed_lag(p.bootstrap, group, topics)
    except KafkaError:  # e.g. the group coordinator of a fresh broker is not ready yet
        return -1


async def pipeline_lag(p: Pipeline) -> int:
    """Uncommitted records: the inputs in ingest's group (`<app_id>-ingest`), the internal
    topic in the stateful stage's (`<app_id>`); -1 while unknown."""
    inputs = await _lag(p, f"{p.app_id}-ingest", [p.topics["labels"], p.topics["scans"]])
    internal = await _lag(p, p.app_id, [p.internal_topic])
    return -1 if -1 in (inputs, internal) else inputs + internal


async def wait_serving(p: Pipeline, timeout: float = 120.0) -> None:
    """Until the worker started last has taken its input partitions (a SIGTERM before it
    installs its handlers ends it with -15, as any process)."""
    assert p.worker is not None
    deadline = time.monotonic() + timeout
    while "ingest assigned partitions" not in p.log.read_text(errors="replace").split(
            "Signal received")[-1]:
        if p.worker.poll() is not None:
            raise AssertionError(f"worker exited with {p.worker.poll()}; log: {p.log}")
        assert time.monotonic() < deadline, f"worker not serving in {timeout}s; log: {p.log}"
        await asyncio.sleep(0.2)


async def wait_idle(p: Pipeline, timeout: float = 90.0) -> None:
    """Until the worker committed every input and internal-topic record."""
    deadline = time.monotonic() + timeout
    while True:
        if p.worker is not None and p.worker.poll() is not None:
            raise AssertionError(f"worker exited with {p.worker.poll()}; log: {p.log}")
        # the internal topic's records appear only before the inputs are committed, so a
        # zero lag on all three, twice in a row, means everything was processed
        if await pipeline_lag(p) == 0:
            await asyncio.sleep(0.3)
            if await pipeline_lag(p) == 0:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker did not catch up in {timeout}s; log: {p.log}")
        await asyncio.sleep(0.2)


async def read_all(bootstrap: str, topic: str) -> list[Any]:
    from streams.runtime.kafka_io import read_to_end

    return [record async for record in read_to_end(bootstrap, [topic])]


async def alerts_of(p: Pipeline) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in await read_all(p.bootstrap, p.topics["alerts"])]


Standing = dict[str, dict[str, Any]]  # alert_id -> the open alert, as `standing` gives it


def standing_of(alerts: Iterable[dict[str, Any]], numbers: set[str] | None = None) -> Standing:
    """The alerts that stand (highest revision of each alert_id, retracted ones dropped),
    every field but `detected_at` and `revision` (`streams.core.revisions.standing`), about
    `numbers` (all when None). A revision published twice (at least once) must be the same
    publication, field for field but `detected_at`."""
    alerts = list(alerts)
    publications: dict[tuple[str, int], dict[str, Any]] = {}
    for a in alerts:
        body = {k: v for k, v in a.items() if k != "detected_at"}
        assert publications.setdefault((a["alert_id"], a["revision"]), body) == body, (
            f"two publications of revision {a['revision']} of {a['alert_id']}")
    return {k: a for k, a in standing(alerts).items()
            if numbers is None or a["tracking_number"] in numbers}


def offline_standing(messages: Iterable[dict[str, Any] | bytes],
                     numbers: set[str] | None = None) -> Standing:
    """What the offline mode (event-time order) makes of the same messages."""
    from streams.tools.offline import Processor

    alerts: list[dict[str, Any]] = []
    proc = Processor(alerts.append, lambda d: None)
    for i, m in enumerate(messages):
        proc.feed(m if isinstance(m, bytes) else orjson.dumps(m), source="x", partition=0,
                  offset=i)
    proc.finish()
    return standing_of(alerts, numbers)


def assert_same_alerts(got: Standing, expected: Standing) -> None:
    """Field for field, with the differences named: missing, extra and differing alerts."""
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    differ = {k: {f: (got[k].get(f), v) for f, v in expected[k].items() if got[k].get(f) != v}
              for k in set(got) & set(expected) if got[k] != expected[k]}
    assert not missing and not extra and not differ, (
        f"missing {[expected[k]['rule'] + ':' + expected[k]['label_id'] for k in missing]}; "
        f"extra {[got[k]['rule'] + ':' + got[k]['label_id'] for k in extra]}; "
        f"{len(differ)} differ (got, offline): {dict(list(differ.items())[:5])}")


def summary(alerts: Standing) -> set[tuple[str, ...]]:
    """What each standing alert is about, for the tests' hand-written expectations."""
    return {(a["rule"], a["tracking_number"], a["label_id"], a["severity"])
            for a in alerts.values()}


async def assert_offline(p: Pipeline, messages: list[dict[str, Any]],
                         numbers: set[str]) -> set[tuple[str, ...]]:
    """The worker's standing alerts about `numbers` are the offline mode's over the same
    messages, field for field; returns their summary."""
    got = standing_of(await alerts_of(p), numbers)
    assert_same_alerts(got, offline_standing(messages, numbers))
    return summary(got)


# ---------------------------------------------------------------- the module's worker


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str) -> Iterator[Pipeline]:
    tmp = Path(tempfile.mkdtemp(prefix="tv-it-"))
    p = new_pipeline(
        kafka_bootstrap, tmp, "it", extra_args=["--max-message-bytes", str(MAX_BYTES)]
    )
    p.start()
    try:
        asyncio.run(wait_topics(kafka_bootstrap, [*p.topics.values(), p.internal_topic]))
        yield p
    finally:
        rc = p.worker.stop() if p.worker else None
    assert rc == 0, f"worker exit code {rc}; log kept: {p.log}"
    shutil.rmtree(tmp, ignore_errors=True)


RNG = random.Random(os.getpid())
T0 = datetime(2025, 2, 10, 9, 0, tzinfo=UTC)
DEC = datetime(2024, 12, 10, 9, 0, tzinfo=UTC)


def fresh() -> str:
    return usps_number(RNG)


def tag() -> str:
    return uuid.uuid4().hex[:6]


async def feed(p: Pipeline, messages: list[dict[str, Any]]) -> None:
    """Produce each message to its topic by type, in order, keyed so one key's messages of
    one topic stay in order; then wait for the worker."""
    labels = [m for m in messages if m["type"] != "carrier.scan"]
    scans = [m for m in messages if m["type"] == "carrier.scan"]
    if labels:
        await produce(p.bootstrap, p.topics["labels"], labels, key=b"k")
    if scans:
        await produce(p.bootstrap, p.topics["scans"], scans, key=b"k")
    await wait_idle(p)


def canonical(number: str) -> str:
    return number.replace(" ", "")


# ---------------------------------------------------------------- tests


async def test_normal_traffic_reprints_voids_and_redeliveries(pipeline: Pipeline) -> None:
    t = tag()
    n_plain, n_reprint, n_redeliver, n_void, n_void_scanned, n_elsewhere = (
        fresh() for _ in range(6)
    )
    n_bad = wrong_check_digit(fresh())
    msgs: list[dict[str, Any]] = []
    # ordinary label, delivered where it should be: nothing
    msgs.append(label_purchased(f"{t}-1", f"L{t}-plain", spaced(n_plain), "s1", T0))
    msgs += journey(f"{t}-1", n_plain, T0 + timedelta(hours=5), "07302", "10001")
    # a reprint (same label_id, another event): not a duplicate
    reprint = label_purchased(f"{t}-2", f"L{t}-reprint", n_reprint, "s1", T0)
    msgs += [reprint, {**reprint, "event_id": f"{t}-2b",
                       "purchased_at": "2025-02-10T09:30:00Z"}]
    msgs += journey(f"{t}-2", n_reprint, T0 + timedelta(hours=5), "07302", "10001")
    # redeliveries: the same label and scans twice (same event_id)
    redo = label_purchased(f"{t}-3", f"L{t}-redo", n_redeliver, "s2", T0)
    trip = journey(f"{t}-3", n_redeliver, T0 + timedelta(hours=5), "07302", "10001")
    msgs += [redo, redo, *trip, *trip]
    # voided before shipping, never scanned: nothing
    msgs += [label_purchased(f"{t}-4", f"L{t}-void", n_void, "s3", T0),
             label_voided(f"{t}-4v", f"L{t}-void", n_void, T0 + timedelta(hours=1))]
    # voided, then shipped anyway: voided_label_scanned
    msgs += [label_purchased(f"{t}-5", f"L{t}-voidscan", n_void_scanned, "s3", T0),
             label_voided(f"{t}-5v", f"L{t}-voidscan", n_void_scanned, T0 + timedelta(hours=1)),
             carrier_scan(f"{t}-5s", n_void_scanned, "accepted", T0 + timedelta(hours=6),
                          postal_code="07302")]
    # delivered in another ZIP region than the label's ship_to: destination_mismatch
    msgs.append(label_purchased(f"{t}-6", f"L{t}-elsewhere", n_elsewhere, "s4", T0,
                                ship_to=("10001", "US")))
    msgs += journey(f"{t}-6", n_elsewhere, T0 + timedelta(hours=5), "07302", "90012")
    # wrong check digit: invalid_tracking
    msgs.append(label_purchased(f"{t}-7", f"L{t}-bad", n_bad, "s5", T0))

    await feed(pipeline, msgs)
    numbers = {n_plain, n_reprint, n_redeliver, n_void, n_void_scanned, n_elsewhere, n_bad}
    got = await assert_offline(pipeline, msgs, numbers)
    assert got == {
        ("voided_label_scanned", n_void_scanned, f"L{t}-voidscan", "warning"),
        ("destination_mismatch", n_elsewhere, f"L{t}-elsewhere", "warning"),
        ("invalid_tracking", n_bad, f"L{t}-bad", "warning"),
    }


async def test_incident_window_of_reused_numbers(pipeline: Pipeline) -> None:
    t = tag()
    n_out, n_in, n_inhouse_scans = fresh(), fresh(), fresh()
    msgs: list[dict[str, Any]] = []
    # December: two sellers' labels, shipped and delivered
    msgs.append(label_purchased(f"{t}-d1", f"L{t}-dec-A", n_out, "seller-A", DEC))
    msgs += journey(f"{t}-d1", n_out, DEC + timedelta(hours=4), "07302", "10001")
    msgs.append(label_purchased(f"{t}-d2", f"L{t}-dec-B", n_in, "seller-B", DEC))
    msgs += journey(f"{t}-d2", n_in, DEC + timedelta(hours=4), "07302", "10001")
    # December: the platform's own (in-house) shipment: carrier scans, no label event
    msgs += journey(f"{t}-d3", n_inhouse_scans, DEC + timedelta(hours=4), "07302", "10001")
    # February: the same numbers issued again
    feb = T0 + timedelta(days=7)
    msgs.append(label_purchased(f"{t}-f1", f"L{t}-feb-C", n_out, "seller-C", feb))  # outside
    msgs.append(label_purchased(f"{t}-f2", f"L{t}-feb-B", n_in, "seller-B", feb))  # same seller
    msgs.append(label_purchased(f"{t}-f3", f"L{t}-feb-D", n_inhouse_scans, "seller-D", feb))

    await feed(pipeline, msgs)
    got = await assert_offline(pipeline, msgs, {n_out, n_in, n_inhouse_scans})
    assert got == {
        ("duplicate_tracking", n_out, f"L{t}-feb-C", "critical"),
        ("previously_used", n_out, f"L{t}-feb-C", "critical"),
        ("duplicate_tracking", n_in, f"L{t}-feb-B", "warning"),
        ("previously_used", n_in, f"L{t}-feb-B", "critical"),
        ("previously_used", n_inhouse_scans, f"L{t}-feb-D", "critical"),
    }


async def test_scans_before_label_and_old_history_after(pipeline: Pipeline) -> None:
    t = tag()
    n_early, n_late = fresh(), fresh()
    # the scans of a package reach the worker before its label: delivered elsewhere
    parts = [journey(f"{t}-e", n_early, T0 + timedelta(hours=5), "07302", "90012")]
    # a February label first ...
    parts.append([
        label_purchased(f"{t}-e-l", f"L{t}-early", n_early, "s1", T0, ship_to=("10001", "US")),
        label_purchased(f"{t}-l-l", f"L{t}-late", n_late, "seller-N", T0),
    ])
    # ... and the December history of its number after it (a backfill, a slow topic): the
    # alerts about the February label are revised (their event time, labels and evidence)
    parts.append([
        label_purchased(f"{t}-old", f"L{t}-old", n_late, "seller-O", DEC),
        *journey(f"{t}-old", n_late, DEC + timedelta(hours=4), "07302", "10001"),
    ])
    for part in parts:
        await feed(pipeline, part)
    got = await assert_offline(pipeline, [m for part in parts for m in part], {n_early, n_late})
    assert got == {
        ("destination_mismatch", n_early, f"L{t}-early", "warning"),
        ("duplicate_tracking", n_late, f"L{t}-late", "critical"),
        ("previously_used", n_late, f"L{t}-late", "critical"),
    }


async def test_malformed_messages_are_dead_lettered(pipeline: Pipeline) -> None:
    t = tag()
    n = fresh()
    missing_ship_to = label_purchased(f"{t}-s", f"L{t}-s", n, "s1", T0)
    del missing_ship_to["ship_to"]
    too_large = label_purchased(f"{t}-big", f"L{t}-big", n, "s1", T0)
    too_large["padding"] = "x" * (MAX_BYTES + 100)  # valid JSON, just too big
    bad_labels: list[tuple[str, bytes]] = [
        ("encoding", b'{"type": "label.purchased", "seller_id": "\xff\xfe"}'),
        ("invalid_json", b'{"type": "label.purchased",'),
        ("unknown_type", orjson.dumps({"type": "label.printed", "schema_version": 1})),
        ("schema", orjson.dumps(missing_ship_to)),
        ("too_large", orjson.dumps(too_large)),
        ("invalid_json", b""),
    ]
    bad_scans: list[tuple[str, bytes]] = [
        ("not_an_object", b"[1, 2, 3]"),
        ("schema", orjson.dumps({**carrier_scan(f"{t}-x", n, "teleported", T0)})),
    ]
    placed_labels = await produce(pipeline.bootstrap, pipeline.topics["labels"],
                                  [v for _, v in bad_labels], key=t.encode())
    placed_scans = await produce(pipeline.bootstrap, pipeline.topics["scans"],
                                 [v for _, v in bad_scans], key=t.encode())
    await wait_idle(pipeline)

    expected = {
        (code, pipeline.topics["labels"], part, off)
        for (code, _), (part, off) in zip(bad_labels, placed_labels, strict=True)
    } | {
        (code, pipeline.topics["scans"], part, off)
        for (code, _), (part, off) in zip(bad_scans, placed_scans, strict=True)
    }
    records = [orjson.loads(r.value)
               for r in await read_all(pipeline.bootstrap, pipeline.topics["deadletter"])]
    mine = [d for d in records if (d["source_topic"], d["partition"], d["offset"]) in
            {(topic, part, off) for _, topic, part, off in expected}]
    got = {(d["error"]["code"], d["source_topic"], d["partition"], d["offset"]) for d in mine}
    assert got == expected
    by_code = {d["error"]["code"]: d for d in mine}
    assert by_code["schema"]["error"]["path"] in {"/ship_to", "/status"}
    # the record is carried byte for byte (a too_large value: its first MAX_BYTES, its size
    # and digest)
    sent = {
        (pipeline.topics["labels"], *where): value
        for (_, value), where in zip(bad_labels, placed_labels, strict=True)
    } | {
        (pipeline.topics["scans"], *where): value
        for (_, value), where in zip(bad_scans, placed_scans, strict=True)
    }
    for d in mine:
        raw = base64.b64decode(d["value_b64"]) if d["value_b64"] is not None else b""
        value = sent[(d["source_topic"], d["partition"], d["offset"])]
        if d["error"]["code"] == "too_large":
            assert (d["value_size"], d["value_sha256"]) == (
                len(value), hashlib.sha256(value).hexdigest())
            value = value[:MAX_BYTES]
        assert raw == value
        assert base64.b64decode(d["key_b64"]) == t.encode()
    # none of them raised an alert
    assert standing_of(await alerts_of(pipeline), {n}) == {}
