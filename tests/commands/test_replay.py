"""replay through the real broker: the same alerts as the offline mode, the ground truth and a
live worker fed the same traffic, without a consumer group of its own."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.commands.cli import main
from streams.commands.simulate import write_files
from streams.core.revisions import standing
from streams.tools.simulation import DEFAULT_START, Params, simulate

pytestmark = pytest.mark.integration

HISTORY = {"retention.ms": "-1"}  # records carry 2025 event-time timestamps: keep them
# A small world with every rule: numbers re-issued after 60 days inside a 5-day incident.
PARAMS = Params(
    seed=31, labels=500, days=80, incident_start=DEFAULT_START + timedelta(days=70),
    incident_days=5, incident_share=0.8, invalid_share=0.01, voided_shipped_share=0.01,
    mismatch_share=0.01, malformed=4,
)  # fmt: skip

Standing = dict[str, dict]  # alert_id -> the standing alert (streams.core.revisions)


async def _alerts(bootstrap: str, topic: str) -> list[dict]:
    from streams.runtime.kafka_io import read_to_end

    return [orjson.loads(r.value) async for r in read_to_end(bootstrap, [topic])]


def _offline(tmp_path: Path) -> tuple[Standing, set[tuple]]:
    world = simulate(PARAMS)
    write_files(world, tmp_path)
    out = tmp_path / "alerts.jsonl"
    argv = ["scan", str(tmp_path / "labels.jsonl"), str(tmp_path / "scans.jsonl")]
    assert main([*argv, "--alerts", str(out)]) == 0
    alerts = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    keys = ("rule", "tracking_number", "carrier", "label_id", "severity")
    assert {tuple(a[k] for k in keys) for a in alerts} == {
        tuple(g[k] for k in keys) for g in world.ground_truth
    }
    return standing(alerts), {tuple(a[k] for k in keys) for a in alerts}


async def _topics(create_topic, *names: str) -> dict[str, str]:
    return {n: await create_topic(f"replay-{n}", partitions=3, config=HISTORY) for n in names}


async def _simulate_to(bootstrap: str, topics: dict[str, str], rate: float = 0) -> None:
    argv = ["simulate", "--seed", str(PARAMS.seed), "--labels", str(PARAMS.labels),
            "--days", str(PARAMS.days), "--incident-start", "+70", "--incident-days", "5",
            "--incident-share", "0.8", "--invalid-share", "0.01",
            "--voided-shipped-share", "0.01", "--mismatch-share", "0.01", "--malformed", "4",
            "--bootstrap", bootstrap, "--labels-topic", topics["labels"],
            "--scans-topic", topics["scans"], "--rate", str(rate)]  # fmt: skip
    assert await asyncio.to_thread(main, argv) == 0


async def _replay(bootstrap: str, topics: dict[str, str], *extra: str) -> None:
    argv = ["replay", "--bootstrap", bootstrap, "--labels-topic", topics["labels"],
            "--scans-topic", topics["scans"], "--alerts-topic", topics["replay-alerts"],
            "--dead-letters-topic", topics["replay-dead"], "--partitions", "3",
            *extra]  # fmt: skip
    if "--in-memory" in extra:
        assert await asyncio.to_thread(main, argv) == 0
        return
    # the stream runtime runs a Faust worker, which wants the main thread: a process
    import subprocess
    import sys

    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "streams", *argv], capture_output=True,
        timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]


async def test_replay_on_the_stream_runtime_equals_offline(
    kafka_bootstrap: str, create_topic, kafka_admin, tmp_path: Path
) -> None:
    expected, _ = _offline(tmp_path)
    topics = await _topics(create_topic, "labels", "scans", "replay-alerts", "replay-dead")
    await _simulate_to(kafka_bootstrap, topics)
    replay_id = f"replay-test-{uuid.uuid4().hex[:8]}"
    await _replay(kafka_bootstrap, topics, "--replay-id", replay_id)
    # its own consumer groups, nobody else's
    groups = {g[0] if isinstance(g, tuple) else g for g in
              await kafka_admin.list_consumer_groups()}
    assert {replay_id, f"{replay_id}-ingest"} <= groups
    replayed = await _alerts(kafka_bootstrap, topics["replay-alerts"])
    assert standing(replayed) == expected
    dead = await _alerts(kafka_bootstrap, topics["replay-dead"])
    assert len(dead) == 4
    assert {d["source_topic"] for d in dead} <= {topics["labels"], topics["scans"]}

    # a second replay (a new id) of the same history, cleaned up after: same ids again
    second = f"replay-test-{uuid.uuid4().hex[:8]}"
    await _replay(kafka_bootstrap, topics, "--replay-id", second, "--cleanup")
    again = await _alerts(kafka_bootstrap, topics["replay-alerts"])
    assert standing(again) == expected
    left = set(await kafka_admin.list_topics())
    assert not {t for t in left if t.startswith(second)}, "cleanup leaves no internal topic"
    assert f"{replay_id}-tracking-events" in left  # the first one was not asked to

    # report straight from the topic: repeated alerts count once (same alert_id)
    out = tmp_path / "report.json"
    argv = ["report", "--topic", topics["replay-alerts"], "--bootstrap", kafka_bootstrap,
            "--format", "json", "--output", str(out)]  # fmt: skip
    assert await asyncio.to_thread(main, argv) == 0
    assert orjson.loads(out.read_bytes())["totals"]["alerts"] == len(expected)


async def test_two_replay_processes_share_the_partitions(
    kafka_bootstrap: str, create_topic, tmp_path: Path
) -> None:
    import subprocess
    import sys

    expected, _ = _offline(tmp_path)
    topics = await _topics(create_topic, "labels", "scans", "replay-alerts", "replay-dead")
    await _simulate_to(kafka_bootstrap, topics)
    replay_id = f"replay-pair-{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, "-m", "streams", "replay", "--bootstrap", kafka_bootstrap,
            "--labels-topic", topics["labels"], "--scans-topic", topics["scans"],
            "--alerts-topic", topics["replay-alerts"], "--dead-letters-topic",
            topics["replay-dead"], "--partitions", "3", "--replay-id", replay_id,
            "--loglevel", "info"]  # fmt: skip
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))  # noqa: SIM115
             for log in logs]
    try:
        codes = [await asyncio.to_thread(p.wait, 240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [0, 0], [log.read_text()[-2000:] for log in logs]
    shares = [[line for line in log.read_text().splitlines()
               if "ingest assigned partitions" in line] for log in logs]
    assert all(shares), "each process took a share of the input partitions"
    assert standing(await _alerts(kafka_bootstrap, topics["replay-alerts"])) == expected


async def test_replay_in_memory_equals_offline_and_leaves_no_group(
    kafka_bootstrap: str, create_topic, kafka_admin, tmp_path: Path
) -> None:
    expected, _ = _offline(tmp_path)
    topics = await _topics(create_topic, "labels", "scans", "replay-alerts", "replay-dead")
    await _simulate_to(kafka_bootstrap, topics)
    groups_before = set(await kafka_admin.list_consumer_groups())
    await _replay(kafka_bootstrap, topics, "--in-memory")
    assert set(await kafka_admin.list_consumer_groups()) == groups_before
    replayed = await _alerts(kafka_bootstrap, topics["replay-alerts"])
    assert len(replayed) == len(expected) and standing(replayed) == expected


async def test_replay_equals_a_live_worker(
    kafka_bootstrap: str, create_topic, tmp_path: Path
) -> None:
    from streams.commands.demo import WorkerProcess

    expected, _ = _offline(tmp_path)
    topics = await _topics(
        create_topic, "labels", "scans", "alerts", "dead", "replay-alerts", "replay-dead"
    )
    app_id = f"tv-replay-live-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as state:
        worker = WorkerProcess(
            ["--bootstrap", kafka_bootstrap, "--app-id", app_id, "--state-dir", state,
             "--partitions", "3", "--labels-topic", topics["labels"],
             "--scans-topic", topics["scans"], "--alerts-topic", topics["alerts"],
             "--deadletter-topic", topics["dead"], "--commit-interval", "0.5",
             "--loglevel", "warning"],
            log=tmp_path / "worker.log",
        )  # fmt: skip
        with worker:
            # live traffic: the worker consumes while the messages arrive, in arrival order
            await _simulate_to(kafka_bootstrap, topics, rate=1500)
            await _wait_processed(kafka_bootstrap, app_id, topics, worker,
                                  tmp_path / "worker.log")
            live = await _alerts(kafka_bootstrap, topics["alerts"])
    await _replay(kafka_bootstrap, topics)
    replayed = await _alerts(kafka_bootstrap, topics["replay-alerts"])
    assert standing(replayed) == expected
    assert standing(live) == standing(replayed), (set(standing(live)) ^ set(expected))


async def _uncommitted(bootstrap: str, group: str, topics: list[str]) -> int:
    """Records of `topics` that `group` has not committed; -1 while a topic is unknown."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        described = await admin.describe_topics(topics)
        tps = [TopicPartition(d["topic"], part["partition"])
               for d in described if d.get("error_code") == 0 for part in d["partitions"]]
        if {tp.topic for tp in tps} != set(topics):
            return -1
        ends = await consumer.end_offsets(tps)
        done = await admin.list_consumer_group_offsets(group)
        return sum(max(0, ends[tp] - (done[tp].offset if tp in done and done[tp].offset >= 0
                                      else 0)) for tp in tps)
    finally:
        await consumer.stop()
        await admin.close()


async def _wait_processed(bootstrap: str, app_id: str, topics: dict[str, str], worker: Any,
                          log: Path, timeout: float = 180.0) -> None:
    """Until the worker has committed every input record (its ingest group) and every frame
    of its internal topic (its stage's group): a frame's alerts are acknowledged before it is
    committed, so they are all on the alerts topic then."""
    from aiokafka.errors import KafkaError

    inputs = [topics["labels"], topics["scans"]]
    deadline = time.monotonic() + timeout
    while True:
        assert worker.poll() is None, log.read_text()[-3000:]
        try:
            # inputs first: the frames of a committed input are on the internal topic
            left = await _uncommitted(bootstrap, f"{app_id}-ingest", inputs)
            if left == 0:
                left = await _uncommitted(bootstrap, app_id, [f"{app_id}-tracking-events"])
        except KafkaError:  # e.g. the group's coordinator not known yet
            left = -1
        if left == 0:
            return
        assert time.monotonic() < deadline, (
            f"the worker left {left} records uncommitted after {timeout}s; log {log}")
        await asyncio.sleep(0.5)
