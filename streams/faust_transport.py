"""Faust's `kafka://` transport with a shorter consumer fetch wait. No rules here.

Faust hard-codes the aiokafka consumer's `fetch_max_wait_ms` at 1,500 ms and offers no
setting for it. aiokafka does not fetch a partition again while a fetch that includes it is
outstanding, so when some assigned partitions are quiet (the assignor's leader topic always
is; the changelog partitions are, outside recovery), records of the busy partitions can wait
behind a fetch the broker holds for up to that long. Measured on a Faust agent that only
passes messages through: 2,000 msgs/s at 1,500 ms, 6,250 at 10 ms (benchmarks/pipeline.py
notes). `FETCH_MAX_WAIT_MS` bounds that wait; the broker still answers as soon as any data is
there, so an idle worker only sends more (empty) fetches.

Tried and not adopted (see benchmarks/pipeline.py): running the drain loop's per-message
callback eagerly instead of through `Service.wait_first` (four tasks and an `asyncio.wait`
per message) cut worker CPU per event by ~27%, but after a SIGKILL and restart a stream
partition's commit could stall for good (tests/test_recovery.py killing the worker early:
3 stalled runs in 6, and 2 in 5 at its old kill point; stock Faust: none in 10). Faust's
recovery relies on the interleaving that per-message tasks give it, so we keep them.

`Transport` is installed by `streams.app` through `App._new_transport`.
"""

from __future__ import annotations

import logging
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
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
