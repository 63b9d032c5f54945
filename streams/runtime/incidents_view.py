"""Every worker's own copy of the open incidents, for the lookup API's circuit breaker and the
`tracking_validator_incidents_open` gauge: a plain aiokafka consumer of `tracking.incidents`
with no group (each worker reads every partition, from the start: the topic holds only
incident revisions, a few per incident) feeding `streams.core.lookup.OpenIncidents`.

A worker that starts answers from the incidents read so far; it catches up within a fetch or
two. A record that is not an incident revision is logged and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from streams.core.lookup import OpenIncidents
from streams.runtime.metrics import Metrics
from streams.runtime.stream_config import StreamConfig

log = logging.getLogger(__name__)


class IncidentsView:
    def __init__(self, config: StreamConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.open = OpenIncidents()
        self.records = 0
        self._task: asyncio.Future[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    def take(self, value: bytes | None) -> None:
        try:
            record = orjson.loads(value or b"")
            self.open.update(record)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("incidents view: a record skipped (%s): %r", exc, (value or b"")[:200])
        self.records += 1

    async def _run(self) -> None:
        while True:  # a consumer that fails (a long outage) is made again
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("incidents view: %s: %s; reading again in 5 s",
                            type(exc).__name__, exc)
                await asyncio.sleep(5)

    async def _consume(self) -> None:
        from aiokafka import AIOKafkaConsumer

        c = self.config
        consumer: Any = AIOKafkaConsumer(
            c.incidents_topic, bootstrap_servers=c.bootstrap, group_id=None,
            auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=100,
            metadata_max_age_ms=5000,  # a topic created after start is found soon
            **c.kafka.aiokafka_kwargs())
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                for records in batches.values():
                    for record in records:
                        self.take(record.value)
                if self.metrics is not None:
                    self.metrics.set_incidents_open(self.open.counts())
        finally:
            await consumer.stop()
