"""Arrival order never decides: one corpus through the real worker in adversarial orders.

The corpus is `streams.tools.simulation` traffic with a reuse incident (numbers re-issued to other
sellers), voids, voided labels shipped anyway, parcels delivered elsewhere and labels that
reach the labels feed after their first scans, plus hand-built `late_label_cases` (a void
that cancels a duplicate, another seller's holder that makes one critical) whose deciding
label sits on labels partition 0. Each scenario feeds it to its own worker (own app id,
topics, group and state) in an order the worker cannot choose:

* labels lagging the scans by days of event time: batches of one `STEP` of (shifted) arrival
  time, each produced only once the worker has committed the previous one, so every label
  reaches the worker after the scans of the following `lag` days;
* one labels partition paused: everything else first, that partition's records last;
* restarts midway: a SIGKILL while the backlog is processed, then a SIGTERM while the late
  labels are.

Afterwards (contract, "Alert revisions"): the alerts whose highest revision is `open` are
exactly the offline mode's (`streams.tools.offline.Processor`, event-time order), field for
field but `detected_at` and `revision` (`streams.core.revisions.standing`); every `retracted`
record follows, in its alerts-topic partition, an earlier `open` record of the same alert_id
with a lower revision; a repeated (alert_id, revision) is the same publication, field for
field but `detected_at`. `benchmarks/arrival.py` uses the same helpers to count
the revisions per lag.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from zlib import crc32

import orjson
import pytest
from test_worker_integration import (
    PARTITIONS,
    Pipeline,
    Standing,
    _lag,
    assert_same_alerts,
    new_pipeline,
    pipeline_lag,
    read_all,
    wait_idle,
    wait_serving,
    wait_topics,
)

from streams.core.revisions import standing
from streams.tools.simulation import DEFAULT_START, Params, simulate

pytestmark = pytest.mark.integration

DAY = 86400
STEP = DAY  # the event-time granularity of a lagged feed: one batch per day



@dataclass(frozen=True, slots=True)
class Record:
    topic: str  # "labels" | "scans"
    partition: int
    key: bytes | None
    value: bytes
    arrival: float  # the simulator's arrival time (epoch seconds)


def corpus_params(seed: int = 11, labels: int = 1200, days: float = 40.0) -> Params:
    """~9,000 records over `days`: an incident three quarters in that re-issues half the USPS
    numbers bought then (first used `reuse_age_days` earlier), and more late labels, voids,
    voided labels shipped and misdeliveries than the defaults."""
    return Params(
        seed=seed, labels=labels, days=days,
        incident_start=DEFAULT_START + timedelta(days=days * 0.75),
        incident_share=0.5, reuse_age_days=days / 2,
        late_label_share=0.05, void_share=0.05, voided_shipped_share=0.01,
        mismatch_share=0.01,
    )  # fmt: skip


def corpus(params: Params, hand_built: int = 20) -> list[Record]:
    """The simulated messages, each placed on a partition of its topic by its key (one key's
    records stay in order) or, unkeyed, by its value, and `hand_built` of each
    `late_label_cases`: in arrival order."""
    out = []
    for m in simulate(params).messages:
        value = m.value if isinstance(m.value, bytes) else orjson.dumps(m.value)
        key = m.key.encode() if m.key is not None else None
        spread = key if key is not None else value
        out.append(Record(m.topic, crc32(spread) % PARTITIONS, key, value, m.arrival))
    return sorted(out + late_label_cases(params, hand_built), key=lambda r: r.arrival)


def late_label_cases(params: Params, count: int = 20) -> list[Record]:
    """Hand-built revisions the simulator does not make, each with the label whose late
    arrival changes the finding on labels partition 0 (the others on 1 and 2):

    * a void cancels a duplicate: seller A's label, voided an hour later (void on 0), then
      seller B's label of the same number: no alert in event-time order; a worker that sees
      B before the void raises duplicate_tracking and must retract it;
    * another seller's holder raises a duplicate: seller B's label, seller C's an hour later
      (on 0), then B's second label: duplicate_tracking critical for both later labels; a
      worker that sees B's second label before C's raises it as a warning first."""
    import random

    from streams.tools.samples import label_purchased, label_voided, usps_number

    rng = random.Random(params.seed)
    span = int(params.days * DAY)
    out = []

    def add(message: dict[str, Any], partition: int, at: float) -> None:
        out.append(Record("labels", partition, None, orjson.dumps(message), at))

    for i in range(count):
        when = params.start + timedelta(seconds=rng.randrange(span - DAY))
        at = when.timestamp()
        n = usps_number(rng)
        add(label_purchased(f"hv{i}-a", f"HV{i}-A", n, f"hv-seller-A{i}", when), 1, at)
        add(label_voided(f"hv{i}-v", f"HV{i}-A", n, when + timedelta(hours=1)), 0, at + 3600)
        add(label_purchased(f"hv{i}-b", f"HV{i}-B", n, f"hv-seller-B{i}",
                            when + timedelta(hours=2)), 2, at + 7200)
        n = usps_number(rng)
        add(label_purchased(f"hs{i}-b1", f"HS{i}-B1", n, f"hs-seller-B{i}", when), 1, at)
        add(label_purchased(f"hs{i}-c", f"HS{i}-C", n, f"hs-seller-C{i}",
                            when + timedelta(hours=1)), 0, at + 3600)
        add(label_purchased(f"hs{i}-b2", f"HS{i}-B2", n, f"hs-seller-B{i}",
                            when + timedelta(hours=2)), 2, at + 7200)
    return out


def offline_open(records: Iterable[Record]) -> Standing:
    """The offline mode's open alerts over the same messages (event-time order)."""
    from streams.tools.offline import Processor

    alerts: list[dict[str, Any]] = []
    proc = Processor(alerts.append, lambda d: None)
    for i, r in enumerate(records):
        proc.feed(r.value, source=r.topic, partition=r.partition, offset=i, key=r.key)
    proc.finish()
    return standing(alerts)


def lagged(records: Sequence[Record], lag_days: float) -> list[Record]:
    """Arrival order with every label `lag_days` later (stable: a topic partition's records
    keep their order)."""
    shift = lag_days * DAY
    return sorted(records, key=lambda r: r.arrival + (shift if r.topic == "labels" else 0))


def batches(records: Sequence[Record], lag_days: float, step: float = STEP
            ) -> list[list[Record]]:
    """`lagged` cut into consecutive windows of `step` seconds of shifted arrival time."""
    shift = lag_days * DAY
    out: list[list[Record]] = []
    bound = None
    for r in lagged(records, lag_days):
        at = r.arrival + (shift if r.topic == "labels" else 0)
        if bound is None or at >= bound:
            out.append([])
            bound = (at // step + 1) * step
        out[-1].append(r)
    return out


async def produce_records(p: Pipeline, records: Sequence[Record]) -> None:
    """Each record to its topic and partition, in the given order."""
    from streams.runtime.kafka_io import make_producer

    producer = make_producer(p.bootstrap)
    await producer.start()
    try:
        futures = [
            await producer.send(p.topics[r.topic], r.value, key=r.key, partition=r.partition)
            for r in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def start_pipeline(p: Pipeline) -> None:
    from streams.runtime.kafka_io import ensure_topics

    await ensure_topics(p.bootstrap, [p.topics["labels"], p.topics["scans"]],
                        partitions=PARTITIONS)
    p.start()
    await wait_topics(p.bootstrap, [*p.topics.values(), p.internal_topic])


async def feed_in_batches(p: Pipeline, parts: Sequence[Sequence[Record]]) -> None:
    """Each batch only once the worker has committed everything before it."""
    for part in parts:
        if part:
            await produce_records(p, part)
            await wait_idle(p, timeout=120)


async def stop(p: Pipeline) -> None:
    assert p.worker is not None
    rc = p.worker.stop()
    assert rc == 0, f"worker exit code {rc}; log {p.log}"


@dataclass(slots=True)
class Outcome:
    records: int  # alert records published (repeats included)
    distinct: int  # distinct alert ids
    retractions: int  # records with status retracted
    revisions: int  # records with revision > 1
    open: Standing  # alert_id -> the open alert (highest revision)
    retracted_rules: Counter[str]  # retractions by rule


async def published(p: Pipeline) -> Outcome:
    """Reads the alerts topic and checks its partition order: every retraction follows an
    open publication of its alert_id with a lower revision, and a repeated (alert_id,
    revision) is the same publication."""
    from aiokafka import TopicPartition

    records = await read_all(p.bootstrap, p.topics["alerts"])
    by_partition: dict[int, list[Any]] = {}
    for r in records:
        by_partition.setdefault(r.partition, []).append(r)
    alerts: list[dict[str, Any]] = []
    revisions: dict[tuple[str, int], dict[str, Any]] = {}
    for partition, rs in by_partition.items():
        opened: dict[str, int] = {}  # alert_id -> lowest open revision so far
        for r in sorted(rs, key=lambda r: r.offset):
            a = orjson.loads(r.value)
            alerts.append(a)
            where = TopicPartition(p.topics["alerts"], partition), r.offset
            what = {k: v for k, v in a.items() if k != "detected_at"}
            assert revisions.setdefault((a["alert_id"], a["revision"]), what) == what, (
                f"two publications of revision {a['revision']}: {where}")
            if a["status"] == "open":
                opened.setdefault(a["alert_id"], a["revision"])
            else:
                assert opened.get(a["alert_id"], a["revision"]) < a["revision"], (
                    f"retracted before it was published: {a['alert_id']} at {where}")
    return Outcome(
        records=len(alerts),
        distinct=len({a["alert_id"] for a in alerts}),
        retractions=sum(a["status"] == "retracted" for a in alerts),
        revisions=sum(a["revision"] > 1 for a in alerts),
        open=standing(alerts),
        retracted_rules=Counter(a["rule"] for a in alerts if a["status"] == "retracted"),
    )


async def run_in_batches(p: Pipeline, parts: Sequence[Sequence[Record]]) -> tuple[Outcome, float]:
    """Start the worker, feed `parts` one after another (`feed_in_batches`), stop it; what it
    published, and the seconds from the start to the stop."""
    started = time.monotonic()
    await start_pipeline(p)
    try:
        await feed_in_batches(p, parts)
    finally:
        await stop(p)
    seconds = time.monotonic() - started
    return await published(p), seconds


def scans_before_label(order: Sequence[Record]) -> int:
    """Scans fed before the first label of their number: the late-label case, measured on
    the input so a scenario cannot silently stop being adversarial."""
    from streams.core.events import decode

    labelled: set[str] = set()
    early = 0
    for r in order:
        event = decode(r.value, 1 << 20)
        if r.topic == "labels":
            labelled.add(event.key)
        elif event.key not in labelled:
            early += 1
    return early


# ---------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def records() -> list[Record]:
    return corpus(corpus_params())


@pytest.fixture(scope="module")
def expected(records: list[Record]) -> Standing:
    found = offline_open(records)
    rules = Counter(a["rule"] for a in found.values())
    # the corpus exercises every rule of the incident and of its noise
    assert set(rules) == {"duplicate_tracking", "previously_used", "destination_mismatch",
                          "voided_label_scanned", "invalid_tracking"}, rules
    # late_label_cases: the voided holder gives nothing, the other seller's holder makes
    # both later labels critical duplicates
    hand = {(a["label_id"][:2], a["rule"], a["severity"]) for a in found.values()
            if a["label_id"][:2] in ("HV", "HS")}
    assert hand == {("HS", "duplicate_tracking", "critical")}
    assert sum(1 for a in found.values() if a["label_id"].startswith("HS")) == 40
    return found


def report(name: str, got: Outcome, expected: Standing, seconds: float) -> None:
    print(f"{name}: {got.records} alert records, {got.distinct} alert ids, "
          f"{got.retractions} retractions {dict(sorted(got.retracted_rules.items()))}, "
          f"{got.revisions} revisions, {len(got.open)} open (offline {len(expected)}), "
          f"{seconds:.0f}s")


def assert_offline(got: Outcome, expected: Standing) -> None:
    assert_same_alerts(got.open, expected)


async def test_labels_days_behind_the_scans(
    kafka_bootstrap: str, records: list[Record], expected: Standing, tmp_path: Path,
) -> None:
    lag = 7
    parts = batches(records, lag)
    # ~7,700 scans reach the worker before any label of their number (~1,500 in the
    # simulated arrival order, mostly in-house parcels that have none)
    assert scans_before_label([r for part in parts for r in part]) > 4 * scans_before_label(
        records)
    p = new_pipeline(kafka_bootstrap, tmp_path, "arr-lag")
    got, seconds = await run_in_batches(p, parts)
    report(f"labels {lag} days behind, {len(parts)} batches", got, expected, seconds)
    assert_offline(got, expected)


async def test_one_labels_partition_paused_then_resumed(
    kafka_bootstrap: str, records: list[Record], expected: Standing, tmp_path: Path,
) -> None:
    paused = [r for r in records if r.topic == "labels" and r.partition == 0]
    rest = [r for r in records if not (r.topic == "labels" and r.partition == 0)]
    assert 0 < len(paused) < len([r for r in records if r.topic == "labels"])
    p = new_pipeline(kafka_bootstrap, tmp_path, "arr-pause")
    # the rest in two halves of arrival time, then the paused partition resumes
    half = len(rest) // 2
    got, seconds = await run_in_batches(p, [rest[:half], rest[half:], paused])
    report(f"labels partition 0 ({len(paused)} records) paused", got, expected, seconds)
    assert_offline(got, expected)


async def kill_when_under_way(p: Pipeline, total: int) -> int:
    """SIGKILL the worker once ingest has committed some input but detect has not caught up
    (the internal topic still has uncommitted records); returns what is still uncommitted
    after the kill: input records plus internal-topic frames (up to 2,000 events each)."""
    assert p.worker is not None
    inputs = [p.topics["labels"], p.topics["scans"]]
    deadline = time.monotonic() + 120
    while True:
        left = await _lag(p, f"{p.app_id}-ingest", inputs)
        if 0 <= left < total and await _lag(p, p.app_id, [p.internal_topic]) > 0:
            break
        assert time.monotonic() < deadline, f"no progress; log {p.log}"
        await asyncio.sleep(0.05)
    p.worker.kill()
    return await pipeline_lag(p)


async def test_restarts_midway(
    kafka_bootstrap: str, records: list[Record], expected: Standing, tmp_path: Path,
) -> None:
    """All scans and the first half of the labels as a backlog, the worker SIGKILLed while at
    it and restarted on its state dir; then the other labels, a SIGTERM while they are being
    processed, and a restart."""
    labels = [r for r in records if r.topic == "labels"]
    first = [r for r in records if r.topic == "scans"] + labels[: len(labels) // 2]
    second = labels[len(labels) // 2:]
    p = new_pipeline(kafka_bootstrap, tmp_path, "arr-restart",
                     extra_args=["--commit-interval", "1.0"])
    started = time.monotonic()
    await produce_records_before_start(p, first)
    await start_pipeline(p)
    left = await kill_when_under_way(p, len(first))
    p.start()
    await wait_idle(p, timeout=120)
    await produce_records(p, second)
    deadline = time.monotonic() + 120
    inputs = [p.topics["labels"], p.topics["scans"]]
    while await _lag(p, f"{p.app_id}-ingest", inputs) >= len(second):
        # until the late labels are under way: the SIGTERM must land while they are
        assert time.monotonic() < deadline, f"the late labels were never read; log {p.log}"
        await asyncio.sleep(0.02)
    await stop(p)
    p.start()
    try:
        await wait_serving(p)
        await wait_idle(p, timeout=120)
    finally:
        await stop(p)
    got = await published(p)
    report(f"SIGKILL with {left} records/frames uncommitted ({len(first)} inputs), SIGTERM, "
           "restarts", got, expected, time.monotonic() - started)
    assert left > 0, "the kill came after the work: it must land in the backlog"
    assert_offline(got, expected)


async def produce_records_before_start(p: Pipeline, records: Sequence[Record]) -> None:
    from streams.runtime.kafka_io import ensure_topics

    await ensure_topics(p.bootstrap, [p.topics["labels"], p.topics["scans"]],
                        partitions=PARTITIONS)
    await wait_topics(p.bootstrap, [p.topics["labels"], p.topics["scans"]])
    await produce_records(p, records)
