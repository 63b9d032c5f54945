"""Nothing dropped (issue 10, item 5), through the real worker and broker: inputs of any size
the topic accepts are dead-lettered as `too_large` in a record that always fits, and a dead
letter that cannot be produced stops the worker before it commits past the input."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path

import orjson
import pytest
from test_worker_integration import (
    T0,
    committed_lag,
    new_pipeline,
    read_all,
    wait_idle,
    wait_topics,
)

from streams.tools.samples import label_purchased

pytestmark = pytest.mark.integration

MIB = 1 << 20
BIG_TOPIC = {"max.message.bytes": str(10 * MIB)}


async def produce_big(bootstrap: str, topic: str, values: list[bytes]) -> list[int]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                max_request_size=10 * MIB)
    await producer.start()
    try:
        sent = [await producer.send_and_wait(topic, v, partition=0) for v in values]
        return [md.offset for md in sent]
    finally:
        await producer.stop()


def oversized(size: int) -> bytes:
    head = orjson.dumps(label_purchased("big", "L-big", "9400111206206406260787", "s", T0))
    return head[:-1] + b',"padding":"' + b"x" * (size - len(head) - 13) + b'"}'


async def test_inputs_over_the_maximum_become_dead_letters_that_fit(
    kafka_bootstrap: str, tmp_path: Path,
) -> None:
    from streams.runtime.kafka_io import ensure_topics

    p = new_pipeline(kafka_bootstrap, tmp_path, "big")
    await ensure_topics(kafka_bootstrap, [p.topics["labels"], p.topics["scans"]], 3,
                        config=BIG_TOPIC)
    values = [oversized(n) for n in (MIB + 1, 2 * MIB, 8 * MIB)]
    assert [len(v) for v in values] == [MIB + 1, 2 * MIB, 8 * MIB]
    p.start()
    try:
        await wait_topics(kafka_bootstrap, [*p.topics.values(), p.internal_topic])
        offsets = await produce_big(kafka_bootstrap, p.topics["labels"], values)
        await wait_idle(p, timeout=120)
    finally:
        assert p.worker is not None and p.worker.stop() == 0, f"log {p.log}"
    dead = {d["offset"]: d for d in (orjson.loads(r.value) for r in
                                     await read_all(kafka_bootstrap, p.topics["deadletter"]))}
    assert sorted(dead) == offsets
    for offset, value in zip(offsets, values, strict=True):
        d = dead[offset]
        assert d["error"]["code"] == "too_large"
        assert d["value_size"] == len(value)
        assert d["value_sha256"] == hashlib.sha256(value).hexdigest()
        assert base64.b64decode(d["value_b64"]) == value[:MIB]  # the first max bytes


async def test_a_dead_letter_that_cannot_be_produced_stops_the_worker_before_its_commit(
    kafka_bootstrap: str, tmp_path: Path,
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from streams.runtime.kafka_io import ensure_topics

    p = new_pipeline(kafka_bootstrap, tmp_path, "stuckdlq")
    await ensure_topics(kafka_bootstrap, [p.topics["labels"], p.topics["scans"]], 1)
    # a dead-letter topic too small for any dead letter: producing one must fail
    await ensure_topics(kafka_bootstrap, [p.topics["deadletter"]], 1,
                        config={"max.message.bytes": "200"})
    [bad] = await produce_big(kafka_bootstrap, p.topics["labels"], [b"{not json"])
    p.start()
    assert p.worker is not None
    exit_code = await asyncio.to_thread(p.worker.process.wait, 120)  # type: ignore[union-attr]
    assert exit_code != 0, f"the worker must stop; log {p.log}"
    assert "fatal" in p.log.read_text().lower()
    # not committed past the record: it is read again
    group = f"{p.app_id}-ingest"
    assert await committed_lag(kafka_bootstrap, group, [p.topics["labels"]]) == bad + 1

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(
            ConfigResourceType.TOPIC, p.topics["deadletter"],
            configs={"max.message.bytes": str(4 * MIB)})])
    finally:
        await admin.close()
    p.start()  # the topic fixed: the same record is dead-lettered now
    try:
        await wait_idle(p, timeout=120)
    finally:
        assert p.worker.stop() == 0, f"log {p.log}"
    dead = [orjson.loads(r.value) for r in await read_all(kafka_bootstrap,
                                                           p.topics["deadletter"])]
    assert [(d["offset"], d["error"]["code"]) for d in dead] == [(bad, "invalid_json")]
