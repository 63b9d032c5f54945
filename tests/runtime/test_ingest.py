"""Ingest's loop without a broker: its consumer and producer are fakes that record what it
does and when, and the test decides when the broker acknowledges. What is checked: two
batches are in flight at most, the input offsets are committed in order and only once a
batch and every batch before it are acknowledged, a failed batch commits nothing after it,
and progress records go out the moment they can end the stage's last holds."""

from __future__ import annotations

import asyncio
import time
from collections import namedtuple
from typing import Any

import orjson
import pytest

from streams.runtime import ingest as ingest_module
from streams.runtime import internal_topic
from streams.runtime.ingest import Ingest
from streams.runtime.stream_config import StreamConfig
from streams.tools.samples import label_purchased

TP = namedtuple("TP", "topic partition")
Record = namedtuple("Record", "offset key value timestamp")


def label_records(tp: TP, start: int, n: int) -> list[Record]:
    from datetime import UTC, datetime

    at = datetime(2025, 2, 24, 9, 0, tzinfo=UTC)
    return [Record(start + i, None, orjson.dumps(label_purchased(
        f"e{tp.partition}-{start + i}", f"L{start + i}", f"9400111206206406{start + i:06d}",
        "seller-A", at)), 0) for i in range(n)]


class FakeConsumer:
    """Hands out the batches queued in `batches`, then nothing; records every commit."""

    def __init__(self, batches: list[dict[Any, list[Record]]]) -> None:
        self.batches = list(batches)
        self.commits: list[dict[Any, int]] = []
        self.events: list[str] = []  # "read N", "commit N" in the order they happened
        self.read = 0
        self.highwaters: dict[Any, int] = {}
        self.fetched_ms: dict[Any, int] = {}
        self.tps: set[Any] = set()
        self.positions: dict[Any, int] = {}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Record]]:
        if not self.batches:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        self.read += 1
        self.events.append(f"read {self.read}")
        batch = self.batches.pop(0)
        for tp, records in batch.items():
            self.tps.add(tp)
            self.positions[tp] = records[-1].offset + 1
        return batch

    async def commit(self, offsets: dict[Any, int]) -> None:
        await asyncio.sleep(0)
        self.commits.append(dict(offsets))
        self.events.append(f"commit {len(self.commits)}")

    def highwater(self, tp: Any) -> int | None:
        return self.highwaters.get(tp)

    def last_poll_timestamp(self, tp: Any) -> int | None:
        return self.fetched_ms.get(tp)

    def assignment(self) -> set[Any]:
        return set(self.tps)

    def pause(self, tp: Any) -> None:
        pass

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.tps if tp.topic == topic} or {0}


class FakeProducer:
    """Every send gets a future that the test resolves (`ack`) or fails (`fail`) by the
    number of the batch it was sent in (`batch`, set by the test's consumer reads)."""

    def __init__(self, consumer: FakeConsumer) -> None:
        self.consumer = consumer
        self.sent: list[tuple[int, str, bytes]] = []  # (batch number, topic, value)
        self.futures: dict[int, list[asyncio.Future[Any]]] = {}

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   partition: int | None = None) -> asyncio.Future[Any]:
        batch = self.consumer.read
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.setdefault(batch, []).append(future)
        self.sent.append((batch, topic, value))
        self.consumer.events.append(f"send {batch}")
        return future

    def ack(self, batch: int) -> None:
        for future in self.futures.get(batch, []):
            if not future.done():
                future.set_result(None)

    def fail(self, batch: int, exc: BaseException) -> None:
        for future in self.futures.get(batch, []):
            if not future.done():
                future.set_exception(exc)


def make_ingest(batches: list[dict[Any, list[Record]]], hold: float = 0.0,
                ) -> tuple[Ingest, FakeConsumer, FakeProducer, list[BaseException]]:
    config = StreamConfig(app_id="unit-ingest", partitions=4, alert_hold=hold)
    consumer = FakeConsumer(batches)
    producer = FakeProducer(consumer)
    fatal: list[BaseException] = []
    ingest = Ingest(config, producer, fatal.append)
    ingest.new_consumer = lambda: consumer  # type: ignore[method-assign]
    return ingest, consumer, producer, fatal


def running(batches: int, size: int) -> tuple[
        TP, Ingest, FakeConsumer, FakeProducer, list[BaseException], asyncio.Future[None]]:
    """Ingest running over `batches` batches of `size` labels on labels/0: (that partition,
    ingest, its consumer and producer, its fatal errors, its task)."""
    tp = TP("labels", 0)
    ingest, consumer, producer, fatal = make_ingest(
        [{tp: label_records(tp, size * i, size)} for i in range(batches)])
    return tp, ingest, consumer, producer, fatal, asyncio.ensure_future(ingest.run())


async def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_the_next_batch_is_sent_before_the_one_before_is_acknowledged() -> None:
    tp, ingest, consumer, producer, fatal, task = running(4, 10)
    # batch 2 is read and sent while batch 1 is not acknowledged
    await until(lambda: "send 2" in consumer.events)
    await asyncio.sleep(0.05)
    assert consumer.commits == []
    assert "read 3" not in consumer.events  # two unacknowledged at most
    producer.ack(2)  # the later one first: still nothing may be committed
    await asyncio.sleep(0.05)
    assert consumer.commits == []
    producer.ack(1)  # both are acknowledged now: committed through batch 2
    await until(lambda: consumer.commits and consumer.commits[-1] == {tp: 20})
    await until(lambda: "send 3" in consumer.events)
    # batch 3 unacknowledged: batch 4 is sent, nothing past batch 2 is committed
    await until(lambda: "send 4" in consumer.events)
    await asyncio.sleep(0.05)
    assert consumer.commits[-1] == {tp: 20}
    producer.ack(3)
    await until(lambda: consumer.commits[-1] == {tp: 30})
    producer.ack(4)
    await until(lambda: consumer.commits[-1] == {tp: 40})
    # in order, each at most once (batches acknowledged together may share a commit)
    ends = [c[tp] for c in consumer.commits]
    assert ends == sorted(set(ends)) and set(ends) <= {10, 20, 30, 40}
    assert ingest.records == 40 and fatal == []
    await ingest.stop()
    await asyncio.wait_for(task, 5)  # the loop ends once it sees the stop


async def test_a_batch_that_fails_commits_nothing_after_it() -> None:
    _, _, consumer, producer, fatal, task = running(3, 10)
    await until(lambda: "send 2" in consumer.events)
    producer.ack(2)
    producer.fail(1, ValueError("the broker refused it"))
    with pytest.raises(ValueError):
        await asyncio.wait_for(task, 5)
    assert consumer.commits == []  # neither batch 1 nor batch 2, acknowledged, after it
    assert len(fatal) == 1 and isinstance(fatal[0], ValueError)
    assert "read 3" not in consumer.events


async def test_stop_waits_until_every_batch_sent_is_committed() -> None:
    tp, ingest, consumer, producer, _, task = running(1, 5)
    await until(lambda: "send 1" in consumer.events)
    stop = asyncio.ensure_future(ingest.stop())
    await asyncio.sleep(0.05)
    assert not stop.done()
    producer.ack(1)
    await asyncio.wait_for(stop, 5)
    assert consumer.commits == [{tp: 5}]
    await asyncio.wait_for(task, 5)


def test_progress_that_ends_the_last_holds_goes_out_at_once() -> None:
    """Within PROGRESS_INTERVAL of the last one, a progress record is held back, unless it
    is the one that says every partition is read through the latest backlog arrival + the
    hold (what the stage's last held frames wait for)."""
    labels, scans = TP("labels", 0), TP("scans", 0)
    ingest, consumer, _, _ = make_ingest([], hold=2.0)
    ingest.consumer = consumer
    consumer.tps = {labels, scans}
    now_ms = int(time.time() * 1000)
    ingest._backlog_until = now_ms - 1_000  # a backlog's arrival + the hold, passed
    ingest._progress_sent = time.monotonic()  # one went out just now
    ingest._progress_complete = True
    ingest._through_sent = now_ms - 5_000
    positions = {labels: 100, scans: 40}
    consumer.highwaters = dict(positions)

    def fetched(ms: int) -> None:
        consumer.fetched_ms = {labels: ms, scans: ms}

    original = ingest_module._position
    ingest_module._position = lambda c, tp: positions[tp]
    try:
        # read through, but not yet through the latest arrival + the hold: held back
        fetched(ingest._backlog_until + ingest_module.PROGRESS_MARGIN_MS - 200)
        assert ingest._progress_active()
        assert ingest._progress() is None
        # read through it: out at once, although the interval has not passed
        fetched(ingest._backlog_until + ingest_module.PROGRESS_MARGIN_MS + 50)
        record = ingest._progress()
        assert record is not None
        progress = internal_topic.decode(record)
        assert isinstance(progress, internal_topic.Progress)
        assert min(progress.read_through.values()) >= ingest._backlog_until
        assert not ingest._progress_active()  # nothing left to end: no more of them
        # a partition behind its high watermark: not complete, nothing goes out early
        ingest._backlog_until = now_ms + 10_000
        ingest._progress_sent = time.monotonic()
        consumer.highwaters[scans] = 41
        fetched(now_ms + 20_000)
        assert ingest._progress() is None
    finally:
        ingest_module._position = original
