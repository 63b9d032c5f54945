"""Through a real broker: 10,000 keyed messages out and back, in order, none lost or doubled."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

pytestmark = pytest.mark.integration

MESSAGES = 10_000
PARTITIONS = 6
KEYS = 97


async def test_keyed_roundtrip_keeps_order_and_loses_nothing(kafka_bootstrap, create_topic):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    topic = await create_topic("roundtrip", partitions=PARTITIONS)

    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        futures = []
        for seq in range(MESSAGES):
            key = f"key-{seq % KEYS}".encode()
            futures.append(await producer.send(topic, key=key, value=str(seq).encode()))
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    sent_partition = {seq: md.partition for seq, md in enumerate(metadata)}
    assert len({md.partition for md in metadata}) == PARTITIONS  # keys spread everywhere

    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    received: dict[int, list[tuple[int, bytes, int]]] = defaultdict(list)
    total = 0
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while total < MESSAGES and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            for tp, records in batches.items():
                for r in records:
                    received[tp.partition].append((r.offset, r.key, int(r.value)))
                    total += 1
        # nothing more to arrive: the topic holds exactly what was sent (no duplicate from a
        # retried send), and the consumer is at its end
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        assert sum(ends.values()) == MESSAGES, ends
        assert {tp: await consumer.position(tp) for tp in tps} == ends
    finally:
        await consumer.stop()

    seqs = [seq for recs in received.values() for _, _, seq in recs]
    assert total == MESSAGES, f"received {total} of {MESSAGES}"
    assert len(set(seqs)) == MESSAGES, "duplicates received"
    assert set(seqs) == set(range(MESSAGES)), "messages lost"

    key_partition: dict[bytes, int] = {}
    for partition, recs in received.items():
        offsets = [o for o, _, _ in recs]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
        in_partition = [seq for _, _, seq in recs]
        assert in_partition == sorted(in_partition), f"partition {partition} out of order"
        for _, key, seq in recs:
            assert sent_partition[seq] == partition
            assert key_partition.setdefault(key, partition) == partition, "key split"
