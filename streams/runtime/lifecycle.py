"""The worker's lifecycle around its stages: the Faust app (its settings and start/stop
hooks), the shared producer, ingest's task, the stall watchdog's loop, replay's stop, and the
fatal-error path. The stages themselves (`detection_stage`, `response_stage`) only declare
their topics, tables and agents on the app.

Start: declare the topics (`topics.declare_topics`), start the producer, then ingest, the
watchdog and (replay mode) the end-of-replay check. Stop: ingest first, then each stage in
pipeline order makes what it applied durable (held alerts out, changelog, RocksDB, acks), then
Faust stops, then the producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from streams.runtime import internal_topic
from streams.runtime.ingest import Ingest
from streams.runtime.metrics import Metrics
from streams.runtime.stream_config import StreamConfig
from streams.runtime.topics import declare_topics, new_producer
from streams.runtime.watchdog import Watchdog

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)


class Lifecycle:
    """What runs beside the stages. `runtime` holds the handles the commands read (ingest,
    a fatal error, when a replay was done); `stages` are drained and stopped in order."""

    def __init__(self, config: StreamConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.runtime: dict[str, Any] = {
            "ingest": None, "ingest_task": None, "fatal": None, "crash": None,
            "watchdog_task": None, "replay_task": None, "replay_done": None,
            "replay_progress": None}
        self.watchdog = Watchdog(config.stall_seconds)
        self.stages: list[Any] = []  # each has .producer, .last_work, drain(), stop()
        # input topic -> the stage reading it (the seek guard's topics)
        self.stage_topics: dict[str, Any] = {}
        self.services: list[Any] = []  # started once Faust runs, stopped first: start(), stop()
        self.app: Any = None

    def new_app(self) -> faust.App:
        import faust

        from streams.runtime import faust_transport

        config, runtime, life = self.config, self.runtime, self

        class TrackingApp(faust.App):
            async def on_first_start(self) -> None:
                await declare_topics(config, self)
                await super().on_first_start()

            async def on_start(self) -> None:
                await super().on_start()
                # the seek-race guard of faust_transport, for the stream partitions only
                self.consumer.seek_guard.topics = frozenset(life.stage_topics)
                first = life.stages[0]
                if first.producer is None and config.store != "memory://":
                    first.producer = new_producer(config)
                    await first.producer.start()
                for stage in life.stages[1:]:  # one producer for all
                    stage.producer = first.producer

            async def on_started(self) -> None:
                await super().on_started()
                producer = life.stages[0].producer
                if config.ingest and runtime["ingest"] is None and producer is not None:
                    ingest = runtime["ingest"] = Ingest(
                        config, producer, life.fatal,
                        consumer_kwargs=config.kafka.aiokafka_kwargs(), metrics=life.metrics)
                    runtime["ingest_task"] = asyncio.ensure_future(ingest.run())
                if runtime["watchdog_task"] is None:
                    runtime["watchdog_task"] = asyncio.ensure_future(life.watch())
                if config.replay and runtime["replay_task"] is None:
                    runtime["replay_task"] = asyncio.ensure_future(life.until_replayed())
                for service in life.services:
                    await service.start()

            async def on_stop(self) -> None:
                for name in ("watchdog_task", "replay_task"):
                    if runtime[name] is not None:
                        runtime[name].cancel()
                for service in life.services:
                    await service.stop()
                ingest, task = runtime["ingest"], runtime["ingest_task"]
                if ingest is not None:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(ingest.stop(), timeout=10)
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
                # what the stages applied becomes durable (held alerts out, changelog,
                # RocksDB, acks) before Faust stops; what is left is read again after a restart
                for stage in life.stages:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stage.drain(), timeout=config.alert_hold + 5)
                    await stage.stop()
                await super().on_stop()
                producer = life.stages[0].producer
                if producer is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(producer.stop(), timeout=10)

            def _new_transport(self) -> faust_transport.Transport:
                # kafka:// with a bounded consumer fetch wait (see faust_transport)
                return faust_transport.Transport(self.conf.broker_consumer, self)

        web_host = {"web_host": config.web_host} if config.web_host else {}
        self.app = TrackingApp(
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
            # the stage acks a frame once it is durable (group commit): Faust must not wait
            # for the acks of frames still pending when it stops (read again after a restart)
            stream_wait_empty=False,
            web_tables_enabled=False,  # never list or dump the table over HTTP
            web_graph_enabled=False,
            web_stats_enabled=False,
            web_metrics_enabled=False,  # Faust's own: ours is /metrics
            # standbys read the other workers' changelog partitions: a faster takeover for more
            # changelog reads (benchmarks/failover.py)
            table_standby_replicas=config.standby_replicas,
        )
        return self.app

    def fatal(self, exc: BaseException) -> None:
        """An error that must stop the worker: nothing after it is committed."""
        runtime = self.runtime
        if runtime["fatal"] is None:
            runtime["fatal"] = exc
            log.error("worker stopping on a fatal error: %s: %s", type(exc).__name__, exc)
            runtime["crash"] = asyncio.ensure_future(self.app.crash(exc))

    # ------------------------------------------------------------ the stall watchdog

    async def watch(self) -> None:
        """The stall watchdog (streams.runtime.watchdog) over the stages' partitions."""
        period = max(0.5, min(5.0, self.config.stall_seconds / 3))
        while True:
            await asyncio.sleep(period)
            try:
                await self.check_stalls()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker outage: try again next period
                log.debug("watchdog check failed: %s", exc)

    async def check_stalls(self) -> None:
        config, watchdog = self.config, self.watchdog
        consumer = self.app.consumer
        # the stages' topics (the internal topic, the response stage's): each stage applies
        # every record it gets, so lag with no work for that long is a stall
        stages = self.stage_topics
        mine = {tp for tp in consumer.assignment() if tp.topic in stages}
        watchdog.forget(mine)
        now = time.monotonic()
        for tp in sorted(mine):
            committed = consumer._committed_offset.get(tp)
            if not watchdog.observe(tp, committed, consumer.highwater(tp),
                                    stages[tp.topic].last_work.get(tp.partition), now):
                continue
            if committed is None:
                committed = (await consumer.earliest_offsets(tp))[tp]
            log.error("partition %s/%d stalled at offset %s with lag (highwater %s) and no "
                      "work for %.0fs: seeking back to it", tp.topic, tp.partition, committed,
                      consumer.highwater(tp), config.stall_seconds)
            await consumer.seek(tp, committed)

    # ------------------------------------------------------------ replay mode's stop

    async def until_replayed(self) -> None:
        """Replay mode: stop this worker once the whole group is done: every input partition
        committed by ingest up to its end (seen at start), then every internal partition
        (and the response topic's) committed by its stage up to its end.
        `replay_progress(done, total)` is called on the way (input records)."""
        from aiokafka import AIOKafkaConsumer

        from streams.runtime.kafka_io import make_admin

        config, runtime = self.config, self.runtime
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
                    if await self.replayed(admin, probe, ingest.bounds):
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

    async def replayed(self, admin: Any, probe: Any,
                       bounds: dict[Any, tuple[int, int]]) -> bool:
        from aiokafka import TopicPartition

        config, runtime = self.config, self.runtime
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
        if config.response:  # and the response stage done with what detection sent it
            internal.append(TopicPartition(config.response_topic_name, 0))
        ends = await probe.end_offsets(internal)
        done_stage = await admin.list_consumer_group_offsets(config.app_id)
        return all(
            ends[tp] == 0 or (done_stage.get(tp) is not None and done_stage[tp].offset >= ends[tp])
            for tp in internal)
