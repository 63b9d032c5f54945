"""Throughput, CPU per event, latency and state size of the stream pipeline, beside a floor.

    python benchmarks/pipeline.py [--quick] [--labels N] [--rates 2000,5000] [--seconds 20]
    python benchmarks/pipeline.py --response-only [--response-passes 2]   # (f) alone

Every Kafka figure is printed beside its ratio to a FLOOR measured in the same invocation on
the same broker: a plain aiokafka consumer of both input topics, in batches (`getmany`), that
only decodes (`events.decode`) — the least any consumer of these topics does. Absolute
figures on this shared 2-core machine vary 20-30% from run to run; the ratios less, but
the broker's much more (see (b)).

  (a) core        decode + validate + apply per event on one core, no Kafka, bytes state
                  (benchmarks/core.py's figure), and the same through the runtime's steps
                  (ingest.build_batch, a frame encoded and decoded,
                  detection_stage.detect_frame); the floor here is the (b) floor's own
                  work without Kafka: decode only.
  (b) backlog     the same preloaded backlog (the workload of benchmarks/core.py, labels and
                  scans) read by the floor in this process, then by one worker subprocess
                  (`tracking-validator worker`): events/s from ingest's first commit to the
                  stage making the last event durable (followed on the worker's own
                  /metrics: a lag poller's requests would be charged to the worker's broker
                  figure); CPU per event of the
                  floor (this process) and of the worker (/proc/PID/stat), and of the broker
                  over the same interval (only when this script started the broker), split
                  by the broker's kind of thread: request handling, JIT compilers, GC, other.
                  (b) runs first, on a fresh broker: most of its JIT share is the one-off
                  compilation of the code paths the worker's traffic takes. With the
                  script's own broker it then runs --warm-passes more times (default 3),
                  the same workload on new topics, labelled "warm broker", and prints the
                  medians: one pass is too noisy to be a figure (the broker's ratio moved
                  2.3-8x between passes on this machine).
                  With --design-floor, each pass also runs a second reference: the I/O the
                  worker's design requires (issue 9: ingest writes frames to an internal
                  topic, the stage writes a changelog and alerts) in plain aiokafka with
                  the same core and no Faust, and prints its broker CPU and the worker's
                  ratio to it: what the broker costs for the design's topics themselves.
  (c) latency     produce-to-alert at steady rates (--rates) of ordinary traffic with probe
                  labels spread in (a wrong check digit: an invalid_tracking alert at once),
                  p50/p99; the floor's is produce-to-consume of the probes by the floor.
  (d) state size  the table's RocksDB directories after (b), per tracking number, scaled to a
                  million numbers.
  (e) warnings    "producer buffer full" lines in the worker logs (a normal run has none).
  (f) response    the response stage's cost (issue 21): a simulated week with a reuse
                  incident (--response-labels, default 30,000 labels, ~233,000 events)
                  through one worker with the stage and one with --no-response, alternating,
                  --response-passes each (run first, before (b)); events/s and CPU per event
                  of each (medians), and the stage's share: CPU per event with it / without
                  it - 1 (target: at most +10%). The backlog is timed as in (b), to the
                  response stage's last record made durable when it runs.

  (h) two workers  the (b) backlog through one worker and through two of one app id, side by
                  side on this machine (--two-worker-passes, default 2, alternating): events/s,
                  CPU per event (their sum) and cores busy (their sum), medians.

  (g) --nodes N   (b) and (c) again on a local N-node cluster (every topic 3 replicas and
                  min.insync.replicas 2, the worker's default there), the worker's figures
                  beside the one-broker ones of the same run.

Uses $KAFKA_BOOTSTRAP_SERVERS when set (no broker CPU figure then), else starts
`streams.local.broker.LocalBroker`. The README's sizing figures come from this script's output.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import core as core_bench

from streams.commands.demo import WorkerProcess, _have_leaders
from streams.core import events
from streams.core.settings import Settings
from streams.local.broker import free_port
from streams.runtime import internal_topic
from streams.runtime.detection_stage import detect_frame
from streams.runtime.ingest import build_batch
from streams.runtime.kafka_io import ensure_topics
from streams.runtime.stream_config import StreamConfig
from streams.runtime.topics import new_producer
from streams.tools.samples import usps_number, wrong_check_digit

PARTITIONS = 4
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


THREAD_KINDS = (("requests", ("data-plane",)), ("JIT", ("C1 Compiler", "C2 Compiler")),
                ("GC", ("GC Thread", "G1 ", "VM Thread")))


def broker_threads(pid: int | None) -> dict[str, float] | None:
    """The broker's CPU seconds so far by kind of JVM thread (/proc/PID/task/*/stat):
    request handling and network ("data-plane-kafka-..."), the JIT compilers (a cold broker
    compiles the code paths a new kind of traffic takes: a one-off), the garbage collector,
    and the rest (controller, group coordinator, scheduler)."""
    if pid is None:
        return None
    kinds = dict.fromkeys([k for k, _ in THREAD_KINDS] + ["other"], 0.0)
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue  # the thread ended
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        kind = next((k for k, prefixes in THREAD_KINDS if name.startswith(prefixes)), "other")
        kinds[kind] += (int(fields[11]) + int(fields[12])) / TICK
    return kinds


def per_event_by_kind(before: dict[str, float] | None, after: dict[str, float] | None,
                      n: int) -> dict[str, float] | None:
    if before is None or after is None:
        return None
    return {k: (after[k] - before[k]) / n * 1e6 for k in after}


class Window:
    """One measured interval: wall time, a process's CPU (`cpu()`, seconds so far) and the
    broker's CPU, in total and by kind of thread, from construction to `figures(n)`."""

    def __init__(self, cpu: Callable[[], float | None], broker_pid: int | None) -> None:
        self.cpu, self.broker_pid = cpu, broker_pid
        self.wall0, self.cpu0 = time.monotonic(), cpu()
        self.broker0, self.threads0 = cpu_seconds(broker_pid), broker_threads(broker_pid)

    def figures(self, n: int) -> dict[str, Any]:
        """Per event over the interval so far: rate, CPU µs, broker µs (None when unread)."""
        seconds = time.monotonic() - self.wall0
        cpu1 = self.cpu()
        broker1 = cpu_seconds(self.broker_pid)
        assert cpu1 is not None and self.cpu0 is not None, "the process's CPU could not be read"
        broker = (broker1 - self.broker0 if self.broker0 is not None and broker1 is not None
                  else None)
        return {"rate": n / seconds, "cpu_us": (cpu1 - self.cpu0) / n * 1e6,
                "broker_us": broker / n * 1e6 if broker is not None else None,
                "seconds": seconds,
                "broker_kinds": per_event_by_kind(self.threads0,
                                                  broker_threads(self.broker_pid), n)}


def ratio(value: float | None, floor: float | None) -> str:
    if value is None or not floor:
        return ""
    return f"  ({value / floor:.2f}x the floor)"


# ---------------------------------------------------------------- (a) core


class _Record:
    __slots__ = ("key", "offset", "timestamp", "value")

    def __init__(self, offset: int, value: bytes) -> None:
        self.offset, self.value, self.key, self.timestamp = offset, value, None, 0


class _TP:
    __slots__ = ("partition", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic, self.partition = topic, partition

    def __hash__(self) -> int:
        return hash((self.topic, self.partition))


def bench_runtime_steps(values: list[bytes], settings: Settings, batch: int = 2000,
                        ) -> tuple[float, int]:
    """The runtime's per-batch steps with no Kafka: build_batch -> frame -> detect_frame."""
    store: dict[bytes, bytes] = {}
    alerts = 0
    tp = _TP("labels", 0)
    start = time.process_time()
    for lo in range(0, len(values), batch):
        records = [_Record(lo + i, v) for i, v in enumerate(values[lo:lo + batch])]
        built = build_batch({tp: records}, PARTITIONS, settings.max_message_bytes)
        for entries in built.frames.values():
            frame = internal_topic.decode_frame(internal_topic.encode_frame(entries))
            result = detect_frame(frame, store.get, settings)
            for key, value in result.states.items():
                if value is None:
                    store.pop(key, None)
                else:
                    store[key] = value
            alerts += len(result.alerts)
    return time.process_time() - start, alerts


def run_core(labels: int, repeat: int) -> dict[str, float]:
    settings = Settings()
    values = core_bench.workload(labels, 7)
    n = len(values)
    # the floor's own work with no Kafka: decode only, as the (b) floor does per record
    t_floor = min(core_bench.bench_decode(values) for _ in range(repeat))
    t_core, alerts, _ = min(core_bench.bench_bytes(values, settings) for _ in range(repeat))
    t_steps, alerts2 = min(bench_runtime_steps(values, settings) for _ in range(repeat))
    assert alerts == alerts2, (alerts, alerts2)
    print(f"(a) core: {n:,} events, one core (CPU time, best of {repeat})")
    print(f"    floor: events.decode only             {n / t_floor:>10,.0f} events/s  "
          f"{t_floor / n * 1e6:6.2f} us/event")
    print(f"    decode+validate+apply, bytes state   {n / t_core:>10,.0f} events/s  "
          f"{t_core / n * 1e6:6.2f} us/event{ratio(t_core, t_floor)}")
    print(f"    through the runtime's steps + frames  {n / t_steps:>10,.0f} events/s  "
          f"{t_steps / n * 1e6:6.2f} us/event{ratio(t_steps, t_floor)}")
    return {"floor": n / t_floor, "core": n / t_core, "steps": n / t_steps}


# ---------------------------------------------------------------- Kafka helpers


def on_a_broker(main: Callable[[str, int | None], Awaitable[Any]]) -> None:
    """Run `main(bootstrap, broker pid)` on $KAFKA_BOOTSTRAP_SERVERS when set (pid None: its
    CPU cannot be read), else on a local broker started for it (the benchmarks' broker)."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if bootstrap:
        asyncio.run(main(bootstrap, None))
        return
    from streams.local.broker import LocalBroker

    with LocalBroker() as broker:
        asyncio.run(main(broker.bootstrap_servers, broker.pid))


def make_producer(bootstrap: str) -> Any:
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                            max_batch_size=512 * 1024)


# how the benchmark's own input topics are replicated: as the worker's are (--nodes 3: 3
# replicas, min.insync.replicas 2, as streams.runtime.replication chooses on a cluster)
INPUT_REPLICATION: dict[str, Any] = {"replication": 1, "config": None}


async def create_topics(bootstrap: str, names: list[str]) -> None:
    await ensure_topics(bootstrap, names, partitions=PARTITIONS, **INPUT_REPLICATION)


async def preload(bootstrap: str, labels_topic: str, scans_topic: str,
                  values: list[bytes]) -> None:
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        pending = []
        for value in values:
            topic = scans_topic if b'"carrier.scan"' in value[:40] else labels_topic
            pending.append(await producer.send(topic, value))
            if len(pending) >= 10000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


class Lag:
    """Uncommitted records of consumer groups on topics (end offset - committed)."""

    def __init__(self, bootstrap: str, groups: dict[str, list[str]]) -> None:
        self.bootstrap, self.groups = bootstrap, groups

    async def __aenter__(self) -> Lag:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        self.admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
        await self.admin.start()
        await self.consumer.start()
        self.tps = {
            group: [TopicPartition(d["topic"], p["partition"])
                    for d in await self.admin.describe_topics(topics) for p in d["partitions"]]
            for group, topics in self.groups.items()
        }
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def wait_zero(self, timeout: float, poll: float = 0.1) -> float:
        """Until nothing is uncommitted; returns when (monotonic)."""
        deadline = time.monotonic() + timeout
        while await self.get() != 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not catch up")
            await asyncio.sleep(poll)
        return time.monotonic()

    async def get(self) -> int:
        from aiokafka.errors import KafkaError

        total = 0
        try:
            for group, tps in self.tps.items():
                end = await self.consumer.end_offsets(tps)
                done = await self.admin.list_consumer_group_offsets(group)
                total += sum(max(end[tp] - max(done[tp].offset if tp in done else 0, 0), 0)
                             for tp in tps)
        except KafkaError:
            return -1
        return total


class Run:
    """One app id with its own topics, and its worker subprocesses (`workers`, default one;
    several share the partitions as a group), each with its own state dir and web port."""

    def __init__(self, bootstrap: str, tmp: Path, extra: list[str] | None = None,
                 workers: int = 1) -> None:
        run = f"bench-{uuid.uuid4().hex[:8]}"
        self.bootstrap = bootstrap
        self.app_id = run
        self.topics = {k: f"{run}.{k}" for k in ("labels", "scans", "alerts", "deadletter",
                                                   "incidents", "actions")}
        self.response = "--no-response" not in (extra or [])
        self.state_dir = tmp / run
        self.log = tmp / f"{run}.log"
        self.state_dirs = [self.state_dir] + [tmp / f"{run}-{i}" for i in range(1, workers)]
        self.logs = [self.log] + [tmp / f"{run}-{i}.log" for i in range(1, workers)]
        # each one's /metrics: how far it is, at no cost to the broker
        self.web_ports = [free_port() for _ in range(workers)]
        self.web_port = self.web_ports[0]
        self.workers = [
            WorkerProcess(
                [
                    "--bootstrap", bootstrap, "--app-id", run, "--state-dir", str(state_dir),
                    "--partitions", str(PARTITIONS),
                    "--labels-topic", self.topics["labels"],
                    "--scans-topic", self.topics["scans"],
                    "--alerts-topic", self.topics["alerts"],
                    "--deadletter-topic", self.topics["deadletter"],
                    "--incidents-topic", self.topics["incidents"],
                    "--actions-topic", self.topics["actions"],
                    "--loglevel", "info",
                    "--web-port", str(port), "--web-host", "127.0.0.1",
                    *(extra or []),
                ],
                log=log,
            )
            for state_dir, log, port in zip(self.state_dirs, self.logs, self.web_ports,
                                            strict=True)
        ]
        self.worker = self.workers[0]

    @property
    def metrics_url(self) -> str:
        return self.metrics_urls[0]

    @property
    def metrics_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}/metrics" for port in self.web_ports]

    @property
    def internal(self) -> str:
        return f"{self.app_id}-tracking-events"

    @property
    def groups(self) -> dict[str, list[str]]:
        return {f"{self.app_id}-ingest": [self.topics["labels"], self.topics["scans"]],
                self.app_id: [self.internal]}

    async def start(self) -> None:
        self.worker.start()
        await self.wait_ready()

    async def wait_ready(self) -> None:
        """Started, and a warm-up record went through both stages."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            deadline = time.monotonic() + 90
            topics = [t for k, t in self.topics.items()
                      if self.response or k not in ("incidents", "actions")]
            while not await _have_leaders(admin, [*topics, self.internal]):
                if time.monotonic() > deadline:
                    raise TimeoutError("worker topics not ready")
                await asyncio.sleep(0.2)
        finally:
            await admin.close()
        producer = make_producer(self.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(self.topics["labels"], b"warm-up")  # a dead letter
        finally:
            await producer.stop()
        async with Lag(self.bootstrap, self.groups) as lag:
            deadline = time.monotonic() + 120
            while await lag.get() != 0:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"worker not ready; log {self.log}")
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        for worker, log in zip(self.workers, self.logs, strict=True):
            rc = worker.stop()
            if rc != 0:
                print(f"worker exit code {rc}; log {log}", file=sys.stderr)


# ---------------------------------------------------------------- (b) backlog


async def run_floor(bootstrap: str, topics: list[str], n: int, broker_pid: int | None,
                    ) -> dict[str, float]:
    """A plain aiokafka consumer group on the inputs, in batches, that only decodes."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, group_id=f"floor-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=5000,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    seen = decoded = 0
    decode, DecodeError = events.decode, events.DecodeError
    window = None
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            if window is None and batch:
                window = Window(time.process_time, broker_pid)
            for records in batch.values():
                for record in records:
                    try:
                        decode(record.value)
                        decoded += 1
                    except DecodeError:
                        pass
                seen += len(records)
            if batch:
                await consumer.commit()
        assert window is not None
        figures = window.figures(n)
    finally:
        await consumer.stop()
    return {**figures, "decoded": decoded}


async def run_design_floor(bootstrap: str, topics: list[str], n: int, broker_pid: int | None,
                           ) -> dict[str, float]:
    """The I/O the worker's design requires, in plain aiokafka and nothing else: ingest reads
    the inputs in batches, writes frames to an internal topic, commits once they are acked;
    a stage reads the frames, applies the core (detect_frame, a dict for the table), writes
    the changed states to a compacted changelog and the alerts to an alerts topic, commits.
    No Faust, no RocksDB, no alert hold: the broker's cost of the design's topics alone.
    Its producer is the worker's (`new_producer`): with the benchmark's 512 KiB batches a
    produce request grew past half a G1 region and the broker's GC took 12-16 us/event."""
    from aiokafka import AIOKafkaConsumer

    config = StreamConfig(bootstrap=bootstrap)
    settings = Settings()
    tag = uuid.uuid4().hex[:8]
    internal, changelog, alerts = (f"design-{tag}.{k}" for k in ("internal", "changelog", "alerts"))
    await create_topics(bootstrap, [internal, alerts])
    await ensure_topics(bootstrap, [changelog], partitions=PARTITIONS,
                        config={"cleanup.policy": "compact"})
    producer = new_producer(config)  # the worker's: its batches and its request-size cap
    common = {"bootstrap_servers": bootstrap, "auto_offset_reset": "earliest",
              "enable_auto_commit": False, "fetch_max_wait_ms": config.fetch_max_wait_ms}
    inputs = AIOKafkaConsumer(*topics, group_id=f"design-in-{tag}",
                              max_poll_records=config.max_poll_records, **common)
    frames = AIOKafkaConsumer(internal, group_id=f"design-stage-{tag}", **common)
    store: dict[bytes, bytes | None] = {}
    window: Window | None = None  # set by ingest's first batch
    applied = 0

    async def ingest() -> None:
        nonlocal window
        seen = 0
        while seen < n:
            batch = await inputs.getmany(timeout_ms=200, max_records=config.max_poll_records)
            if not batch:
                continue
            if window is None:
                window = Window(time.process_time, broker_pid)
            built = build_batch(batch, PARTITIONS, settings.max_message_bytes)
            acks = [await producer.send(internal, internal_topic.encode_frame(chunk),
                                        partition=partition)
                    for partition, entries in built.frames.items()
                    for chunk in internal_topic.split(entries, config.frame_max_events)]
            await asyncio.gather(*acks)
            await inputs.commit()
            seen += built.records

    async def stage() -> None:
        nonlocal applied
        while applied < n:
            batch = await frames.getmany(timeout_ms=200)
            acks = []
            for tp, records in batch.items():
                for record in records:
                    result = detect_frame(internal_topic.decode_frame(record.value), store.get,
                                          settings)
                    for _, alert in result.alerts:
                        acks.append(await producer.send(alerts, orjson.dumps(alert),
                                                        key=alert["alert_id"].encode()))
                    for key, value in result.states.items():
                        store[key] = value
                        acks.append(await producer.send(changelog, value, key=key,
                                                        partition=tp.partition))
                    applied += result.events
            await asyncio.gather(*acks)
            if batch:
                await frames.commit()

    await producer.start()
    await inputs.start()
    await frames.start()
    try:
        await asyncio.gather(ingest(), stage())
        assert window is not None
        return window.figures(n)
    finally:
        await inputs.stop()
        await frames.stop()
        await producer.stop()


def poll_interval(started: float | None, start_left: int, left: int) -> float:
    """How long until the next look at the worker's progress (`left` events of the
    `start_left` there were at `started`): 50 ms until it starts and near the end (the end is
    timed to 50 ms), else a third of the time left at the rate so far, at most 0.5 s."""
    if started is None or left <= 0:
        return 0.05
    done = start_left - left
    elapsed = time.monotonic() - started
    if done <= 0 or elapsed <= 0:
        return 0.05
    return min(0.5, max(0.05, left / (done / elapsed) / 3))


async def worker_progress(http: Any, run: Run) -> tuple[int, int, int, int, int] | None:
    """From the workers' /metrics, summed: (input records their ingest has committed, the
    events among them (not dead letters), events their stages have applied and made durable,
    records sent to the response stage, records it has applied and made durable), None while
    one does not serve yet."""
    texts = []
    for url in run.metrics_urls:
        try:
            async with http.get(url) as response:
                if response.status != 200:
                    return None
                texts.append(await response.text())
        except OSError:  # aiohttp's connection errors are OSErrors: not listening yet
            return None
    committed = events = applied = sent = responded = 0
    for family in (f for text in texts for f in text_string_to_metric_families(text)):
        for sample in family.samples:
            if sample.name == "tracking_validator_events_total":
                committed += int(sample.value)
                events += int(sample.value) if sample.labels["outcome"] == "event" else 0
            elif sample.name == "tracking_validator_stage_events_total":
                applied += int(sample.value)
            elif sample.name == "tracking_validator_response_records_total":
                if sample.labels["step"] == "sent":
                    sent += int(sample.value)
                else:
                    responded += int(sample.value)
    return committed, events, applied, sent, responded


async def run_worker_backlog(run: Run, n: int, broker_pid: int | None) -> dict[str, float]:
    """The worker reads the preloaded backlog: from ingest's first commit to the stage
    making the last event durable (its state in the changelog and RocksDB, its alerts
    acknowledged; Faust records the offset at its next commit, up to `commit_interval`
    later, and a crash before that repeats the frame to no effect). A frame becomes durable
    once its held alerts are out; the hold is measured in arrival
    (streams.runtime.detection_stage), so at the end of a backlog it ends once ingest's
    progress records show the inputs read through, not 2 s (`alert_hold`) after the last
    frame. With several workers (`run.workers`) the CPU and the progress are their sums.

    Progress is read from the worker's own /metrics, which costs the broker nothing. (This
    polled both groups' lag through Kafka before: two OffsetFetch, their FindCoordinator and
    a ListOffsets a poll, 4-5 ms of broker CPU each, ~80 requests a pass charged to the
    worker, against its own ~460 and the floor's ~60, counted in the broker's request log.
    And it listed the partitions right after starting the worker, before the worker had
    created its internal topic; a missing topic lists none, so the stage's lag counted as 0
    and runs were timed to ingest's last commit.)"""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        for worker in run.workers:
            worker.start()
        pids = [worker.pid for worker in run.workers]

        def cpu() -> float | None:
            used = [cpu_seconds(pid) for pid in pids]
            return None if None in used else sum(u for u in used if u is not None)

        deadline = time.monotonic() + 600
        window = None
        start_left = 0
        while True:
            progress = await worker_progress(http, run)
            committed, events, applied, sent, responded = (
                progress if progress is not None else (0, 0, 0, 0, 0))
            if committed and window is None:
                # the first commit: what came before is start-up (one batch's work before it
                # is left out: a slight overstatement of the rate, understatement of CPU)
                window = Window(cpu, broker_pid)
                start_left = n - applied
            # done: every event durable, and the response stage through what it was sent
            if committed >= n and applied >= events and responded >= sent:
                break
            if time.monotonic() > deadline or any(w.poll() is not None for w in run.workers):
                raise TimeoutError(f"worker did not finish; log {run.log}")
            started = None if window is None else window.wall0
            await asyncio.sleep(poll_interval(started, start_left, n - applied))
        assert window is not None
        return window.figures(n)


async def backlog(bootstrap: str, tmp: Path, labels: int, broker_pid: int | None,
                  label: str = "", design_floor: bool = False) -> tuple[dict[str, Any], Run]:
    values = core_bench.workload(labels, 11)
    n = len(values)
    floor_topics = [f"floor-{uuid.uuid4().hex[:8]}.{k}" for k in ("labels", "scans")]
    run = Run(bootstrap, tmp)
    await create_topics(bootstrap, [*floor_topics, run.topics["labels"], run.topics["scans"]])
    await preload(bootstrap, *floor_topics, values)
    await preload(bootstrap, run.topics["labels"], run.topics["scans"], values)
    design_topics = None
    if design_floor:
        design_topics = [f"design-{uuid.uuid4().hex[:8]}.{k}" for k in ("labels", "scans")]
        await create_topics(bootstrap, design_topics)
        await preload(bootstrap, *design_topics, values)
    floor = await run_floor(bootstrap, floor_topics, n, broker_pid)
    design = (None if design_topics is None
              else await run_design_floor(bootstrap, design_topics, n, broker_pid))
    worker = await run_worker_backlog(run, n, broker_pid)
    print(f"(b) backlog of {n:,} events ({PARTITIONS} partitions), one consumer each{label}")
    print(f"    floor (aiokafka getmany + decode): {floor['rate']:>9,.0f} events/s, "
          f"CPU {floor['cpu_us']:6.1f} us/event" + (
              f", broker {floor['broker_us']:.1f} us/event" if floor["broker_us"] else ""))
    print(f"    worker end to end:                 {worker['rate']:>9,.0f} events/s"
          f"{ratio(worker['rate'], floor['rate'])}")
    print(f"    worker CPU:                        {worker['cpu_us']:>9.1f} us/event"
          f"{ratio(worker['cpu_us'], floor['cpu_us'])}, "
          f"{worker['cpu_us'] * worker['rate'] / 1e6:.2f} cores busy")
    if worker["broker_us"] is not None:
        print(f"    broker CPU for the worker:         {worker['broker_us']:>9.1f} us/event"
              f"{ratio(worker['broker_us'], floor['broker_us'])}")
    if design is not None:
        print(f"    design floor (its topics, aiokafka): {design['rate']:>7,.0f} events/s, "
              f"CPU {design['cpu_us']:.1f} us/event")
        if design["broker_us"] and worker["broker_us"]:
            print(f"      broker CPU for the design floor:   {design['broker_us']:>7.1f} us/event"
                  f"{ratio(design['broker_us'], floor['broker_us'])}; the worker's is "
                  f"{worker['broker_us'] / design['broker_us']:.2f}x it")
    if worker["broker_kinds"] is not None and floor["broker_kinds"] is not None:
        print("      by broker thread (us/event, worker / floor): " + ", ".join(
            f"{kind} {worker['broker_kinds'][kind]:.1f} / {floor['broker_kinds'][kind]:.1f}"
            for kind in worker["broker_kinds"]))
    if design is not None and design["broker_kinds"] is not None:
        print("      design floor by broker thread (us/event): " + ", ".join(
            f"{kind} {value:.1f}" for kind, value in design["broker_kinds"].items()))
    return {"n": n, "floor": floor, "worker": worker, "design": design}, run


def summarise_warm(passes: list[dict[str, Any]]) -> dict[str, Any]:
    """Print and return the medians of the warm passes: each figure, and each ratio taken
    within its own pass (the worker's and the floor's broker CPU move together)."""
    summary: dict[str, Any] = {"passes": len(passes)}
    print(f"(b) warm broker, median of {len(passes)} passes (ratio: median of each pass's "
          "own ratio, range)")
    for key, name, unit in (("rate", "worker end to end", "events/s"),
                            ("cpu_us", "worker CPU", "us/event"),
                            ("broker_us", "broker CPU for the worker", "us/event")):
        pairs = [(p["worker"][key], p["floor"][key]) for p in passes]
        pairs = [(w, f) for w, f in pairs if w is not None and f]
        if not pairs:
            summary[key] = {"worker": None, "floor": None, "ratio": None}
            continue
        ratios = [w / f for w, f in pairs]
        worker = statistics.median(w for w, _ in pairs)
        floor = statistics.median(f for _, f in pairs)
        summary[key] = {"worker": worker, "floor": floor, "ratio": statistics.median(ratios)}
        form = "{:,.0f}" if key == "rate" else "{:.1f}"
        print(f"    {name + ':':<34} {form.format(worker):>9} {unit} (floor "
              f"{form.format(floor)}): {summary[key]['ratio']:.2f}x the floor "
              f"({min(ratios):.2f}-{max(ratios):.2f}x)")
    busy = [p["worker"]["cpu_us"] * p["worker"]["rate"] / 1e6 for p in passes]
    summary["busy"] = statistics.median(busy)
    print(f"    {'worker cores busy:':<34} {summary['busy']:>9.2f} "
          f"({min(busy):.2f}-{max(busy):.2f})")
    designs = [(p["worker"]["broker_us"], p["design"]["broker_us"]) for p in passes
               if p.get("design") and p["design"]["broker_us"] and p["worker"]["broker_us"]]
    if designs:
        ratios = [w / d for w, d in designs]
        summary["design_broker_us"] = statistics.median(d for _, d in designs)
        design = summary["design_broker_us"]
        print(f"    broker CPU, design floor:          {design:>9.1f} us/event; the worker's is"
              f" {statistics.median(ratios):.2f}x it "
              f"({min(ratios):.2f}-{max(ratios):.2f}x)")
    return summary


async def two_workers(bootstrap: str, tmp: Path, labels: int, broker_pid: int | None,
                      passes: int) -> dict[int, dict[str, float]]:
    """(h) The same backlog through one worker and through two of one app id on this
    machine (they share the partitions; both start together, so the window holds their
    rebalance), alternating, `passes` times each; the medians. CPU is the two workers' sum,
    cores busy their sum over the window."""
    values = core_bench.workload(labels, 11)
    n = len(values)
    found: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    for _ in range(passes):
        for workers in (1, 2):
            run = Run(bootstrap, tmp, workers=workers)
            await create_topics(bootstrap, [run.topics["labels"], run.topics["scans"]])
            await preload(bootstrap, run.topics["labels"], run.topics["scans"], values)
            try:
                found[workers].append(await run_worker_backlog(run, n, broker_pid))
            finally:
                run.stop()
    print(f"(h) one worker and two on this machine: a backlog of {n:,} events, medians of "
          f"{passes} pass(es) each, alternating")
    summary = {}
    for workers, runs in found.items():
        rate = statistics.median(r["rate"] for r in runs)
        cpu = statistics.median(r["cpu_us"] for r in runs)
        busy = statistics.median(r["cpu_us"] * r["rate"] / 1e6 for r in runs)
        broker = [r["broker_us"] for r in runs if r["broker_us"] is not None]
        summary[workers] = {"rate": rate, "cpu_us": cpu, "busy": busy}
        print(f"    {workers} worker{'s' if workers > 1 else ' '}: {rate:>9,.0f} events/s, "
              f"CPU {cpu:5.1f} us/event (all workers), {busy:.2f} cores busy"
              + (f", broker {statistics.median(broker):.1f} us/event" if broker else ""))
    print(f"    two against one: {summary[2]['rate'] / summary[1]['rate']:.2f}x the events/s, "
          f"{summary[2]['cpu_us'] / summary[1]['cpu_us']:.2f}x the CPU per event")
    return summary


# ---------------------------------------------------------------- (f) the response stage


def simulated_week(labels: int) -> list[tuple[str, bytes]]:
    """(topic, value) of a simulated week with a reuse incident: `labels` labels over 7 days,
    30% of the USPS labels bought on days 4-5 get numbers used 3 days earlier (the
    simulator's defaults otherwise). 30,000 labels: ~233,000 messages, ~2,100 alerts, ten
    incidents in four channels."""
    from datetime import timedelta

    from streams.tools.simulation import DEFAULT_START, Params, serialize, simulate

    world = simulate(Params(seed=7, labels=labels, days=7,
                            incident_start=DEFAULT_START + timedelta(days=3),
                            incident_days=2, reuse_age_days=3))
    return [(m.topic, serialize(m.value)) for m in world.messages]


async def preload_by_topic(bootstrap: str, run: Run, messages: list[tuple[str, bytes]]) -> None:
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        pending = []
        for topic, value in messages:
            pending.append(await producer.send(run.topics[topic], value))
            if len(pending) >= 10000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def response_cost(bootstrap: str, tmp: Path, labels: int, passes: int,
                        broker_pid: int | None) -> dict[str, Any]:
    """The worker through the simulated week's backlog with the response stage and without
    it (`--no-response`), alternating (without first in odd passes, with first in even ones,
    so the broker's warming does not favour one); medians of each, and the stage's share:
    CPU per event with it over without it, minus 1."""
    messages = simulated_week(labels)
    n = len(messages)
    runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for i in range(passes):
        for with_stage in ((False, True) if i % 2 == 0 else (True, False)):
            run = Run(bootstrap, tmp, extra=[] if with_stage else ["--no-response"])
            await create_topics(bootstrap, [run.topics["labels"], run.topics["scans"]])
            await preload_by_topic(bootstrap, run, messages)
            figures = await run_worker_backlog(run, n, broker_pid)
            run.stop()
            runs[with_stage].append(figures)
            print(f"    pass {i + 1}, {'with' if with_stage else 'without'} the response stage:"
                  f" {figures['rate']:,.0f} events/s, CPU {figures['cpu_us']:.1f} us/event")
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("rate", "cpu_us")}
           for k, v in runs.items()}
    shares = [w["cpu_us"] / wo["cpu_us"] - 1 for w, wo in zip(runs[True], runs[False],
                                                              strict=True)]
    share = med[True]["cpu_us"] / med[False]["cpu_us"] - 1
    print(f"(f) response stage: a simulated week, {n:,} events, {passes} pass(es) each, medians")
    print(f"    without the stage (--no-response): {med[False]['rate']:>9,.0f} events/s, "
          f"CPU {med[False]['cpu_us']:.1f} us/event")
    print(f"    with the stage:                    {med[True]['rate']:>9,.0f} events/s, "
          f"CPU {med[True]['cpu_us']:.1f} us/event")
    print(f"    the stage's CPU per event: {share:+.1%} of the worker's without it "
          f"(per pass: {', '.join(f'{x:+.1%}' for x in shares)}; target: at most +10%)")
    return {"n": n, "with": med[True], "without": med[False], "share": share,
            "shares": shares}


# ---------------------------------------------------------------- (c) latency


_PROBE_RNG = random.Random(20250224)


def _probe(i: int) -> bytes:
    # a wrong check digit: invalid_tracking at once, on the label's own event (a number of
    # its own: every probe raises exactly one alert)
    return orjson.dumps({
        "type": "label.purchased", "schema_version": 1, "event_id": f"probe-{i}-{uuid.uuid4()}",
        "label_id": f"probe-{i}-{uuid.uuid4().hex}", "carrier": "usps",
        "tracking_number": wrong_check_digit(usps_number(_PROBE_RNG)),
        "seller_id": "probe", "order_id": f"probe-{i}",
        "ship_to": {"postal_code": "10001", "country": "US"},
        "purchased_at": "2025-03-01T00:00:00Z",
    })


async def steady_traffic(bootstrap: str, labels_topic: str, scans_topic: str, rate: int,
                         seconds: float, sent: dict[str, int]) -> float:
    """Ordinary traffic at `rate` events/s with a probe label every 20 events; fills `sent`
    (label_id -> send time ns); returns the rate achieved."""
    traffic = core_bench.workload(int(rate * seconds / 4.5) + 100, 13)
    producer = make_producer(bootstrap)
    await producer.start()
    tick = 0.01
    per_tick = max(1, rate // 100)
    started = time.perf_counter()
    i = 0
    while time.perf_counter() - started < seconds:
        for _ in range(per_tick):
            if i % 20 == 0:
                value = _probe(i)
                sent[orjson.loads(value)["label_id"]] = time.perf_counter_ns()
                await producer.send(labels_topic, value)
            else:
                value = traffic[i % len(traffic)]
                await producer.send(scans_topic if b'"carrier.scan"' in value[:40]
                                    else labels_topic, value)
            i += 1
        next_at = started + tick * (i // per_tick)
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await producer.flush()
    actual = i / (time.perf_counter() - started)
    await producer.stop()
    return actual


async def measure_latency(bootstrap: str, read_topics: list[str], labels_topic: str,
                          scans_topic: str, rate: int, seconds: float,
                          floor: bool) -> dict[str, float]:
    """Send steady traffic; time each probe to its arrival on `read_topics` (the alerts, or
    for the floor the inputs themselves, read as a consumer group reads them)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(*read_topics, bootstrap_servers=bootstrap,
                                group_id=f"lat-{uuid.uuid4().hex[:8]}" if floor else None,
                                auto_offset_reset="latest", fetch_max_wait_ms=50 if floor
                                else 20, max_poll_records=5000)
    await consumer.start()
    if not floor:
        await consumer.seek_to_end()
    else:
        while not consumer.assignment():
            await asyncio.sleep(0.05)
        await consumer.seek_to_end()
    latencies: list[float] = []
    sent: dict[str, int] = {}
    stop = asyncio.Event()

    async def receive() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter_ns()
            for records in batch.values():
                for record in records:
                    if floor:
                        try:
                            event = events.decode(record.value)
                        except events.DecodeError:
                            continue
                        label_id = getattr(event, "label_id", None)
                    else:
                        label_id = orjson.loads(record.value)["label_id"]
                    if label_id in sent:
                        latencies.append((now - sent[label_id]) / 1e6)
            if stop.is_set() and (not batch or len(latencies) >= len(sent)):
                break

    receiver = asyncio.ensure_future(receive())
    actual = await steady_traffic(bootstrap, labels_topic, scans_topic, rate, seconds, sent)
    await asyncio.sleep(3.0)
    stop.set()
    await asyncio.wait_for(receiver, 60)
    await consumer.stop()
    latencies.sort()
    if not latencies:
        return {"rate": actual, "p50_ms": float("nan"), "p99_ms": float("nan"), "received": 0,
                "probes": len(sent)}
    return {"rate": actual, "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "received": len(latencies), "probes": len(sent)}


async def latency(bootstrap: str, tmp: Path, rate: int, seconds: float) -> dict[str, Any]:
    floor_topics = [f"floorlat-{uuid.uuid4().hex[:8]}.{k}" for k in ("labels", "scans")]
    await create_topics(bootstrap, floor_topics)
    floor = await measure_latency(bootstrap, floor_topics, *floor_topics, rate, seconds, True)
    run = Run(bootstrap, tmp)
    run.worker.start()
    try:
        await run.wait_ready()
        worker = await measure_latency(bootstrap, [run.topics["alerts"]], run.topics["labels"],
                                       run.topics["scans"], rate, seconds, False)
    finally:
        run.stop()
    print(f"(c) latency at {worker['rate']:,.0f} events/s for {seconds:.0f}s "
          f"({worker['received']} of {worker['probes']} probe alerts)")
    print(f"    floor, produce to consume:   p50 {floor['p50_ms']:7.1f} ms   "
          f"p99 {floor['p99_ms']:7.1f} ms")
    print(f"    worker, produce to alert:    p50 {worker['p50_ms']:7.1f} ms"
          f"{ratio(worker['p50_ms'], floor['p50_ms'])}   p99 {worker['p99_ms']:7.1f} ms"
          f"{ratio(worker['p99_ms'], floor['p99_ms'])}")
    return {"floor": floor, "worker": worker, "log": run.log}


# ---------------------------------------------------------------- (d) state, (e) warnings


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def state_size(run: Run, labels: int) -> dict[str, float]:
    tables = run.state_dir / "v1" / "tables"
    dbs = [p for p in tables.glob("*.db") if p.is_dir()] if tables.is_dir() else []
    on_disk = sum(dir_size(p) for p in dbs)
    per_million = on_disk / labels * 1_000_000  # one number per label in the workload
    print(f"(d) state: RocksDB {on_disk / 1e6:.1f} MB for ~{labels:,} numbers -> "
          f"{per_million / 1e9:.2f} GB per million numbers")
    return {"bytes": on_disk, "per_million": per_million}


def buffer_warnings(logs: list[Path]) -> int:
    count = sum(log.read_text(errors="replace").lower().count("buffer full")
                for log in logs if log.exists())
    print(f"(e) 'producer buffer full' warnings in the worker logs: {count}")
    return count


# ---------------------------------------------------------------- main


async def kafka_parts(args: argparse.Namespace, bootstrap: str,
                      broker_pid: int | None, own_brokers: bool | None = None,
                      ) -> dict[str, Any]:
    """(b)-(e) on `bootstrap`; warm passes when the brokers are this script's own (by
    default: when their pid is known)."""
    results: dict[str, Any] = {}
    own = broker_pid is not None if own_brokers is None else own_brokers
    with tempfile.TemporaryDirectory(prefix="tv-bench-") as tmp_s:
        tmp = Path(tmp_s)
        logs: list[Path] = []
        if args.response_passes > 0:
            results["f"] = await response_cost(bootstrap, tmp, args.response_labels,
                                               args.response_passes, broker_pid)
            if args.response_only:
                return results
        cold = " (cold broker)" if own and args.warm else ""
        results["b"], run = await backlog(bootstrap, tmp, args.labels, broker_pid, cold,
                                          args.design_floor)
        run.stop()  # closes RocksDB: the state dir is then complete on disk
        logs.append(run.log)
        results["d"] = state_size(run, args.labels)
        if cold:
            # the same workload again on new topics, a new app id and a new floor group: the
            # broker has compiled more of the code paths this traffic takes (the first pass
            # includes that one-off JIT work, a broker thread kind of its own above). One
            # warm pass is not a figure: the broker's ratio moved 2.3-8x from pass to pass
            # (its JIT keeps compiling for minutes, and the floor's own cost halves as the
            # broker warms to it), so the warm figures are medians of --warm-passes passes.
            warm = []
            for i in range(args.warm_passes):
                found, warm_run = await backlog(
                    bootstrap, tmp, args.labels, broker_pid,
                    f" (warm broker: the same again, pass {i + 1} of {args.warm_passes})",
                    args.design_floor)
                warm_run.stop()
                logs.append(warm_run.log)
                warm.append(found)
            if warm:
                results["b_warm"] = summarise_warm(warm)
        if args.two_worker_passes > 0:
            results["h"] = await two_workers(bootstrap, tmp, args.labels, broker_pid,
                                             args.two_worker_passes)
        results["c"] = []
        if args.backlog_only:
            return results
        for rate in (int(r) for r in str(args.rates).split(",")):
            found = await latency(bootstrap, tmp, rate, args.seconds)
            logs.append(found["log"])
            results["c"].append(found)
        results["e"] = buffer_warnings(logs)
        if args.keep_logs:
            for log in logs:
                shutil.copy(log, Path(args.keep_logs) / log.name)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--labels", type=int, default=None,
                        help="labels in the (b) backlog (~4.7 events each; default 40000, "
                        "quick 4000)")
    parser.add_argument("--rates", default="2000,5000",
                        help="events/s for (c), a comma list (default 2000,5000)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="duration of each (c) run (default 20, quick 5)")
    parser.add_argument("--core-labels", type=int, default=None)
    parser.add_argument("--skip-kafka", action="store_true", help="only (a)")
    parser.add_argument("--backlog-only", action="store_true",
                        help="only (b) and (d): no (a) core figures, no (c) latency runs")
    parser.add_argument("--no-warm", dest="warm", action="store_false",
                        help="(b) once, on the fresh broker only (default: --warm-passes more "
                        "after it, warm; only with the script's own broker: its CPU is the "
                        "point)")
    parser.add_argument("--warm-passes", type=int, default=3,
                        help="(b) passes on the warm broker, summarised by their medians "
                        "(default 3)")
    parser.add_argument("--design-floor", action="store_true",
                        help="(b) also runs the design's topics in plain aiokafka (internal "
                        "topic, changelog, alerts; no Faust) as a second reference for the "
                        "broker's CPU")
    parser.add_argument("--keep-logs", default=None, help="copy worker logs to this dir")
    parser.add_argument("--response-passes", type=int, default=None,
                        help="(f) passes of the simulated week with and without the response "
                        "stage (default 2, quick 1; 0 skips (f))")
    parser.add_argument("--response-labels", type=int, default=None,
                        help="labels of the (f) simulated week (default 30000, quick 3000)")
    parser.add_argument("--response-only", action="store_true", help="only (f)")
    parser.add_argument("--two-worker-passes", type=int, default=None,
                        help="(h) passes of the backlog through one worker and through two "
                        "(default 2, quick 1; 0 skips (h))")
    parser.add_argument("--nodes", type=int, default=1,
                        help="N > 1: after the one-broker figures, the same on a local N-node "
                        "cluster (streams.local.cluster), and the two side by side (g)")
    args = parser.parse_args(argv)
    if args.response_passes is None:
        args.response_passes = 1 if args.quick else 2
    if args.two_worker_passes is None:
        args.two_worker_passes = 1 if args.quick else 2
    args.response_labels = args.response_labels or (3000 if args.quick else 30000)
    args.labels = args.labels or (4000 if args.quick else 40000)
    args.seconds = args.seconds or (5.0 if args.quick else 20.0)
    core_labels = args.core_labels or (2000 if args.quick else 20000)

    if not (args.backlog_only or args.response_only):
        run_core(core_labels, 1 if args.quick else 3)
    if args.skip_kafka:
        return 0
    found: dict[int, dict[str, Any]] = {}

    async def one_node(bootstrap: str, pid: int | None) -> None:
        found[1] = await kafka_parts(args, bootstrap, pid)

    on_a_broker(one_node)
    if args.nodes > 1:
        from streams.local.cluster import LocalCluster

        print(f"---- the same on a local {args.nodes}-node cluster (topics: 3 replicas, "
              "min.insync.replicas 2; no broker CPU figure: its nodes are several JVMs)")
        INPUT_REPLICATION.update(replication=min(3, args.nodes), config={
            "min.insync.replicas": "2"} if args.nodes >= 3 else None)
        with LocalCluster(args.nodes) as cluster:
            # (b) and (c) only: the response stage's share (f) is measured on one broker
            on_cluster = argparse.Namespace(**{**vars(args), "response_passes": 0,
                                               "two_worker_passes": 0})
            found[args.nodes] = asyncio.run(kafka_parts(on_cluster, cluster.bootstrap_servers,
                                                        None, own_brokers=True))
        compare_nodes(found[1], found[args.nodes], args.nodes)
    return 0


def compare_nodes(one: dict[str, Any], many: dict[str, Any], nodes: int) -> None:
    """One broker and the cluster side by side: the worker's figures of this run."""
    def backlog(r: dict[str, Any], key: str) -> str:
        first = r["b"]["worker"][key]
        warm = (r.get("b_warm") or {}).get(key, {}).get("worker")
        form = "{:,.0f}" if key == "rate" else "{:.1f}"
        return form.format(first) + ("" if warm is None else f" (warm {form.format(warm)})")

    print(f"(g) the worker on one broker and on {nodes} nodes, this run")
    print(f"    {'':<30} {'1 broker':>24} {f'{nodes} nodes':>24}")
    print(f"    {'backlog events/s':<30} {backlog(one, 'rate'):>24} {backlog(many, 'rate'):>24}")
    print(f"    {'worker CPU us/event':<30} {backlog(one, 'cpu_us'):>24} "
          f"{backlog(many, 'cpu_us'):>24}")
    busy = [r["b"]["worker"]["cpu_us"] * r["b"]["worker"]["rate"] / 1e6 for r in (one, many)]
    print(f"    {'worker cores busy (first pass)':<30} {busy[0]:>24.2f} {busy[1]:>24.2f}")
    for a, b in zip(one.get("c", []), many.get("c", []), strict=False):
        wa, wb = a["worker"], b["worker"]
        label = f"alert latency, {wa['rate']:,.0f}/s"
        print(f"    {label:<30} {_lat(wa):>24} {_lat(wb):>24}")


def _lat(w: dict[str, Any]) -> str:
    return f"p50 {w['p50_ms']:.0f} / p99 {w['p99_ms']:.0f} ms"


if __name__ == "__main__":
    sys.exit(main())
