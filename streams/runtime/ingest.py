"""Ingest: the input topics, in batches, to framed records on the internal topic. No rules here.

A plain aiokafka consumer group (`<app_id>-ingest`; the workers of one app id share the input
partitions through it) reads `labels` and `scans` with `getmany`, decodes and validates each
record (`streams.core.events.decode`), groups the events by the internal partition of their
tracking key and writes each group as one frame (`streams.runtime.internal_topic`). Records that do
not decode are dead-lettered. Input offsets are committed only after every frame and dead
letter made from them is acknowledged by the broker: a crash repeats a batch (the stateful
stage drops repeated event ids), it never skips one. Two batches are unacknowledged at most:
the next is read, decoded and sent while the one before is acknowledged, and the offsets of
the batches acknowledged (in order, each only after every one before it) are committed in
the background, one commit at a time, several batches in one when they are ready together
(`_settle` waits for all of it). So the loop is not idle through those round trips while the
stage waits for the frames.

A dead letter that cannot be produced (or any produce error that is not a passing broker
outage) stops the worker before the batch is committed: the record is never skipped.

Arrival (what lets the stage end the alert hold of a backlog early): every frame carries a
time by which its records had all arrived (`Arrivals`: the first fetch response whose high
watermark was past them), and after its frames, while a backlog's alerts may be held, ingest
writes a progress record to every internal partition: the input partitions it has read to
their high watermark, each with the time that watermark was fetched
(`internal_topic.Progress`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from streams.core import events
from streams.core.outputs import dead_letter, dumps
from streams.runtime import internal_topic

log = logging.getLogger(__name__)


# Read-through times are taken this much before the fetch that showed a partition read to its
# high watermark. One worker's arrival and read-through times need no margin between them:
# both are the times ingest processed fetch responses, with the high watermark each carried,
# and a partition's responses are processed in order with non-decreasing watermarks, so a
# record past the watermark of the fetch at time t is dated after t. The margin absorbs the
# clock difference between the hosts of several workers (the stage compares one worker's
# read-through times with another's arrival times): NTP keeps hosts within a few ms; a
# larger difference only shortens a hold, it loses nothing. (It was 500 ms, on the belief
# that the time in transit needed it: it only kept the end of a short backlog waiting.)
PROGRESS_MARGIN_MS = 100
# A batch read more than this after its records arrived is a backlog's: progress records
# then go out (live traffic sends none; the hold's timer ends its holds).
BACKLOG_AFTER_MS = 500
# Progress records go out at most this often, and only while the stage may hold alerts:
# until alert_hold (+1 s) after ingest last read a record.
PROGRESS_INTERVAL = 0.2


class Arrivals:
    """When ingest first saw each input record exist: per partition, the high watermarks of
    the fetch responses in order, each with the time it arrived. A record at offset o had
    arrived by the first of them past o (pure: fed by `observe`)."""

    def __init__(self) -> None:
        self.seen: dict[Any, deque[tuple[int, int]]] = {}  # tp -> (high watermark, ms)

    def observe(self, tp: Any, highwater: int | None, ms: int | None) -> None:
        if highwater is None or ms is None:
            return
        seen = self.seen.get(tp)
        if seen is None:
            self.seen[tp] = deque([(highwater, ms)])
        elif highwater > seen[-1][0]:
            seen.append((highwater, ms))

    def arrived_by(self, tp: Any, last_offset: int, now_ms: int) -> int:
        """When the record at `last_offset` (and every one before it) had arrived; `now_ms`
        (it had, since it was read) when no watermark past it was seen."""
        seen = self.seen.get(tp)
        if not seen:
            return now_ms
        while len(seen) > 1 and seen[0][0] <= last_offset:
            seen.popleft()  # not past this record: no later record can need it either
        highwater, ms = seen[0]
        return ms if highwater > last_offset else now_ms

    def forget(self, tps: Any) -> None:
        for tp in tps:
            self.seen.pop(tp, None)


def _position(consumer: Any, tp: Any) -> int | None:
    """The next offset `getmany` returns for `tp`, without waiting (`consumer.position` waits
    out an offset reset: not while a batch is in hand); None when not known."""
    try:
        state = consumer._subscription.subscription.assignment.state_value(tp)
    except AttributeError:  # not assigned (any more)
        return None
    if state is None or not state.has_valid_position:
        return None
    return int(state.position)


class Batch:
    """What one `getmany` became: frames per internal partition, dead letters, offsets."""

    __slots__ = ("arrived_by", "by_topic", "dead_letters", "events", "frames", "offsets",
                 "records")

    def __init__(self) -> None:
        self.by_topic: dict[str, list[int]] = {}  # topic -> [events, dead letters]
        self.frames: dict[int, list[internal_topic.Entry]] = {}
        self.dead_letters: list[tuple[bytes | None, dict[str, Any]]] = []
        self.offsets: dict[Any, int] = {}  # TopicPartition -> next offset to read
        self.records = 0
        self.events = 0
        self.arrived_by: int | None = None  # every record had arrived by then (epoch ms)


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
        # held while a batch is between getmany and send, and by a revoke or a stop until
        # every batch sent is committed
        self._busy = asyncio.Lock()
        # the last batch sent: until it and every one before it are acknowledged
        self._in_flight: asyncio.Future[None] | None = None
        self._acked: list[Batch] = []  # acknowledged, in order, not yet committed
        self._committing: asyncio.Future[None] | None = None  # commits them, one at a time
        self.records = 0
        self.dead_letters = 0
        # bounded (replay): every input partition's [start, end) seen when ingest began;
        # records at or past `end` are left alone and the partition is paused there
        self.bounds: dict[Any, tuple[int, int]] | None = None
        self.arrivals = Arrivals()
        self.read_through: dict[Any, int] = {}  # tp -> read through (epoch ms), sent or not
        self._progress_sent = float("-inf")  # monotonic: the last progress record
        self._progress_complete = False  # it said every assigned partition was read through
        # Progress is needed until every partition is read through this (epoch ms): the
        # latest arrival + hold of a batch read more than BACKLOG_AFTER_MS after it arrived (a
        # backlog's: live, the hold's timer comes first); and the least read-through time
        # the last complete progress record said
        self._backlog_until = 0
        self._through_sent = 0
        self._progress_last: dict[Any, int] = {}  # what they said

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
                # let the batches in hand finish and commit while the partitions are ours
                async with ingest._busy:
                    try:
                        await ingest._settle()
                    except BaseException as exc:  # aiokafka would only log it
                        ingest.on_fatal(exc)
                        raise
                    ingest.arrivals.forget(revoked)
                    for tp in revoked:
                        ingest.read_through.pop(tp, None)

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
                # while progress records may end a hold, look again soon when nothing came
                active = self._progress_active()
                records = await consumer.getmany(timeout_ms=50 if active else 200,
                                                 max_records=c.max_poll_records)
                if not records:
                    async with self._busy:
                        await self._settle()  # nothing more to read: the last batch commits
                        if active:
                            await self._send_progress()
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
            # a batch still in flight now is not committed: it is read again
            for task in (self._in_flight, self._committing):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            self._in_flight = self._committing = None
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
        batch.arrived_by = self._arrived_by(records, read_ms)
        if read_ms - batch.arrived_by > BACKLOG_AFTER_MS:
            self._backlog_until = max(self._backlog_until,
                                      batch.arrived_by + int(c.alert_hold * 1000))
        if self.metrics is not None:
            self.metrics.observe_event_ages(read_ms / 1000, (
                event.event_ts for entries in batch.frames.values() for _, event in entries))
        batch.offsets.update(ended)
        for tp in ended:
            self.consumer.pause(tp)
        progress = self._progress() if self._progress_active() else None
        futures = await self._send(batch, progress)
        before = self._in_flight
        self._in_flight = asyncio.ensure_future(
            self._finish(before, batch, progress, futures))
        if before is not None:
            await before  # two unacknowledged at most (its error is raised here)

    async def _settle(self) -> None:
        """Until every batch sent is acknowledged and committed (an error raised here)."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            await in_flight
        if self._committing is not None:
            await self._committing

    async def _finish(self, before: asyncio.Future[None] | None, batch: Batch,
                      progress: bytes | None, futures: list[asyncio.Future[Any]]) -> None:
        """A sent batch: once every batch before it and all of it are acknowledged, its
        input offsets are handed to the committer (a crash before the commit repeats the
        batch: the stage drops the repeated events). When a batch before failed, this one
        fails with its error and nothing after it is committed."""
        if before is not None:
            await before
        await self._deliver(batch, progress, futures)
        self._acked.append(batch)
        if self._committing is None or self._committing.done():
            self._committing = asyncio.ensure_future(self._commit_acked())

    async def _commit_acked(self) -> None:
        """Commit the acknowledged batches' offsets, in order, one commit at a time (those
        acknowledged while one is on its way go together in the next)."""
        while self._acked:
            batches, self._acked = self._acked, []
            offsets: dict[Any, int] = {}
            for batch in batches:  # later batches' offsets are further on
                offsets.update(batch.offsets)
            try:
                await self.consumer.commit(offsets)
            except Exception as exc:  # a rebalance took the partitions: the new owner repeats
                log.warning("ingest commit failed (%s); the batch will be read again",
                            type(exc).__name__)
                continue
            for batch in batches:
                self._committed(batch)

    def _committed(self, batch: Batch) -> None:
        """Count a committed batch."""
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

    # ------------------------------------------------------------ arrival and progress

    def _arrived_by(self, records: dict[Any, list[Any]], now_ms: int) -> int:
        """When every record of a `getmany` result had arrived (see `Arrivals`)."""
        consumer, arrivals = self.consumer, self.arrivals
        latest = 0
        for tp, recs in records.items():
            if not recs:
                continue
            arrivals.observe(tp, consumer.highwater(tp), consumer.last_poll_timestamp(tp))
            latest = max(latest, arrivals.arrived_by(tp, recs[-1].offset, now_ms))
        return latest or now_ms

    def _progress_active(self) -> bool:
        """Progress records can end a hold before its timer only for a batch read more than
        BACKLOG_AFTER_MS after it arrived (a backlog); they go out until one says every partition
        is read through the latest such arrival + the hold. Live traffic sends none."""
        hold = self.config.alert_hold
        return hold > 0 and self._backlog_until > self._through_sent

    def _caught_up(self) -> bool:
        """Update `read_through` for the assigned partitions read to their high watermark;
        whether every assigned partition is."""
        consumer = self.consumer
        complete = True
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            fetched = consumer.last_poll_timestamp(tp)
            position = _position(consumer, tp)
            if highwater is None or fetched is None or position is None or position < highwater:
                complete = False
                continue
            through = fetched - PROGRESS_MARGIN_MS
            if through > self.read_through.get(tp, 0):
                self.read_through[tp] = through
        return complete

    def _progress(self) -> bytes | None:
        """The progress record to send now, or None: nothing new, or sent less than
        PROGRESS_INTERVAL ago. Two go out at once: the first to say that ingest is at the
        end of every partition it has (the end of a backlog), and the first to say that
        every partition is read through the latest backlog arrival + the hold (what ends
        the stage's last holds; waiting out the interval there kept the end of a short
        backlog idle, measured up to 0.25 s)."""
        complete = self._caught_up()
        now = time.monotonic()
        through = {(tp.topic, tp.partition): ms for tp, ms in self.read_through.items()}
        if not through or through == self._progress_last:
            return None
        ends_holds = complete and min(through.values()) >= self._backlog_until
        if not (now - self._progress_sent >= PROGRESS_INTERVAL
                or (complete and not self._progress_complete) or ends_holds):
            return None
        counts = {}
        for topic in (self.config.labels_topic, self.config.scans_topic):
            parts = self.consumer.partitions_for_topic(topic)
            if not parts:
                return None  # no metadata yet: the stage could not take the minimum
            counts[topic] = len(parts)
        self._progress_last = through
        self._progress_sent = now
        self._progress_complete = complete
        if complete:
            self._through_sent = min(through.values())
        return internal_topic.encode_progress(counts, through)

    async def _send_progress(self) -> None:
        """Between batches: a progress record to every internal partition, acknowledged."""
        progress = self._progress()
        if progress is not None:
            await self._produce(Batch(), progress)

    async def _produce(self, batch: Batch, progress: bytes | None = None) -> None:
        """Send a batch and return when all of it is acknowledged."""
        await self._deliver(batch, progress, await self._send(batch, progress))

    async def _send(self, batch: Batch, progress: bytes | None) -> list[asyncio.Future[Any]]:
        """Send the batch's frames and dead letters, then `progress` (to every internal
        partition, after the frames: one producer keeps a partition's order); their
        deliveries."""
        c = self.config
        topic = c.internal_topic_name
        futures = []
        send = self.producer.send
        for partition, entries in batch.frames.items():
            for chunk in internal_topic.split(entries, c.frame_max_events):
                futures.append(await send(topic, internal_topic.encode_frame(
                    chunk, batch.arrived_by), partition=partition))
        if progress is not None:
            for partition in range(c.partitions):
                futures.append(await send(topic, progress, partition=partition))
        for key, record in batch.dead_letters:
            log.info("dead letter %s/%d@%d: %s", record["source_topic"],
                     record["partition"], record["offset"], record["error"]["code"])
            futures.append(await send(c.deadletter_topic, dumps(record), key=key))
        return futures

    async def _deliver(self, batch: Batch, progress: bytes | None,
                       futures: list[asyncio.Future[Any]]) -> None:
        """Until the sends are acknowledged. A passing broker outage (a timeout) is retried
        with the whole batch: the stage drops the repeated events. Anything else propagates
        and stops the worker."""
        from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

        attempt = 0
        while True:
            try:
                await asyncio.gather(*futures)
                return
            except (KafkaTimeoutError, KafkaConnectionError) as exc:
                attempt += 1
                log.warning("ingest: produce failed (%s), retrying the batch (attempt %d)",
                            type(exc).__name__, attempt)
                await asyncio.sleep(min(5.0, 0.5 * attempt))
                futures = await self._send(batch, progress)

    async def stop(self) -> None:
        """Finish the batches in hand (they are committed), then leave the group."""
        self._stopping = True
        async with self._busy:
            await self._settle()
