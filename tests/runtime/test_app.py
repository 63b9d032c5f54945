"""The runtime without a broker: ingest's batch building, the internal topic's frames, the
stateful stage's step, and the Faust agent driven with `agent.test_context()` on an
in-memory table (store='memory://'), its sends captured instead of produced."""

from __future__ import annotations

import asyncio
import time
from collections import namedtuple
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.core import events
from streams.core.settings import Settings
from streams.runtime import internal_topic
from streams.runtime.app import build_app
from streams.runtime.detection_stage import detect_frame
from streams.runtime.ingest import build_batch
from streams.runtime.stream_config import StreamConfig
from streams.tools.samples import journey, label_purchased, label_voided, spaced

T0 = datetime(2025, 2, 10, 9, 0, tzinfo=UTC)
DEC = datetime(2024, 12, 10, 9, 0, tzinfo=UTC)
N1 = "9400111206206406260787"  # a valid USPS IMpb number (GS1 mod 10 check digit 7)
N2 = "9400111206206406260794"
TP = namedtuple("TP", "topic partition")
Record = namedtuple("Record", "offset key value timestamp")


def decoded(*msgs: dict[str, Any]) -> list[events.Event]:
    return [events.decode(orjson.dumps(m)) for m in msgs]


def test_frames_round_trip_every_event_type() -> None:
    evs = decoded(
        label_purchased("e1", "L1", spaced(N1), "s1", T0, cost="12.34"),
        label_purchased("e2", "L2", N1[:-1] + "0", "s1", T0, channel=None, cost=None,
                        service=None),  # invalid number: carries its Validation
        label_voided("e3", "L1", N1, T0 + timedelta(hours=1)),
        *journey("e4", N1, T0 + timedelta(hours=2), "07302", "10001"),
    )
    entries = [(1_700_000_000_000 + i, e) for i, e in enumerate(evs)]
    frame = internal_topic.encode_frame(entries, arrived_by=1_600_000_000_000)
    assert frame[:4] == b"TVF\x02"
    assert internal_topic.decode_frame(frame) == entries
    decoded_frame = internal_topic.decode(frame)
    assert isinstance(decoded_frame, internal_topic.Frame)
    assert decoded_frame.arrived_by == 1_600_000_000_000
    # without one, a frame's records had arrived by its latest read time
    assert internal_topic.decode(internal_topic.encode_frame(entries)).arrived_by == max(
        ts for ts, _ in entries)


def test_a_version_1_frame_still_reads() -> None:
    import msgspec

    from streams.core import events as core_events

    evs = decoded(label_purchased("e1", "L1", N1, "s1", T0))
    body = msgspec.msgpack.encode(([1_700_000_000_005], core_events.encode_events(evs)))
    record = internal_topic.decode(b"TVF\x01" + body)
    assert isinstance(record, internal_topic.Frame)
    assert record.entries == [(1_700_000_000_005, evs[0])]
    assert record.arrived_by == 1_700_000_000_005


def test_a_progress_record_round_trips_and_is_not_a_frame() -> None:
    data = internal_topic.encode_progress({"labels": 2, "scans": 1},
                                          {("labels", 1): 5_000, ("scans", 0): 7_000})
    record = internal_topic.decode(data)
    assert isinstance(record, internal_topic.Progress)
    assert record.partitions == {"labels": 2, "scans": 1}
    assert record.read_through == {("labels", 1): 5_000, ("scans", 0): 7_000}
    with pytest.raises(internal_topic.FrameError, match="progress record"):
        internal_topic.decode_frame(data)
    with pytest.raises(internal_topic.FrameError, match="progress record version 9"):
        internal_topic.decode(b"TVP\x09" + data[4:])


def test_a_frame_of_another_version_is_refused() -> None:
    frame = internal_topic.encode_frame([(0, decoded(label_purchased("e", "L", N1, "s", T0))[0])])
    with pytest.raises(internal_topic.FrameError, match="version 3"):
        internal_topic.decode_frame(frame[:3] + b"\x03" + frame[4:])
    with pytest.raises(internal_topic.FrameError, match="magic"):
        internal_topic.decode_frame(b"XYZ\x01" + frame[4:])


def test_partitioning_is_the_faust_partitioner() -> None:
    keys = [f"usps:{n}".encode() for n in range(1000, 1100)]
    for key in keys:
        p = internal_topic.partition_for(key, 8)
        assert 0 <= p < 8
        assert internal_topic.faust_partitioner(key, list(range(8)), list(range(8))) == p
    assert len({internal_topic.partition_for(k, 8) for k in keys}) == 8  # spreads


def test_build_batch_frames_by_key_partition_and_dead_letters() -> None:
    good = [orjson.dumps(m) for m in (
        label_purchased("a1", "L1", spaced(N1), "s1", T0),
        label_purchased("a2", "L2", N2, "s1", T0),
        *journey("a3", N1, T0 + timedelta(hours=2), "07302", "10001"),
    )]
    labels = TP("labels", 0)
    scans = TP("scans", 2)
    records = {
        labels: [Record(10, b"k", good[0], 111), Record(11, b"k", b"[1]", 112),
                 Record(12, None, good[1], 113), Record(13, None, b"x" * 3000, 114)],
        scans: [Record(40 + i, None, v, 200 + i) for i, v in enumerate(good[2:])],
    }
    batch = build_batch(records, partitions=4, max_bytes=2048, read_ms=1_765_000_000_123)
    assert batch.offsets == {labels: 14, scans: 40 + len(good) - 2}
    assert batch.records == 4 + len(good) - 2 and batch.events == len(good)
    codes = [(d["source_topic"], d["offset"], d["error"]["code"]) for _, d in batch.dead_letters]
    assert codes == [("labels", 11, "not_an_object"), ("labels", 13, "too_large")]
    assert batch.dead_letters[0][0] == b"k"  # the input key is kept
    by_key: dict[str, int] = {}
    for p, entries in batch.frames.items():
        for ts, event in entries:
            assert p == internal_topic.partition_for(event.key.encode(), 4)
            by_key.setdefault(event.key, p)
            # when ingest read the record, not the record's (event-time) timestamp
            assert ts == 1_765_000_000_123
    assert set(by_key) == {f"usps:{N1}", f"usps:{N2}"}
    # one key's events keep their input order inside its frame
    n1 = [e.event_id for _, e in batch.frames[by_key[f"usps:{N1}"]] if e.key == f"usps:{N1}"]
    assert n1[0] == "a1" and n1[1:] == [e.event_id for e in decoded(
        *journey("a3", N1, T0 + timedelta(hours=2), "07302", "10001"))]


def test_detect_frame_applies_the_core_and_writes_only_what_changed() -> None:
    settings = Settings()
    store: dict[bytes, bytes] = {}
    first = decoded(
        label_purchased("d1", "L-old", N1, "seller-A", DEC),
        *journey("d1", N1, DEC + timedelta(hours=4), "07302", "10001"),
    )
    result = detect_frame([(1, e) for e in first], store.get, settings)
    assert result.alerts == [] and result.events == len(first)
    assert set(result.states) == {f"usps:{N1}".encode()}
    store.update({k: v for k, v in result.states.items() if v is not None})

    again = detect_frame([(2, e) for e in first], store.get, settings)  # a redelivery
    assert again.alerts == [] and again.states == {}

    late = decoded(label_purchased("f1", "L-new", spaced(N1), "seller-B", T0))
    result = detect_frame([(3, e) for e in late], store.get, settings)
    assert sorted((a["rule"], a["label_id"], a["severity"]) for _, a in result.alerts) == [
        ("duplicate_tracking", "L-new", "critical"),
        ("previously_used", "L-new", "critical"),
    ]
    assert {ts for ts, _ in result.alerts} == {3}


class Captured:
    """Stands in for the worker's aiokafka producer: records what the stage produces; every
    future is already acknowledged, as the broker would."""

    class Batch:
        def __init__(self) -> None:
            self.records: list[tuple[bytes, bytes | None]] = []

        def append(self, *, key: bytes, value: bytes | None, timestamp: int) -> object:
            self.records.append((key, value))
            return object()

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self.sent_at: list[float] = []  # time.monotonic() of each send in `sent`
        self.offsets: dict[tuple[str, int], int] = {}

    def _done(self, topic: str, partition: int, n: int) -> asyncio.Future[Any]:
        base = self.offsets.get((topic, partition), 0)
        self.offsets[(topic, partition)] = base + n
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(namedtuple("Md", "offset")(base))
        return fut

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   partition: int = 0) -> Any:
        self.sent.append((topic, key, value))
        self.sent_at.append(time.monotonic())
        return self._done(topic, partition, 1)

    def create_batch(self) -> Captured.Batch:
        return Captured.Batch()

    async def send_batch(self, batch: Captured.Batch, topic: str, *, partition: int) -> Any:
        self.sent.extend((topic, k, v) for k, v in batch.records)
        self.sent_at.extend(time.monotonic() for _ in batch.records)
        return self._done(topic, partition, len(batch.records))

    def to(self, topic: str) -> list[tuple[bytes | None, bytes | None]]:
        return [(k, v) for t, k, v in self.sent if t == topic]


@pytest.fixture
def app(tmp_path: Path) -> Any:
    config = StreamConfig(app_id="unit-test", store="memory://", state_dir=tmp_path,
                          settings=Settings(max_message_bytes=2048))
    app = build_app(config)
    app.finalize()
    app.conf.store = "memory://"
    app.flow_control.resume()
    captured = Captured()
    app.tracking["stage"].producer = captured
    app.tracking["captured"] = captured
    return app


async def test_the_detect_agent_publishes_alerts_and_writes_state(app: Any) -> None:
    h = app.tracking
    config, captured, table = h["config"], h["captured"], h["table"]
    key = f"usps:{N1}".encode()
    p = internal_topic.partition_for(key, config.partitions)
    old = decoded(label_purchased("d1", "L-old", N1, "seller-A", DEC),
                  *journey("d1", N1, DEC + timedelta(hours=4), "07302", "10001"))
    new = decoded(label_purchased("f1", "L-new", spaced(N1), "seller-B", T0))
    async with h["detect"].test_context() as agent:
        await agent.put(internal_topic.encode_frame([(1, e) for e in old]), partition=p)
        await agent.put(internal_topic.encode_frame([(2, e) for e in new]), partition=p)
        await agent.put(internal_topic.encode_frame([(3, e) for e in new]), partition=p)
        await h["stage"].drain()

    alerts = [orjson.loads(v) for _, v in captured.to(config.alerts_topic)]
    assert sorted((a["rule"], a["label_id"], a["severity"]) for a in alerts) == [
        ("duplicate_tracking", "L-new", "critical"),
        ("previously_used", "L-new", "critical"),
    ]  # once: the redelivered frame raised nothing
    assert {k for k, _ in captured.to(config.alerts_topic)} == {N1.encode()}  # by number
    assert all(a["detected_at"].endswith("Z") for a in alerts)
    # the state is in the store and in the changelog, the last write equal to the store's
    stored = table.data.data[key]
    assert isinstance(stored, bytes) and b"L-new" in stored
    changelog = captured.to(config.changelog_topic)
    # two frames changed it (written once or twice: the writer may merge them), the third not
    assert [k for k, _ in changelog] in ([key], [key, key])
    assert changelog[-1][1] == stored
    # alerts were produced before the state that marks their event as seen
    order = [t for t, _, _ in captured.sent]
    assert order.index(config.alerts_topic) < len(order) - 1 - order[::-1].index(
        config.changelog_topic)


def stage_on_memory(config: StreamConfig) -> tuple[Any, Any, Captured, int]:
    """The app of `config` on memory:// with its detection stage's sends captured, and the
    internal partition of usps:N1: (app, stage, captured, partition)."""
    app = build_app(config)
    app.finalize()
    app.conf.store = "memory://"
    app.flow_control.resume()
    captured = Captured()
    stage = app.tracking["stage"]
    stage.producer = captured
    return app, stage, captured, internal_topic.partition_for(f"usps:{N1}".encode(),
                                                              config.partitions)


@pytest.mark.parametrize("hold", [0.0, 0.3])
async def test_a_hold_cancels_what_a_late_label_retracts_and_publishes_the_rest(
    tmp_path: Path, hold: float,
) -> None:
    config = StreamConfig(app_id="unit-hold", store="memory://", state_dir=tmp_path,
                          alert_hold=hold)
    app, stage, captured, p = stage_on_memory(config)
    old = decoded(label_purchased("h1", "L-old", N1, "seller-A", DEC, ship_to=("10001", "US")))
    # the new parcel's scan comes before its label: at first it counts against L-old
    scan = decoded(*journey("h2", N1, T0 + timedelta(days=2), "07302", "90012"))
    new = decoded(label_purchased("h3", "L-new", N1, "seller-B", T0, ship_to=("90012", "US")))
    # L-new's label must reach the stage within the hold: under load three puts may take
    # longer than 0.3 s, so the writer (which publishes what the hold kept, once due) starts
    # only after the three frames are applied, and the hold is checked by the publication
    # times instead
    stage._writer = asyncio.get_running_loop().create_future()
    async with app.tracking["detect"].test_context() as agent:
        for frame in (old, scan, new):
            applying = time.monotonic()
            await agent.put(internal_topic.encode_frame([(1, e) for e in frame]), partition=p)
        if hold:
            assert captured.to(config.alerts_topic) == []  # all held so far
        stage._writer = asyncio.ensure_future(stage._write_loop())
        await stage.drain()
    await stage.stop()
    alerts = [orjson.loads(v) for _, v in captured.to(config.alerts_topic)]
    published = sorted((a["rule"], a["label_id"], a["status"], a["revision"]) for a in alerts)
    if hold:
        # the destination_mismatch raised against L-old and retracted by L-new's label
        # within the hold was never published; the duplicate was, once, and not before the
        # hold of L-new's frame was over
        assert published == [("duplicate_tracking", "L-new", "open", 1)]
        sent_at = [t for (topic, _, _), t in zip(captured.sent, captured.sent_at, strict=True)
                   if topic == config.alerts_topic]
        assert min(sent_at) >= applying + hold
    else:  # published at once, then corrected by its retraction
        assert published == [
            ("destination_mismatch", "L-old", "open", 1),
            ("destination_mismatch", "L-old", "retracted", 2),
            ("duplicate_tracking", "L-new", "open", 1),
        ]


async def test_progress_ends_the_hold_of_a_backlog_once_every_input_is_read_through(
    tmp_path: Path,
) -> None:
    """Frames whose records arrived a minute ago (a backlog) are held until ingest's progress
    records show every input partition read through their arrival + the hold: then at once,
    not 30 s later. One input partition missing from the progress keeps them held; so does a
    frame that arrived just now."""
    hold = 30.0
    config = StreamConfig(app_id="unit-progress", store="memory://", state_dir=tmp_path,
                          alert_hold=hold)
    app, stage, captured, p = stage_on_memory(config)
    old = decoded(label_purchased("h1", "L-old", N1, "seller-A", DEC, ship_to=("10001", "US")))
    scan = decoded(*journey("h2", N1, T0 + timedelta(days=2), "07302", "90012"))
    new = decoded(label_purchased("h3", "L-new", N1, "seller-B", T0, ship_to=("90012", "US")))
    now_ms = int(time.time() * 1000)
    arrived = now_ms - 60_000
    counts = {config.labels_topic: 2, config.scans_topic: 1}

    def progress(*tps: tuple[str, int], at: int) -> bytes:
        return internal_topic.encode_progress(counts, dict.fromkeys(tps, at))

    def published() -> list[tuple[str, str, str, int]]:
        return sorted((a["rule"], a["label_id"], a["status"], a["revision"]) for a in (
            orjson.loads(v) for _, v in captured.to(config.alerts_topic)))

    async with app.tracking["detect"].test_context() as agent:
        for frame in (old, scan, new):
            await agent.put(internal_topic.encode_frame([(now_ms, e) for e in frame],
                                                        arrived_by=arrived), partition=p)
        # labels partition 1 not read through yet: still held
        await agent.put(progress((config.labels_topic, 0), (config.scans_topic, 0),
                                 at=now_ms), partition=p)
        await asyncio.sleep(0.5)
        assert published() == []
        assert stage.read_through_all[p] == 0
        started = time.monotonic()
        await agent.put(progress((config.labels_topic, 1), at=now_ms), partition=p)
        assert stage.read_through_all[p] == now_ms
        for _ in range(100):
            if published():
                break
            await asyncio.sleep(0.02)
        # the retracted destination_mismatch never went out: the hold still absorbed it
        assert published() == [("duplicate_tracking", "L-new", "open", 1)]
        assert time.monotonic() - started < 5.0  # not the 30 s hold
        await stage.drain()
        assert not stage.overlay  # durable, acked
        # a frame that arrived just now is held although the inputs are read through now
        other = decoded(label_purchased("h4", "L-x", N2, "seller-A", DEC),
                        label_purchased("h5", "L-y", N2, "seller-B", T0))
        q = internal_topic.partition_for(f"usps:{N2}".encode(), config.partitions)
        await agent.put(internal_topic.encode_frame([(now_ms, e) for e in other],
                                                    arrived_by=int(time.time() * 1000)),
                        partition=q)
        await agent.put(progress((config.labels_topic, 0), (config.labels_topic, 1),
                                 (config.scans_topic, 0), at=int(time.time() * 1000)),
                        partition=q)
        await asyncio.sleep(0.5)
        assert len(published()) == 1
    await stage.stop()


def test_arrivals_dates_a_record_by_the_first_high_watermark_past_it() -> None:
    from streams.runtime.ingest import Arrivals

    tp = TP("labels", 0)
    arrivals = Arrivals()
    assert arrivals.arrived_by(tp, 5, now_ms=999) == 999  # nothing seen: when it was read
    arrivals.observe(tp, 100, 1_000)  # a backlog of 100 records, seen at 1,000
    arrivals.observe(tp, 100, 1_500)  # the same watermark later: not newer news
    arrivals.observe(tp, 130, 2_000)
    arrivals.observe(tp, None, 2_100)  # no response yet: ignored
    assert arrivals.arrived_by(tp, 0, now_ms=3_000) == 1_000
    assert arrivals.arrived_by(tp, 99, now_ms=3_000) == 1_000
    assert arrivals.arrived_by(tp, 100, now_ms=3_000) == 2_000
    assert arrivals.arrived_by(tp, 129, now_ms=3_000) == 2_000
    assert arrivals.arrived_by(tp, 130, now_ms=3_000) == 3_000  # past every watermark seen
    arrivals.forget([tp])
    assert arrivals.arrived_by(tp, 0, now_ms=4_000) == 4_000


async def test_a_bounded_writer_batch_takes_frames_while_their_merged_states_fit(
        tmp_path: Path) -> None:
    """The response stage's durable batches stay within one atomic changelog write: the
    writer takes queued steps while their states, merged by key, fit `max_batch_bytes`, and
    leaves the first that does not for the next batch (a key written again counts once)."""
    from streams.runtime.detection_stage import Pending
    from streams.runtime.response_stage import ATOMIC_CHANGELOG_BYTES, ResponseStage

    assert ResponseStage.max_batch_bytes is not None
    assert ResponseStage.max_batch_bytes <= ATOMIC_CHANGELOG_BYTES - 1024
    config = StreamConfig(app_id="unit-bounded", store="memory://", state_dir=tmp_path)
    _, stage, _, _ = stage_on_memory(config)
    # a key of 2 bytes and a value of 66 count 100 bytes (32 of them the record's overhead)
    a = Pending(0, {b"k1": b"x" * 66, b"k2": b"x" * 66}, [], [], None, 1)  # 2 x 100 bytes
    b = Pending(0, {b"k1": b"y" * 66}, [], [], None, 1)  # k1 again: +0
    c = Pending(0, {b"k3": b"x" * 66}, [], [], None, 1)  # +100: 300 in all
    d = Pending(0, {b"k4": b"x" * 66}, [], [], None, 1)  # +100: over 350
    for p in (b, c, d):
        stage.queue.put_nowait(p)
    batch = [a]
    carry = stage._take_within(batch, 350)
    assert batch == [a, b, c] and carry is d and stage.queue.empty()
