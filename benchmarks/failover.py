"""Worker failover, timed: two workers share the partitions, one is SIGKILLed.

    python benchmarks/failover.py [--quick] [--labels N] [--standby 0,1] [--session-timeout 6]
                                  [--nodes 1]

Per scenario (each --standby value: Faust's `table_standby_replicas`), on a local broker
(or a --nodes cluster; $KAFKA_BOOTSTRAP_SERVERS when set):
  1. two `tracking-validator worker`s A and B, one app id, --partitions 8, their lookup API
     on, load a table of --labels labels (benchmarks/core.py's workload, ~4.7 events each);
  2. every number of B's partitions is asked of A (POST /v1/tracking/check, forwarded to B,
     at one fixed `at`): the reference answers;
  3. B is SIGKILLed. From that instant:
     - lookups: A is asked all of B's numbers again, round after round; "lookups back" is
       when a whole round is answered 200, every answer equal to the reference. Every 200
       that differs from the reference is a wrong answer (must be 0); a 503 must carry
       Retry-After;
     - alerts: a probe label (a wrong check digit: invalid_tracking at once, never held) is
       produced every 50 ms, cycling over B's table partitions and all 8 input partitions;
       "alerts back" is when every one of B's table partitions and every input partition
       has delivered an alert of a probe sent after the kill.
Targets (issue 24): lookups back within 15 s of the kill, alerts within 20 s.

The group notices the dead worker after --session-timeout (Kafka's group.min.session.timeout.ms
is 6 s by default: the least a broker accepts); the heartbeat is a quarter of it (at most 3 s).
Without standbys the survivor rebuilds B's table partitions from the changelog; with one, it
has kept a copy warm from the changelog all along.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import core as core_bench
import pipeline as pipeline_bench

from streams.commands.demo import WorkerProcess
from streams.core import lookup
from streams.local.broker import free_port
from streams.runtime import internal_topic
from streams.runtime.kafka_io import ensure_topics
from streams.tools.samples import usps_number, wrong_check_digit

PARTITIONS = 8
BATCH = 1000
TARGET_LOOKUPS = 15.0
TARGET_ALERTS = 20.0


def partition_of(carrier: str, number: str) -> int:
    """The table (and internal topic) partition of a number: where the lookup API and
    ingest put its key."""
    return internal_topic.partition_for(lookup.query(carrier, number).key.encode(), PARTITIONS)


class Worker:
    def __init__(self, name: str, bootstrap: str, app_id: str, topics: dict[str, str],
                 tmp: Path, standby: int, session: float, replication: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"{app_id}-{name}.log"
        self.process = WorkerProcess([
            "--bootstrap", bootstrap, "--app-id", app_id,
            "--state-dir", str(tmp / f"{app_id}-{name}"), "--partitions", str(PARTITIONS),
            "--labels-topic", topics["labels"], "--scans-topic", topics["scans"],
            "--alerts-topic", topics["alerts"], "--deadletter-topic", topics["deadletter"],
            "--web-host", "127.0.0.1", "--web-port", str(self.port),
            "--standby-replicas", str(standby), "--session-timeout", str(session),
            "--replication", str(replication), "--loglevel", "info",
        ], log=self.log)


async def post_check(http: Any, url: str, numbers: list[tuple[str, str]], at: str,
                     ) -> tuple[int, list[Any] | None, str | None]:
    """(status, results or None, Retry-After or None) of one POST /v1/tracking/check."""
    body = orjson.dumps({"numbers": [{"carrier": c, "number": n} for c, n in numbers],
                         "at": at})
    async with http.post(f"{url}/v1/tracking/check", data=body) as r:
        payload = await r.read()
        results = orjson.loads(payload)["results"] if r.status == 200 else None
        return r.status, results, r.headers.get("Retry-After")


async def ask_all(http: Any, url: str, numbers: list[tuple[str, str]], at: str,
                  ) -> list[tuple[int, list[Any] | None, str | None]]:
    return [await post_check(http, url, numbers[i:i + BATCH], at)
            for i in range(0, len(numbers), BATCH)]


async def wait_shared(http: Any, a: Worker, b: Worker, numbers: list[tuple[str, str]],
                      at: str, timeout: float = 180.0) -> dict[str, list[int]]:
    """Until both workers own table partitions and A answers every number; returns the
    router's table partitions by worker URL."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with http.get(f"{a.url}/router/") as r:
                router = orjson.loads(await r.read()) if r.status == 200 else {}
            owned = {url.rstrip("/"): sorted(p for parts in topics.values() for p in parts)
                     for url, topics in router.items()}
            if set(owned) == {a.url, b.url} and all(owned.values()):
                answers = await ask_all(http, a.url, numbers, at)
                if all(status == 200 for status, _, _ in answers):
                    return owned
        except Exception:  # not up yet
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers not sharing the partitions; logs {a.log} {b.log}")
        await asyncio.sleep(0.5)


def probe(rng: random.Random, partitions: set[int]) -> tuple[str, int, bytes]:
    """A label with a wrong check digit whose key is on one of `partitions`."""
    while True:
        number = wrong_check_digit(usps_number(rng))
        part = partition_of("usps", number)
        if part in partitions:
            label_id = f"probe-{uuid.uuid4().hex}"
            return label_id, part, orjson.dumps({
                "type": "label.purchased", "schema_version": 1, "event_id": label_id,
                "label_id": label_id, "carrier": "usps", "tracking_number": number,
                "seller_id": "probe", "order_id": label_id,
                "ship_to": {"postal_code": "10001", "country": "US"},
                "purchased_at": "2025-03-01T00:00:00Z"})


async def scenario(bootstrap: str, tmp: Path, values: list[bytes],
                   numbers: list[tuple[str, str]], standby: int, session: float,
                   replication: int) -> dict[str, Any]:
    import aiohttp
    from aiokafka import AIOKafkaConsumer

    app_id = f"fo-{uuid.uuid4().hex[:8]}"
    topics = {k: f"{app_id}.{k}" for k in ("labels", "scans", "alerts", "deadletter")}
    await ensure_topics(bootstrap, [topics["labels"], topics["scans"]], partitions=PARTITIONS,
                        replication=max(1, replication),
                        config={"min.insync.replicas": "2"} if replication >= 3 else None)
    t = time.monotonic()
    await pipeline_bench.preload(bootstrap, topics["labels"], topics["scans"], values)
    a, b = (Worker(n, bootstrap, app_id, topics, tmp, standby, session, replication)
            for n in ("a", "b"))
    a.process.start()
    b.process.start()
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    result: dict[str, Any] = {"standby": standby}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            groups = {f"{app_id}-ingest": [topics["labels"], topics["scans"]],
                      app_id: [f"{app_id}-tracking-events"]}
            owned = await wait_shared(http, a, b, numbers, at)
            async with pipeline_bench.Lag(bootstrap, groups) as lag:
                await lag.wait_zero(600)
            loaded = time.monotonic() - t
            await asyncio.sleep(3.0)  # standbys, if any, caught up with the last changelog
            b_parts = set(owned[b.url])
            mine = [n for n in numbers if partition_of(*n) in b_parts]
            reference = [r for _, results, _ in await ask_all(http, a.url, mine, at)
                         for r in results or []]
            assert len(reference) == len(mine), "A did not answer B's numbers before the kill"

            consumer = AIOKafkaConsumer(topics["alerts"], bootstrap_servers=bootstrap,
                                        group_id=None, auto_offset_reset="latest",
                                        fetch_max_wait_ms=20)
            await consumer.start()
            while not consumer.assignment():
                await asyncio.sleep(0.05)
            await consumer.seek_to_end()
            await consumer.position(next(iter(consumer.assignment())))
            producer = pipeline_bench.make_producer(bootstrap)
            await producer.start()

            t0 = time.monotonic()
            b.process.kill()
            sent: dict[str, tuple[int, int]] = {}  # label_id -> (table partition, input)
            seen_table: dict[int, float] = {}
            seen_input: dict[int, float] = {}
            counts = {"rounds": 0, "503": 0, "503_no_retry_after": 0, "wrong": 0, "other": 0}
            done = asyncio.Event()

            async def probes() -> None:
                rng = random.Random(77)
                cycle = itertools.cycle(itertools.product(sorted(b_parts), range(PARTITIONS)))
                while not done.is_set():
                    table, part = next(cycle)
                    label_id, _, value = probe(rng, {table})
                    sent[label_id] = (table, part)
                    await producer.send(topics["labels"], value, partition=part)
                    await asyncio.sleep(0.05)

            async def alerts() -> None:
                while len(seen_table) < len(b_parts) or len(seen_input) < PARTITIONS:
                    batch = await consumer.getmany(timeout_ms=100)
                    now = time.monotonic() - t0
                    for records in batch.values():
                        for record in records:
                            hit = sent.get(orjson.loads(record.value).get("label_id"))
                            if hit is not None:
                                seen_table.setdefault(hit[0], now)
                                seen_input.setdefault(hit[1], now)
                result["alerts_s"] = max([*seen_table.values(), *seen_input.values()])

            async def lookups() -> None:
                while True:
                    counts["rounds"] += 1
                    got: list[Any] = []
                    whole = True
                    for i in range(0, len(mine), BATCH):
                        try:
                            status, results, retry = await post_check(
                                http, a.url, mine[i:i + BATCH], at)
                        except (aiohttp.ClientError, TimeoutError):
                            status, results, retry = -1, None, None
                        if status == 200 and results is not None:
                            wrong = sum(x != y for x, y in zip(results, reference[i:i + BATCH],
                                                               strict=True))
                            counts["wrong"] += wrong
                            whole &= wrong == 0
                            got += results
                        else:
                            whole = False
                            if status == 503:
                                counts["503"] += 1
                                counts["503_no_retry_after"] += retry is None
                            else:
                                counts["other"] += 1
                    if whole:
                        result["lookups_s"] = time.monotonic() - t0
                        return
                    await asyncio.sleep(0.1)

            sender = asyncio.ensure_future(probes())
            try:
                await asyncio.wait_for(asyncio.gather(lookups(), alerts()), timeout=180)
            finally:
                done.set()
                await sender
                await producer.stop()
                await consumer.stop()
            result.update(counts, loaded_s=loaded, numbers=len(mine), b_parts=sorted(b_parts))
    finally:
        a.process.stop()
        b.process.kill()
    return result


def report(r: dict[str, Any], session: float) -> None:
    name = "with 1 standby" if r["standby"] else "no standby   "
    ok_l = "met" if r["lookups_s"] <= TARGET_LOOKUPS else "MISSED"
    ok_a = "met" if r["alerts_s"] <= TARGET_ALERTS else "MISSED"
    print(f"  {name}: lookups back {r['lookups_s']:5.1f} s [{ok_l}], alerts back "
          f"{r['alerts_s']:5.1f} s [{ok_a}]; {r['numbers']:,} numbers on B's partitions "
          f"{r['b_parts']}, {r['rounds']} lookup rounds: {r['503']} x 503 "
          f"({r['503_no_retry_after']} without Retry-After), {r['wrong']} wrong answers, "
          f"{r['other']} other errors (session timeout {session:g} s)")


async def main_async(args: argparse.Namespace, bootstrap: str) -> list[dict[str, Any]]:
    values = core_bench.workload(args.labels, 31)
    numbers = sorted({(o["carrier"], o["tracking_number"]) for o in map(orjson.loads, values)})
    replication = 3 if args.nodes >= 3 else 1
    results = []
    with tempfile.TemporaryDirectory(prefix="tv-failover-") as tmp:
        for standby in args.standby:
            r = await scenario(bootstrap, Path(tmp), values, numbers, standby,
                               args.session_timeout, replication)
            results.append(r)
    where = f"{args.nodes}-node cluster" if args.nodes > 1 else "one broker"
    print(f"worker failover, {args.labels:,} labels ({len(values):,} events), "
          f"{PARTITIONS} partitions, {where}; targets: lookups <= {TARGET_LOOKUPS:g} s, "
          f"alerts <= {TARGET_ALERTS:g} s after the kill")
    for r in results:
        report(r, args.session_timeout)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--labels", type=int, default=None,
                        help="labels in the table (default 20000, quick 2000)")
    parser.add_argument("--standby", default="0,1",
                        help="standby replicas per scenario, a comma list (default 0,1)")
    parser.add_argument("--session-timeout", type=float, default=6.0,
                        help="the workers' --session-timeout (default 6)")
    parser.add_argument("--nodes", type=int, default=1,
                        help="brokers: 1 (default) or a local cluster of N")
    args = parser.parse_args(argv)
    args.labels = args.labels or (2000 if args.quick else 20000)
    args.standby = [int(s) for s in str(args.standby).split(",")]
    if args.nodes > 1:
        from streams.local.cluster import LocalCluster

        with LocalCluster(args.nodes) as cluster:
            asyncio.run(main_async(args, cluster.bootstrap_servers))
    else:
        pipeline_bench.on_a_broker(lambda bootstrap, _pid: main_async(args, bootstrap))
    return 0


if __name__ == "__main__":
    sys.exit(main())
