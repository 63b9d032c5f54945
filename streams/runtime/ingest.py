"""Ingest: the input topics, in batches, to framed records on the internal topic. No rules here.

A plain aiokafka consumer group (`<app_id>-ingest`; the workers of one app id share the input
partitions through it) reads `labels` and `scans` with `getmany`, decodes and validates each
record (`streams.core.events.decode`), groups the events by the internal partition of their
tracking key and writes each group as one frame (`streams.runtime.internal_topic`). Records that do
not decode are dead-lettered. Input offsets are committed only after every frame and dead
letter made from them is acknowledged by the broker: a crash repeats a batch (the stateful
stage drops repeated event ids), it never skips one.

A dead letter that cannot be produced (or any produce error that is not a passing broker
outage) stops the worker before the batch is committed: the record is never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from streams.core import events
from streams.core.outputs import dead_letter, dumps
from streams.runtime import internal_topic

log = logging.getLogger(__name__)


class Batch:
    """What one `getmany` became: frames per internal partition, dead letters, offsets."""

    __slots__ = ("by_topic", "dead_letters", "events", "frames", "offsets", "records")

    def __init__(self) -> None:
        self.by_topic: dict[str, list[int]] = {}  # topic -> [events, dead letters]
        self.frames: dict[int, list[internal_topic.Entry]] = {}
        self.dead_letters: list[tuple[bytes | None, dict[str, Any]]] = []
        self.offsets: dict[Any, int] = {}  # TopicPartition -> next offset to read
        self.records = 0
        self.events = 0


def build_batch(records_by_tp: dict[Any, list[Any]], partitions: int, max_bytes: int,
                read_ms: int | None = None) -> Batch:
    """Decode a `getmany` result (pure: no I/O). Frames keep each partition's input order.
    Each event's frame entry carries `read_ms` (default: now), when ingest read its record:
    the start of the alert latency (a record's own timestamp is its event time when the
    history was imported)."""
    if read_ms is None:
        read_ms = int(time.time() * 1000)
    batch = Batch()
    frames = batch.frames
    decode = events.decode
    DecodeError = events.DecodeError
    partition_for = internal_topic.partition_for
    for tp, records in records_by_tp.items():
        if not records:
            continue
        topic, partition = tp.topic, tp.partition
        dead_before = len(batch.dead_letters)
        for record in records:
            value = record.value
            try:
                event = decode(value, max_bytes)
            except DecodeError as exc:
                key = record.key
                batch.dead_letters.append((
                    # the record's own key is cut like the one it carries: it always fits
                    key if key is None or len(key) <= max_bytes else key[:max_bytes],
                    dead_letter(source_topic=topic, partition=partition, offset=record.offset,
                                key=key, value=value, error=exc,
                                max_message_bytes=max_bytes),
                ))
                continue
            p = partition_for(event.key.encode(), partitions)
            entry = (read_ms, event)
            frame = frames.get(p)
            if frame is None:
                frames[p] = [entry]
            else:
                frame.append(entry)
        batch.records += len(records)
        batch.offsets[tp] = records[-1].offset + 1
        dead = len(batch.dead_letters) - dead_before
        counts = batch.by_topic.setdefault(topic, [0, 0])
        counts[0] += len(records) - dead
        counts[1] += dead
    batch.events = batch.records - len(batch.dead_letters)
    return batch


class Ingest:
    """The ingest loop of one worker. `run()` until `stop()`; `on_fatal(exc)` on an error that
    must stop the worker (the batch is then not committed)."""

    def __init__(self, config: Any, producer: Any, on_fatal: Callable[[BaseException], Any],
                 consumer_kwargs: dict[str, Any] | None = None, metrics: Any = None) -> None:
        self.config = config
        self.metrics = metrics
        self.producer = producer
        self.on_fatal = on_fatal
        self.consumer_kwargs = consumer_kwargs or {}
        self.consumer: Any = None
        self._stopping = False
        self._busy = asyncio.Lock()  # held while a batch is between getmany and commit
        self.records = 0
        self.dead_letters = 0
        # bounded (replay): every input partition's [start, end) seen when ingest began;
        # records at or past `end` are left alone and the partition is paused there
        self.bounds: dict[Any, tuple[int, int]] | None = None

    def new_consumer(self) -> Any:
        from aiokafka import AIOKafkaConsumer

        c = self.config
        max_bytes = c.settings.max_message_bytes
        return AIOKafkaConsumer(
            bootstrap_servers=c.bootstrap,
            group_id=c.ingest_group,
            client_id=f"{c.app_id}-ingest",
            enable_auto_commit=False,
            auto_offset_reset=c.auto_offset_reset,
            max_poll_records=c.max_poll_records,
            fetch_max_wait_ms=c.fetch_max_wait_ms,
            # a fetch returns at least one record batch even past these limits
            max_partition_fetch_bytes=max(1 << 20, max_bytes + 65536),
            fetch_max_bytes=max(16 << 20, 2 * max_bytes),
            session_timeout_ms=int(c.session_timeout * 1000),
            heartbeat_interval_ms=int(min(3.0, c.session_timeout / 4) * 1000),
            **self.consumer_kwargs,
        )

    async def run(self) -> None:
        from aiokafka import ConsumerRebalanceListener

        ingest = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                # let the batch in hand finish and commit while the partitions are ours
                async with ingest._busy:
                    pass

            async def on_partitions_assigned(self, assigned: Any) -> None:
                if ingest.bounds is not None:
                    await ingest._start_bounded(assigned)
                by_topic: dict[str, list[int]] = {}
                for tp in sorted(assigned):
                    by_topic.setdefault(tp.topic, []).append(tp.partition)
                log.info("ingest assigned partitions: %s", " ".join(
                    f"{t}={','.join(map(str, ps))}" for t, ps in sorted(by_topic.items())))

        c = self.config
        self.consumer = consumer = self.new_consumer()
        await consumer.start()
        try:
            if c.replay:
                self.bounds = await self._bounds()
            consumer.subscribe([c.labels_topic, c.scans_topic], listener=Listener())
            while not self._stopping:
                records = await consumer.getmany(timeout_ms=200, max_records=c.max_poll_records)
                if not records:
                    continue
                async with self._busy:
                    await self._handle(records)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.error("ingest stopped: %s: %s", type(exc).__name__, exc)
            self.on_fatal(exc)
            raise
        finally:
            await consumer.stop()

    async def _bounds(self) -> dict[Any, tuple[int, int]]:
        """[start, end) of every partition of the inputs: end is the end offset now, start
        the first offset at or after `replay_from_ms` (or the log start)."""
        from aiokafka import TopicPartition

        c = self.config
        consumer = self.consumer
        cluster = await consumer._client.fetch_all_metadata()
        tps = [TopicPartition(topic, p) for topic in (c.labels_topic, c.scans_topic)
               for p in sorted(cluster.partitions_for_topic(topic) or ())]
        if not tps:
            return {}
        end = await consumer.end_offsets(tps)
        start = await consumer.beginning_offsets(tps)
        if c.replay_from_ms is not None:
            found = await consumer.offsets_for_times({tp: c.replay_from_ms for tp in tps})
            start = {tp: found[tp].offset if found.get(tp) is not None else end[tp]
                     for tp in tps}
        return {tp: (min(start[tp], end[tp]), end[tp]) for tp in tps}

    async def _start_bounded(self, assigned: Any) -> None:
        """Place each newly assigned partition at its start (a fresh group) and pause the
        ones already at their end, committing that end so that the replay can tell."""
        consumer = self.consumer
        assert self.bounds is not None
        for tp in assigned:
            start, end = self.bounds.get(tp, (0, 0))
            committed = await consumer.committed(tp)
            if committed is None:
                consumer.seek(tp, start)
                committed = start
            if committed >= end:
                consumer.pause(tp)
                if committed != end or start >= end:
                    with contextlib.suppress(Exception):
                        await consumer.commit({tp: max(committed, end)})

    def _cut_at_bounds(self, records: dict[Any, list[Any]]) -> tuple[
            dict[Any, list[Any]], dict[Any, int]]:
        """Records before each partition's end; the partitions that reached it -> end."""
        assert self.bounds is not None
        kept: dict[Any, list[Any]] = {}
        ended: dict[Any, int] = {}
        for tp, recs in records.items():
            end = self.bounds.get(tp, (0, 0))[1]
            if recs and recs[-1].offset >= end:
                recs = [r for r in recs if r.offset < end]
                ended[tp] = end
            elif recs and recs[-1].offset + 1 == end:
                ended[tp] = end
            kept[tp] = recs
        return kept, ended

    async def _handle(self, records: dict[Any, list[Any]]) -> None:
        c = self.config
        ended: dict[Any, int] = {}
        if self.bounds is not None:
            records, ended = self._cut_at_bounds(records)
        read_ms = int(time.time() * 1000)
        batch = build_batch(records, c.partitions, c.settings.max_message_bytes, read_ms)
        if self.metrics is not None:
            self.metrics.observe_event_ages(read_ms / 1000, (
                event.event_ts for entries in batch.frames.values() for _, event in entries))
        batch.offsets.update(ended)
        for tp in ended:
            self.consumer.pause(tp)
        await self._produce(batch)
        try:
            await self.consumer.commit(batch.offsets)
        except Exception as exc:  # a rebalance took the partitions: the new owner repeats
            log.warning("ingest commit failed (%s); the batch will be read again",
                        type(exc).__name__)
            return
        self.records += batch.records
        self.dead_letters += len(batch.dead_letters)
        if self.metrics is not None:
            m = self.metrics
            for topic, (n_events, n_dead) in batch.by_topic.items():
                if n_events:
                    m.events.labels(topic, "event").inc(n_events)
                if n_dead:
                    m.events.labels(topic, "dead_letter").inc(n_dead)
            for _, record in batch.dead_letters:
                m.dead_letters.labels(record["error"]["code"]).inc()

    async def _produce(self, batch: Batch) -> None:
        """Produce the batch's frames and dead letters; return when all are acknowledged.
        A passing broker outage (a timeout) is retried with the whole batch: the stage
        drops the repeated events. Anything else propagates and stops the worker."""
        from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

        c = self.config
        topic = c.internal_topic_name
        attempt = 0
        while True:
            futures = []
            send = self.producer.send
            for partition, entries in batch.frames.items():
                for chunk in internal_topic.split(entries, c.frame_max_events):
                    futures.append(await send(topic, internal_topic.encode_frame(chunk),
                                              partition=partition))
            for key, record in batch.dead_letters:
                log.info("dead letter %s/%d@%d: %s", record["source_topic"],
                         record["partition"], record["offset"], record["error"]["code"])
                futures.append(await send(c.deadletter_topic, dumps(record), key=key))
            try:
                await asyncio.gather(*futures)
                return
            except (KafkaTimeoutError, KafkaConnectionError) as exc:
                attempt += 1
                log.warning("ingest: produce failed (%s), retrying the batch (attempt %d)",
                            type(exc).__name__, attempt)
                await asyncio.sleep(min(5.0, 0.5 * attempt))

    async def stop(self) -> None:
        """Finish the batch in hand (it is committed), then leave the group."""
        self._stopping = True
        async with self._busy:
            pass
