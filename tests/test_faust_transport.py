"""`streams.faust_transport`: the worker's Kafka transport, without a broker (the consumer is
built, never started: nothing connects)."""

from __future__ import annotations

from typing import Any

from streams import faust_transport
from streams.app import build_app
from streams.stream_config import StreamConfig


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
