"""Crash recovery: a worker killed with SIGKILL midway and restarted loses nothing.

The input (labels, scans, a few malformed records) is produced once; each scenario runs its
own app id (own consumer group, internal topic, changelog and alerts topic) over it:

* uninterrupted: one worker from start to end (the reference);
* killed, restarted with the same state dir (RocksDB reopened, changelog replayed past it);
* killed, restarted with an emptied state dir (the table comes back from the changelog).

After a restart, records processed but not committed are processed again (at-least-once), so
an alert revision may be repeated: a repeat carries the same alert_id and revision and is
otherwise identical, and the alerts that stand (highest revision, retracted ones dropped)
equal the uninterrupted run's and the offline core's, field for field but `detected_at` and
`revision` (`standing_of`). The 15-kill soak feeds the labels one refill behind the scans,
so its alerts are revised as late labels arrive.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_worker_integration import (
    DEC,
    PARTITIONS,
    T0,
    Pipeline,
    _lag,
    alerts_of,
    assert_same_alerts,
    new_pipeline,
    offline_standing,
    pipeline_lag,
    produce,
    read_all,
    standing_of,
    wait_idle,
    wait_topics,
)

from streams.tools.samples import (
    carrier_scan,
    journey,
    label_purchased,
    label_voided,
    usps_number,
    wrong_check_digit,
)

pytestmark = pytest.mark.integration

NUMBERS = 2500  # tracking numbers in the workload: ~10k records
MALFORMED = [b"{oops", b"[]", b'{"type": "label.printed"}']


def workload(rng: random.Random, numbers: int = NUMBERS) -> list[dict[str, Any]]:
    zips = ["10001", "30303", "60601", "75201", "90012"]
    out: list[dict[str, Any]] = []
    for i in range(numbers):
        number = usps_number(rng)
        when = T0 + timedelta(minutes=7 * i)
        seller = f"seller-{i % 97}"
        dest = zips[i % len(zips)]
        if i % 25 == 0:  # reused: a December label of another seller, shipped
            out.append(label_purchased(f"r{i}-old", f"L{i}-old", number, f"old-{i}",
                                       DEC + timedelta(minutes=i), ship_to=(dest, "US")))
            out += journey(f"r{i}-old", number, DEC + timedelta(minutes=i, hours=3), "07302",
                           dest)
            out.append(label_purchased(f"r{i}", f"L{i}", number, seller, when,
                                       ship_to=(dest, "US")))
        elif i % 31 == 0:  # wrong check digit
            out.append(label_purchased(f"b{i}", f"L{i}", wrong_check_digit(number), seller,
                                       when))
        elif i % 37 == 0:  # voided, shipped anyway
            out.append(label_purchased(f"v{i}", f"L{i}", number, seller, when,
                                       ship_to=(dest, "US")))
            out.append(label_voided(f"v{i}-void", f"L{i}", number, when + timedelta(hours=1)))
            out.append(carrier_scan(f"v{i}-acc", number, "accepted", when + timedelta(hours=3),
                                    postal_code="07302"))
        else:  # normal; every 41st delivered in another ZIP region
            wrong = i % 41 == 0
            out.append(label_purchased(f"n{i}", f"L{i}", number, seller, when,
                                       ship_to=(dest, "US")))
            out += journey(f"n{i}", number, when + timedelta(hours=3), "07302",
                           "98101" if wrong else dest)
    return out


class Input:
    def __init__(self, topics: dict[str, str], messages: list[dict[str, Any]],
                 malformed: set[tuple[str, int, int]],
                 held_labels: list[dict[str, Any]] | None = None) -> None:
        self.topics = topics
        self.messages = messages
        self.malformed = malformed
        self.held_labels = held_labels or []  # labels not produced yet (labels_behind)


def make_input(kafka_bootstrap: str, name: str, numbers: int,
               labels_behind: bool = False) -> Input:
    """The workload on fresh input topics; `labels_behind`: only its scans (and the malformed
    records) are produced, its labels are kept in `held_labels` to be produced later."""
    rng = random.Random(20250217)
    messages = workload(rng, numbers)
    probe = new_pipeline(kafka_bootstrap, Path("/nonexistent"), name)
    topics = {"labels": probe.topics["labels"], "scans": probe.topics["scans"]}

    async def setup() -> set[tuple[str, int, int]]:
        from streams.runtime.kafka_io import ensure_topics

        await ensure_topics(kafka_bootstrap, topics.values(), partitions=PARTITIONS)
        await wait_topics(kafka_bootstrap, topics.values())
        labels = [m for m in messages if m["type"] != "carrier.scan"]
        scans = [m for m in messages if m["type"] == "carrier.scan"]
        # keyed by number: one number's records of one topic stay in order
        if not labels_behind:
            await produce_keyed(kafka_bootstrap, topics["labels"], labels)
        await produce_keyed(kafka_bootstrap, topics["scans"], scans)
        placed = await produce(kafka_bootstrap, topics["labels"], MALFORMED)
        return {(topics["labels"], part, off) for part, off in placed}

    malformed = asyncio.run(setup())
    held = [m for m in messages if m["type"] != "carrier.scan"] if labels_behind else []
    return Input(topics, messages, malformed, held)


@pytest.fixture(scope="module")
def shared_input(kafka_bootstrap: str) -> Input:
    return make_input(kafka_bootstrap, "rec", NUMBERS)


async def produce_keyed(bootstrap: str, topic: str, messages: list[dict[str, Any]]) -> None:
    from streams.runtime.kafka_io import Sender, make_producer

    producer = make_producer(bootstrap)
    await producer.start()
    try:
        sender = Sender(producer)
        for m in messages:
            await sender.send(topic, orjson.dumps(m), key=m["tracking_number"].encode())
        await sender.drain()
    finally:
        await producer.stop()


def pipeline_for(bootstrap: str, data: Input, tmp: Path, name: str) -> Pipeline:
    p = new_pipeline(bootstrap, tmp, name)
    p.topics["labels"] = data.topics["labels"]
    p.topics["scans"] = data.topics["scans"]
    p.extra_args = ["--commit-interval", "1.0"]  # a realistic window of uncommitted work
    return p


async def outcome(p: Pipeline) -> tuple[dict[str, dict[str, Any]], int, set[Any]]:
    """(the standing alerts, the alert records repeated, the dead letters' sources)."""
    alerts = await alerts_of(p)
    dead = {
        (d["source_topic"], d["partition"], d["offset"])
        for d in (orjson.loads(r.value) for r in await read_all(p.bootstrap,
                                                                p.topics["deadletter"]))
    }
    repeats = len(alerts) - len({(a["alert_id"], a["revision"]) for a in alerts})
    return standing_of(alerts), repeats, dead


async def run_to_end(p: Pipeline) -> None:
    p.start()
    try:
        await wait_idle(p, timeout=180)
    finally:
        assert p.worker is not None
        assert p.worker.stop() == 0, f"log: {p.log}"


async def kill_midway(p: Pipeline, total: int) -> int:
    """Start a worker and SIGKILL it at its first commit of input progress; returns the
    records (inputs and frames) still uncommitted then.

    Early, while the work is under way: ingest is the cheap stage and may commit every input
    in a batch or two, but the stage's commits (every --commit-interval) are behind it."""
    p.start()
    assert p.worker is not None
    topics = [p.topics["labels"], p.topics["scans"]]
    deadline = time.monotonic() + 120
    while True:
        lag = await _lag(p, f"{p.app_id}-ingest", topics)
        if 0 <= lag < total and await _lag(p, p.app_id, [p.internal_topic]) >= 0:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"no progress; log: {p.log}")
        await asyncio.sleep(0.05)
    p.worker.kill()
    left = await pipeline_lag(p)
    assert left > 0, "the worker finished before it could be killed: grow the workload"
    return left


@pytest.fixture(scope="module")
def reference(kafka_bootstrap: str, shared_input: Input) -> dict[str, dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="tv-rec-ref-"))
    p = pipeline_for(kafka_bootstrap, shared_input, tmp, "rec-ref")
    started = time.monotonic()
    asyncio.run(run_to_end(p))
    elapsed = time.monotonic() - started
    alerts, repeats, dead = asyncio.run(outcome(p))
    print(f"uninterrupted: {len(shared_input.messages)} records in {elapsed:.1f}s, "
          f"{len(alerts)} alerts")
    assert repeats == 0, "an uninterrupted run repeats no alert"
    assert dead == shared_input.malformed
    assert_same_alerts(alerts, offline_standing(shared_input.messages))
    shutil.rmtree(tmp, ignore_errors=True)
    return alerts


async def assert_same_outcome(p: Pipeline, shared_input: Input,
                              reference: dict[str, dict[str, Any]]) -> int:
    """p's dead letters and standing alerts are the reference's, field for field; returns the
    alert records repeated (at least once)."""
    alerts, repeats, dead = await outcome(p)
    assert dead == shared_input.malformed  # every malformed record, once or more
    assert_same_alerts(alerts, reference)
    return repeats


@pytest.mark.parametrize("state", ["kept", "emptied"])
async def test_sigkill_and_restart(
    kafka_bootstrap: str, shared_input: Input, reference: dict[str, dict[str, Any]],
    state: str, tmp_path: Path,
) -> None:
    p = pipeline_for(kafka_bootstrap, shared_input, tmp_path, f"rec-{state}")
    total = len(shared_input.messages) + len(MALFORMED)
    left = await kill_midway(p, total)
    assert left > 0
    if state == "emptied":
        shutil.rmtree(p.state_dir)
        p.state_dir.mkdir()
    await run_to_end(p)

    repeats = await assert_same_outcome(p, shared_input, reference)
    print(f"{state}: killed with {left} of {total} input records uncommitted; "
          f"{repeats} repeats")


def _last_assignment(log: Path, topic: str) -> str | None:
    """The partitions of `topic` in the last assignment a worker logged: Faust's table for
    the internal topic, ingest's line for the inputs."""
    found = None
    assigning = False  # inside a "newly assigned" table (not a "revoking" one)
    for line in log.read_text(errors="replace").splitlines():
        if "ingest assigned partitions:" in line:
            for part in line.split("ingest assigned partitions:", 1)[1].split():
                name, _, numbers = part.rpartition("=")
                if name == topic:
                    found = "{" + numbers + "}"
            continue
        if "newly assigned partitions" in line:
            assigning = True
        elif "previously assigned partitions" in line:
            assigning = False
        cells = [c.strip() for c in line.split("|")]
        if assigning and len(cells) >= 3 and cells[1] == topic:
            found = cells[2]
    return found


async def test_two_workers_in_one_group_share_the_partitions(
    kafka_bootstrap: str, shared_input: Input, reference: dict[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    """Scaling out: a second worker with the same app id takes a share of the partitions
    (of the inputs and of the internal topic, so of the table), and the two together raise
    exactly the alerts one worker raises."""
    first = pipeline_for(kafka_bootstrap, shared_input, tmp_path / "a", "rec-pair")
    second = replace(first, state_dir=tmp_path / "b" / "state", log=tmp_path / "b.log",
                     worker=None)
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    # how Faust and ingest log all the partitions of a topic
    every = {f"{{0-{PARTITIONS - 1}}}", "{" + ",".join(map(str, range(PARTITIONS))) + "}"}
    first.start()
    second.start()
    try:
        await wait_idle(first, timeout=180)
        # the work can be done before the second worker joins: wait for the shared
        # assignment, then for anything the rebalance left to redo
        deadline = time.monotonic() + 60
        while True:
            shares = {(p.log, topic): _last_assignment(p.log, topic)
                      for p in (first, second)
                      for topic in (first.topics["labels"], first.internal_topic)}
            if all(s and s not in every for s in shares.values()):
                break
            assert time.monotonic() < deadline, f"not shared: {shares}"
            await asyncio.sleep(0.5)
        await wait_idle(first, timeout=180)
    finally:
        rcs = [p.worker.stop() for p in (first, second) if p.worker is not None]
    assert rcs == [0, 0], f"logs: {first.log} {second.log}"
    await assert_same_outcome(first, shared_input, reference)


def table_contents(state_dir: Path) -> dict[bytes, bytes]:
    """Every key and state in a stopped worker's RocksDB table (Faust's offset key left out)."""
    from rocksdict import AccessType, Options, Rdict

    found: dict[bytes, bytes] = {}
    for path in sorted((state_dir / "v1" / "tables").glob("tracking-state-*.db")):
        db = Rdict(str(path), options=Options(raw_mode=True),
                   access_type=AccessType.read_only())
        try:
            found.update((k, v) for k, v in db.items() if not k.startswith(b"__faust"))
        finally:
            db.close()
    return found


async def test_a_wiped_state_dir_is_rebuilt_from_the_changelog(
    kafka_bootstrap: str, shared_input: Input, tmp_path: Path,
) -> None:
    """The stage writes the table's store and changelog itself: Faust's own recovery must
    rebuild exactly the same table from that changelog."""
    p = pipeline_for(kafka_bootstrap, shared_input, tmp_path, "rec-table")
    await run_to_end(p)
    before = table_contents(p.state_dir)
    assert len(before) > 1000
    shutil.rmtree(p.state_dir)
    p.state_dir.mkdir()
    p.start()
    try:
        deadline = time.monotonic() + 120
        while "Recovery complete" not in p.log.read_text(errors="replace").split(
                "Signal received")[-1] or not table_contents_ready(p):
            assert time.monotonic() < deadline, f"no recovery; log {p.log}"
            await asyncio.sleep(0.5)
    finally:
        assert p.worker is not None and p.worker.stop() == 0, f"log: {p.log}"
    assert table_contents(p.state_dir) == before


def table_contents_ready(p: Pipeline) -> bool:
    text = p.log.read_text(errors="replace")
    return text.count("Worker ready") >= 2  # the first run's and the restarted one's


@pytest.fixture(scope="module")
def kill_input(kafka_bootstrap: str) -> Input:
    # ~40,000 records, the labels one refill behind the scans
    return make_input(kafka_bootstrap, "kills", NUMBERS * 4, labels_behind=True)


async def test_sigkilled_15_times_at_random_points_of_a_backlog(
    kafka_bootstrap: str, kill_input: Input, tmp_path: Path,
) -> None:
    """Issue 10: SIGKILL at random moments while a backlog far larger than one run gets
    through is processed (once with the state dir deleted, once two workers of one group
    together); afterwards every partition reaches its end and the standing alerts equal the
    offline ones field for field, and nothing is dead-lettered twice over or lost. The
    labels reach the worker one refill behind their scans (days of event time late), so
    alerts are revised (their labels and evidence) while the kills land."""
    data = kill_input
    messages = list(data.messages)
    held = list(data.held_labels)
    rng = random.Random(1017)
    refills = 0
    p = pipeline_for(kafka_bootstrap, data, tmp_path / "a", "rec-kills")
    (tmp_path / "a").mkdir()
    second = replace(p, state_dir=tmp_path / "b" / "state", log=tmp_path / "b.log",
                     worker=None)
    started = time.monotonic()
    left = []
    for round_ in range(15):
        if 0 <= await pipeline_lag(p) < 40_000:  # keep a backlog for every kill: more input
            refills += 1
            more = workload(random.Random(7000 + refills), NUMBERS * 4)
            await produce_keyed(kafka_bootstrap, data.topics["scans"],
                                [m for m in more if m["type"] == "carrier.scan"])
            await produce_keyed(kafka_bootstrap, data.topics["labels"], held)
            held = [m for m in more if m["type"] != "carrier.scan"]
            messages += more
        before = await pipeline_lag(p)
        before = before if before >= 0 else 1 << 62  # unknown (the group is new): any lag
        p.start()
        if round_ == 7:
            second.start()  # two workers of one group, killed together, both at work
            deadline = time.monotonic() + 90
            while "ingest assigned partitions" not in second.log.read_text(errors="replace"):
                assert time.monotonic() < deadline, f"second worker idle; log {second.log}"
                await asyncio.sleep(0.2)
        deadline = time.monotonic() + 90
        while before != 0 and not 0 <= await pipeline_lag(p) < before:  # work under way
            assert time.monotonic() < deadline, f"no progress; log {p.log}"
            await asyncio.sleep(0.1)
        await asyncio.sleep(rng.uniform(0.0, 1.0))  # a random point of the work
        assert p.worker is not None and p.worker.poll() is None, f"died early; log {p.log}"
        p.worker.kill()
        if second.worker is not None and second.worker.poll() is None:
            second.worker.kill()
            second.worker.process.wait()  # type: ignore[union-attr]
        p.worker.process.wait()  # type: ignore[union-attr]
        left.append(await pipeline_lag(p))
        if round_ == 10:
            shutil.rmtree(p.state_dir, ignore_errors=True)
            p.state_dir.mkdir(parents=True)
    await produce_keyed(kafka_bootstrap, data.topics["labels"], held)  # the last labels
    await run_to_end(p)  # every partition of both groups reaches its end (lag 0)
    assert "ingest assigned partitions" in second.log.read_text(), f"log {second.log}"
    print(f"15 kills in {time.monotonic() - started:.0f}s ({len(messages):,} records, "
          f"{refills} refills); uncommitted records after each: {left}")
    assert sum(1 for n in left if n > 0) >= 12, "most kills must land in the backlog"
    alerts, _, dead = await outcome(p)
    assert dead == data.malformed
    revised = sum(a["revision"] > 1 for a in await alerts_of(p))
    print(f"{revised} alert records with revision > 1")
    assert revised > 0, "the labels behind the scans must make the worker revise alerts"
    assert_same_alerts(alerts, offline_standing(messages))
