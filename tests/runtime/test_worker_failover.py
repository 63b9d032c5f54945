"""A lookup while a worker dies and the group rebalances: 503 with Retry-After, never a wrong
answer, and every number answered again by the survivor.

Two workers (one app id, a standby table each, --session-timeout 6) load a history; every
number is asked of A (B's are forwarded to B): the reference. B is SIGKILLed, and A is asked
all of B's numbers in batches, and some one at a time, without a pause, until it answers
them all again: every answer is then either 200 and equal to the reference, or 503 with a
Retry-After header. Until the group notices B is gone A forwards to B and cannot reach it,
so some 503s must be seen. `benchmarks/failover.py` times the same on a larger table.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from test_recovery import workload
from test_worker_integration import PARTITIONS, new_pipeline, produce, wait_idle, wait_topics

from streams.commands.demo import WorkerProcess
from streams.core import lookup
from streams.local.broker import free_port
from streams.runtime import internal_topic

pytestmark = pytest.mark.integration

AT = "2025-06-01T00:00:00Z"
GIVE_UP = 90.0  # seconds after the kill


async def check(http: Any, url: str, numbers: list[tuple[str, str]]) -> tuple[int, Any, Any]:
    body = orjson.dumps({"numbers": [{"carrier": c, "number": n} for c, n in numbers],
                         "at": AT})
    async with http.post(f"{url}/v1/tracking/check", data=body) as r:
        payload = orjson.loads(await r.read())
        return r.status, payload, r.headers.get("Retry-After")


async def get_one(http: Any, url: str, carrier: str, number: str) -> tuple[int, Any, Any]:
    path = f"/v1/tracking/{carrier}/{quote(number, safe='')}?at={AT}"
    async with http.get(url + path) as r:
        return r.status, orjson.loads(await r.read()), r.headers.get("Retry-After")


async def test_a_lookup_during_a_rebalance_is_503_or_right(kafka_bootstrap: str,
                                                           tmp_path: Path) -> None:
    import aiohttp

    messages = workload(random.Random(424), 300)
    p = new_pipeline(kafka_bootstrap, tmp_path, "wfail")
    workers, urls = [], []
    for name in ("a", "b"):
        port = free_port()
        args = [*p.worker_args(), "--state-dir", str(tmp_path / name), "--web-host",
                "127.0.0.1", "--web-port", str(port), "--standby-replicas", "1"]
        workers.append(WorkerProcess(args, log=tmp_path / f"{name}.log").start())
        urls.append(f"http://127.0.0.1:{port}")
    a, b = urls
    p.worker = workers[0]
    try:
        await wait_topics(kafka_bootstrap, [*p.topics.values(), p.internal_topic])
        for topic in ("labels", "scans"):
            await produce(kafka_bootstrap, p.topics[topic],
                          [m for m in messages if (m["type"] == "carrier.scan") ==
                           (topic == "scans")], key=b"k")
        await wait_idle(p, timeout=180)
        numbers = sorted({(m["carrier"], m["tracking_number"]) for m in messages})
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            deadline = time.monotonic() + 120
            while True:  # both own partitions, and A answers every number
                async with http.get(f"{a}/router/") as r:
                    router = orjson.loads(await r.read())
                owned = {u.rstrip("/"): {x for parts in t.values() for x in parts}
                         for u, t in router.items()}
                if set(owned) == {a, b} and all(owned.values()):
                    status, payload, _ = await check(http, a, numbers)
                    if status == 200:
                        break
                assert time.monotonic() < deadline, "workers never shared the partitions"
                await asyncio.sleep(0.5)
            reference = dict(zip(numbers, payload["results"], strict=True))
            mine = [n for n in numbers if internal_topic.partition_for(
                lookup.query(*n).key.encode(), PARTITIONS) in owned[b]]
            assert mine, "B owns no number of the history"
            assert any(r["status"] != "free" for n, r in reference.items() if n in mine), \
                "B's numbers must include held ones, or a wrong 'free' would go unseen"

            workers[1].kill()
            killed = time.monotonic()
            seen: dict[int, int] = {}
            while True:
                status, payload, retry = await check(http, a, mine)
                seen[status] = seen.get(status, 0) + 1
                if status == 200:
                    got = dict(zip(mine, payload["results"], strict=True))
                    wrong = [n for n in mine if got[n] != reference[n]]
                    assert not wrong, f"wrong answer for {wrong[0]}: {got[wrong[0]]} != " \
                                      f"{reference[wrong[0]]}"
                    break
                assert status == 503, (status, payload)
                assert retry is not None and int(retry) > 0, "503 without Retry-After"
                assert payload["error"]["code"] == "unavailable"
                for carrier, number in mine[:5]:  # single lookups too
                    status, answer, retry = await get_one(http, a, carrier, number)
                    seen[status] = seen.get(status, 0) + 1
                    if status == 200:
                        assert answer == reference[(carrier, number)]
                    else:
                        assert status == 503 and retry is not None, (status, answer)
                assert time.monotonic() - killed < GIVE_UP, f"no answer after {GIVE_UP}s"
            took = time.monotonic() - killed
            print(f"A answered B's {len(mine)} numbers {took:.1f}s after the kill; "
                  f"responses meanwhile: {dict(sorted(seen.items()))}")
            assert seen.get(503, 0) > 0, "A answered for B before the group noticed B died"
    finally:
        codes = [w.stop() for w in workers]
    assert codes[0] == 0, f"log {tmp_path / 'a.log'}"
