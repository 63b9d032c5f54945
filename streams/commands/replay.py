"""Reprocess the input topics from the beginning (or --from) into replay topics, then stop.

Reads every partition of the labels and scans topics up to the end offsets seen at start
with a plain consumer that has no group: it commits nothing, joins nothing, and so cannot
disturb the live workers' consumer group or their offsets. State is fresh and in memory
(streams.offline: the workers' core, applied in event-time order by default), so the same
history gives the same alert ids as live processing. Alerts go to `--alerts-topic` (default
tracking.alerts.replay) keyed by tracking number, dead letters to `--dead-letters-topic`
(default tracking.deadletter.replay) keyed by the input record's key; both are created when
missing. With `--from TIME` only records from that time on are read: state starts empty
there, so start at least one reuse window (180 days) before the period you care about.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from streams.impact import parse_time
from streams.kafka_io import (
    KafkaUnavailable,
    add_bootstrap_argument,
    config_from_args,
)
from streams.offline import ORDERS, Processor, Summary, paused_gc
from streams.outputs import dumps
from streams.progress import Progress


def configure(parser: argparse.ArgumentParser) -> None:
    add_bootstrap_argument(parser)
    # the worker's environment names the live topics: replay reads the same by default
    parser.add_argument(
        "--labels-topic", default=os.environ.get("TRACKING_VALIDATOR_LABELS_TOPIC") or "labels"
    )
    parser.add_argument(
        "--scans-topic", default=os.environ.get("TRACKING_VALIDATOR_SCANS_TOPIC") or "scans"
    )
    parser.add_argument(
        "--from",
        dest="from_time",
        type=parse_time,
        metavar="TIME",
        help="read records with a timestamp at or after TIME (default: all)",
    )
    parser.add_argument("--alerts-topic", default="tracking.alerts.replay")
    parser.add_argument(
        "--dead-letters-topic", "--deadletter-topic", default="tracking.deadletter.replay"
    )
    parser.add_argument("--partitions", type=int, default=8, help="for topics created (8)")
    parser.add_argument("--replication", type=int, default=1, help="for topics created (1)")
    parser.add_argument("--order", choices=ORDERS, default="event-time")


async def replay(args: argparse.Namespace) -> tuple[Summary, list[str]]:
    """Run the replay; (summary, input topics that do not exist)."""
    from streams.kafka_io import Sender, ensure_topics, make_producer, read_to_end, start_client

    kafka = config_from_args(args)
    if args.alerts_topic in (args.labels_topic, args.scans_topic):
        raise ValueError("the alerts topic must not be an input topic")
    await ensure_topics(
        kafka, [args.alerts_topic, args.dead_letters_topic], args.partitions,
        args.replication,
    )  # fmt: skip
    outbox: list[tuple[str, bytes | None, bytes]] = []

    def on_alert(alert: dict[str, Any]) -> None:
        outbox.append((args.alerts_topic, alert["tracking_number"].encode(), dumps(alert)))

    def on_dead_letter(record: dict[str, Any]) -> None:
        outbox.append((args.dead_letters_topic, current_key, dumps(record)))

    processor = Processor(on_alert, on_dead_letter, order=args.order)
    current_key: bytes | None = None
    missing: list[str] = []
    progress = Progress("replay")

    def on_start(total: int, absent: list[str]) -> None:
        progress.total = total
        missing.extend(absent)

    from_ms = None if args.from_time is None else int(args.from_time.timestamp() * 1000)
    producer = make_producer(kafka)
    await start_client(producer, kafka)
    try:
        sender = Sender(producer)

        async def flush() -> None:
            for topic, key, value in outbox:
                await sender.send(topic, value, key)
            outbox.clear()

        with paused_gc(), progress:
            topics = [args.labels_topic, args.scans_topic]
            async for record in read_to_end(kafka, topics, from_ms, on_start):
                current_key = record.key
                processor.feed(record.value, source=record.topic, partition=record.partition,
                               offset=record.offset, key=record.key)  # fmt: skip
                progress.update()
                if outbox:
                    await flush()
            summary = processor.finish("replay: apply in event-time order")
            await flush()
            await sender.drain()
    finally:
        await producer.stop()
    return summary, missing


def run(args: argparse.Namespace) -> int:
    try:
        summary, missing = asyncio.run(replay(args))
    except (ValueError, KafkaUnavailable) as exc:  # KafkaConfigError is a ValueError
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    for topic in missing:
        print(f"replay: warning: topic {topic} does not exist (read as empty)", file=sys.stderr)
    print(
        summary.line("replay") + f" -> {args.alerts_topic}, {args.dead_letters_topic}",
        file=sys.stderr,
    )
    return 0
