"""The lookup API end to end: two real workers (one app id, one host, --web-host 127.0.0.1,
their own --web-port), a real broker, a simulated history fed through the input topics.

Every number asked of EITHER worker gets the owner's answer, equal to `lookup.status`
computed offline from the same messages; the token guards every route and travels with
forwarded requests; hostile input gets a JSON 4xx, never a 500; the `lookup` command.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from aiokafka.partitioner import murmur2
from test_worker_integration import (
    PARTITIONS,
    Pipeline,
    new_pipeline,
    produce,
    wait_idle,
    wait_topics,
)

from streams.commands.demo import WorkerProcess
from streams.core import lookup
from streams.core.detection import TrackingState, apply, rfc3339
from streams.core.events import decode
from streams.core.numbers import generate, printed
from streams.core.schema import SCHEMAS_DIR
from streams.core.settings import Settings
from streams.local.broker import free_port
from streams.runtime.web_api import TOKEN_ENV
from streams.tools.simulation import Params, simulate

pytestmark = pytest.mark.integration

TOKEN = "t0ken-for-the-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
START = datetime(2025, 1, 1, tzinfo=UTC)
S = Settings()


class Cluster:
    def __init__(self, pipeline: Pipeline, urls: list[str], logs: list[Path],
                 states: dict[str, TrackingState | None], numbers: list[tuple[str, str]],
                 times: list[int]) -> None:
        self.pipeline = pipeline
        self.urls = urls
        self.logs = logs
        self.states = states
        self.numbers = numbers  # (carrier, number as printed)
        self.times = times

    def expected(self, carrier: str, number: str, at: int) -> dict[str, Any]:
        q = lookup.query(carrier, number)
        return lookup.status(self.states.get(q.key), q.carrier, q.number, at, S)


def _world() -> tuple[list[Any], dict[str, TrackingState | None], list[tuple[str, str]]]:
    world = simulate(Params(seed=31, labels=400, days=80, start=START,
                            incident_start=START + timedelta(days=64), incident_share=0.6,
                            void_share=0.05, voided_shipped_share=0.02))
    states: dict[str, TrackingState | None] = {}
    for m in world.messages:
        event = decode(orjson.dumps(m.value))
        states[event.key], _ = apply(states.get(event.key), event, S)
    rng = random.Random(8)
    numbers = sorted({(s.carrier, s.number) for s in world.shipments})
    # printed forms, numbers never seen, broken check digits
    asked = [(c, printed(c, n, rng) if rng.random() < 0.3 else n) for c, n in numbers]
    asked += [(c, generate(c, rng=rng)) for c in ("usps", "ups", "fedex", "dhl")]
    asked += [("usps", "9400 1000 0000 0000 0000 00"), ("ups", "1Z999AA10123456785")]
    return world.messages, states, asked


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
        return r.status, orjson.loads(await r.read())


async def _post(url: str, body: bytes, headers: dict[str, str] | None = None,
                ) -> tuple[int, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
        return r.status, orjson.loads(await r.read())


async def _ready(urls: list[str], timeout: float = 90.0) -> None:
    """Until both workers own partitions and answer (no 503: rebalance and recovery done)."""
    deadline = time.monotonic() + timeout
    probe = "/v1/tracking/usps/9400111206206406260787"
    while True:
        try:
            routers = [(await _get(u + "/router/", AUTH))[1] for u in urls]
            codes = [(await _get(u + probe, AUTH))[0] for u in urls]
            if all(set(r) == set(urls) for r in routers) and codes == [200, 200]:
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("workers not ready")
        await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
def cluster(kafka_bootstrap: str) -> Iterator[Cluster]:
    tmp = Path(tempfile.mkdtemp(prefix="tv-web-"))
    base = new_pipeline(kafka_bootstrap, tmp, "web")
    env = {**os.environ, TOKEN_ENV: TOKEN}
    urls, logs, workers = [], [], []
    for name in ("a", "b"):
        port = free_port()
        p = replace(base, state_dir=tmp / name, log=tmp / f"{name}.log",
                    extra_args=["--web-host", "127.0.0.1", "--web-port", str(port)])
        workers.append(WorkerProcess(p.worker_args(), log=p.log, env=env).start())
        urls.append(f"http://127.0.0.1:{port}")
        logs.append(p.log)
    try:
        messages, states, numbers = _world()

        async def setup() -> None:
            await wait_topics(kafka_bootstrap, [*base.topics.values(), base.internal_topic])
            for topic in ("labels", "scans"):
                await produce(kafka_bootstrap, base.topics[topic],
                              [m.value for m in messages if m.topic == topic])
            base.worker = workers[0]
            await wait_idle(base, timeout=180)
            await _ready(urls)

        asyncio.run(setup())
        end = max(m.event_time for m in messages)
        times = [int((START + timedelta(days=d)).timestamp()) for d in (30, 64, 65)]
        times += [end, end + 150 * 86400]
        yield Cluster(base, urls, logs, states, numbers, times)
    finally:
        codes = [w.stop() for w in workers]
    assert codes == [0, 0], f"worker exit codes {codes}; logs in {tmp}"
    for log in logs:
        assert "Traceback" not in log.read_text(errors="replace"), f"traceback in {log}"
    shutil.rmtree(tmp, ignore_errors=True)


def _owner(routers: dict[str, Any], carrier: str, number: str) -> str:
    key = lookup.query(carrier, number).key.encode()
    partition = (murmur2(key) & 0x7FFFFFFF) % PARTITIONS
    # the tracking table's changelog partitions (the response stage's table is another)
    return next(url for url, topics in routers.items()
                if any(partition in parts for topic, parts in topics.items()
                       if topic.endswith("-tracking-state-changelog")))


async def test_every_number_gets_the_owners_answer_from_either_worker(cluster: Cluster) -> None:
    _, routers = await _get(cluster.urls[0] + "/router/", AUTH)
    owners = {_owner(routers, c, n) for c, n in cluster.numbers}
    assert owners == set(cluster.urls)  # both own numbers: both forward to the other
    statuses: set[str] = set()
    for at in cluster.times:
        want = [cluster.expected(c, n, at) for c, n in cluster.numbers]
        statuses.update(w["status"] for w in want)
        body = orjson.dumps({"numbers": [{"carrier": c, "number": n}
                                         for c, n in cluster.numbers], "at": rfc3339(at)})
        assert len(cluster.numbers) <= lookup.MAX_NUMBERS
        for url in cluster.urls:
            status, got = await _post(url + "/v1/tracking/check", body, AUTH)
            assert status == 200
            assert got["results"] == want, (url, rfc3339(at))
    assert statuses == {"held", "recently_used", "free", "invalid"}
    # single lookups, each number of either worker
    at = cluster.times[2]
    for i, (carrier, number) in enumerate(cluster.numbers):
        url = cluster.urls[i % 2]
        status, got = await _get(
            f"{url}/v1/tracking/{carrier}/{quote(number, safe='')}?at={quote(rfc3339(at))}",
            AUTH)
        assert (status, got) == (200, cluster.expected(carrier, number, at)), (url, number)


async def test_at_defaults_to_now(cluster: Cluster) -> None:
    carrier, number = cluster.numbers[0]
    before = int(time.time())
    status, got = await _get(f"{cluster.urls[1]}/v1/tracking/{carrier}/{number}", AUTH)
    assert status == 200
    assert got in (cluster.expected(carrier, number, before),
                   cluster.expected(carrier, number, int(time.time())))


async def test_a_batch_of_several_owners_comes_back_in_order(cluster: Cluster) -> None:
    numbers = cluster.numbers[::-1] * 3
    numbers = numbers[: lookup.MAX_NUMBERS]
    body = orjson.dumps({"numbers": [{"carrier": c, "number": n} for c, n in numbers],
                         "at": rfc3339(cluster.times[3])})
    status, got = await _post(cluster.urls[0] + "/v1/tracking/check", body, AUTH)
    assert status == 200 and len(got["results"]) == len(numbers) == lookup.MAX_NUMBERS
    assert [r["tracking_number"] for r in got["results"]] == [
        lookup.query(c, n).validation.number for c, n in numbers]


async def test_the_token_is_required_on_every_route(cluster: Cluster) -> None:
    number = cluster.numbers[0][1]
    for url in cluster.urls:
        for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer ünï"}):
            for path in (f"/v1/tracking/usps/{number}", "/router/", "/", "/nope"):
                status, body = await _get(url + path, headers)
                assert status == 401 and body["error"]["code"] == "unauthorized", (path, headers)
            status, body = await _post(url + "/v1/tracking/check", b'{"numbers": []}', headers)
            assert status == 401


BIG = orjson.dumps({"numbers": [{"carrier": "usps", "number": "9" * 22}] * 1001})


@pytest.mark.parametrize("method,path,body,status,code", [
    ("GET", "/v1/tracking/nope/123", None, 400, "unknown_carrier"),
    ("GET", "/v1/tracking/usps/", None, 400, "empty"),
    ("GET", "/v1/tracking/usps/%20%20", None, 400, "empty"),
    ("GET", "/v1/tracking/usps/%FF%FE", None, 400, "encoding"),
    ("GET", "/v1/tracking/usps/9400111206206406260787?at=yesterday", None, 400, "invalid_at"),
    ("GET", "/v1/tracking/usps/9400111206206406260787?at=2025-01-01T00:00:00", None, 400,
     "invalid_at"),
    ("GET", "/v1/tracking/usps/..%2F..%2F..%2Fetc%2Fpasswd", None, 200, None),
    ("GET", "/v1/tracking/usps/%00%0A%0D", None, 200, None),
    ("GET", "/v1/tracking/usps/" + "9" * 5000, None, 200, None),
    ("GET", "/v1/tracking/check", None, 405, "method_not_allowed"),
    ("PUT", "/v1/tracking/check", b"{}", 405, "method_not_allowed"),
    ("GET", "/table/tracking-state/", None, 404, "not_found"),
    ("GET", "/table/", None, 404, "not_found"),
    ("GET", "/v1/tracking/usps/1/2", None, 404, "not_found"),
    ("POST", "/v1/tracking/check", b"", 400, "invalid_json"),
    ("POST", "/v1/tracking/check", b'{"numbers": [', 400, "invalid_json"),
    ("POST", "/v1/tracking/check", b"\xff\xfe{}", 400, "encoding"),
    ("POST", "/v1/tracking/check", b"[1, 2]", 400, "not_an_object"),
    ("POST", "/v1/tracking/check", b'{"numbers": "9400"}', 400, "schema"),
    ("POST", "/v1/tracking/check", b'{"numbers": [["usps", "1"]]}', 400, "schema"),
    ("POST", "/v1/tracking/check", b'{"numbers": [{"carrier": 1, "number": "1"}]}', 400,
     "schema"),
    ("POST", "/v1/tracking/check", b'{"numbers": [{"carrier": "usps", "number": 1}]}', 400,
     "schema"),
    ("POST", "/v1/tracking/check", b'{"numbers": [{"carrier": "usps", "number": ""}]}', 400,
     "empty"),
    ("POST", "/v1/tracking/check", b'{"numbers": [], "at": 1740000000}', 400, "invalid_at"),
    ("POST", "/v1/tracking/check", b"[" * 100000, 400, "invalid_json"),
    ("POST", "/v1/tracking/check", BIG, 400, "too_many_numbers"),
    ("POST", "/v1/tracking/check", b" " * (3 << 20), 400, "too_large"),
])
async def test_hostile_input_gets_a_json_error_never_a_500(
        cluster: Cluster, method: str, path: str, body: bytes | None, status: int,
        code: str | None) -> None:
    import aiohttp
    from yarl import URL

    for base in cluster.urls:
        async with aiohttp.ClientSession() as s, s.request(
                method, URL(base + path, encoded=True), data=body, headers=AUTH) as r:
            raw = await r.read()
            assert r.status == status, (base, path, raw[:300])
            assert r.content_type == "application/json"
            answer = orjson.loads(raw)
            if code is None:
                assert answer["status"] == "invalid"
            else:
                assert answer["error"]["code"] == code and answer["error"]["message"]


def _command(args: list[str], stdin: str = "", token: str | None = TOKEN,
             ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if token is not None:
        env[TOKEN_ENV] = token
    return subprocess.run([sys.executable, "-m", "streams", "lookup", *args], input=stdin,
                          capture_output=True, text=True, env=env, timeout=120)


def test_lookup_command(cluster: Cluster) -> None:
    at = cluster.times[2]
    numbers = [(c, n) for c, n in cluster.numbers if "\t" not in n] * 3  # two batches
    assert len(numbers) > lookup.MAX_NUMBERS
    stdin = "".join(f"{c}\t{n}\n" if i % 2 else f"{n}\n" for i, (c, n) in enumerate(numbers))
    done = _command(["--url", cluster.urls[1], "--at", rfc3339(at)], stdin)
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == len(numbers), done.stderr
    for i, ((carrier, number), line) in enumerate(zip(numbers, lines, strict=True)):
        assert line.pop("input") == number
        if i % 2 or line["carrier"] == carrier:  # the carrier was given
            assert line == cluster.expected(carrier, number, at)
    statuses = {line["status"] for line in lines}
    assert "held" in statuses and done.returncode == 1

    fresh = [generate("usps") for _ in range(3)]
    done = _command(["--url", cluster.urls[0], "--carrier", "usps", *fresh])
    assert done.returncode == 0, done.stderr
    assert [orjson.loads(x)["status"] for x in done.stdout.splitlines()] == ["free"] * 3

    done = _command(["--url", cluster.urls[0], *fresh], token=None)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "401" in done.stderr
    done = _command(["--url", "http://127.0.0.1:1", *fresh])
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    done = _command(["--url", cluster.urls[0], "--at", "not-a-time", *fresh])
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1

    # courier codes are case-insensitive (--carrier and a line's CARRIER field), and --at
    # takes a plain date (midnight UTC), as report --from does
    day = datetime.fromtimestamp(at, UTC).date()
    midnight = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    some = numbers[:40]
    stdin = "".join(f"{c.upper()}\t{n}\n" for c, n in some)
    done = _command(["--url", cluster.urls[1], "--at", day.isoformat()], stdin)
    assert done.returncode in (0, 1), done.stderr
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [line.pop("input") for line in lines] == [n for _, n in some]
    assert lines == [cluster.expected(c, n, midnight) for c, n in some]
    done = _command(["--url", cluster.urls[0], "--carrier", "USPS", *fresh])
    assert done.returncode == 0, done.stderr
    assert [orjson.loads(x)["carrier"] for x in done.stdout.splitlines()] == ["usps"] * 3


# ---------------------------------------------------------------- the OpenAPI document

OPENAPI = orjson.loads((SCHEMAS_DIR / "lookup.openapi.json").read_bytes())


def _conforms(name: str, value: Any) -> list[str]:
    """What is wrong with `value` against components.schemas[name] of the document."""
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    registry = Registry().with_resource("doc", Resource(OPENAPI, DRAFT202012))
    check = jsonschema.Draft202012Validator({"$ref": f"doc#/components/schemas/{name}"},
                                            registry=registry)
    return [error.message for error in check.iter_errors(value)]


async def test_the_openapi_document_is_served_without_the_token(cluster: Cluster) -> None:
    for url in cluster.urls:
        for headers in (None, AUTH, {"Authorization": "Bearer wrong"}):
            status, body = await _get(url + "/v1/openapi.json", headers)
            assert (status, body) == (200, OPENAPI)


async def test_live_answers_and_errors_conform_to_the_document(cluster: Cluster) -> None:
    import aiohttp

    statuses = set()
    for at in cluster.times:
        body = orjson.dumps({"numbers": [{"carrier": c.upper(), "number": n}
                                         for c, n in cluster.numbers], "at": rfc3339(at)})
        status, got = await _post(cluster.urls[0] + "/v1/tracking/check", body, AUTH)
        assert status == 200 and _conforms("CheckResponse", got) == []
        statuses.update(r["status"] for r in got["results"])
    assert statuses == {"held", "recently_used", "free", "invalid"}
    for carrier, number in cluster.numbers[:50]:
        status, got = await _get(f"{cluster.urls[1]}/v1/tracking/{carrier}/"
                                 f"{quote(number, safe='')}", AUTH)
        assert status == 200 and _conforms("LookupResult", got) == [], got
    async with aiohttp.ClientSession() as s:
        for method, path, headers, status, header in [
            ("GET", "/v1/tracking/nope/1", AUTH, 400, None),
            ("GET", "/v1/tracking/usps/1?at=soon", AUTH, 400, None),
            ("POST", "/v1/tracking/check", AUTH, 400, None),
            ("GET", "/v1/tracking/usps/1", None, 401, "WWW-Authenticate"),
            ("PUT", "/v1/tracking/check", AUTH, 405, "Allow"),
            ("DELETE", "/v1/tracking/usps/1", AUTH, 405, "Allow"),
        ]:
            async with s.request(method, cluster.urls[0] + path, headers=headers,
                                 data=b"{" if method == "POST" else None) as r:
                answer = orjson.loads(await r.read())
                assert r.status == status, (method, path, answer)
                assert r.content_type == "application/json"
                assert _conforms("Error", answer) == [], answer
                if header is not None:
                    assert r.headers.get(header), (method, path, dict(r.headers))
    assert "POST" in r.headers["Allow"] or "GET" in r.headers["Allow"]


SCHEMATHESIS_CHECKS = (  # responses: no 5xx, and each conforms to the document
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance,unsupported_method,"
    "allow_header_conformance,ignored_auth")


@pytest.mark.fuzz
def test_schemathesis_finds_no_server_error_and_no_response_off_the_document(
        cluster: Cluster, tmp_path: Path) -> None:
    """Bounded: 25 examples an operation, 60 s of fuzzing, one worker, a fixed seed.
    (Not checked: whether each request the document allows is accepted and each it forbids
    refused; a number that normalises to nothing or a date such as February 30 gets a
    documented 400 that no schema can foresee.)"""
    tool = Path(sys.executable).with_name("schemathesis")
    done = subprocess.run(
        [str(tool), "run", cluster.urls[0] + "/v1/openapi.json",
         "--header", f"Authorization: Bearer {TOKEN}", "--checks", SCHEMATHESIS_CHECKS,
         "--max-examples", "25", "--max-time", "60", "--workers", "1", "--seed", "20",
         "--generation-database", "none", "--request-timeout", "15", "--no-color"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "Tested: 2" in done.stdout  # both lookup endpoints were fuzzed
