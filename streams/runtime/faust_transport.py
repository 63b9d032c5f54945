"""Faust's `kafka://` transport with two fixes for the stateful stage. No rules here.

1. A bounded consumer fetch wait. Faust hard-codes the aiokafka consumer's
   `fetch_max_wait_ms` at 1,500 ms and offers no setting for it. aiokafka does not fetch a
   partition again while a fetch that includes it is outstanding, so quiet partitions (the
   assignor's topic, the changelog outside recovery) held the busy ones back (measured in the
   Faust-only runtime: one worker 1,036 -> 1,667 events/s, p50 at 1,000/s 3.7 s -> 92 ms).

2. The end-of-recovery seek race (a partition of the internal topic that stopped for good
   after a restart, nothing logged). Faust's drain loop iterates a fetched batch record by
   record. When recovery ends it seeks the stream partitions back to their committed offsets,
   which also resets its read offsets; but the rest of a batch fetched BEFORE the seek is
   still iterated, and each of those records moves the read offset forward again. The records
   then re-fetched from the committed offset are "older than read" and dropped without an
   ack: the commit can never pass them. The fix: after a seek of a stream partition to offset
   X, records of that partition are dropped until record X itself arrives (from the re-fetch,
   since aiokafka's position is X after the seek). Every dropped record has an offset >= X or
   < X: the former are fetched again, the latter were committed. It applies only to the
   internal topic, whose offsets are dense (not compacted, no transactions); a changelog's
   recovery seeks are left alone. A record X that never comes (deleted by retention) is
   given up after `SEEK_GUARD_SECONDS`; the stage's watchdog covers what remains.

4. No commit on the way down from a crash. The worker's fatal path (`Lifecycle.fatal`)
   crashes the app, which marks every service crashed, the consumer thread included; Faust's
   consumer then commits the acked offsets as it stops, through that thread, which no longer
   runs anything: the stop waited forever (seen when a dead letter could not be produced
   after the stage had acked records of the internal topic). A fatal error means nothing
   after it is committed, so a crashed consumer skips that commit; what was acked is read
   again after a restart (the stage drops what it has already applied).

5. No commit past a record missing at the head. Faust commits the first run of consecutive
   acked offsets, and its only guard against a record missing before them is
   `min(acked) - committed > 1`, where `committed` is the next offset to read: one missing
   record at the head is committed past (and any, when the committed offset is 0, which Faust
   keeps as None). A record that is delivered to no agent and never acked (the seek race
   above, or a delivery cut by a flow suspension: Faust's drain loop sets the read offset
   even when `suspend_flow` ended the delivery) was then skipped for good. For the guarded
   topics (dense offsets) a commit now waits until the acked offsets start at the committed
   offset (the offset sought to, after a seek); the stall watchdog re-seeks a partition held
   up so (streams.runtime.lifecycle), and the record is read again.

`Transport` is installed by `streams.runtime.lifecycle` through `App._new_transport`, which
also sets the guarded topics (`consumer.seek_guard.topics`).

3. A cap on the bytes of one produce request (`cap_request_bytes`, for the worker's own
   aiokafka producer, not Faust's). aiokafka puts the first batch of EVERY ready partition of
   a node into one request and has no per-request limit (the Java client's
   `max.request.size` is one). With one request in flight per node, the worker's frames,
   changelog batches and alerts piled up into requests of 0.5-3 MB. A broker reads a request
   into one heap buffer: on a G1 heap with 1 MB regions (any heap under 2 GB, Kafka's 1 GB
   default included) a buffer of half a region or more is a "humongous" allocation, and once
   the heap is above G1's marking threshold each one starts a concurrent mark cycle.
   benchmarks/pipeline.py's broker (512 MB heap, ~150 MB of it live from start-up): one
   mark cycle every ~130 ms during the worker's backlog, broker GC threads 8-9 us/event of
   the worker's 16 (the floor's fetches: 0.0); with the regions made 4 MB (a test only) GC
   fell to 0.1 us/event. Requests kept under half a region avoid it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger(__name__)

FETCH_MAX_WAIT_MS = 50
SEEK_GUARD_SECONDS = 60.0


def cap_request_bytes(producer: Any, max_bytes: int) -> bool:
    """Make `producer` (an AIOKafkaProducer, before or after start) put at most `max_bytes`
    of record batches in one produce request (fix 3 of the module doc). A batch larger than
    that alone still goes, alone. The batches left out stay queued, in order, and go in the
    next request to the node (aiokafka's sender drains again when the request in flight
    completes). Returns False, and changes nothing, on an aiokafka without the internals."""
    accumulator = getattr(producer, "_message_accumulator", None)
    drain = getattr(accumulator, "drain_by_nodes", None)
    batches = getattr(accumulator, "_batches", None)
    cluster = getattr(accumulator, "_cluster", None)
    if drain is None or not isinstance(batches, dict) or cluster is None:
        log.warning("cannot cap produce request sizes on this aiokafka version")
        return False

    def drain_by_nodes(ignore_nodes: Any, muted_partitions: Any = frozenset()) -> Any:
        # the partitions whose next batch would take a node's request past max_bytes are
        # muted for this drain only: aiokafka's own drain then builds the request (sequence
        # numbers, expiry, linger) from the rest, unchanged
        sizes: dict[int, int] = {}
        left_out = set()
        for tp, queue in batches.items():
            if tp in muted_partitions or not queue:
                continue
            leader = cluster.leader_for_partition(tp)
            if leader is None or leader == -1 or (ignore_nodes and leader in ignore_nodes):
                continue
            batch = queue[0]
            if batch.remaining_linger():
                continue  # not drained this time anyway
            builder = getattr(batch, "_builder", None)
            size = builder.size() if builder is not None else 0  # unknown: no cap
            used = sizes.get(leader, 0)
            if used and used + size > max_bytes:
                left_out.add(tp)
            else:
                sizes[leader] = used + size
        if left_out:
            muted_partitions = frozenset(muted_partitions) | left_out
        return drain(ignore_nodes, muted_partitions)

    accumulator.drain_by_nodes = drain_by_nodes
    return True


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads it at start(); Faust offers no setting for it
        if hasattr(consumer, "_fetch_max_wait_ms"):
            consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        else:  # another aiokafka: keep Faust's value, and say so
            log.warning("cannot lower fetch_max_wait_ms on this aiokafka version")
        return consumer


class SeekGuard:
    """Which records of the guarded topics to drop after a seek (fix 2 of the module doc)."""

    def __init__(self, topics: frozenset[str] = frozenset(),
                 seconds: float = SEEK_GUARD_SECONDS) -> None:
        self.topics = topics
        self.seconds = seconds
        self.points: dict[Any, tuple[int, float]] = {}  # tp -> (seek offset, since)
        # tp -> the last offset sought to, kept (fix 5: Faust keeps a committed offset of 0
        # as None)
        self.sought: dict[Any, int] = {}
        self.dropped = 0

    def seeked(self, tp: Any, offset: int | None, now: float | None = None) -> None:
        if tp.topic in self.topics and offset is not None and offset >= 0:
            self.points[tp] = (offset, time.monotonic() if now is None else now)
            self.sought[tp] = offset

    def admit(self, tp: Any, offset: int, now: float | None = None) -> bool:
        point = self.points.get(tp)
        if point is None:
            return True
        expected, since = point
        now = time.monotonic() if now is None else now
        if offset != expected and now - since < self.seconds:
            self.dropped += 1
            return False  # fetched before the seek: it comes again from `expected`
        del self.points[tp]
        return True


class Consumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seek_guard = SeekGuard()
        self.held_heads: set[tuple[Any, int]] = set()  # (tp, head) logged once

    def _new_offset(self, tp: Any) -> int | None:
        # fix 5 of the module doc
        acked = self._acked[tp]
        if acked and tp.topic in self.seek_guard.topics and not self._gap[tp]:
            head = self._committed_offset[tp]
            if head is None:
                head = self.seek_guard.sought.get(tp)
            first = min(acked)
            if head is not None and first > head:
                if (tp, head) not in self.held_heads:
                    self.held_heads.add((tp, head))
                    log.warning("commit of %s/%d held at offset %d: offsets %d-%d are not "
                                "acked (read again after a re-seek)", tp.topic, tp.partition,
                                head, head, first - 1)
                return None
        return super()._new_offset(tp)

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def on_stop(self) -> None:
        # fix 4 of the module doc: a crashed worker commits nothing more
        if self.crashed or self.app.crashed:
            return
        await super().on_stop()

    async def seek_to_committed(self) -> Mapping[Any, int]:
        offsets = await super().seek_to_committed()
        for tp, offset in offsets.items():
            self.seek_guard.seeked(tp, offset)
        return offsets

    async def seek(self, partition: Any, offset: int) -> None:
        await super().seek(partition, offset)
        self.seek_guard.seeked(partition, offset)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        guard = self.seek_guard
        async for tp, message in super().getmany(timeout):
            if not guard.points or guard.admit(tp, message.offset):
                yield tp, message


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
