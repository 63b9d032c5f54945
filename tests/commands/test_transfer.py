"""import/export: JSON Lines to and from a topic, keys and timestamps kept."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest

from streams.commands.cli import main
from streams.commands.transfer import to_record

LABEL = {
    "type": "label.purchased",
    "event_id": "e-1",
    "tracking_number": "1Z999AA10123456784",
    "order_id": "O-1",
    "purchased_at": "2025-03-01T10:00:00Z",
}
HISTORY = {"retention.ms": "-1"}  # event-time timestamps from 2025: keep them


def test_plain_message_keyed_by_field_and_stamped_with_event_time() -> None:
    line = orjson.dumps(LABEL)
    key, value, stamp, kind = to_record(line, "tracking_number")
    assert (key, value, kind) == (b"1Z999AA10123456784", line, "message")
    assert stamp == 1740823200000
    assert to_record(line, "order_id")[0] == b"O-1"
    assert to_record(line, None)[0] is None
    assert to_record(line, "absent")[0] is None


def test_exported_record_and_raw_lines() -> None:
    record = {"key": "k", "value": LABEL, "timestamp": "2025-03-01T10:00:00.250Z", "partition": 3}
    assert to_record(orjson.dumps(record), "tracking_number") == (
        b"k", orjson.dumps(LABEL), 1740823200250, "record",
    )  # fmt: skip
    binary = {"key_b64": base64.b64encode(b"\xff").decode(), "value_b64": "AAE=", "key": None}
    assert to_record(orjson.dumps(binary), None)[:2] == (b"\xff", b"\x00\x01")
    assert to_record(b"{not json", "x") == (None, b"{not json", None, "raw")
    assert to_record(b"[1, 2]", "x") == (None, b"[1, 2]", None, "raw")


def _records(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _essence(records: list[dict]) -> Counter:
    return Counter(
        (r.get("key"), r.get("key_b64"), orjson.dumps(r.get("value")), r.get("value_b64"),
         r["timestamp"])
        for r in records
    )  # fmt: skip


@pytest.mark.integration
async def test_export_import_round_trip(kafka_bootstrap: str, create_topic, tmp_path: Path) -> None:
    first = await create_topic("transfer-a", partitions=3, config=HISTORY)
    second = await create_topic("transfer-b", partitions=3, config=HISTORY)
    source = tmp_path / "in.jsonl"
    messages = [
        {**LABEL, "event_id": f"e-{i}", "order_id": f"O-{i % 7}",
         "purchased_at": f"2025-03-01T{10 + i // 60:02d}:{i % 60:02d}:00Z"}
        for i in range(200)
    ]  # fmt: skip
    source.write_bytes(
        b"".join(orjson.dumps(m) + b"\n" for m in messages)
        + b"not json at all\n\n"  # sent as it is (for the processor to dead-letter)
    )
    boot = ["--bootstrap", kafka_bootstrap]

    def cli(*argv: str) -> int:
        return main([*argv, *boot])

    assert (
        await asyncio.to_thread(
            cli, "import", str(source), "--topic", first, "--key-field", "order_id"
        )
        == 0
    )
    exported = tmp_path / "a.jsonl"
    assert await asyncio.to_thread(cli, "export", "--topic", first, str(exported)) == 0
    records = _records(exported)
    assert len(records) == 201
    keyed = [r for r in records if r["key"] is not None]
    assert {r["key"] for r in keyed} == {f"O-{i}" for i in range(7)}
    assert Counter(orjson.dumps(r["value"]) for r in keyed) == Counter(
        orjson.dumps(m) for m in messages
    )
    assert {r["timestamp"] for r in keyed} == {f"{m['purchased_at'][:-1]}.000Z" for m in messages}
    raw = [r for r in records if r["key"] is None]
    assert [base64.b64decode(r["value_b64"]) for r in raw] == [b"not json at all"]

    assert await asyncio.to_thread(cli, "import", str(exported), "--topic", second) == 0
    again = tmp_path / "b.jsonl"
    assert await asyncio.to_thread(cli, "export", "--topic", second, str(again)) == 0
    copied = _records(again)
    assert _essence(copied) == _essence(records)
    # same key, same partition count -> same partition (the default partitioner hashes keys)
    assert {(r["key"], r["partition"]) for r in copied if r["key"]} == {
        (r["key"], r["partition"]) for r in keyed
    }

    since = tmp_path / "since.jsonl"
    assert (
        await asyncio.to_thread(
            cli, "export", "--topic", first, str(since), "--from", "2025-03-01T12:30:00Z"
        )
        == 0
    )
    stamps = [r["timestamp"] for r in _records(since)]  # 50 labels + the raw line (now)
    assert len(stamps) == 50 + 1 and all(s >= "2025-03-01T12:30:00" for s in stamps)


@pytest.mark.integration
def test_export_of_a_missing_topic_exits_2(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"
    argv = ["export", "--topic", "no-such-topic-e5", str(out), "--bootstrap", kafka_bootstrap]
    assert main(argv) == 2


# ------------------------------------------------------------------ import of large lines

def unique_topic_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


BIG = 3 << 20  # 3 MiB: over the worker's 1 MiB --max-message-bytes, under 8 MiB topics


def _eleven_lines_with_a_big_one(path: Path) -> list[bytes]:
    """Eleven contract labels of distinct numbers; line 5 padded to 3 MiB."""
    from datetime import UTC, datetime

    from streams.core.numbers import generate
    from streams.tools.samples import label_purchased

    at = datetime(2025, 3, 1, 10, tzinfo=UTC)
    messages = [label_purchased(f"e-{i}", f"L-{i}", generate("usps", "usps_impb"), "S-1", at)
                for i in range(11)]
    messages[4]["notes"] = "x" * BIG  # line 5: valid JSON, just too big
    lines = [orjson.dumps(m) for m in messages]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return lines


async def _exported_values(kafka_bootstrap: str, topic: str, tmp_path: Path) -> list[bytes]:
    out = tmp_path / f"{topic}.jsonl"
    argv = ["export", "--topic", topic, str(out), "--bootstrap", kafka_bootstrap]
    assert await asyncio.to_thread(main, argv) == 0
    return [orjson.dumps(r["value"]) for r in _records(out)]


@pytest.mark.integration
async def test_import_sends_a_3_mib_line_to_the_topic_it_creates(
        kafka_bootstrap: str, kafka_admin, tmp_path: Path) -> None:
    from streams.runtime.kafka_io import topic_configs

    source = tmp_path / "big.jsonl"
    lines = _eleven_lines_with_a_big_one(source)
    topic = unique_topic_name("import-big")
    try:
        argv = ["import", str(source), "--topic", topic, "--bootstrap", kafka_bootstrap]
        assert await asyncio.to_thread(main, argv) == 0
        # the history is kept and the oversized message is there for the worker to
        # dead-letter as too_large
        found = (await topic_configs(kafka_bootstrap, [topic],
                                     ["retention.ms", "max.message.bytes"]))[topic]
        assert found == {"retention.ms": "-1", "max.message.bytes": str(8 << 20)}
        values = await _exported_values(kafka_bootstrap, topic, tmp_path)
        assert Counter(values) == Counter(lines)
    finally:
        await kafka_admin.delete_topics([topic])


@pytest.mark.integration
async def test_import_names_a_line_the_topic_cannot_hold_and_sends_the_others(
        kafka_bootstrap: str, create_topic, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    topic = await create_topic("import-small", config=HISTORY)  # the broker's 1 MiB limit
    source = tmp_path / "big.jsonl"
    lines = _eleven_lines_with_a_big_one(source)
    argv = ["import", str(source), "--topic", topic, "--bootstrap", kafka_bootstrap]
    assert await asyncio.to_thread(main, argv) == 1
    err = capsys.readouterr().err
    assert f"{source}:5: not sent:" in err and "max.message.bytes=" in err
    assert "Traceback" not in err and ":4:" not in err and ":6:" not in err
    assert "import: 10 records to" in err and "1 lines not sent" in err
    values = await _exported_values(kafka_bootstrap, topic, tmp_path)
    assert Counter(values) == Counter(lines[:4] + lines[5:])


@pytest.mark.integration
async def test_worker_creates_input_topics_as_import_does(
        kafka_bootstrap: str, kafka_admin, tmp_path: Path) -> None:
    from streams.runtime.kafka_io import input_topic_config, topic_configs
    from streams.runtime.stream_config import StreamConfig
    from streams.runtime.topics import declare_topics

    config = StreamConfig(app_id=unique_topic_name("declare"), bootstrap=kafka_bootstrap,
                          partitions=2, labels_topic=unique_topic_name("labels"),
                          scans_topic=unique_topic_name("scans"),
                          alerts_topic=unique_topic_name("alerts"),
                          deadletter_topic=unique_topic_name("dead"))
    created = await declare_topics(config)
    try:
        inputs = [config.labels_topic, config.scans_topic]
        found = await topic_configs(kafka_bootstrap, inputs,
                                    ["retention.ms", "max.message.bytes"])
        assert found == {t: input_topic_config() for t in inputs}
        source = tmp_path / "big.jsonl"
        lines = _eleven_lines_with_a_big_one(source)
        argv = ["import", str(source), "--topic", config.labels_topic,
                "--bootstrap", kafka_bootstrap]
        assert await asyncio.to_thread(main, argv) == 0
        values = await _exported_values(kafka_bootstrap, config.labels_topic, tmp_path)
        assert Counter(values) == Counter(lines)
    finally:
        await kafka_admin.delete_topics(created)


@pytest.mark.integration
async def test_an_imported_3_mib_line_reaches_the_worker_which_dead_letters_it(
        kafka_bootstrap: str, kafka_admin, tmp_path: Path) -> None:
    """End to end: the worker creates its input topics, `import` sends all 11 lines, and the
    worker dead-letters the 3 MiB one as too_large (over its 1 MiB --max-message-bytes)."""
    import tempfile
    import time

    from streams.commands.demo import WorkerProcess
    from streams.runtime.kafka_io import read_to_end

    run = unique_topic_name("import-worker")
    topics = {name: f"{run}.{name}" for name in ("labels", "scans", "alerts", "dead")}
    source = tmp_path / "big.jsonl"
    lines = _eleven_lines_with_a_big_one(source)
    with tempfile.TemporaryDirectory() as state, WorkerProcess(
        ["--bootstrap", kafka_bootstrap, "--app-id", run, "--state-dir", state,
         "--partitions", "2", "--labels-topic", topics["labels"],
         "--scans-topic", topics["scans"], "--alerts-topic", topics["alerts"],
         "--deadletter-topic", topics["dead"], "--commit-interval", "0.5",
         "--loglevel", "warning"],
        log=tmp_path / "worker.log",
    ) as worker:
        deadline = time.monotonic() + 120
        while topics["labels"] not in set(await kafka_admin.list_topics()):
            assert worker.poll() is None and time.monotonic() < deadline
            await asyncio.sleep(0.3)
        argv = ["import", str(source), "--topic", topics["labels"],
                "--bootstrap", kafka_bootstrap]
        assert await asyncio.to_thread(main, argv) == 0

        async def committed() -> int:  # input records ingest is done with
            from aiokafka.errors import KafkaError

            try:
                offsets = await kafka_admin.list_consumer_group_offsets(f"{run}-ingest")
            except KafkaError:  # a fresh broker: no group coordinator yet
                return 0
            return sum(o.offset for tp, o in offsets.items() if tp.topic == topics["labels"])

        while await committed() < len(lines):
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the worker did not process the import"
            await asyncio.sleep(0.3)
        letters = [orjson.loads(r.value)
                   async for r in read_to_end(kafka_bootstrap, [topics["dead"]])]
    # the other ten are events: only the big one is dead-lettered
    assert [(d["error"]["code"], d["source_topic"], d.get("value_size")) for d in letters] == [
        ("too_large", topics["labels"], len(lines[4]))]
    await kafka_admin.delete_topics([t for t in set(await kafka_admin.list_topics())
                                     if t.startswith(run)])
