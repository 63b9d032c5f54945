"""The detection stage: the Faust agent on the internal topic that applies the core's rules
to a frame of events against a RocksDB table per tracking key and publishes the alerts.

Faust owns what it is best at: the table (`rocksdb://`), its changelog topic and recovery, the
assignment of the internal topic's partitions. One frame is one step (`detect_frame`): read
the states it needs, apply the core to each event, publish the alerts, then write the new
states. The stage writes the table's store and its changelog itself, batched, instead of
through `table[key] = value` (one Faust changelog send per key): the changelog records are
exactly what Faust's recovery reads back (raw key, raw value, the table partition), and the
stage records the persisted changelog offset as Faust does.

Delivery is at least once (Faust's exactly-once is not relied on). Per frame:
1. the alerts are produced and acknowledged;
2. then the changed states go to the changelog and are acknowledged;
3. then the states are written to RocksDB with the changelog offset;
4. then Faust may commit the frame's offset (the agent returns to its loop).
A crash before 1 completes repeats the frame (same alert ids); after 1, the repeated frame
finds its event ids in the state only once 2 is done, so an alert is never lost; a state is
never in RocksDB before it is in the changelog, so recovery always rebuilds it.

The alert hold (`alert_hold`) is measured in arrival: a held alert waits until every input
record that arrived within the hold after its frame's records has been applied. Live, that is
the hold itself (a timer from the frame's processing bounds it in every case). In a backlog
the records arrived long before they are read, and ingest's progress records
(`internal_topic.Progress`) show when everything that arrived by then has come through this
internal partition: the held alerts then go out, and the frames become durable, without
waiting out the hold at the end of the backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from streams.core import detection
from streams.core.outputs import dumps, stamp_alert
from streams.runtime import internal_topic
from streams.runtime.metrics import Metrics
from streams.runtime.stream_config import StreamConfig

if TYPE_CHECKING:
    import faust

# The rules whose alerts a late message can change (which label a scan belongs to, a late
# void, a late holder of another seller, a late scan that adds to the evidence or changes
# an event time): `alert_hold` holds these back so that a correction within the hold
# replaces them unseen. invalid_tracking rests on the label's own number alone (only a
# reprint with other facts revises it), so it goes out at once.
HOLDABLE = frozenset({detection.DUPLICATE_TRACKING, detection.PREVIOUSLY_USED,
                      detection.DESTINATION_MISMATCH, detection.VOIDED_LABEL_SCANNED})
RETRACTED = detection.RETRACTED
# The response stage's input (streams.runtime.response_stage): per durable batch of frames,
# one record {"watermark": epoch seconds, "alerts": [the alert revisions published, as on
# the alerts topic]}, in records of at most FORWARD_MAX_ALERTS alerts
FORWARD_KEY = b"batch"
FORWARD_MAX_ALERTS = 200
TABLE_ROCKSDB_OPTIONS = {"write_buffer_size": 4 << 20, "max_write_buffer_number": 2,
                         "block_cache_size": 8 << 20}

# A record batch's bytes, estimated from above: its header, and each record's key, value and
# framing (`state_record_bytes`). The response stage's bound on a durable batch and its one
# atomic changelog write use the same estimate, so a batch within the one fits the other.
RECORD_BATCH_OVERHEAD = 1024


def state_record_bytes(key: bytes, value: bytes | None) -> int:
    return len(key) + len(value or b"") + 32


# ---------------------------------------------------------------- one frame, Kafka-free


class FrameResult:
    """What one frame did: the alerts to publish (with the input record timestamp each came
    from) and the states to store (key -> new bytes, None to delete)."""

    __slots__ = ("alerts", "events", "states")

    def __init__(self) -> None:
        self.alerts: list[tuple[int, dict[str, Any]]] = []
        self.states: dict[bytes, bytes | None] = {}
        self.events = 0


def detect_frame(entries: list[internal_topic.Entry], get: Callable[[bytes], bytes | None],
                 settings: Any) -> FrameResult:
    """Apply a frame's events to the stored states (`get(key)`) with the pure core."""
    result = FrameResult()
    working: dict[bytes, list[Any]] = {}  # key -> [state, stored bytes]
    apply = detection.apply
    from_bytes = detection.TrackingState.from_bytes
    for ts, event in entries:
        key = event.key.encode()
        slot = working.get(key)
        if slot is None:
            stored = get(key)
            slot = working[key] = [from_bytes(stored) if stored is not None else None, stored]
        state, alerts = apply(slot[0], event, settings)
        slot[0] = state
        for alert in alerts:
            result.alerts.append((ts, alert))
    result.events = len(entries)
    for key, (state, stored) in working.items():
        new = None if state is None else state.to_bytes()
        if new != stored:  # a redelivery changes nothing: no changelog write
            result.states[key] = new
    return result

# ---------------------------------------------------------------- the stage's store


class _Partition:
    """One table partition's store: RocksDB (rocksdict) or, in unit tests, memory.

    The RocksDB handle is Faust's (`_db_for_partition` opens it into Faust's own map, which
    Faust closes on a revoke): never keep one beyond a step, or a partition that comes back
    finds its DB still locked by this process. `opened_only` looks without opening: the
    writer of a revoked partition's last frames leaves its RocksDB alone (the changelog has
    them: the new owner recovers them)."""

    def __init__(self, table: Any, partition: int, opened_only: bool = False) -> None:
        store = table.data
        self.partition = partition
        dbs = getattr(store, "_dbs", None)
        if dbs is None:  # memory://
            self.rocks = None
        elif opened_only:
            self.rocks = dbs.get(partition)
        else:
            self.rocks = store._db_for_partition(partition)
        self.skip = dbs is not None and self.rocks is None
        self.store = store
        self.get: Callable[[bytes], bytes | None] = (
            self.rocks.get if self.rocks is not None else store.data.get)

    def write(self, states: dict[bytes, bytes | None], tp: Any, offset: int | None) -> None:
        if self.skip:
            return
        if self.rocks is not None:
            import rocksdict

            batch = rocksdict.WriteBatch(raw_mode=True)
            for key, value in states.items():
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
            self.rocks.write(batch)
            if offset is not None:
                self.store.set_persisted_offset(tp, offset)
        else:
            data = self.store.data
            for key, value in states.items():
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value


class Pending:
    """A frame applied but not yet durable: its alerts are in flight, its states are in the
    overlay; the writer makes it durable and then acks its Faust event."""

    __slots__ = ("alerts", "arrived_by", "due", "event", "events", "forwards", "futures", "held",
                 "partition", "states", "watermark")

    def __init__(self, partition: int, states: dict[bytes, bytes | None],
                 alerts: list[tuple[int, dict[str, Any]]], futures: list[asyncio.Future[Any]],
                 event: Any, events: int, held: list[tuple[int, dict[str, Any]]] | None = None,
                 due: float = 0.0, watermark: int = 0, arrived_by: int = 0) -> None:
        # alerts held back until `due` (monotonic), or until the inputs are read through
        # `arrived_by` (epoch ms) + the hold, then published
        self.held = held or []
        self.due = due
        self.arrived_by = arrived_by
        self.watermark = watermark  # the greatest event time of the frame's events
        self.forwards: list[bytes] = []  # its published alerts' JSON, for the response stage
        self.partition = partition
        self.states = states
        self.alerts = alerts  # (input record timestamp ms, alert)
        self.futures = futures  # their deliveries
        self.event = event  # the Faust event to ack (or a list of them, in order)
        self.events = events


class Stage:
    """The stateful stage: `process` applies a frame at once and publishes its alerts; a
    writer task then makes batches of frames durable (group commit) and acks them.

    The order per frame is fixed (module docstring): alerts acked, then the changelog, then
    RocksDB, then the Faust ack. Frames are not held back for it: the next frame reads the
    states still on their way through the overlay, so the stage pays the broker round trips
    once per batch of frames instead of once per frame. `max_pending` frames at most."""

    def __init__(self, app: Any, config: StreamConfig, table: Any) -> None:
        self.app = app
        self.config = config
        self.table = table
        self.producer: Any = None
        self.ack: Callable[[Any], Any] | None = None  # the agent's stream.ack
        self.changelog_topic = config.changelog_topic
        # the response stage's input (streams.runtime.response_stage): every alert revision
        # published goes there too, and the watermark once the frames behind it are durable
        self.forward_topic: str | None = config.response_topic_name if config.response else None
        self.forwarded_watermark = 0
        self.on_fatal: Callable[[BaseException], None] = lambda exc: None
        self.metrics: Metrics | None = None
        self.overlay: dict[bytes, bytes | None] = {}
        self.latest_held: dict[str, int] = {}  # alert_id -> latest revision held back
        self.unpublished: set[str] = set()  # held alerts superseded before any publication
        # Group commit keeps at most `stage_max_pending` frames in flight. A hold keeps every
        # frame pending that long, FIFO: a bound in frames would block the next frames (and
        # their immediate alerts) behind it, so the pending work is bounded by the hold times
        # the stage's rate instead (measured: a 264-frame bound with a 2 s hold put p50 at
        # 2,000 events/s from 43 ms to 500 ms)
        self.queue: asyncio.Queue[Pending] = asyncio.Queue(
            maxsize=0 if config.alert_hold > 0 else config.stage_max_pending)
        self._writer: asyncio.Future[None] | None = None
        self.last_work: dict[int, float] = {}  # partition -> monotonic time of its last frame
        # internal partition -> input partition -> read through (epoch ms), from progress
        # records; and the least of them over every input partition (0: one not known)
        self.read_through: dict[int, dict[internal_topic.InputPartition, int]] = {}
        self.read_through_all: dict[int, int] = {}
        self._progressed = asyncio.Event()
        self.frames = 0
        self.events = 0
        self.alerts = 0

    async def process(self, partition: int, value: bytes, event: Any = None) -> None:
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_loop())
        self.last_work[partition] = time.monotonic()
        c = self.config
        record = internal_topic.decode(value)
        if isinstance(record, internal_topic.Progress):
            self._progress(partition, record)
            # acked in order with the frames around it
            await self.queue.put(Pending(partition, {}, [], [], event, 0))
            return
        entries = record.entries
        overlay = self.overlay
        stored = _Partition(self.table, partition).get

        def get(key: bytes) -> bytes | None:
            return overlay[key] if key in overlay else stored(key)

        result = detect_frame(entries, get, c.settings)
        watermark = max(event.event_ts for _, event in entries) if entries else 0
        now_alerts, held = result.alerts, []
        if c.alert_hold > 0:
            now_alerts, held = [], []
            for item in result.alerts:
                alert = item[1]
                if alert["rule"] in HOLDABLE:
                    held.append(item)
                    self.latest_held[alert["alert_id"]] = alert["revision"]
                else:
                    now_alerts.append(item)
        futures: list[asyncio.Future[Any]] = []
        pending = Pending(partition, result.states, now_alerts, futures, event,
                          result.events, held, time.monotonic() + c.alert_hold, watermark,
                          record.arrived_by)
        for _, alert in now_alerts:
            await self._publish(alert, pending)
        overlay.update(result.states)
        await self.queue.put(pending)

    def _progress(self, partition: int, progress: internal_topic.Progress) -> None:
        """A progress record came through `partition`: everything that arrived on those
        input partitions before their times has been applied here. Read-through times only
        grow (each is a fact about the input; a former owner's may come late)."""
        through = self.read_through.setdefault(partition, {})
        for tp, ms in progress.read_through.items():
            if ms > through.get(tp, 0):
                through[tp] = ms
        self.read_through_all[partition] = min(
            (through.get((topic, i), 0) for topic, n in progress.partitions.items()
             for i in range(n)), default=0)
        self._progressed.set()
        self._progressed = asyncio.Event()

    async def _hold(self, p: Pending) -> None:
        """Until a held frame's alerts may go out: its hold has passed, or every input
        record that arrived within the hold after the frame's records has been applied."""
        until = p.arrived_by + self.config.alert_hold * 1000
        while True:
            wait = p.due - time.monotonic()
            if wait <= 0 or self.read_through_all.get(p.partition, 0) >= until:
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._progressed.wait(), wait)

    async def _publish(self, alert: dict[str, Any], pending: Pending) -> None:
        """Send an alert revision; its delivery joins the frame's, its JSON the frame's
        forwards to the response stage."""
        stamped = stamp_alert(alert)
        value = dumps(stamped)
        pending.futures.append(await self.producer.send(
            self.config.alerts_topic, value, key=stamped["tracking_number"].encode()))
        if self.forward_topic is not None:
            pending.forwards.append(value)

    async def _forward(self, batch: list[Pending]) -> list[asyncio.Future[Any]]:
        """To the response stage, once a batch of frames' alerts are out: their alerts and
        the greatest event time of their events (the watermark), when there are alerts or
        the watermark advanced. One record per FORWARD_MAX_ALERTS alerts (each one batch of
        the response stage: its cuts are the records, whatever happens after)."""
        if self.forward_topic is None:
            return []
        watermark = max(max(p.watermark for p in batch), self.forwarded_watermark)
        alerts = [v for p in batch for v in p.forwards]
        if not alerts and watermark <= self.forwarded_watermark:
            return []
        self.forwarded_watermark = watermark
        futures = []
        for start in range(0, max(len(alerts), 1), FORWARD_MAX_ALERTS):
            chunk = alerts[start:start + FORWARD_MAX_ALERTS]
            value = b'{"watermark":%d,"alerts":[%s]}' % (watermark, b",".join(chunk))
            futures.append(await self.producer.send(self.forward_topic, value,
                                                    key=FORWARD_KEY, partition=0))
            if self.metrics is not None:
                self.metrics.response_records.labels("sent").inc()
        return futures

    async def _release(self, pending: Pending) -> None:
        """Publish a frame's held alerts, now due, but those a later revision of the same
        alert (still held) supersedes, and the retraction of one never published."""
        for item in pending.held:
            alert = item[1]
            alert_id, revision = alert["alert_id"], alert["revision"]
            if self.latest_held.get(alert_id, 0) > revision:
                if revision == 1:
                    self.unpublished.add(alert_id)
                continue  # superseded while held: the later revision is published instead
            self.latest_held.pop(alert_id, None)
            if alert["status"] == RETRACTED and (revision == 1 or alert_id in self.unpublished):
                self.unpublished.discard(alert_id)
                continue  # never published: nothing to retract
            self.unpublished.discard(alert_id)
            await self._publish(alert, pending)
            pending.alerts.append(item)

    # The states of one durable batch, merged, at most this many bytes (None: no bound): the
    # response stage writes them as one changelog record batch (streams.runtime.response_stage)
    max_batch_bytes: int | None = None

    async def _write_loop(self) -> None:
        carry: Pending | None = None  # taken from the queue, left for the next batch
        try:
            while True:
                batch = [carry if carry is not None else await self.queue.get()]
                carry = None
                if self.max_batch_bytes is None:
                    while not self.queue.empty():
                        batch.append(self.queue.get_nowait())
                else:
                    carry = self._take_within(batch, self.max_batch_bytes)
                await self._make_durable(batch)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.on_fatal(exc)  # nothing of this batch is acked: it is read again
            raise

    def _take_within(self, batch: list[Pending], limit: int) -> Pending | None:
        """Add queued frames to `batch` (one frame) while their states, merged by key, stay
        within `limit` bytes; the first that would not fit is returned (the next batch
        starts with it). A frame alone is taken whatever its size."""
        sizes: dict[bytes, int] = {}
        total = 0
        p: Pending | None = batch.pop()
        while p is not None:
            new = {key: state_record_bytes(key, value) for key, value in p.states.items()}
            grown = sum(n - sizes.get(key, 0) for key, n in new.items())
            if batch and total + grown > limit:
                return p
            total += grown
            sizes.update(new)
            batch.append(p)
            p = None if self.queue.empty() else self.queue.get_nowait()
        return None

    async def _make_durable(self, batch: list[Pending]) -> None:
        for p in batch:  # in order: a frame is durable only once its held alerts are out
            if p.held:
                await self._hold(p)
                await self._release(p)
        futures = [f for p in batch for f in p.futures]
        futures += await self._forward(batch)
        if futures:
            # acknowledged before the state that marks their events as seen is written
            await asyncio.gather(*futures)
            self._published(batch)
        merged: dict[int, dict[bytes, bytes | None]] = {}
        for p in batch:  # later frames overwrite earlier ones: the last state of a key wins
            if p.states:
                merged.setdefault(p.partition, {}).update(p.states)
        if merged:
            from faust.types import TP

            topic = self.changelog_topic
            partitions = list(merged)
            offsets = await asyncio.gather(*(self._changelog(part, merged[part])
                                             for part in partitions))
            for part, offset in zip(partitions, offsets, strict=True):
                _Partition(self.table, part, opened_only=True).write(
                    merged[part], TP(topic, part), offset)
        overlay = self.overlay
        for p in batch:
            for key, value in p.states.items():
                if key in overlay and overlay[key] is value:  # not overwritten since
                    del overlay[key]
            if p.event is not None and self.ack is not None:
                for event in p.event if isinstance(p.event, list) else (p.event,):
                    await self.ack(event)
            self.frames += 1
            self._durable(p)

    def _published(self, batch: list[Pending]) -> None:
        """A batch's outputs are acknowledged: count them."""
        self.alerts += sum(len(p.alerts) for p in batch)
        if self.metrics is not None:
            acked = time.time()
            for p in batch:
                for ts, alert in p.alerts:
                    self.metrics.count_alert(alert, ts, acked)

    def _durable(self, p: Pending) -> None:
        """A frame is durable and acked: count its events."""
        self.events += p.events
        if self.metrics is not None:
            self.metrics.stage_events.inc(p.events)

    async def drain(self) -> None:
        """Until every frame processed so far is durable (tests, shutdown)."""
        while not self.queue.empty() or self.overlay:
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(BaseException):
                await self._writer
            self._writer = None

    async def _changelog(self, partition: int, states: dict[bytes, bytes | None]) -> int:
        """Send the states to the table's changelog, batched; the last offset once acked."""
        producer = self.producer
        topic = self.changelog_topic
        now = int(time.time() * 1000)
        futures = []
        counts = []
        batch = producer.create_batch()
        n = 0
        for key, value in states.items():
            if batch.append(key=key, value=value, timestamp=now) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                counts.append(n)
                batch = producer.create_batch()
                n = 0
                if batch.append(key=key, value=value, timestamp=now) is None:
                    raise ValueError(f"a state of {len(value or b'')} bytes does not fit a "
                                     "producer batch")
            n += 1
        futures.append(await producer.send_batch(batch, topic, partition=partition))
        counts.append(n)
        done = await asyncio.gather(*futures)
        return done[-1].offset + counts[-1] - 1


# ---------------------------------------------------------------- Faust wiring


class DetectionStage(NamedTuple):
    """The stage's Faust parts: the internal topic, the table, the agent, and the stage."""

    topic: Any
    table: Any
    agent: Any
    stage: Stage


def attach(app: faust.App, config: StreamConfig, metrics: Metrics,
           fatal: Callable[[BaseException], None]) -> DetectionStage:
    """Declare the internal topic, the table and the agent on `app`."""
    tracking_events = app.topic(
        config.internal_topic_name,
        key_type=bytes,
        value_type=bytes,
        partitions=config.partitions,
        replicas=config.replication or None,  # None: Faust's factor, set by declare_topics
    )
    table = app.Table(
        config.table_name,
        key_type=bytes,
        value_type=bytes,
        partitions=config.partitions,
        # RocksDB's memory per partition DB, bounded (2 memtables of 4 MiB, an 8 MiB block
        # cache; reads past it come from the OS page cache): Faust's defaults (3 x 64 MiB,
        # 2 GiB) let a replay's memory grow with the history it writes (benchmarks/history.py)
        options=TABLE_ROCKSDB_OPTIONS,
    )
    stage = Stage(app, config, table)
    stage.on_fatal = fatal
    stage.metrics = metrics

    @app.on_partitions_revoked.connect
    async def _drain_before_revoke(app: Any, revoked: Any, **kwargs: Any) -> None:
        # the frames of partitions about to go elsewhere become durable here first
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stage.drain(), timeout=config.session_timeout / 2)

    @app.agent(tracking_events, name="detect", concurrency=1)
    async def detect(stream: faust.StreamT) -> None:
        manual = stream.noack()  # the stage's writer acks a frame once it is durable
        stage.ack = manual.ack
        async for event in manual.events():
            msg = event.message
            try:
                await stage.process(msg.partition, msg.value, event)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                # never let Faust's supervisor restart the agent past this frame
                fatal(exc)
                raise
    return DetectionStage(tracking_events, table, detect, stage)
