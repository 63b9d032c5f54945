"""The lookup API on the worker's Faust web server (contract, "Lookup API").

    web_api.register(app, table, config, incidents)   # once, in build_app

    GET  /v1/tracking/{carrier}/{number}?at=TIMESTAMP&channel=CHANNEL   one number
    POST /v1/tracking/check   {"numbers": [{"carrier", "number", "channel"?}, ...], "at": ...}

Each number is answered from the stored state (`streams.core.lookup.status` over the table's
`TrackingState`) by the worker that owns its key's partition: the key `carrier:canonical`
goes to partition `internal_topic.partition_for(key)` (where ingest puts its events, so the
partition of the internal topic and of the changelog), and the group's assignment
(`app.router.table_metadata`) names the owner's canonical URL. A request to another worker
is forwarded there (GET as is; POST split by owner, the parts sent concurrently, the answers
put back in the original order, all at one `at`). A forwarded request carries the header
`X-Tracking-Validator-Forwarded` and is never forwarded again: a worker that does not own a
number any more (a rebalance in between) answers 503 and the client retries.

    GET  /v1/openapi.json     the API's OpenAPI 3.1 document (schemas/lookup.openapi.json)

The circuit breaker (a `channel` with an open incident of the number's carrier: `incident`
and `advice` added) comes from the worker's own copy of the open incidents
(`streams.runtime.incidents_view`): the owner adds it to the numbers it answers.

Access: when TRACKING_VALIDATOR_API_TOKEN is set, every request to the web server (these
routes and Faust's own) but the probes, the scrape and the API's description (`/health`,
`/ready`, `/metrics`, `/v1/openapi.json`) needs `Authorization: Bearer <token>`
(compared in constant time), else 401; forwarded requests carry it. The table itself is
never listed or dumped (Faust's table views stay off). Every error is JSON
`{"error": {"code", "message"}}`: 400 for a malformed request (codes in
streams.core.lookup), 401, 404/405 (with `Allow`) for other paths and methods, 503 while
the owner is unknown, recovering or unreachable, and 500 (logged, no traceback) only for a
fault of ours. A request aiohttp cannot parse gets its 400 and one WARNING line.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

import orjson

from streams.core import lookup
from streams.core.detection import TrackingState, rfc3339
from streams.core.lookup import RequestError
from streams.core.schema import SCHEMAS_DIR
from streams.runtime import internal_topic
from streams.runtime.stream_config import StreamConfig

if TYPE_CHECKING:
    import faust
    from aiohttp import ClientSession, web

log = logging.getLogger(__name__)

TOKEN_ENV = "TRACKING_VALIDATOR_API_TOKEN"
FORWARDED = "X-Tracking-Validator-Forwarded"
OPENAPI_PATH = "/v1/openapi.json"
# probes and the Prometheus scrape never need the token (streams.runtime.metrics): health checkers
# and scrapers are configured apart from the API's clients; the API's description holds no
# data and says how to authenticate, so tools and clients read it before they have a token
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics", OPENAPI_PATH})
GET_PATH = "/v1/tracking/{carrier}/{number}"
CHECK_PATH = "/v1/tracking/check"
OPENAPI_FILE = "lookup.openapi.json"  # in schemas/, beside the event schemas
FORWARD_TIMEOUT = 10.0  # seconds for the owner's answer
YIELD_EVERY = 100  # numbers answered between yields to the event loop (~5 ms of work)
_DISCARD_LIMIT = 64 << 20  # a too-large body is read (and dropped) up to this, then cut off


class Unavailable(Exception):
    """The answer cannot be given right now (503): no owner known, recovering, unreachable."""


class _MalformedRequests(logging.Filter):
    """aiohttp logs an HTTP request it cannot parse (a NUL in a header, a line too long) at
    ERROR with a traceback, though it answers the client 400 itself: the client's fault, not
    the worker's. Such a record becomes one WARNING line without the traceback (schemathesis
    sends them; the log module collapses repeats)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            reason = " ".join(str(exc.message or type(exc).__name__).split())[:200]
            record.msg = "malformed HTTP request from %s, answered %s: %s"
            record.args = ((record.args or ("?",))[0], exc.code, reason)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


_MALFORMED = _MalformedRequests()


def register(app: faust.App, table: Any, config: StreamConfig,
             incidents: lookup.OpenIncidents | None = None) -> None:
    """Serve the lookup API on `app`'s web server (a no-op when it has none)."""
    if config.web_port <= 0:
        return
    server_log = logging.getLogger("aiohttp.server")
    if _MALFORMED not in server_log.filters:
        server_log.addFilter(_MALFORMED)
    host = config.web_host
    if host:  # how the other workers reach this one, and where it listens
        app.conf.web_host = host
        app.conf.web_bind = host
        app.conf.canonical_url = f"http://{host}:{config.web_port}"
    api = LookupApi(app, table, config, os.environ.get(TOKEN_ENV) or None, incidents)
    web_app = app.web.web_app  # the aiohttp Application of Faust's web driver
    web_app.middlewares.append(api.middleware)
    web_app.router.add_get(GET_PATH, api.get_one)
    web_app.router.add_get("/v1/tracking/{carrier}/", api.get_empty)
    web_app.router.add_post(CHECK_PATH, api.check)
    web_app.router.add_get(OPENAPI_PATH, api.openapi)
    web_app.on_cleanup.append(api.close)


def _error(status: int, code: str, message: str, **headers: str) -> web.Response:
    from aiohttp import web

    return web.Response(status=status, body=orjson.dumps({"error": {
        "code": code, "message": message}}), content_type="application/json", headers=headers)


def _json(value: Any) -> web.Response:
    from aiohttp import web

    return web.Response(body=orjson.dumps(value), content_type="application/json")


class LookupApi:
    def __init__(self, app: faust.App, table: Any, config: StreamConfig,
                 token: str | None, incidents: lookup.OpenIncidents | None = None) -> None:
        from aiohttp import web

        self.app = app
        self.incidents = incidents
        self.table = table
        self.settings = config.settings
        self.partitions = config.partitions
        self.token = None if token is None else f"Bearer {token}".encode()
        self.session: ClientSession | None = None
        self._openapi: bytes | None = None

        @web.middleware
        async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
            if self.token is not None and request.path not in OPEN_PATHS and \
                    not hmac.compare_digest(
                    request.headers.get("Authorization", "").encode("utf-8", "replace"),
                    self.token):
                return _error(401, "unauthorized", "missing or wrong Authorization: Bearer "
                              "token", **{"WWW-Authenticate": "Bearer"})
            try:
                return await handler(request)
            except RequestError as exc:
                return _error(exc.status, exc.code, exc.message)
            except Unavailable as exc:
                return _error(503, "unavailable", str(exc), **{"Retry-After": "1"})
            except web.HTTPException as exc:  # aiohttp's 404, 405, 413 ...
                if exc.status < 400:
                    raise
                code = exc.reason.lower().replace(" ", "_")
                # a 405 names the methods the path takes (RFC 9110; schemathesis checks it)
                allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
                return _error(exc.status, code, exc.reason, **allow)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lookup API: %s %s failed", request.method, request.rel_url)
                return _error(500, "internal", "internal error (logged by the worker)")

        self.middleware = middleware

    # ------------------------------------------------------------ routes

    async def get_one(self, request: web.Request) -> web.StreamResponse:
        carrier, number = _raw_segments(request.raw_path)
        q = lookup.query(carrier, number, channel=request.query.get("channel"))
        text = request.query.get("at")
        at_ts = _now() if text is None else lookup.parse_at(text)
        key = q.key.encode()
        owners = self._owners(forwarded=FORWARDED in request.headers)
        partition = self._partition(key)
        owner = self._owner(owners, partition)
        if owner is not None:
            return await self._forward_get(owner, request)
        return _json(self._answer(q, key, partition, at_ts))

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        if self._openapi is None:  # read once, when first asked
            self._openapi = (SCHEMAS_DIR / OPENAPI_FILE).read_bytes()
        return web.Response(body=self._openapi, content_type="application/json")

    async def get_empty(self, request: web.Request) -> web.StreamResponse:
        raise RequestError("empty", "empty tracking number")

    async def check(self, request: web.Request) -> web.StreamResponse:
        queries, at_ts = lookup.parse_check(await _read_body(request))
        if at_ts is None:
            at_ts = _now()  # one `at` for every part, wherever it is answered
        owners = self._owners(forwarded=FORWARDED in request.headers)
        results: list[Any] = [None] * len(queries)
        local: list[tuple[int, bytes, int]] = []
        remote: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            key = q.key.encode()
            partition = self._partition(key)
            owner = self._owner(owners, partition)
            if owner is None:
                local.append((i, key, partition))
            else:
                remote.setdefault(owner, []).append(i)
        # the other owners work on their parts while this one answers its own
        forwarded = asyncio.gather(*(
            self._forward_check(owner, [queries[i] for i in indexes], at_ts, request)
            for owner, indexes in remote.items()))
        try:
            for n, (i, key, partition) in enumerate(local, 1):
                results[i] = self._answer(queries[i], key, partition, at_ts)
                if not n % YIELD_EVERY:
                    await asyncio.sleep(0)  # let the stream and other requests run
        except BaseException:
            forwarded.cancel()
            raise
        for indexes, answers in zip(remote.values(), await forwarded, strict=True):
            for i, answer in zip(indexes, answers, strict=True):
                results[i] = answer
        return _json({"results": results})

    # ------------------------------------------------------------ the state

    def _answer(self, q: lookup.Query, key: bytes, partition: int, at_ts: int,
                ) -> dict[str, Any]:
        stored = self._stored(key, partition)
        state = None if stored is None else TrackingState.from_bytes(stored)
        answer = lookup.status(state, q.carrier, q.number, at_ts, self.settings, q.validation)
        return lookup.with_incident(answer, self.incidents, q)

    def _stored(self, key: bytes, partition: int) -> bytes | None:
        """The table's value of `key` (raw serializers: the bytes as stored). Faust's RocksDB
        store keeps one DB per partition: reading the key's own is ~2x cheaper per lookup
        than table.get, which probes every partition's DB twice (py-spy)."""
        stage = getattr(self.app, "tracking", {}).get("stage")
        if stage is not None and key in stage.overlay:  # applied, on its way to RocksDB
            return stage.overlay[key]
        store = self.table.data
        dbs = getattr(store, "_dbs", None)
        if dbs is None:  # another store (memory://): its mapping
            try:
                return store[key]
            except KeyError:
                return None
        db = dbs.get(partition)
        if db is None:
            raise Unavailable(f"partition {partition} is not open on this worker yet")
        return db.get(key)

    def _owners(self, forwarded: bool) -> dict[int, str | None]:
        """partition -> the owner's URL, None for this worker's own partitions. A worker
        answers only for partitions it owns and has recovered: else Unavailable."""
        app = self.app
        if getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False):
            raise Unavailable("the worker group is rebalancing or recovering its state")
        me = str(app.conf.canonical_url)
        owners: dict[int, str | None] = {}
        for url, topics in app.router.table_metadata(self.table.name).items():
            for partitions in topics.values():
                for p in partitions:
                    owners[p] = None if url == me else url.rstrip("/")
        if forwarded:  # answer here or nowhere: never a second hop
            owners = {p: url for p, url in owners.items() if url is None}
        return owners

    def _partition(self, key: bytes) -> int:
        """The key's partition: where ingest puts its events (streams.runtime.internal_topic)."""
        return internal_topic.partition_for(key, self.partitions)

    def _owner(self, owners: dict[int, str | None], partition: int) -> str | None:
        """The URL of the worker owning `partition` (None: this one)."""
        try:
            return owners[partition]
        except KeyError:
            raise Unavailable(f"no worker owns partition {partition} yet") from None

    # ------------------------------------------------------------ forwarding

    def _headers(self, request: web.Request) -> dict[str, str]:
        headers = {FORWARDED: "1", "Content-Type": "application/json"}
        auth = request.headers.get("Authorization")
        if auth is not None:
            headers["Authorization"] = auth
        return headers

    def _client(self) -> ClientSession:
        import aiohttp

        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT))
        return self.session

    async def _forward_get(self, owner: str, request: web.Request) -> web.StreamResponse:
        from aiohttp import ClientError, web

        try:
            async with self._client().get(owner + request.raw_path,
                                          headers=self._headers(request)) as response:
                body = await response.read()
                return web.Response(status=response.status, body=body,
                                    content_type="application/json")
        except (ClientError, TimeoutError) as exc:
            raise Unavailable(f"the owner {owner} did not answer: {exc!r}") from None

    async def _forward_check(self, owner: str, queries: list[lookup.Query], at_ts: int,
                             request: web.Request) -> list[Any]:
        from aiohttp import ClientError

        body = orjson.dumps({"numbers": [_asked(q) for q in queries], "at": rfc3339(at_ts)})
        try:
            async with self._client().post(owner + CHECK_PATH, data=body,
                                           headers=self._headers(request)) as response:
                payload = await response.read()
                status = response.status
        except (ClientError, TimeoutError) as exc:
            raise Unavailable(f"the owner {owner} did not answer: {exc!r}") from None
        try:
            results = orjson.loads(payload)["results"] if status == 200 else None
        except (orjson.JSONDecodeError, KeyError, TypeError):
            results = None
        if not isinstance(results, list) or len(results) != len(queries):
            raise Unavailable(f"the owner {owner} answered {status}: {payload[:200]!r}")
        return results

    async def close(self, _web_app: Any = None) -> None:
        if self.session is not None:
            await self.session.close()


def _asked(q: lookup.Query) -> dict[str, str]:
    """A number as forwarded to its owner (with its channel: the owner adds the incident)."""
    item = {"carrier": q.carrier, "number": q.number}
    if q.channel is not None:
        item["channel"] = q.channel
    return item


def _now() -> int:
    return int(time.time())


def _raw_segments(raw_path: str) -> tuple[str, str]:
    """(carrier, number) percent-decoded from the raw path: not UTF-8 is a 400."""
    parts = raw_path.split("?", 1)[0].split("/")  # "", "v1", "tracking", carrier, number
    try:
        return (unquote_to_bytes(parts[3]).decode("utf-8"),
                unquote_to_bytes(parts[4]).decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError("encoding", "the path is not UTF-8 once percent-decoded") from None


async def _read_body(request: web.Request) -> bytes:
    """The body, or RequestError("too_large") past lookup.MAX_BODY_BYTES (what was sent is
    read and dropped up to a bound, so that the client gets the answer)."""
    limit = lookup.MAX_BODY_BYTES
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > _DISCARD_LIMIT:
            break
    if size > limit:
        raise RequestError("too_large", f"body over {limit} bytes")
    return b"".join(chunks)
