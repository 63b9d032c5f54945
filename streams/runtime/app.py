"""The stream runtime: plain aiokafka ingest, a Faust stateful stage. No rules here.

    labels, scans ──ingest──> <app_id>-tracking-events ──detect──> tracking.alerts
                 (aiokafka group   frames: the events of one     (Faust agent; RocksDB
                  <app_id>-ingest;  internal partition per        table per tracking key,
                  decode, validate, record, partitioned by the    its changelog, recovery,
                  re-key, batch)    tracking key)                 the partition assignment)
                        └────────> tracking.deadletter

Ingest (`streams.runtime.ingest`) is a plain aiokafka consumer group: batched reads, batched
produce, input offsets committed after the frames are acknowledged.

The stateful stage is one Faust agent (concurrency 1) on the internal topic. Faust owns what
it is best at: the table (`rocksdb://`), its changelog topic and recovery, the assignment of
the internal topic's partitions, the worker's lifecycle and its web server. One frame is one
step (`detect_frame`): read the states it needs, apply the core to each event, publish the
alerts, then write the new states. The stage writes the table's store and its changelog
itself, batched, instead of through `table[key] = value` (one Faust changelog send per key):
the changelog records are exactly what Faust's recovery reads back (raw key, raw value, the
table partition), and the stage records the persisted changelog offset as Faust does.

Delivery is at least once (Faust's exactly-once is not relied on). Per frame:
1. the alerts are produced and acknowledged;
2. then the changed states go to the changelog and are acknowledged;
3. then the states are written to RocksDB with the changelog offset;
4. then Faust may commit the frame's offset (the agent returns to its loop).
A crash before 1 completes repeats the frame (same alert ids); after 1, the repeated frame
finds its event ids in the state only once 2 is done, so an alert is never lost; a state is
never in RocksDB before it is in the changelog, so recovery always rebuilds it.

`build_app(config)` builds an independent app (tests and benchmarks build several).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streams.core import detection
from streams.core.outputs import dead_letter_max_bytes, dumps, stamp_alert
from streams.runtime import internal_topic
from streams.runtime.ingest import Ingest
from streams.runtime.metrics import Metrics, register_views
from streams.runtime.stream_config import StreamConfig
from streams.runtime.watchdog import Watchdog

# The rules whose findings a late message can change (which label a scan belongs to, a late
# void, a late holder of another seller): `alert_hold` holds these back; invalid_tracking
# and previously_used never change once raised, so they go out at once.
HOLDABLE = frozenset({detection.DUPLICATE_TRACKING, detection.DESTINATION_MISMATCH,
                      detection.VOIDED_LABEL_SCANNED})
RETRACTED = detection.RETRACTED
TABLE_ROCKSDB_OPTIONS = {"write_buffer_size": 4 << 20, "max_write_buffer_number": 2,
                         "block_cache_size": 8 << 20}

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)


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


# ---------------------------------------------------------------- topics

TOPIC_ALREADY_EXISTS = 36


def _large_enough(max_bytes: int) -> int:
    """Bytes a record may need: the largest dead letter (`outputs.dead_letter_max_bytes`:
    the value and key prefixes in base64, metadata) with room for the record's own key and
    Kafka's record overhead."""
    return max(1 << 20, dead_letter_max_bytes(max_bytes) + max_bytes + 65536)


def topic_specs(config: StreamConfig) -> dict[str, dict[str, str]]:
    """Topics the worker needs -> their configs. The internal topic and the changelog are
    always needed; the input and output topics only when `create_topics` is set."""
    specs: dict[str, dict[str, str]] = {}
    if config.create_topics:
        big = str(_large_enough(config.settings.max_message_bytes))
        specs[config.labels_topic] = {}
        specs[config.scans_topic] = {}
        specs[config.alerts_topic] = {}
        specs[config.deadletter_topic] = {"max.message.bytes": big}
    specs[config.internal_topic_name] = {"max.message.bytes": str(8 << 20)}
    specs[config.changelog_topic] = {"cleanup.policy": "compact"}
    return specs


async def declare_topics(config: StreamConfig, app: Any = None) -> list[str]:
    """Create the missing topics before anything subscribes (a consumer that subscribes to a
    missing topic is not assigned it until a metadata refresh, minutes later). Refuses to run
    when the internal topic or changelog has another partition count than `partitions`: the
    table's partitions follow the internal topic's, so a mismatch would misroute state.
    Every topic follows one replication rule (streams.runtime.replication), also the
    topics Faust creates itself when `app` is given."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from streams.runtime import replication

    admin = AIOKafkaAdminClient(bootstrap_servers=config.bootstrap, request_timeout_ms=30000,
                                **config.kafka.aiokafka_kwargs())
    await admin.start()
    try:
        rule = await replication.plan(admin, config.replication, config.min_insync_replicas)
        if app is not None:  # what Faust creates itself: its leader topic, a changelog
            app.conf.topic_replication_factor = rule.factor
            for table in app.tables.values():
                table.extra_topic_configs.update(rule.topic_configs())
        specs = {name: {**rule.topic_configs(), **configs}
                 for name, configs in topic_specs(config).items()}
        existing = set(await admin.list_topics())
        for name in (config.internal_topic_name, config.changelog_topic):
            if name in existing:
                described = await admin.describe_topics([name])
                count = len(described[0].get("partitions", [])) if described else 0
                if count and count != config.partitions:
                    raise RuntimeError(
                        f"topic {name} has {count} partitions but the worker is configured "
                        f"for {config.partitions}: start it with --partitions {count}"
                    )
        missing = [name for name in specs if name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        name,
                        config.partitions,
                        rule.factor,
                        topic_configs=specs[name],
                    )
                    for name in missing
                ]
            )
            for error in response.topic_errors:
                name, code = error[0], error[1]
                if code not in (0, TOPIC_ALREADY_EXISTS):  # another worker won the race
                    raise RuntimeError(f"cannot create topic {name}: error {code} {error[2:]}")
            log.info("created topics %s", ", ".join(missing))
        await replication.warn_weaker(admin, rule, [n for n in specs if n in existing],
                                      where=config.bootstrap)
        return missing
    finally:
        await admin.close()


def new_producer(config: StreamConfig) -> Any:
    """The worker's producer (ingest and stage share it): acks from all in-sync replicas,
    idempotent, large batches; a record may be as large as a dead letter."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=config.bootstrap,
        client_id=f"{config.app_id}-producer",
        acks="all",
        enable_idempotence=True,
        linger_ms=int(config.producer_linger * 1000),
        max_batch_size=config.producer_max_batch_size,
        max_request_size=max(_large_enough(config.settings.max_message_bytes), 8 << 20),
        # a broker outage shorter than this delays sends instead of failing them
        request_timeout_ms=int(config.produce_timeout * 1000),
        **config.kafka.aiokafka_kwargs(),
    )
    if config.producer_max_request_bytes > 0:
        from streams.runtime.faust_transport import cap_request_bytes

        cap_request_bytes(producer, config.producer_max_request_bytes)
    return producer


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

    __slots__ = ("alerts", "due", "event", "events", "futures", "held", "partition", "states")

    def __init__(self, partition: int, states: dict[bytes, bytes | None],
                 alerts: list[tuple[int, dict[str, Any]]], futures: list[asyncio.Future[Any]],
                 event: Any, events: int, held: list[tuple[int, dict[str, Any]]] | None = None,
                 due: float = 0.0) -> None:
        self.held = held or []  # alerts held back until `due` (monotonic), then published
        self.due = due
        self.partition = partition
        self.states = states
        self.alerts = alerts  # (input record timestamp ms, alert)
        self.futures = futures  # their deliveries
        self.event = event
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
        self.frames = 0
        self.events = 0
        self.alerts = 0

    async def process(self, partition: int, value: bytes, event: Any = None) -> None:
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_loop())
        self.last_work[partition] = time.monotonic()
        c = self.config
        entries = internal_topic.decode_frame(value)
        overlay = self.overlay
        stored = _Partition(self.table, partition).get

        def get(key: bytes) -> bytes | None:
            return overlay[key] if key in overlay else stored(key)

        result = detect_frame(entries, get, c.settings)
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
        futures = [await self._publish(alert) for _, alert in now_alerts]
        overlay.update(result.states)
        await self.queue.put(Pending(partition, result.states, now_alerts, futures, event,
                                     result.events, held, time.monotonic() + c.alert_hold))

    async def _publish(self, alert: dict[str, Any]) -> asyncio.Future[Any]:
        stamped = stamp_alert(alert)
        return await self.producer.send(self.config.alerts_topic, dumps(stamped),
                                        key=stamped["tracking_number"].encode())

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
            pending.futures.append(await self._publish(alert))
            pending.alerts.append(item)

    async def _write_loop(self) -> None:
        try:
            while True:
                batch = [await self.queue.get()]
                while not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                await self._make_durable(batch)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.on_fatal(exc)  # nothing of this batch is acked: it is read again
            raise

    async def _make_durable(self, batch: list[Pending]) -> None:
        for p in batch:  # in order: a frame is durable only once its held alerts are out
            if p.held:
                wait = p.due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._release(p)
        futures = [f for p in batch for f in p.futures]
        if futures:
            # acknowledged before the state that marks their events as seen is written
            await asyncio.gather(*futures)
            self.alerts += len(futures)
            if self.metrics is not None:
                acked = time.time()
                for p in batch:
                    for ts, alert in p.alerts:
                        self.metrics.count_alert(alert, ts, acked)
        merged: dict[int, dict[bytes, bytes | None]] = {}
        for p in batch:  # later frames overwrite earlier ones: the last state of a key wins
            if p.states:
                merged.setdefault(p.partition, {}).update(p.states)
        if merged:
            from faust.types import TP

            topic = self.config.changelog_topic
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
                await self.ack(p.event)
            self.frames += 1
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
        topic = self.config.changelog_topic
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


def build_app(config: StreamConfig) -> faust.App:
    """A new Faust app for `config`: its own id, topics, table, stage and ingest."""
    import faust

    from streams.runtime import faust_transport

    runtime: dict[str, Any] = {"ingest": None, "ingest_task": None, "fatal": None,
                               "crash": None, "watchdog_task": None, "replay_task": None,
                               "replay_done": None, "replay_progress": None}
    watchdog = Watchdog(config.stall_seconds)
    metrics = Metrics()

    class TrackingApp(faust.App):
        async def on_first_start(self) -> None:
            await declare_topics(config, self)
            await super().on_first_start()

        async def on_start(self) -> None:
            await super().on_start()
            # the seek-race guard of faust_transport, for the stream partitions only
            self.consumer.seek_guard.topics = frozenset({config.internal_topic_name})
            if stage.producer is None and config.store != "memory://":
                stage.producer = new_producer(config)
                await stage.producer.start()

        async def on_started(self) -> None:
            await super().on_started()
            if config.ingest and runtime["ingest"] is None and stage.producer is not None:
                ingest = runtime["ingest"] = Ingest(
                    config, stage.producer, fatal,
                    consumer_kwargs=config.kafka.aiokafka_kwargs(), metrics=metrics)
                runtime["ingest_task"] = asyncio.ensure_future(ingest.run())
            if runtime["watchdog_task"] is None:
                runtime["watchdog_task"] = asyncio.ensure_future(watch())
            if config.replay and runtime["replay_task"] is None:
                runtime["replay_task"] = asyncio.ensure_future(until_replayed())

        async def on_stop(self) -> None:
            for name in ("watchdog_task", "replay_task"):
                if runtime[name] is not None:
                    runtime[name].cancel()
            ingest, task = runtime["ingest"], runtime["ingest_task"]
            if ingest is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ingest.stop(), timeout=10)
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            # what the stage applied becomes durable (held alerts out, changelog, RocksDB,
            # acks) before Faust stops; what is left is read again after a restart
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stage.drain(), timeout=config.alert_hold + 5)
            await stage.stop()
            await super().on_stop()
            if stage.producer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(stage.producer.stop(), timeout=10)

        def _new_transport(self) -> faust_transport.Transport:
            # kafka:// with a bounded consumer fetch wait (see faust_transport)
            return faust_transport.Transport(self.conf.broker_consumer, self)

    async def watch() -> None:
        """The stall watchdog (streams.runtime.watchdog) over the internal topic's partitions."""
        period = max(0.5, min(5.0, config.stall_seconds / 3))
        while True:
            await asyncio.sleep(period)
            try:
                await check_stalls()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker outage: try again next period
                log.debug("watchdog check failed: %s", exc)

    async def check_stalls() -> None:
        consumer = app.consumer
        mine = {tp for tp in consumer.assignment() if tp.topic == config.internal_topic_name}
        watchdog.forget(mine)
        now = time.monotonic()
        for tp in sorted(mine):
            committed = consumer._committed_offset.get(tp)
            if not watchdog.observe(tp, committed, consumer.highwater(tp),
                                    stage.last_work.get(tp.partition), now):
                continue
            if committed is None:
                committed = (await consumer.earliest_offsets(tp))[tp]
            log.error("partition %s/%d stalled at offset %s with lag (highwater %s) and no "
                      "work for %.0fs: seeking back to it", tp.topic, tp.partition, committed,
                      consumer.highwater(tp), config.stall_seconds)
            await consumer.seek(tp, committed)

    async def until_replayed() -> None:
        """Replay mode: stop this worker once the whole group is done: every input partition
        committed by ingest up to its end (seen at start), then every internal partition
        committed by the stage up to the internal topic's end. `replay_progress(done, total)`
        is called on the way (input records)."""
        from aiokafka import AIOKafkaConsumer

        from streams.runtime.kafka_io import make_admin

        admin = make_admin(config.kafka)
        probe = AIOKafkaConsumer(bootstrap_servers=config.bootstrap, group_id=None,
                                 **config.kafka.aiokafka_kwargs())
        await admin.start()
        await probe.start()
        try:
            while True:
                await asyncio.sleep(0.5)
                ingest = runtime["ingest"]
                if ingest is None or ingest.bounds is None:
                    continue
                try:
                    if await replayed(admin, probe, ingest.bounds):
                        break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a passing broker error: look again
                    log.debug("replay progress check failed: %s", exc)
        finally:
            await probe.stop()
            await admin.close()
        runtime["replay_done"] = time.monotonic()
        log.info("replay complete: stopping")
        import os
        import signal

        os.kill(os.getpid(), signal.SIGTERM)  # Faust's own clean stop

    async def replayed(admin: Any, probe: Any, bounds: dict[Any, tuple[int, int]]) -> bool:
        from aiokafka import TopicPartition

        done_inputs = await admin.list_consumer_group_offsets(config.ingest_group)
        total = sum(end - start for start, end in bounds.values())
        done = 0
        finished = True
        for tp, (start, end) in bounds.items():
            at = done_inputs.get(tp)
            committed = at.offset if at is not None and at.offset >= 0 else start
            done += max(0, min(committed, end) - start)
            finished &= committed >= end
        if runtime["replay_progress"] is not None:
            runtime["replay_progress"](done, total)
        if not finished:
            return False
        internal = [TopicPartition(config.internal_topic_name, p)
                    for p in range(config.partitions)]
        ends = await probe.end_offsets(internal)
        done_stage = await admin.list_consumer_group_offsets(config.app_id)
        return all(
            ends[tp] == 0 or (done_stage.get(tp) is not None and done_stage[tp].offset >= ends[tp])
            for tp in internal)

    async def refresh_metrics() -> None:
        """The gauges that need a look at the consumers, the table and the watchdog."""
        lags: list[tuple[str, int, int]] = []
        ingest = runtime["ingest"]
        if ingest is not None and ingest.consumer is not None:
            consumer = ingest.consumer
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is not None:
                    lags.append((tp.topic, tp.partition,
                                 max(0, high - await consumer.position(tp))))
        with contextlib.suppress(Exception):  # not started yet
            consumer = app.consumer
            for tp in consumer.assignment():
                if tp.topic == config.internal_topic_name:
                    high = consumer.highwater(tp)
                    done = consumer._committed_offset.get(tp) or 0
                    if high is not None:
                        lags.append((tp.topic, tp.partition, max(0, high - done)))
        metrics.set_lag(lags)
        metrics.stalled.set(len(watchdog.stalled))
        metrics.table_keys.set(table_keys())

    def table_keys() -> int:
        store = table.data
        dbs = getattr(store, "_dbs", None)
        if dbs is None:
            return len(getattr(store, "data", {}))
        total = 0
        for db in list(dbs.values()):
            with contextlib.suppress(Exception):
                total += int(db.property_int_value("rocksdb.estimate-num-keys") or 0)
        return total

    def readiness() -> str | None:
        """None when ready, else why not."""
        if runtime["fatal"] is not None:
            return f"stopped on an error: {type(runtime['fatal']).__name__}"
        if not app.tables.recovery.completed.is_set():
            return "table recovery in progress"
        try:
            assigned = app.consumer.assignment()
        except Exception:  # the consumer is not started yet
            assigned = set()
        if not [tp for tp in assigned if tp.topic == config.internal_topic_name]:
            return "no partitions assigned"
        if watchdog.stalled:
            return "stalled partitions: " + ", ".join(
                f"{tp.topic}/{tp.partition}" for tp in sorted(watchdog.stalled))
        return None

    def fatal(exc: BaseException) -> None:
        """An error that must stop the worker: nothing after it is committed."""
        if runtime["fatal"] is None:
            runtime["fatal"] = exc
            log.error("worker stopping on a fatal error: %s: %s", type(exc).__name__, exc)
            runtime["crash"] = asyncio.ensure_future(app.crash(exc))

    web_host = {"web_host": config.web_host} if config.web_host else {}
    app = TrackingApp(
        config.app_id,
        broker=config.broker_url,
        broker_credentials=config.kafka.faust_credentials(),
        **web_host,
        datadir=str(config.state_dir),
        store=config.store,
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=config.partitions,
        topic_replication_factor=config.replication or 1,  # the rule's, at first start
        topic_allow_declare=True,
        consumer_auto_offset_reset=config.auto_offset_reset,
        broker_commit_interval=config.commit_interval,
        broker_session_timeout=config.session_timeout,
        broker_heartbeat_interval=min(3.0, config.session_timeout / 4),
        broker_max_poll_records=64,  # frames: each holds up to frame_max_events events
        consumer_max_fetch_size=16 << 20,
        producer_partitioner=internal_topic.faust_partitioner,
        producer_max_request_size=8 << 20,
        web_enabled=config.web_port > 0,
        web_port=config.web_port or 6066,
        # the stage acks a frame once it is durable (group commit): Faust must not wait for
        # the acks of frames still pending when it stops (they are read again after a restart)
        stream_wait_empty=False,
        web_tables_enabled=False,  # never list or dump the table over HTTP
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,  # Faust's own: ours is /metrics
        # standbys read the other workers' changelog partitions: a faster takeover for more
        # changelog reads (benchmarks/failover.py)
        table_standby_replicas=config.standby_replicas,
    )

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
    if config.web_port > 0:
        register_views(app, metrics, refresh_metrics, readiness)

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

    from streams.runtime import web_api  # the lookup API on the web server, if any

    web_api.register(app, table, config)

    app.tracking = {  # type: ignore[attr-defined]  # handles for tests, commands, benchmarks
        "config": config,
        "tracking_events": tracking_events,
        "table": table,
        "detect": detect,
        "stage": stage,
        "runtime": runtime,
        "watchdog": watchdog,
        "metrics": metrics,
        "readiness": readiness,
    }
    return app
