"""Broker failover on a 3-node cluster: the worker loses nothing and stalls nowhere.

A worker (with the default replication rule: every topic 3 replicas, min.insync.replicas 2)
works through a backlog on the session's 3-node cluster while more input keeps arriving:

* A: the node leading most of the worker's partitions (its topics are created with that
  node as every partition's preferred leader) is SIGKILLed mid-run and started again 20 s
  later;
* B: a rolling restart: each node in turn is stopped, started again, and the next waits until
  every partition's in-sync replicas are all back.

Labels and scans arrive on their two topics as in production, so each number's messages
reach the worker in whatever interleaving the brokers' failures make; the core's alerts do not
depend on it (tests/runtime/test_arrival_order.py).

Then every input record is processed or dead-lettered (every input and internal-topic
offset committed, the malformed records in the dead letters), the open alerts are the
offline mode's field for field (detected_at and revision aside: the highest revision per
alert_id, retracted ones dropped), no partition stalled (the watchdog, at 15 s here, never
fired), and the worker wrote fewer than 50 lines at WARNING or above per broker failure.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_recovery import MALFORMED, workload
from test_worker_integration import (
    PARTITIONS,
    Pipeline,
    _lag,
    assert_same_alerts,
    new_pipeline,
    offline_standing,
    produce,
    read_all,
    standing_of,
    wait_topics,
)

pytestmark = pytest.mark.cluster

NUMBERS = 1200  # tracking numbers: ~4,800 input records per test
BACKLOG = 0.4  # of the input produced before the worker starts; the rest arrives over:
FEED_SECONDS = 45.0
WARNINGS_PER_FAILURE = 50


# ---------------------------------------------------------------- cluster helpers


async def _admin(bootstrap: str) -> Any:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    return admin


async def partitions_of(bootstrap: str, topics: list[str]) -> list[dict[str, Any]]:
    """describe_topics' partitions of `topics`, each with its topic name."""
    admin = await _admin(bootstrap)
    try:
        return [{**part, "topic": d["topic"]} for d in await admin.describe_topics(topics)
                for part in d.get("partitions") or []]
    finally:
        await admin.close()


async def top_leader(bootstrap: str, topics: list[str]) -> tuple[int, int, int]:
    """(node id, partitions it leads, partitions) of the node leading most of `topics`."""
    parts = await partitions_of(bootstrap, topics)
    leads: dict[int, int] = {}
    for part in parts:
        leads[part["leader"]] = leads.get(part["leader"], 0) + 1
    node = max(leads, key=lambda n: leads[n])
    return node, leads[node], len(parts)


async def wait_in_sync(bootstrap: str, topics: list[str], timeout: float = 120.0) -> float:
    """Until every partition of `topics` has all its replicas in sync; returns the wait."""
    began = time.monotonic()
    while True:
        try:
            parts = await partitions_of(bootstrap, topics)
            if parts and all(p.get("leader", -1) >= 0 and
                             set(p.get("isr") or []) == set(p.get("replicas") or [])
                             for p in parts):
                return time.monotonic() - began
        except Exception:  # a node on its way back: ask again
            pass
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"ISR of {topics} not complete after {timeout}s")
        await asyncio.sleep(0.5)


async def create_led_by(cluster: Any, p: Pipeline, node: int) -> None:
    """The input and every topic the worker declares, as it would create them (3 replicas,
    min.insync.replicas 2, its topic configs), but with `node` first in every partition's
    replica list: the preferred leader, so it leads them all (the worker finds them there)."""
    from aiokafka.admin import NewTopic

    from streams.runtime.stream_config import StreamConfig
    from streams.runtime.topics import topic_partitions, topic_specs

    config = StreamConfig(app_id=p.app_id, bootstrap=p.bootstrap, partitions=PARTITIONS,
                          labels_topic=p.topics["labels"], scans_topic=p.topics["scans"],
                          alerts_topic=p.topics["alerts"],
                          deadletter_topic=p.topics["deadletter"],
                          incidents_topic=p.topics["incidents"],
                          actions_topic=p.topics["actions"])
    others = [n for n in range(1, cluster.size + 1) if n != node]
    def assignment(partitions: int) -> dict[int, list[int]]:
        return {part: [node, *others[part % 2:], *others[:part % 2]]
                for part in range(partitions)}

    admin = await _admin(p.bootstrap)
    try:
        response = await admin.create_topics([
            NewTopic(name, -1, -1,
                     replica_assignments=assignment(topic_partitions(config, name)),
                     topic_configs={"min.insync.replicas": "2", **configs})
            for name, configs in topic_specs(config).items()])
        assert all(error[1] == 0 for error in response.topic_errors), response
    finally:
        await admin.close()
    await wait_topics(p.bootstrap, worker_topics(p))


# ---------------------------------------------------------------- the run


def input_topics(p: Pipeline) -> list[str]:
    return [p.topics["labels"], p.topics["scans"]]


def worker_topics(p: Pipeline) -> list[str]:
    return [*dict.fromkeys(p.topics.values()), p.internal_topic,
            f"{p.app_id}-tracking-state-changelog"]


async def wait_done(p: Pipeline, timeout: float) -> None:
    """Until every input and internal-topic record is committed (twice in a row)."""
    deadline = time.monotonic() + timeout
    zeros = 0
    while zeros < 2:
        assert p.worker is not None and p.worker.poll() is None, f"worker died; log {p.log}"
        inputs = await _lag(p, f"{p.app_id}-ingest", input_topics(p))
        internal = await _lag(p, p.app_id, [p.internal_topic])
        zeros = zeros + 1 if inputs == 0 and internal == 0 else 0
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done in {timeout}s (lag {inputs} + {internal}); "
                               f"log {p.log}")
        await asyncio.sleep(0.3)


async def feed(p: Pipeline, messages: list[dict[str, Any]], seconds: float) -> None:
    """Produce `messages` to their topics (keyed by number), spread evenly over `seconds`."""
    from streams.runtime.kafka_io import Sender, make_producer

    producer = make_producer(p.bootstrap)
    await producer.start()
    try:
        sender = Sender(producer)
        steps = max(1, int(seconds * 2))
        began = time.monotonic()
        for i in range(steps):
            for m in messages[i * len(messages) // steps:(i + 1) * len(messages) // steps]:
                topic = p.topics["scans" if m["type"] == "carrier.scan" else "labels"]
                await sender.send(topic, orjson.dumps(m), key=m["tracking_number"].encode())
            await sender.drain()
            await asyncio.sleep(max(0.0, began + (i + 1) * seconds / steps - time.monotonic()))
    finally:
        await producer.stop()


def warnings_in(lines: list[str]) -> list[str]:
    """Log lines at WARNING or above (the worker logs JSON lines; anything else, e.g. a raw
    traceback, counts too)."""
    out = []
    for line in lines:
        if not line.strip():
            continue
        try:
            level = orjson.loads(line).get("level", "")
        except orjson.JSONDecodeError:
            out.append(line)
            continue
        if str(level).upper() in ("WARNING", "ERROR", "CRITICAL"):
            out.append(line)
    return out


class Run:
    """One worker over its own topics on the cluster, fed while the test breaks brokers."""

    def __init__(self, cluster: Any, tmp: Path, name: str) -> None:
        self.cluster = cluster
        self.p = new_pipeline(cluster.bootstrap_servers, tmp, name)
        self.p.extra_args = ["--log-format", "json", "--stall-seconds", "15",
                             "--commit-interval", "0.5"]
        self.messages = workload(random.Random(2026), NUMBERS)
        self.malformed: set[tuple[str, int, int]] = set()
        self.marks: list[int] = []  # log sizes at each failure
        self.feeding: asyncio.Task[None] | None = None

    async def start(self, led_by: int | None = None) -> None:
        """Produce the backlog, start the worker, return once it is under way and the rest
        of the input is arriving. `led_by`: every topic (the input and all the worker's) is
        created first with that node as the preferred leader of every partition."""
        from streams.runtime.kafka_io import ensure_topics

        p = self.p
        if led_by is not None:
            await create_led_by(self.cluster, p, led_by)
        else:  # the input replicated as the worker's own topics are
            await ensure_topics(p.bootstrap, input_topics(p),
                                partitions=PARTITIONS, replication=3,
                                config={"min.insync.replicas": "2"})
        await wait_topics(p.bootstrap, input_topics(p))
        split = int(len(self.messages) * BACKLOG)
        await feed(p, self.messages[:split], 0)
        placed = await produce(p.bootstrap, p.topics["labels"], MALFORMED)
        self.malformed = {(p.topics["labels"], part, off) for part, off in placed}
        p.start()
        await wait_topics(p.bootstrap, worker_topics(p))
        # under way: ingest committed part of the backlog
        deadline = time.monotonic() + 120
        while await _lag(p, f"{p.app_id}-ingest", input_topics(p)) in \
                (-1, split + len(MALFORMED)):
            assert time.monotonic() < deadline, f"no progress; log {p.log}"
            await asyncio.sleep(0.2)
        self.feeding = asyncio.ensure_future(feed(p, self.messages[split:], FEED_SECONDS))

    def mark_failure(self) -> None:
        self.marks.append(self.p.log.stat().st_size)

    async def finish(self) -> None:
        p = self.p
        assert self.feeding is not None
        await self.feeding
        await wait_done(p, timeout=240)
        # the worker's own topics follow the rule (Faust's leader topic too)
        leader_topic = f"{p.app_id}-__assignor-__leader"
        for part in await partitions_of(p.bootstrap, [*worker_topics(p), leader_topic]):
            assert len(part["replicas"]) == 3, part

        alerts = [orjson.loads(r.value) for r in await read_all(p.bootstrap,
                                                                p.topics["alerts"])]
        dead = {(d["source_topic"], d["partition"], d["offset"])
                for d in (orjson.loads(r.value)
                          for r in await read_all(p.bootstrap, p.topics["deadletter"]))}
        assert dead == self.malformed
        got = standing_of(alerts)
        assert_same_alerts(got, offline_standing(self.messages))

        text = p.log.read_bytes().decode(errors="replace")
        assert "stalled" not in text, "a partition stalled: " + next(
            ln for ln in text.splitlines() if "stalled" in ln)
        bounds = [*self.marks, len(p.log.read_bytes())]
        for i, (start, end) in enumerate(itertools.pairwise(bounds)):
            window = p.log.read_bytes()[start:end].decode(errors="replace").splitlines()
            noisy = warnings_in(window)
            print(f"failure {i + 1}: {len(noisy)} worker log lines at WARNING+")
            assert len(noisy) < WARNINGS_PER_FAILURE, "\n".join(noisy[:60])
        print(f"{len(self.messages)} records, {len(got)} open alerts = offline, "
              f"{len(alerts)} alert records, {len(dead)} dead letters")

    def stop(self) -> None:
        if self.p.worker is not None:
            rc = self.p.worker.stop()
            assert rc == 0, f"worker exit {rc}; log {self.p.log}"


async def _leaders_back(cluster: Any, topics: list[str]) -> None:
    """Every node running and every partition's ISR complete (the fixture's cluster is
    shared: each test starts from, and leaves, a whole cluster)."""
    for node in range(1, cluster.size + 1):
        if node not in cluster.running():
            cluster.start_node(node)
    existing = {p["topic"] for p in await partitions_of(cluster.bootstrap_servers, topics)}
    if existing:  # __consumer_offsets exists once a group has committed
        await wait_in_sync(cluster.bootstrap_servers, sorted(existing))


async def test_the_leader_of_most_partitions_is_killed_and_restarted(
        kafka_cluster: Any, tmp_path: Path) -> None:
    run = Run(kafka_cluster, tmp_path, "fail-kill")
    try:
        await run.start(led_by=2)
        await asyncio.sleep(5)  # mid-run: backlog behind it, input still arriving
        topics = worker_topics(run.p)
        node, leads, total = await top_leader(kafka_cluster.bootstrap_servers, topics)
        assert leads > total // 2, f"node {node} leads only {leads} of {total} partitions"
        print(f"killing node {node}, leader of {leads} of the worker's {total} partitions")
        run.mark_failure()
        kafka_cluster.kill_node(node)
        await asyncio.sleep(20)
        assert run.p.worker is not None and run.p.worker.poll() is None
        await asyncio.to_thread(kafka_cluster.start_node, node)
        await run.finish()
        print(f"ISR complete {await wait_in_sync(kafka_cluster.bootstrap_servers, topics):.1f}s "
              "after the run")
    finally:
        run.stop()
        await _leaders_back(kafka_cluster, ["__consumer_offsets"])


async def test_a_rolling_restart_of_all_three_nodes(kafka_cluster: Any, tmp_path: Path) -> None:
    run = Run(kafka_cluster, tmp_path, "fail-roll")
    try:
        await run.start()
        topics = [*worker_topics(run.p), "__consumer_offsets"]
        for node in range(1, kafka_cluster.size + 1):
            run.mark_failure()
            began = time.monotonic()
            await asyncio.to_thread(kafka_cluster.stop_node, node)
            await asyncio.to_thread(kafka_cluster.start_node, node)
            waited = await wait_in_sync(kafka_cluster.bootstrap_servers, topics)
            print(f"node {node} restarted in {time.monotonic() - began - waited:.1f}s, ISR "
                  f"complete {waited:.1f}s later")
        await run.finish()
    finally:
        run.stop()
        await _leaders_back(kafka_cluster, ["__consumer_offsets"])
