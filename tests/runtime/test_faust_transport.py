"""`streams.runtime.faust_transport`: the worker's Kafka transport, without a broker (the
consumer is built, never started: nothing connects), but for the produce request cap (a
broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.runtime import faust_transport
from streams.runtime.app import build_app
from streams.runtime.stream_config import StreamConfig


def test_the_app_uses_this_transport(tmp_path: Any) -> None:
    app = build_app(StreamConfig(app_id="transport-wiring", state_dir=tmp_path,
                                 store="memory://"))
    assert isinstance(app.transport, faust_transport.Transport)
    assert isinstance(app.consumer, faust_transport.Consumer)


async def test_the_worker_consumer_fetch_wait_is_bounded(tmp_path: Any) -> None:
    app = build_app(StreamConfig(app_id="transport-fetch", bootstrap="127.0.0.1:1",
                                 state_dir=tmp_path, store="memory://"))
    thread = app.consumer._new_consumer_thread()
    assert isinstance(thread, faust_transport.ConsumerThread)
    consumer = thread._create_worker_consumer(app.consumer.transport)
    assert consumer._fetch_max_wait_ms == faust_transport.FETCH_MAX_WAIT_MS < 1500


def test_the_seek_guard_drops_a_pre_seek_batch_until_the_seek_offset_comes_back() -> None:
    from collections import namedtuple

    TP = namedtuple("TP", "topic partition")
    stream, changelog = TP("app-tracking-events", 0), TP("app-changelog", 0)
    guard = faust_transport.SeekGuard(frozenset({"app-tracking-events"}), seconds=60)
    guard.seeked(changelog, 5, now=0)  # not a guarded topic: its seeks are left alone
    guard.seeked(stream, 100, now=0)
    # the rest of a batch fetched before the seek (150..152), then the re-fetch from 100
    arrivals = [150, 151, 152, 100, 101, 150]
    admitted = [o for o in arrivals if guard.admit(stream, o, now=1)]
    assert admitted == [100, 101, 150]
    assert guard.dropped == 3
    assert all(guard.admit(changelog, o, now=1) for o in (7, 9))  # compacted: holes are fine
    # a seek offset that never comes (deleted by retention) is given up after `seconds`
    guard.seeked(stream, 500, now=10)
    assert not guard.admit(stream, 700, now=20)
    assert guard.admit(stream, 701, now=71)
    assert guard.admit(stream, 702, now=72)


def test_the_app_guards_its_internal_topic(tmp_path: Any) -> None:
    app = build_app(StreamConfig(app_id="transport-guard", bootstrap="127.0.0.1:1",
                                 state_dir=tmp_path, store="memory://"))
    assert isinstance(app.consumer.seek_guard, faust_transport.SeekGuard)


@pytest.mark.integration
@pytest.mark.parametrize("cap", [256 * 1024, 0])
async def test_the_worker_producer_keeps_each_produce_request_under_its_cap(
        kafka_bootstrap: str, create_topic: Any, monkeypatch: Any, tmp_path: Any,
        cap: int) -> None:
    """Batches of 8 partitions, 120 KiB each, ready at once: capped, they go in requests of
    at most `cap` bytes and all arrive; uncapped (0, aiokafka's own behaviour) one request
    carries more (what the cap is for)."""
    import aiokafka.conn

    from streams.runtime.topics import new_producer

    topic = await create_topic(partitions=8)
    sizes: list[int] = []
    send = aiokafka.conn.AIOKafkaConnection.send

    def counting(self: Any, request: Any, expect_response: bool = True) -> Any:
        if type(request).__name__ == "ProduceRequest":
            sizes.append(len(request.prepare(self._versions).encode()))
        return send(self, request, expect_response)

    monkeypatch.setattr(aiokafka.conn.AIOKafkaConnection, "send", counting)
    producer = new_producer(StreamConfig(
        app_id="transport-cap", bootstrap=kafka_bootstrap, state_dir=tmp_path,
        producer_linger=0.2, producer_max_request_bytes=cap))
    await producer.start()
    try:
        futures = [await producer.send(topic, b"x" * 1000, partition=i % 8)
                   for i in range(8 * 120)]
        done = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    assert len(done) == 8 * 120
    assert sorted(m.offset for m in done if m.partition == 3) == list(range(120))
    if cap:
        assert len(sizes) >= 4 and max(sizes) <= cap + 4096, sizes  # + the request's headers
    else:
        assert max(sizes) > 256 * 1024 + 4096, sizes


def test_no_commit_past_a_record_missing_at_the_head(tmp_path: Any) -> None:
    """Faust would commit past ONE unacked record at the head (and past any when the
    committed offset is 0); on the guarded topics the commit waits for it instead."""
    from faust.types import TP

    app = build_app(StreamConfig(app_id="transport-head", state_dir=tmp_path,
                                 store="memory://"))
    consumer = app.consumer
    internal = TP(app.tracking["config"].internal_topic_name, 0)
    other = TP("some-other-topic", 0)
    consumer.seek_guard.topics = frozenset({internal.topic})
    for tp in (internal, other):
        consumer._committed_offset[tp] = 10  # the next offset to read
        consumer._acked[tp] = [11, 12]  # offset 10 was never acked
        consumer._acked_index[tp] = {11, 12}
    assert consumer._new_offset(other) == 13  # Faust's own: offset 10 skipped
    assert consumer._new_offset(internal) is None  # held until 10 is acked
    consumer._acked[internal].insert(0, 10)
    consumer._acked_index[internal].add(10)
    assert consumer._new_offset(internal) == 13
    # a committed offset of 0 (Faust keeps it as None): the offset sought to stands in
    fresh = TP(internal.topic, 1)
    consumer._committed_offset[fresh] = None
    consumer.seek_guard.seeked(fresh, 0)
    consumer._acked[fresh] = [1, 2]
    consumer._acked_index[fresh] = {1, 2}
    assert consumer._new_offset(fresh) is None
    consumer._acked[fresh].insert(0, 0)
    consumer._acked_index[fresh].add(0)
    assert consumer._new_offset(fresh) == 3
