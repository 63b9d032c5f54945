"""Faust's `kafka://` transport: a bounded fetch wait, and a fix for a stale batch after a
seek. No rules here.

Fetch wait. Faust hard-codes the aiokafka consumer's `fetch_max_wait_ms` at 1,500 ms and
offers no setting for it. aiokafka does not fetch a partition again while a fetch that
includes it is outstanding, so when some assigned partitions are quiet (the assignor's leader
topic always is; the changelog partitions are, outside recovery), records of the busy ones
wait behind a fetch the broker may hold for up to that long. `FETCH_MAX_WAIT_MS` bounds it.
Measured (benchmarks/pipeline.py, one worker): 1,036 -> 1,667 events/s end to end, and at
1,000 events/s produce-to-alert p50 3.7 s -> 92 ms, p99 5.6 s -> 216 ms. The broker still
answers at once when there is data; an idle worker only sends more empty fetches.

Stale batch after a seek. At the end of every recovery (a worker starting or rebalancing),
Faust resumes the stream partitions and then seeks them back to their committed offsets
(`Consumer.perform_seek`, which also resets the consumer's "read offsets" to them). Records
fetched before the seek can still be in the batch the drain loop
(`Consumer._drain_messages`) is iterating, or in a callback that was waiting on Faust's flow
control. The drain loop goes on with them and records their offsets as read; the records
fetched again from the committed offset are then "older than read" and dropped, never
acknowledged, so that partition's committed offset stops for good and its events are not
processed until the worker restarts. Seen with stock faust-streaming 0.15.3 in
tests/test_recovery.py: a worker SIGKILLed while detect lags, restarted, never moved an
internal-topic partition past its committed offset.

`Consumer.getmany` below, the drain loop's source of records, notices a seek that completed
since it last yielded: it drops the rest of the stale batch and puts the read offsets back to
where the seek left them, so the records from the committed offset on are read again
(at-least-once; the core ignores redelivered events).

`Transport` is installed by `streams.app` through `App._new_transport`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger(__name__)

FETCH_MAX_WAIT_MS = 50


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads it at start(); Faust offers no setting for it
        if hasattr(consumer, "_fetch_max_wait_ms"):
            consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        else:  # another aiokafka: keep Faust's value, and say so
            log.warning("cannot lower fetch_max_wait_ms on this aiokafka version")
        return consumer


class Consumer(faust_aiokafka.Consumer):
    _seek_epoch: int = 0  # seeks completed
    _drain_epoch: int = 0  # seeks the drain loop has accounted for
    _seek_offsets: dict[Any, int | None] | None = None  # read offsets the last seek set

    async def perform_seek(self) -> None:
        await super().perform_seek()
        self._seek_offsets = {tp: self._read_offset[tp] for tp in self.assignment()}
        self._seek_epoch += 1

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        self._after_seek()
        async for tp, message in super().getmany(timeout):
            if self._after_seek():
                return  # the rest of this batch was fetched before the seek
            yield tp, message

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _after_seek(self) -> bool:
        """After a seek the drain loop has not seen yet: undo the read offsets it recorded
        since (from stale records) and say so."""
        if self._drain_epoch == self._seek_epoch:
            return False
        self._drain_epoch = self._seek_epoch
        if self._seek_offsets:
            self._read_offset.update(self._seek_offsets)
        return True


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
