"""Throughput, latency and state size of the stream pipeline.

    python benchmarks/pipeline.py [--quick] [--events N] [--rate 2000] [--seconds 30]

Four figures:

  (a) core        decode + validate + apply per event, one core, no Kafka: the core's own
                  figure (benchmarks/core.py) and the same through the adapter's two steps
                  (`ingest_record` + internal wire format + `detect_record`, bytes state).
  (b) end to end  one worker subprocess (`tracking-validator worker`) on a real broker: the
                  workload is produced to `labels`/`scans` while the worker runs; measured from
                  the first send until the worker's group has committed every input and
                  internal record (offsets are committed only after the producer flushed, so
                  the alerts are then on the broker).
  (c) latency     produce-to-alert at a steady --rate events/s of ordinary traffic, with probe
                  labels (wrong check digit -> an invalid_tracking alert at once) spread in;
                  time from the probe's send to its alert's arrival at a consumer, p50/p99.
  (d) state size  the table's RocksDB directory after (b), per tracking number, scaled to a
                  million numbers; the serialized state size per number as a cross-check.

Uses $KAFKA_BOOTSTRAP_SERVERS when set, else starts `streams.broker.LocalBroker`. Everything
shares the machine: on 2 cores the broker, the worker and this process compete, so (b) and (c)
are conservative. Client settings are the worker's defaults (streams/stream_config.py); the
tuning notes at the end of this docstring record what was measured.

Measured on the 2-core VM, nothing else running, broker on the same machine (2026-11-26,
second session; Kafka 4.1.1, faust-streaming 0.15.3, aiokafka 0.14, uvloop):
  (a) 55,600 events/s core with bytes state (benchmarks/core.py: 60,000-72,000), 32,300
  through the adapter's steps and wire format; (b) 1,667 events/s end to end, one worker
  (worker CPU ~600 us/event); (c) at 1,000/s p50 92 ms, p99 216 ms; at 2,000/s one worker
  falls behind (p50 5.6 s, p99 14 s, growing); (d) 0.22 GB per million numbers.
  The ceiling is Faust's and aiokafka's per-message path, not the core: py-spy (--gil) of
  the worker puts ~44% of its CPU in producing (two records per event: the internal topic
  and the changelog, the latter through Faust's ProducerBuffer), ~30% in consuming (the drain
  loop and streams of two stages), ~12% in this project's decode, wire format and rules
  (ingest_record, detect_record) and ~4% in table reads.
  On the same machine a Faust agent that only counts messages reads 2,000-4,000 msgs/s
  (6,000-7,900 per CPU second), where a plain aiokafka consumer reads 213,000/s. Scale out
  with more partitions and workers in the same group.

Tuning notes (worker CPU per 14k events, same VM, noisy +-25%): Faust's start-up spinner left
the root logger at DEBUG, a LogRecord per aiokafka debug call (removed: 952 -> 1,292 events/s
end to end); uvloop (adopted: -> 1,731 events/s, and p50 at 1,000/s from 2.8 s to 77 ms);
producing through `app.producer.send` instead of `Topic.send` cut CPU ~30% (adopted); a no-op
Monitor sensor
~10% (not adopted: loses Faust's stats); producer linger 0 vs 5 ms, acks=1 vs all, a larger
Faust ProducerBuffer limit, broker_commit_every=1000: no measurable gain; commit interval
5 s vs 1 s: mixed, 30 s: 3x slower (the producer buffer and acks drain at commits); so the
defaults are linger 5 ms, batches up to 256 KiB, acks=all, commit every 1 s, 2000 records
per poll, stream buffer 8192.

Second session. Not adopted: Faust's drain loop calls `Service.wait_first` per
message, which builds four tasks and an `asyncio.wait` each time (cProfile: ~2/3 of a
count-only agent's CPU). Running the callback eagerly (a task only when it has to wait) took
the count-only agent from 6,100 to 17,800 msgs per CPU second and the worker from ~630 to
~460 us/event, but a worker killed early and restarted could then leave an input partition's
commit stalled for good (tests/test_recovery.py with an early kill: 3 runs in 6; stock Faust
0 in 10), also with a guard against a seek landing mid-batch, so it is not adopted. That
guard alone (a getmany that dropped the rest of a batch once Faust's end-of-recovery seek
had completed) lost alerts after a restart: records aiokafka had already handed over were
dropped and never fetched again. Not adopted either.
Adopted: bounding Faust's hard-coded 1,500 ms consumer fetch wait at 50 ms
(streams/faust_transport.py): a pass-through agent 2,000 -> 6,250 msgs/s; the worker's CPU
per event is unchanged but it stops idling behind held fetches: end to end 1,036 -> 1,667
events/s, and at 1,000/s p50 3.7 s -> 92 ms, p99 5.6 s -> 216 ms (same machine, same day).
No measurable change: `cython_optimizations=True` (faust's opt-in Cython paths),
sys.setswitchinterval 0.5 ms or 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import core as core_bench

from streams.app import detect_record, ingest_record
from streams.commands.demo import WorkerProcess, _have_leaders
from streams.settings import Settings

PARTITIONS = 4


# ---------------------------------------------------------------- (a) core


def bench_adapter(values: list[bytes], settings: Settings) -> tuple[float, int]:
    """ingest_record + wire format + detect_record over a dict of bytes (like the table)."""
    table: dict[bytes, bytes] = {}
    alerts = 0
    max_bytes = settings.max_message_bytes
    start = time.process_time()
    for offset, value in enumerate(values):
        out = ingest_record("labels", 0, offset, None, value, max_bytes)
        if isinstance(out, dict):
            continue
        stored = table.get(out.key)
        new, found = detect_record(stored, out.value, settings)
        if new is None:
            table.pop(out.key, None)
        elif new != stored:
            table[out.key] = new
        alerts += len(found)
    return time.process_time() - start, alerts


def run_core(labels: int, repeat: int) -> dict[str, float]:
    settings = Settings()
    values = core_bench.workload(labels, 7)
    n = len(values)
    t_core, alerts, _ = min(core_bench.bench_bytes(values, settings) for _ in range(repeat))
    t_adapter, alerts2 = min(bench_adapter(values, settings) for _ in range(repeat))
    assert alerts == alerts2, (alerts, alerts2)
    print(f"(a) core: {n:,} events, one core (CPU time, best of {repeat})")
    print(f"    decode+validate+apply, bytes state   {n / t_core:>10,.0f} events/s")
    print(f"    + adapter steps and wire format       {n / t_adapter:>10,.0f} events/s")
    return {"core": n / t_core, "adapter": n / t_adapter}


# ---------------------------------------------------------------- Kafka helpers


async def wait_ready(bootstrap: str, topics: list[str], timeout: float = 90.0) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while not await _have_leaders(admin, topics):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {topics} not ready")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


class Lag:
    """Uncommitted records of a consumer group on some topics (end offset - committed)."""

    def __init__(self, bootstrap: str, group: str, topics: list[str]) -> None:
        self.bootstrap, self.group, self.topics = bootstrap, group, topics

    async def __aenter__(self) -> Lag:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        self.admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
        await self.admin.start()
        await self.consumer.start()
        from aiokafka import TopicPartition

        self.tps = [
            TopicPartition(d["topic"], p["partition"])
            for d in await self.admin.describe_topics(self.topics)
            for p in d["partitions"]
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def get(self) -> int:
        from aiokafka.errors import KafkaError

        try:
            end = await self.consumer.end_offsets(self.tps)
            done = await self.admin.list_consumer_group_offsets(self.group)
        except KafkaError:
            return -1
        return sum(
            max(end[tp] - max(done[tp].offset if tp in done else 0, 0), 0) for tp in self.tps
        )

    async def wait_zero(self, timeout: float, poll: float = 0.05) -> float:
        deadline = time.monotonic() + timeout
        while True:
            if await self.get() == 0:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError("worker did not catch up")
            await asyncio.sleep(poll)


def make_producer(bootstrap: str) -> Any:
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                            max_batch_size=256 * 1024)


class Run:
    """One worker with its own app id and topics."""

    def __init__(self, bootstrap: str, tmp: Path, extra: Iterable[str] = ()) -> None:
        run = f"bench-{uuid.uuid4().hex[:8]}"
        self.bootstrap = bootstrap
        self.app_id = run
        self.topics = {k: f"{run}.{k}" for k in ("labels", "scans", "alerts", "deadletter")}
        self.state_dir = tmp / run
        self.worker = WorkerProcess(
            [
                "--bootstrap", bootstrap, "--app-id", run, "--state-dir", str(self.state_dir),
                "--partitions", str(PARTITIONS),
                "--labels-topic", self.topics["labels"], "--scans-topic", self.topics["scans"],
                "--alerts-topic", self.topics["alerts"],
                "--deadletter-topic", self.topics["deadletter"],
                *extra,
            ],
            log=tmp / f"{run}.log",
        )

    @property
    def internal(self) -> str:
        return f"{self.app_id}-tracking-events"

    async def start(self) -> None:
        self.worker.start()
        await wait_ready(self.bootstrap, [*self.topics.values(), self.internal])
        # ready = joined the group and committed nothing-yet without error: wait until an
        # empty probe round trip is done (a dead letter through the worker)
        producer = make_producer(self.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(self.topics["labels"], b"warm-up")
        finally:
            await producer.stop()
        async with Lag(self.bootstrap, self.app_id,
                       [self.topics["labels"], self.topics["scans"], self.internal]) as lag:
            await lag.wait_zero(120, poll=0.1)

    def stop(self) -> None:
        rc = self.worker.stop()
        if rc != 0:
            print(f"worker exit code {rc}; log {self.worker.log}", file=sys.stderr)


# ---------------------------------------------------------------- (b) end to end


async def run_throughput(bootstrap: str, tmp: Path, labels: int) -> tuple[dict[str, float], Run]:
    values = core_bench.workload(labels, 11)
    n = len(values)
    run = Run(bootstrap, tmp)
    await run.start()
    producer = make_producer(bootstrap)
    await producer.start()
    async with Lag(bootstrap, run.app_id,
                   [run.topics["labels"], run.topics["scans"], run.internal]) as lag:
        started = time.monotonic()
        pending = []
        for value in values:
            topic = run.topics["scans"] if b'"carrier.scan"' in value[:40] else \
                run.topics["labels"]
            pending.append(await producer.send(topic, value))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        produced = time.monotonic()
        await producer.stop()
        done = await lag.wait_zero(600)
    seconds = done - started
    print(f"(b) end to end: {n:,} events through one worker ({PARTITIONS} partitions)")
    print(f"    produced in {produced - started:.1f}s, all processed and committed after "
          f"{seconds:.1f}s: {n / seconds:,.0f} events/s")
    return {"events": n, "seconds": seconds, "rate": n / seconds, "labels": labels}, run


# ---------------------------------------------------------------- (c) latency


def _probe(i: int, sent_ns: int) -> bytes:
    # a wrong check digit: invalid_tracking at once, on the label's own event
    return orjson.dumps({
        "type": "label.purchased", "schema_version": 1, "event_id": f"probe-{i}",
        "label_id": f"probe-{i}-{sent_ns}", "tracking_number": f"94001112062064062607{i % 9}0",
        "carrier": "usps", "seller_id": "probe", "order_id": f"probe-{i}",
        "ship_to": {"postal_code": "10001", "country": "US"},
        "purchased_at": "2025-03-01T00:00:00Z",
    })


async def run_latency(bootstrap: str, tmp: Path, rate: int, seconds: float) -> dict[str, float]:
    from aiokafka import AIOKafkaConsumer

    from streams.validation import validate

    run = Run(bootstrap, tmp)
    await run.start()
    traffic = core_bench.workload(int(rate * seconds / 4.5) + 100, 13)
    consumer = AIOKafkaConsumer(run.topics["alerts"], bootstrap_servers=bootstrap,
                                group_id=None, auto_offset_reset="latest", fetch_max_wait_ms=20)
    await consumer.start()
    await consumer.seek_to_end()
    latencies: list[float] = []
    sent: dict[str, int] = {}
    stop = asyncio.Event()

    async def receive() -> None:
        while not stop.is_set() or len(latencies) < len(sent):
            batch = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter_ns()
            for records in batch.values():
                for record in records:
                    label_id = orjson.loads(record.value)["label_id"]
                    if label_id in sent:
                        latencies.append((now - sent[label_id]) / 1e6)
            if stop.is_set() and not batch:
                break

    receiver = asyncio.ensure_future(receive())
    producer = make_producer(bootstrap)
    await producer.start()
    # send in 10 ms ticks of rate/100 events; one probe every 20 events
    tick = 0.01
    per_tick = max(1, rate // 100)
    started = time.perf_counter()
    i = 0
    while time.perf_counter() - started < seconds:
        for _ in range(per_tick):
            if i % 20 == 0:
                now = time.perf_counter_ns()
                value = _probe(i, now)
                label_id = orjson.loads(value)["label_id"]
                sent[label_id] = now
                await producer.send(run.topics["labels"], value)
            else:
                value = traffic[i % len(traffic)]
                topic = run.topics["scans"] if b'"carrier.scan"' in value[:40] else \
                    run.topics["labels"]
                await producer.send(topic, value)
            i += 1
        next_at = started + tick * (i // per_tick)
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await producer.flush()
    actual = i / (time.perf_counter() - started)
    await asyncio.sleep(2.0)
    stop.set()
    await asyncio.wait_for(receiver, 30)
    await producer.stop()
    await consumer.stop()
    run.stop()
    assert not validate("94001112062064062607" + "00", "usps").valid  # probes are invalid
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"(c) latency at {actual:,.0f} events/s for {seconds:.0f}s: {len(latencies)} of "
          f"{len(sent)} probe alerts; produce-to-alert p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
          f"max {latencies[-1]:.1f} ms")
    return {"rate": actual, "p50_ms": p50, "p99_ms": p99, "max_ms": latencies[-1],
            "probes": len(sent), "received": len(latencies)}


# ---------------------------------------------------------------- (d) state size


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_state_size(run: Run, labels: int) -> dict[str, float]:
    tables = run.state_dir / "v1" / "tables"
    dbs = [p for p in tables.glob("*.db") if p.is_dir()] if tables.is_dir() else []
    on_disk = sum(dir_size(p) for p in dbs)
    # cross-check: serialized state per number, from the core on the same workload
    values = core_bench.workload(min(labels, 20000), 11)
    _, _, per_number = core_bench.bench_bytes(values, Settings())
    numbers = labels  # one tracking number per label in the workload (+1% reused)
    per_million = on_disk / numbers * 1_000_000
    print(f"(d) state: RocksDB dirs {on_disk / 1e6:.1f} MB on disk for ~{numbers:,} numbers "
          f"-> {per_million / 1e9:.2f} GB per million numbers (serialized state "
          f"~{per_number} B/number + key -> {(per_number + 30) / 1e3:.2f} GB per million "
          "before RocksDB overhead and compression)")
    return {"bytes": on_disk, "numbers": numbers, "per_million": per_million,
            "state_bytes": per_number}


# ---------------------------------------------------------------- main


async def kafka_parts(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tv-bench-") as tmp_s:
        tmp = Path(tmp_s)
        run = None
        try:
            results["b"], run = await run_throughput(bootstrap, tmp, args.labels)
            run.stop()  # closes RocksDB: the state dir is then complete on disk
            results["d"] = run_state_size(run, args.labels)
            results["c"] = [
                await run_latency(bootstrap, tmp, int(rate), args.seconds)
                for rate in str(args.rate).split(",")
            ]
        finally:
            if run is not None:
                run.worker.stop()
            if args.keep_logs:
                for log in tmp.glob("*.log"):
                    shutil.copy(log, Path(args.keep_logs) / log.name)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--labels", type=int, default=None,
                        help="labels in the (b) workload (~4.7 events each; default 10000, "
                        "quick 2000)")
    parser.add_argument("--rate", default="2000",
                        help="events/s for (c); a comma list measures each (e.g. 2000,500)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="duration of (c) (default 30, quick 5)")
    parser.add_argument("--core-labels", type=int, default=None)
    parser.add_argument("--skip-kafka", action="store_true", help="only (a)")
    parser.add_argument("--keep-logs", default=None, help="copy worker logs to this dir")
    args = parser.parse_args(argv)
    args.labels = args.labels or (2000 if args.quick else 10000)
    args.seconds = args.seconds or (5.0 if args.quick else 30.0)
    core_labels = args.core_labels or (2000 if args.quick else 20000)

    run_core(core_labels, 1 if args.quick else 3)
    if args.skip_kafka:
        return 0
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if bootstrap:
        asyncio.run(kafka_parts(args, bootstrap))
        return 0
    from streams.broker import LocalBroker

    with LocalBroker() as broker:
        asyncio.run(kafka_parts(args, broker.bootstrap_servers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
