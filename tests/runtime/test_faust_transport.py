"""`streams.runtime.faust_transport`: the worker's Kafka transport, without a broker (the
consumer is built, never started: nothing connects)."""

from __future__ import annotations

from typing import Any

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
