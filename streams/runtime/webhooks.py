"""Webhook delivery (`tracking-validator notify`): a consumer group of its own that POSTs each
record of its topics to one URL, signed, retried, in order per key, never skipped.

    notifier = Notifier(NotifyConfig(url=..., secret=..., topics=[...], group=...))
    await notifier.run(stop)        # until `stop` is set; raises on a fatal fault

How it keeps its promises:
- Order. Records of one key (topic + record key, else the record's id) form a chain: each one
  starts when the one before it is delivered or dead-lettered. Different keys run in
  parallel, at most `concurrency` requests in flight (a semaphore held only while a request
  is on the wire, not while a retry waits).
- Commits. Each partition tracks the offsets it has read and not finished; the committed
  offset is the lowest unfinished one (or the next to read), so a commit never passes a record
  that is still being delivered: at least once, nothing skipped. Revoked partitions commit
  what is finished and drop the rest (their new owner delivers it again; the receiver
  deduplicates by Idempotency-Key).
- Dead letters. A 4xx other than 408/429, a value that is not a record (no id or revision),
  or retries past `give_up_after` produce a record to the dead-letter topic; the offset is
  finished only once the broker acknowledged it. One that cannot be produced stops the
  process before any commit passes it.

Dead letter (JSON, keyed like the source record):
    {source_topic, partition, offset, key_b64, value_b64, idempotency_key, url, status,
     error: {code, message}, attempts, first_attempt_at, dead_lettered_at}
`status` is the last HTTP status (null when there was none: a timeout, a refused connection,
not a record); `error.code` is `rejected` (a 4xx), `gave_up` (retries past give_up_after) or
`not_a_record`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from streams.core import webhooks
from streams.runtime.kafka_io import (
    KafkaClientConfig,
    client_config,
    ensure_topics,
    make_producer,
    start_client,
)
from streams.runtime.metrics import set_partition_lags

log = logging.getLogger(__name__)

DEFAULT_TOPICS = ("tracking.actions", "tracking.incidents")
DEFAULT_DEADLETTER = "tracking.notify.deadletter"
USER_AGENT = "tracking-validator-notify/1"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
                    86400.0)


@dataclass
class NotifyConfig:
    url: str
    secret: bytes
    topics: list[str] = field(default_factory=lambda: list(DEFAULT_TOPICS))
    group: str = "tracking-validator-notify"
    deadletter_topic: str = DEFAULT_DEADLETTER
    kafka: KafkaClientConfig | str | None = None
    concurrency: int = 16
    timeout: float = 10.0  # seconds for one request, connect to last byte
    give_up_after: float = 86400.0
    retry_base: float = 0.5  # first backoff ceiling, doubled each retry
    max_retry_wait: float = 300.0  # the longest single wait, Retry-After included
    ca_file: str | None = None
    commit_interval: float = 1.0
    web_host: str = "127.0.0.1"
    web_port: int = 0  # 0: no /metrics, /health, /ready
    deadletter_partitions: int = 3  # when the dead-letter topic is created here
    deadletter_replication: int = 1


class NotifyMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.deliveries = Counter(
            "tracking_validator_notify_deliveries",
            "Records finished, by outcome (delivered | dead_letter) and the last HTTP status "
            "(none: no answer)", ["topic", "outcome", "status"], registry=r)
        self.attempts = Counter(
            "tracking_validator_notify_attempts",
            "Requests sent, by result: the HTTP status, timeout or connection_error",
            ["result"], registry=r)
        self.latency = Histogram(
            "tracking_validator_notify_request_seconds",
            "One request, from sending to the answer's status", buckets=LATENCY_BUCKETS,
            registry=r)
        self.delivery_latency = Histogram(
            "tracking_validator_notify_delivery_seconds",
            "From the record's timestamp to its delivery (retries included)",
            buckets=DELIVERY_BUCKETS, registry=r)
        self.lag = Gauge(
            "tracking_validator_notify_lag",
            "Records of this notifier's partitions not finished yet (highwater - committable)",
            ["topic", "partition"], registry=r)
        self.in_flight = Gauge("tracking_validator_notify_in_flight",
                               "Requests on the wire now", registry=r)
        self.pending = Gauge("tracking_validator_notify_pending",
                             "Records read and not finished (waiting for their key, "
                             "retrying or in flight)", registry=r)
        self._lag_labels: set[tuple[str, str]] = set()

    def set_lag(self, lags: Iterable[tuple[str, int, int]]) -> None:
        self._lag_labels = set_partition_lags(self.lag, self._lag_labels, lags)


class PartitionProgress:
    """Offsets of one partition read and not finished; what may be committed."""

    def __init__(self) -> None:
        self.unfinished: set[int] = set()
        self.next_offset: int | None = None  # one past the last offset read
        self.committed: int | None = None

    def read(self, offset: int) -> None:
        self.unfinished.add(offset)
        self.next_offset = max(self.next_offset or 0, offset + 1)

    def finish(self, offset: int) -> None:
        self.unfinished.discard(offset)

    def committable(self) -> int | None:
        if self.unfinished:
            return min(self.unfinished)
        return self.next_offset


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


class Fatal(RuntimeError):
    """A fault that must stop the notifier before it commits past a record."""


class Notifier:
    def __init__(self, config: NotifyConfig) -> None:
        self.config = config
        self.metrics = NotifyMetrics()
        self.kafka = client_config(config.kafka)
        self.progress: dict[Any, PartitionProgress] = {}
        self.tasks: dict[Any, set[asyncio.Task[None]]] = {}  # partition -> its jobs
        self.tails: dict[tuple[str, bytes], asyncio.Task[None]] = {}  # chain key -> last job
        self.in_flight = asyncio.Semaphore(config.concurrency)
        # records read ahead of delivery: bounds memory while one key retries for hours
        self.max_pending = max(1000, config.concurrency * 50)
        self.pending = 0
        self.fatal: BaseException | None = None
        self.ready = False
        self.rng = random.Random()
        self.consumer: Any = None
        self.producer: Any = None
        self.session: Any = None
        self.wakeup = asyncio.Event()

    # ------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        import aiohttp
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

        cfg = self.config
        await ensure_topics(self.kafka, [cfg.deadletter_topic], cfg.deadletter_partitions,
                            cfg.deadletter_replication)
        notifier = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                await notifier._revoke(list(revoked))

            async def on_partitions_assigned(self, assigned: Any) -> None:
                for tp in assigned:
                    notifier.progress.setdefault(tp, PartitionProgress())
                notifier.ready = True

        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap, group_id=cfg.group,
            enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_interval_ms=3_600_000,  # a long retry is not a dead consumer
            **self.kafka.aiokafka_kwargs())
        self.consumer.subscribe(cfg.topics, listener=Listener())
        self.producer = make_producer(self.kafka)
        ssl_context = ssl.create_default_context(cafile=cfg.ca_file)
        connector = aiohttp.TCPConnector(ssl=ssl_context, limit=cfg.concurrency)
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=cfg.timeout),
            headers={"User-Agent": USER_AGENT}, skip_auto_headers=("Accept-Encoding",))
        web = None
        try:
            await start_client(self.producer, self.kafka)
            await start_client(self.consumer, self.kafka)
            if cfg.web_port:
                web = await self._serve_web()
            committer = asyncio.ensure_future(self._commit_loop(stop))
            try:
                await self._read_loop(stop)
            finally:
                committer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await committer
            await self._drain(grace=5.0)
            if self.fatal is None:
                await self._commit()
        finally:
            self.ready = False
            await self._cancel_all()
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            with contextlib.suppress(Exception):
                await self.producer.stop()
            await self.session.close()
            if web is not None:
                await web.cleanup()
        if self.fatal is not None:
            raise Fatal(str(self.fatal)) from self.fatal

    async def _read_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and self.fatal is None:
            room = self.max_pending - self.pending
            if room <= 0:  # one key retrying for hours must not fill the memory
                await asyncio.sleep(0.05)
                continue
            batch = await self.consumer.getmany(timeout_ms=200, max_records=min(room, 500))
            for tp, records in batch.items():
                for record in records:
                    self._schedule(tp, record)

    def _schedule(self, tp: Any, record: Any) -> None:
        progress = self.progress.setdefault(tp, PartitionProgress())
        progress.read(record.offset)
        chain = (tp.topic, record.key if record.key is not None else self._fallback_key(record))
        previous = self.tails.get(chain)
        task = asyncio.ensure_future(self._job(previous, tp, record, chain))
        self.tails[chain] = task
        self.tasks.setdefault(tp, set()).add(task)
        self.pending += 1
        self.metrics.pending.inc()

    @staticmethod
    def _fallback_key(record: Any) -> bytes:
        try:
            return webhooks.record_id(orjson.loads(record.value)).encode()
        except (orjson.JSONDecodeError, webhooks.NotARecord, TypeError):
            return b""

    async def _job(self, previous: asyncio.Task[None] | None, tp: Any, record: Any,
                   chain: tuple[str, bytes]) -> None:
        task = asyncio.current_task()
        try:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            if self.fatal is not None:
                return
            await self._deliver(tp, record)
            self.progress[tp].finish(record.offset)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a dead letter that could not be produced, or a bug
            log.error("notify: stopping: %s/%d@%d: %s: %s", tp.topic, tp.partition,
                      record.offset, type(exc).__name__, exc)
            self.fatal = exc
            self.wakeup.set()
        finally:
            self.pending -= 1
            self.metrics.pending.dec()
            self.tasks.get(tp, set()).discard(task)  # type: ignore[arg-type]
            if self.tails.get(chain) is task:
                del self.tails[chain]

    # ------------------------------------------------------------ one record

    async def _deliver(self, tp: Any, record: Any) -> None:
        import aiohttp

        cfg = self.config
        body: bytes = record.value or b""
        try:
            key = webhooks.idempotency_key(orjson.loads(body))
        except (orjson.JSONDecodeError, webhooks.NotARecord) as exc:
            await self._dead_letter(tp, record, None, None, "not_a_record", str(exc), 0, _now())
            return
        first = time.monotonic()
        first_at = _now()
        attempt = 0
        status: int | None = None
        while True:
            attempt += 1
            retry_after: float | None = None
            error = ""
            async with self.in_flight:
                self.metrics.in_flight.inc()
                stamp = int(time.time())
                headers = {
                    "Content-Type": "application/json",
                    webhooks.IDEMPOTENCY_HEADER: key,
                    webhooks.SIGNATURE_HEADER: webhooks.sign(cfg.secret, body, stamp),
                }
                started = time.monotonic()
                try:
                    async with self.session.post(cfg.url, data=body, headers=headers) as answer:
                        status = answer.status
                        retry_after = webhooks.retry_after(answer.headers.get("Retry-After"))
                        with contextlib.suppress(Exception):
                            error = (await answer.text())[:300]
                    self.metrics.attempts.labels(str(status)).inc()
                    outcome = webhooks.outcome_of(status)
                except TimeoutError:
                    status, outcome, error = None, "retry", f"no answer in {cfg.timeout:g}s"
                    self.metrics.attempts.labels("timeout").inc()
                except (aiohttp.ClientError, OSError) as exc:
                    status, outcome = None, "retry"
                    error = f"{type(exc).__name__}: {exc}"
                    self.metrics.attempts.labels("connection_error").inc()
                finally:
                    self.metrics.in_flight.dec()
                    self.metrics.latency.observe(time.monotonic() - started)
            if outcome == "delivered":
                self.metrics.deliveries.labels(tp.topic, "delivered", str(status)).inc()
                if record.timestamp and record.timestamp > 0:
                    self.metrics.delivery_latency.observe(
                        max(0.0, time.time() - record.timestamp / 1000))
                return
            if outcome == "rejected":
                await self._dead_letter(tp, record, key, status, "rejected",
                                        f"HTTP {status}: {error}".strip(), attempt, first_at)
                return
            elapsed = time.monotonic() - first
            if elapsed >= cfg.give_up_after:
                what = f"HTTP {status}" if status is not None else "no answer"
                await self._dead_letter(
                    tp, record, key, status, "gave_up",
                    f"gave up after {attempt} attempts in {elapsed:.0f}s; last: {what}: "
                    f"{error}".strip(), attempt, first_at)
                return
            delay = webhooks.next_delay(attempt, retry_after, cfg.retry_base,
                                        cfg.max_retry_wait, self.rng)
            await asyncio.sleep(min(delay, cfg.give_up_after - elapsed))

    async def _dead_letter(self, tp: Any, record: Any, key: str | None, status: int | None,
                           code: str, message: str, attempts: int, first_at: str) -> None:
        letter = {
            "source_topic": tp.topic, "partition": tp.partition, "offset": record.offset,
            "key_b64": _b64(record.key), "value_b64": _b64(record.value),
            "idempotency_key": key, "url": self.config.url, "status": status,
            "error": {"code": code, "message": message[:1000]},
            "attempts": attempts, "first_attempt_at": first_at, "dead_lettered_at": _now(),
        }
        # awaiting the acknowledgement: the offset is finished only once the letter is stored
        await (await self.producer.send(self.config.deadletter_topic, orjson.dumps(letter),
                                        key=record.key))
        self.metrics.deliveries.labels(tp.topic, "dead_letter",
                                       "none" if status is None else str(status)).inc()
        log.warning("notify: dead letter %s/%d@%d (%s): %s", tp.topic, tp.partition,
                    record.offset, code, message[:200])

    # ------------------------------------------------------------ offsets

    async def _commit(self, only: Iterable[Any] | None = None) -> None:
        from aiokafka.structs import OffsetAndMetadata

        assigned = self.consumer.assignment()
        offsets = {}
        for tp in (only if only is not None else list(self.progress)):
            progress = self.progress.get(tp)
            if progress is None or tp not in assigned:
                continue
            at = progress.committable()
            if at is not None and at != progress.committed:
                offsets[tp] = OffsetAndMetadata(at, "")
        if offsets:
            await self.consumer.commit(offsets)
            for tp, meta in offsets.items():
                self.progress[tp].committed = meta.offset

    async def _commit_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), self.config.commit_interval)
            self.wakeup.clear()
            if self.fatal is not None:
                return
            try:
                await self._commit()
            except Exception as exc:  # a rebalance in progress: the next round retries
                log.info("notify: commit deferred: %s", exc)
            self._refresh_lag()

    def _refresh_lag(self) -> None:
        lags = []
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            progress = self.progress.get(tp)
            at = progress.committable() if progress else None
            if high is None:
                continue
            if at is None:
                at = progress.committed if progress and progress.committed is not None else high
            lags.append((tp.topic, tp.partition, max(0, high - at)))
        self.metrics.set_lag(lags)

    async def _revoke(self, revoked: list[Any]) -> None:
        with contextlib.suppress(Exception):
            await self._commit(revoked)
        for tp in revoked:
            await self._cancel(self.tasks.pop(tp, set()))
            self.progress.pop(tp, None)

    async def _cancel(self, tasks: Iterable[asyncio.Task[None]]) -> None:
        tasks = list(tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _cancel_all(self) -> None:
        await self._cancel([t for ts in self.tasks.values() for t in ts])

    async def _drain(self, grace: float) -> None:
        """On stop: let the requests under way finish for up to `grace` seconds."""
        tasks = [t for ts in self.tasks.values() for t in ts]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)

    # ------------------------------------------------------------ web

    async def _serve_web(self) -> Any:
        from aiohttp import web

        async def metrics_view(request: web.Request) -> web.Response:
            self._refresh_lag()
            return web.Response(body=generate_latest(self.metrics.registry),
                                content_type=CONTENT_TYPE_LATEST.split(";")[0])

        async def health_view(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        async def ready_view(request: web.Request) -> web.Response:
            if self.ready and self.fatal is None:
                return web.json_response({"status": "ready"})
            reason = "stopping on a fault" if self.fatal else "not in the group yet"
            return web.json_response({"status": "not_ready", "reason": reason}, status=503)

        app = web.Application()
        app.router.add_get("/metrics", metrics_view)
        app.router.add_get("/health", health_view)
        app.router.add_get("/ready", ready_view)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.config.web_host, self.config.web_port).start()
        return runner
