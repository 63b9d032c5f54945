"""The response stage: incidents and per-order actions from the alerts (contract, "Incidents
and actions"), published on `tracking.incidents` (key `carrier:channel`) and
`tracking.actions` (key `order_id`) with revisions.

    detection stage ──alerts + watermark per batch──> <app_id>-response ──> tracking.incidents
                                                      (ONE partition)   └─> tracking.actions

The rules are the core's (`streams.core.response.step_many`, a function of the highest alert
revisions and the watermark, so any arrival order gives the same final records); this module
only feeds them and keeps their state. Its input is one partition of an internal topic: once
a batch of frames is durable, the detection stage sends there the alert revisions it
published for them (the same JSON as on the alerts topic) and the greatest event time of
their events (the watermark, never the wall clock), as one record. Alerts are rare next to
events, so one partition, one worker at a time, is enough and makes the response one
sequence. Its state (per group, per order, per alert, the watermark) is a Faust RocksDB
table of one partition with its changelog.

One input record is one batch (`response.step_many`): the alerts of a batch of frames the
detection stage made durable and its watermark. The core then recomputes a group's incidents
once per batch instead of once per alert, and a record changed twice in a batch is published
once. The batches are the records, so a restart that reads a record again publishes the
same revisions with the same fields.

Delivery is at least once, as for the alerts (the detection stage's machinery, `Stage`): per
record the incident and action revisions are produced and acknowledged, then the new states
go to the changelog, then RocksDB, then the record is acked. A crash before the state is
written repeats the record: the core then numbers the same revisions again (same id, same
revision, same fields), and a repeat after it publishes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from streams.core import response
from streams.core.outputs import dumps, stamp_alert
from streams.runtime.detection_stage import (
    FORWARD_KEY,
    RECORD_BATCH_OVERHEAD,
    TABLE_ROCKSDB_OPTIONS,
    Pending,
    Stage,
    _Partition,
    state_record_bytes,
)
from streams.runtime.metrics import Metrics
from streams.runtime.stream_config import StreamConfig

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)

# the most state bytes one response step writes as one record batch (the response topics
# take records of 8 MB: streams.runtime.topics)
ATOMIC_CHANGELOG_BYTES = 7 << 20


def decode_batch(key: bytes | None, value: bytes) -> list[Any]:
    """A record of the response topic as `step_many`'s items: its alerts, then its
    watermark."""
    if key != FORWARD_KEY:
        raise ValueError(f"unknown record key {key!r}")
    record = orjson.loads(value)
    alerts = record.get("alerts") if isinstance(record, dict) else None
    if not isinstance(alerts, list) or not all(isinstance(a, dict) for a in alerts) or \
            not isinstance(record.get("watermark"), int):
        raise ValueError("not a batch {watermark, alerts}")
    return [*alerts, response.Watermark(record["watermark"])]


class ResponseStage(Stage):
    """`Stage`'s group commit (outputs acked, changelog, RocksDB, then the Faust ack) over
    `response.step_many`, one input record a step, instead of a frame of events."""

    # a durable batch takes the queued records while their merged states fit one atomic
    # changelog write (`_changelog`); only a single record's states beyond it are split
    max_batch_bytes = ATOMIC_CHANGELOG_BYTES - RECORD_BATCH_OVERHEAD

    def __init__(self, app: Any, config: StreamConfig, table: Any) -> None:
        super().__init__(app, config, table)
        self.changelog_topic = config.response_changelog_topic
        self.forward_topic = None
        self.queue = asyncio.Queue(maxsize=config.stage_max_pending)
        self.incidents = 0  # incident revisions published (acknowledged)
        self.actions = 0  # action revisions published (acknowledged)
        self.bad = 0  # records skipped as unreadable

    async def apply(self, key: bytes | None, value: bytes, event: Any = None) -> None:
        """Apply one input record (a batch), publish its records, queue it for the writer
        (made durable, then acked)."""
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_loop())
        self.last_work[0] = time.monotonic()
        try:
            items = decode_batch(key, value)
        except (ValueError, orjson.JSONDecodeError) as exc:
            # the stage's own topic: a record it cannot read is a writer's bug; skipping it
            # (logged) keeps the response going instead of stopping every worker on it
            self.bad += 1
            log.error("response stage: record skipped, %s: %r", exc, value[:200])
            items = []
        states, incidents, actions = self._step(items) if items else ({}, [], [])
        c = self.config
        futures: list[asyncio.Future[Any]] = []
        published: list[tuple[int, dict[str, Any]]] = []
        for incident in incidents:
            stamped = stamp_alert(incident)
            futures.append(await self.producer.send(
                c.incidents_topic, dumps(stamped),
                key=f"{stamped['carrier']}:{stamped['channel']}".encode()))
            published.append((0, stamped))
        for action in actions:
            stamped = stamp_alert(action)
            futures.append(await self.producer.send(
                c.actions_topic, dumps(stamped), key=stamped["order_id"].encode()))
            published.append((0, stamped))
        self.overlay.update(states)
        await self.queue.put(Pending(0, states, published, futures, event, 1))

    def _step(self, items: list[Any]) -> tuple[dict[bytes, bytes | None], list[Any], list[Any]]:
        """The core over the batch: states (bytes keys), incident and action records."""
        overlay = self.overlay
        stored = _Partition(self.table, 0).get

        def get(name: str) -> bytes | None:
            k = name.encode()
            return overlay[k] if k in overlay else stored(k)

        result = response.step_many(get, items, self.config.settings)
        return ({k.encode(): v for k, v in result.states.items()}, result.incidents,
                result.actions)

    async def _changelog(self, partition: int, states: dict[bytes, bytes | None]) -> int:
        """All the states of a durable batch in ONE record batch, which the broker appends
        whole or not at all. A response step's states span keys (a group's facts, its
        incidents, links, orders, the watermark) and are only consistent together: written in
        several batches (the detection stage's way, where each key stands alone), a SIGKILL
        between two of them left a torn state, recovered after the restart, and the redo of
        the same input records published a revision with other fields (the 15-kill soak:
        "two different publications of incident_id ... revision 1"). Beyond
        ATOMIC_CHANGELOG_BYTES the detection stage's way is kept (the topic's record limit)."""
        size = RECORD_BATCH_OVERHEAD + sum(state_record_bytes(k, v) for k, v in states.items())
        if size > ATOMIC_CHANGELOG_BYTES:
            log.warning("response stage: %d bytes of state in one step, written in several "
                        "record batches", size)
            return await super()._changelog(partition, states)
        from aiokafka.producer.message_accumulator import BatchBuilder

        batch = BatchBuilder(size, 0)
        now = int(time.time() * 1000)
        for key, value in states.items():
            if batch.append(key=key, value=value, timestamp=now) is None:
                raise ValueError(f"the response states ({size} bytes) do not fit one batch")
        sent = await self.producer.send_batch(batch, self.changelog_topic, partition=partition)
        done = await sent
        return int(done.offset) + len(states) - 1

    def _published(self, batch: list[Pending]) -> None:
        for p in batch:
            for _, record in p.alerts:
                if "action_id" in record:
                    self.actions += 1
                    if self.metrics is not None:
                        self.metrics.actions.labels(record["action"], record["status"]).inc()
                else:
                    self.incidents += 1

    def _durable(self, p: Pending) -> None:
        self.events += p.events
        if self.metrics is not None:
            self.metrics.response_records.labels("applied").inc(p.events)


class ResponseParts(NamedTuple):
    topic: Any
    table: Any
    agent: Any
    stage: ResponseStage


def attach(app: faust.App, config: StreamConfig, metrics: Metrics,
           fatal: Callable[[BaseException], None]) -> ResponseParts:
    """Declare the response topic, its table and its agent on `app`."""
    topic = app.topic(config.response_topic_name, key_type=bytes, value_type=bytes,
                      partitions=1,
                      replicas=config.replication or None)  # None: the rule's (declare_topics)
    table = app.Table(config.response_table_name, key_type=bytes, value_type=bytes,
                      partitions=1, options=TABLE_ROCKSDB_OPTIONS)
    stage = ResponseStage(app, config, table)
    stage.on_fatal = fatal
    stage.metrics = metrics

    @app.on_partitions_revoked.connect
    async def _drain_before_revoke(app: Any, revoked: Any, **kwargs: Any) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stage.drain(), timeout=config.session_timeout / 2)

    @app.agent(topic, name="respond", concurrency=1)
    async def respond(stream: faust.StreamT) -> None:
        manual = stream.noack()  # acked by the writer once durable
        stage.ack = manual.ack
        async for event in manual.events():
            msg = event.message
            try:
                await stage.apply(msg.key, msg.value, event)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                fatal(exc)
                raise

    return ResponseParts(topic, table, respond, stage)
