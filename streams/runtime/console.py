"""The live console (`tracking-validator console`): one page, fed by server-sent events.

    console = Console(ConsoleConfig(kafka=..., topics={"alert": ..., ...}, port=8080))
    await console.run(stop)

A consumer with no group (it never disturbs the workers' or notifiers' groups) reads the
alerts, incidents and actions topics from the beginning into a `ConsoleView` (event-time
window, streams.core.console_view); topics that appear later are picked up. Every
`PROBE_SECONDS` it asks the broker for metadata: when that fails the page says the broker is
lost (and since when), and when it answers again, that it is back; the consumer resumes where
it was. Workers' lag comes from their `/metrics` (`--worker-url`), polled as often.

    GET /             the page (streams/runtime/console.html: inline CSS and JS, no build step)
    GET /events       text/event-stream: `event: state` with the whole snapshot, at each change
                      (coalesced over COALESCE_SECONDS) and at least every 15 s
    GET /api/state    the same snapshot as JSON (?rule=&carrier=&seller= filter the alerts)
    GET /health       200 while it serves (no token needed)

Access: when TRACKING_VALIDATOR_API_TOKEN is set (as for the lookup API) every path but
/health needs `Authorization: Bearer <token>`. A browser cannot add that header to a page
load or an EventSource, so `/?token=<token>` once sets an HttpOnly cookie that stands for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson

from streams.core.console_view import ConsoleView
from streams.runtime.kafka_io import KafkaClientConfig, client_config, start_client

log = logging.getLogger(__name__)

PROBE_SECONDS = 2.0
PROBE_TIMEOUT = 3.0
COALESCE_SECONDS = 0.2
PING_SECONDS = 15.0
TOKEN_ENV = "TRACKING_VALIDATOR_API_TOKEN"
COOKIE = "tracking_validator_token"
DEFAULT_TOPICS = {"alert": "tracking.alerts", "incident": "tracking.incidents",
                  "action": "tracking.actions"}
FILTERS = ("rule", "carrier", "seller")


def _iso(seconds: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if seconds is None else seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ConsoleConfig:
    kafka: KafkaClientConfig | str | None = None
    topics: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TOPICS))
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    since: datetime | None = None
    window_days: float = 7.0
    worker_urls: list[str] = field(default_factory=list)


class Console:
    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        self.kafka = client_config(config.kafka)
        self.view = ConsoleView(since=config.since, window_days=config.window_days)
        self.kinds = {topic: kind for kind, topic in config.topics.items()}
        self.broker: dict[str, Any] = {"connected": False, "since": _iso(), "lost_at": None,
                                       "back_at": None, "error": None}
        self.workers: dict[str, dict[str, Any]] = {
            url: {"url": url, "ok": None, "lag": None, "by_topic": {}, "error": None,
                  "checked_at": None} for url in config.worker_urls}
        self.version = 0
        self._changed = asyncio.Event()
        self._wanted: set[Any] | None = None  # partitions to read, set by the probe
        self._tidied = -1
        self.consumer: Any = None
        self.url = ""
        self.token = None if not config.token else f"Bearer {config.token}".encode()

    # ------------------------------------------------------------ changes

    def bump(self) -> None:
        self.version += 1
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def state(self, filters: dict[str, str] | None = None) -> dict[str, Any]:
        if self._tidied != self.version:
            self.view.tidy()
            self._tidied = self.version
        now_minute = datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ")
        snapshot = self.view.snapshot(filters, now_minute=now_minute)
        snapshot["broker"] = dict(self.broker)
        snapshot["workers"] = list(self.workers.values())
        snapshot["topics"] = self.config.topics
        snapshot["version"] = self.version
        snapshot["generated_at"] = _iso()
        return snapshot

    # ------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event, started: asyncio.Event | None = None) -> None:
        from aiokafka import AIOKafkaConsumer

        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", **self.kafka.aiokafka_kwargs())
        await start_client(self.consumer, self.kafka)
        runner = None
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._probe()
            runner = await self._serve()
            tasks = [asyncio.ensure_future(self._read(stop)),
                     asyncio.ensure_future(self._probe_loop(stop)),
                     asyncio.ensure_future(self._poll_workers(stop))]
            if started is not None:
                started.set()
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            if runner is not None:
                await runner.cleanup()
            with contextlib.suppress(Exception):
                await self.consumer.stop()

    async def _read(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self._wanted is not None:
                await self._assign(self._wanted)
                self._wanted = None
            if not self.consumer.assignment():
                await asyncio.sleep(0.2)
                continue
            try:
                batch = await self.consumer.getmany(timeout_ms=200, max_records=2000)
            except Exception as exc:  # the broker is away; the probe says so on the page
                log.debug("console: fetch failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            changed = False
            for tp, records in batch.items():
                kind = self.kinds.get(tp.topic)
                for record in records:
                    try:
                        value = orjson.loads(record.value) if record.value else None
                    except orjson.JSONDecodeError:
                        value = None
                    changed |= self.view.apply(kind or "", value)
            if changed:
                self.bump()

    async def _assign(self, wanted: set[Any]) -> None:
        current = set(self.consumer.assignment())
        if wanted == current:
            return
        positions = {}
        for tp in current & wanted:
            with contextlib.suppress(Exception):
                positions[tp] = await self.consumer.position(tp)
        self.consumer.assign(sorted(wanted))
        for tp in wanted:
            if tp in positions:
                self.consumer.seek(tp, positions[tp])
        fresh = [tp for tp in wanted if tp not in positions]
        if fresh and self.config.since is not None:
            # records are published after their event time: one stamped before --from holds
            # nothing from then on, so skip what precedes it rather than read and drop it
            since_ms = int(self.config.since.timestamp() * 1000)
            found = await self.consumer.offsets_for_times({tp: since_ms for tp in fresh})
            ends = await self.consumer.end_offsets(fresh)
            for tp in fresh:
                at = found.get(tp)
                self.consumer.seek(tp, at.offset if at is not None else ends[tp])
        elif fresh:
            await self.consumer.seek_to_beginning(*fresh)

    async def _probe(self) -> None:
        from aiokafka import TopicPartition

        try:
            cluster = await asyncio.wait_for(self.consumer._client.fetch_all_metadata(),
                                             PROBE_TIMEOUT)
        except Exception as exc:
            if self.broker["connected"] or self.broker["lost_at"] is None:
                self.broker.update(connected=False, lost_at=_iso(), back_at=None,
                                   error=str(exc) or type(exc).__name__)
                log.warning("console: lost the broker: %s", self.broker["error"])
                self.bump()
            return
        if not self.broker["connected"]:
            back = self.broker["lost_at"] is not None
            self.broker.update(connected=True, back_at=_iso() if back else None, error=None,
                               since=_iso())
            if back:
                log.warning("console: the broker is back")
            self.bump()
        known = cluster.topics()
        wanted = {TopicPartition(topic, p) for topic in self.config.topics.values()
                  if topic in known for p in cluster.partitions_for_topic(topic) or ()}
        if wanted != set(self.consumer.assignment()):
            self._wanted = wanted

    async def _probe_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(PROBE_SECONDS)
            await self._probe()

    async def _poll_workers(self, stop: asyncio.Event) -> None:
        if not self.workers:
            return
        import aiohttp
        from prometheus_client.parser import text_string_to_metric_families

        timeout = aiohttp.ClientTimeout(total=PROBE_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not stop.is_set():
                for url, worker in self.workers.items():
                    before = (worker["ok"], worker["lag"], worker["by_topic"])
                    try:
                        async with session.get(url.rstrip("/") + "/metrics") as answer:
                            text = await answer.text()
                            if answer.status != 200:
                                raise RuntimeError(f"HTTP {answer.status}")
                        by_topic: dict[str, float] = {}
                        for family in text_string_to_metric_families(text):
                            if not family.name.endswith("_lag"):
                                continue
                            for sample in family.samples:
                                topic = sample.labels.get("topic", "")
                                by_topic[topic] = by_topic.get(topic, 0) + sample.value
                        worker.update(ok=True, lag=int(sum(by_topic.values())),
                                      by_topic={t: int(v) for t, v in sorted(by_topic.items())},
                                      error=None)
                    except Exception as exc:
                        worker.update(ok=False, error=str(exc) or type(exc).__name__)
                    worker["checked_at"] = _iso()
                    if before != (worker["ok"], worker["lag"], worker["by_topic"]):
                        self.bump()
                await asyncio.sleep(PROBE_SECONDS)

    # ------------------------------------------------------------ web

    def _authorized(self, request: Any) -> bool:
        if self.token is None or request.path == "/health":
            return True
        header = request.headers.get("Authorization", "").encode("utf-8", "replace")
        cookie = f"Bearer {request.cookies.get(COOKIE, '')}".encode("utf-8", "replace")
        return hmac.compare_digest(header, self.token) or hmac.compare_digest(cookie, self.token)

    async def _serve(self) -> Any:
        from aiohttp import web

        page = resources.files("streams.runtime").joinpath("console.html").read_bytes()

        @web.middleware
        async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
            given = request.query.get("token")
            if given is not None and self.token is not None and hmac.compare_digest(
                    f"Bearer {given}".encode("utf-8", "replace"), self.token):
                rest = request.rel_url.with_query(
                    {k: v for k, v in request.query.items() if k != "token"})
                answer = web.Response(status=302, headers={"Location": str(rest)})
                answer.set_cookie(COOKIE, given, httponly=True, samesite="Strict")
                return answer
            if not self._authorized(request):
                return web.json_response(
                    {"error": {"code": "unauthorized",
                               "message": "missing or wrong Authorization: Bearer token"}},
                    status=401, headers={"WWW-Authenticate": "Bearer"})
            return await handler(request)

        async def index(request: web.Request) -> web.Response:
            return web.Response(body=page, content_type="text/html", charset="utf-8",
                                headers={"Cache-Control": "no-store"})

        async def api_state(request: web.Request) -> web.Response:
            return web.Response(body=orjson.dumps(self.state(self._filters(request))),
                                content_type="application/json")

        async def health(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        app = web.Application(middlewares=[guard])
        app.router.add_get("/", index)
        app.router.add_get("/events", self._events)
        app.router.add_get("/api/state", api_state)
        app.router.add_get("/health", health)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, self.config.host, self.config.port).start()
        host, port = runner.addresses[0][:2]
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        return runner

    @staticmethod
    def _filters(request: Any) -> dict[str, str]:
        return {name: request.query.get(name, "") for name in FILTERS}

    async def _events(self, request: Any) -> Any:
        from aiohttp import web

        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no"})
        await response.prepare(request)
        filters = self._filters(request)
        sent = -1
        try:
            while True:
                changed = self._changed
                if sent != self.version:
                    sent = self.version
                    data = orjson.dumps(self.state(filters))
                    await response.write(b"event: state\ndata: " + data + b"\n\n")
                else:
                    await response.write(b": ping\n\n")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), PING_SECONDS)
                await asyncio.sleep(COALESCE_SECONDS)  # one snapshot for a burst of records
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response
