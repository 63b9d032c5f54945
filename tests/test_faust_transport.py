"""`streams.faust_transport`: the worker's Kafka transport, without a broker (the consumer is
built, never started: nothing connects)."""

from __future__ import annotations

from typing import Any

import pytest

from streams import faust_transport
from streams.app import build_app
from streams.stream_config import StreamConfig


@pytest.fixture
async def consumer(tmp_path: Any) -> Any:
    """The consumer of the worker's own app (`streams.app.build_app`)."""
    app = build_app(StreamConfig(app_id="transport-test", bootstrap="127.0.0.1:1",
                                 state_dir=tmp_path, store="memory://"))
    return app.consumer


def test_the_app_uses_this_transport(tmp_path: Any) -> None:
    app = build_app(StreamConfig(app_id="transport-wiring", state_dir=tmp_path,
                                 store="memory://"))
    assert isinstance(app.transport, faust_transport.Transport)
    assert isinstance(app.consumer, faust_transport.Consumer)


async def test_a_seek_during_a_batch_drops_its_stale_rest_and_restores_read_offsets(
    consumer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A seek that completes while the drain loop is part-way through a batch: the rest of
    the batch is not delivered, and the read offset the drain loop recorded meanwhile goes
    back to the seek's, so the records from the committed offset are read again instead of
    being dropped as already read."""
    from faust.transport.drivers import aiokafka as faust_aiokafka
    from faust.types import TP

    tp = TP("t", 0)
    batch = [(tp, f"m{offset}") for offset in range(10, 15)]

    async def fetched(self: Any, timeout: float) -> Any:  # Faust's getmany, from a fetch
        for item in batch:
            yield item

    async def seek_to_committed(self: Any) -> dict[Any, int]:
        return {tp: 7}

    monkeypatch.setattr(faust_aiokafka.Consumer, "getmany", fetched)
    monkeypatch.setattr(type(consumer), "assignment", lambda self: {tp})
    monkeypatch.setattr(type(consumer), "seek_to_committed", seek_to_committed)

    seen = []
    async for item_tp, message in consumer.getmany(timeout=1.0):
        seen.append(message)
        if len(seen) == 2:
            await consumer.perform_seek()  # completes while m11 is being handled
        # as the drain loop does once the message's callback returned
        consumer._read_offset[item_tp] = 10 + len(seen) - 1
    assert seen == ["m10", "m11"]  # m12..m14 were fetched before the seek: not delivered
    assert consumer._read_offset[tp] == 7  # the seek's offset, not m11's

    seen.clear()
    async for _, message in consumer.getmany(timeout=1.0):  # the next batch: all of it
        seen.append(message)
    assert seen == ["m10", "m11", "m12", "m13", "m14"]


async def test_a_seek_after_the_last_record_of_a_batch_still_restores(
    consumer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faust.transport.drivers import aiokafka as faust_aiokafka
    from faust.types import TP

    tp = TP("t", 0)

    async def fetched(self: Any, timeout: float) -> Any:
        yield tp, "m20"

    async def seek_to_committed(self: Any) -> dict[Any, int]:
        return {tp: 3}

    monkeypatch.setattr(faust_aiokafka.Consumer, "getmany", fetched)
    monkeypatch.setattr(type(consumer), "assignment", lambda self: {tp})
    monkeypatch.setattr(type(consumer), "seek_to_committed", seek_to_committed)

    async for item_tp, _ in consumer.getmany(timeout=1.0):
        await consumer.perform_seek()  # completes while m20 is being handled
        consumer._read_offset[item_tp] = 20  # then the drain loop records m20 as read
    assert consumer._read_offset[tp] == 20  # the batch ended before the guard looked
    assert [m async for _, m in consumer.getmany(timeout=1.0)] == ["m20"]
    assert consumer._read_offset[tp] == 3  # put back as the next fetch starts


async def test_the_worker_consumer_fetch_wait_is_bounded(consumer: Any) -> None:
    thread = consumer._new_consumer_thread()
    assert isinstance(thread, faust_transport.ConsumerThread)
    worker_consumer = thread._create_worker_consumer(consumer.transport)
    assert worker_consumer._fetch_max_wait_ms == faust_transport.FETCH_MAX_WAIT_MS < 1500
