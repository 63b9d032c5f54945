"""Print alerts from the alerts topic, one line each in the demo's format; --follow for new ones.

Without --follow it prints the topic from the beginning up to the end offsets seen at start
and exits. With --follow it prints the alerts that arrive from now on (or, with --from, the
history from that event time first) until SIGINT/SIGTERM. Each revision prints once (repeats
of an at-least-once delivery are skipped); a revision says so ("revised", RETRACTED).
--rule, --carrier and --seller select (each repeatable); --format json prints each alert as
published, one JSON object a line.

Exit status: 0 (also when stopped by a signal), 2 on a usage error or an unreachable Kafka.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from datetime import datetime
from typing import IO, Any

import orjson

from streams.commands.demo import format_alert
from streams.runtime import kafka_io
from streams.tools.impact import parse_time


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--follow", "-f", action="store_true",
        help="keep printing alerts as they arrive (default: print up to now and exit)")
    add("--from", dest="since", type=parse_time, default=None, metavar="TIME",
        help="only alerts with this event time or later (RFC 3339 or a date); with --follow, "
        "the history from there is printed first")
    add("--rule", action="append", default=[], help="only this rule (repeatable)")
    add("--carrier", action="append", default=[], help="only this carrier code (repeatable)")
    add("--seller", action="append", default=[], help="only this seller_id (repeatable)")
    add("--format", choices=["text", "json"], default="text",
        help="text: one readable line (the demo's); json: the alert as published")
    add("--alerts-topic", default="tracking.alerts", help="default tracking.alerts")
    kafka_io.add_bootstrap_argument(parser)


class Printer:
    def __init__(self, args: argparse.Namespace, out: IO[str]) -> None:
        self.since: datetime | None = args.since
        self.rules = set(args.rule)
        self.carriers = set(args.carrier)
        self.sellers = set(args.seller)
        self.json = args.format == "json"
        self.out = out
        self.seen: dict[str, int] = {}  # alert_id -> highest revision printed

    def wanted(self, alert: dict[str, Any]) -> bool:
        if (self.rules and alert.get("rule") not in self.rules) or (
                self.carriers and alert.get("carrier") not in self.carriers) or (
                self.sellers and alert.get("seller_id") not in self.sellers):
            return False
        if self.since is not None:
            try:
                moment = parse_time(str(alert.get("event_time")))
            except ValueError:
                return False
            return moment >= self.since
        return True

    def take(self, value: bytes | None) -> None:
        try:
            alert = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            return
        if not isinstance(alert, dict) or not self.wanted(alert):
            return
        alert_id, revision = alert.get("alert_id"), alert.get("revision") or 1
        if isinstance(alert_id, str):
            if revision <= self.seen.get(alert_id, 0):
                return
            self.seen[alert_id] = revision
        line = orjson.dumps(alert).decode() if self.json else format_alert(alert)
        print(line, file=self.out, flush=True)


async def follow(kafka: Any, topic: str, printer: Printer, from_start: bool,
                 stop: asyncio.Event) -> None:
    """Print the alerts of `topic` until `stop`: from the beginning when `from_start`, else
    those produced from now on; partitions (and the topic) that appear later are read from
    their beginning."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    config = kafka_io.client_config(kafka)
    consumer = AIOKafkaConsumer(bootstrap_servers=config.bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                **config.aiokafka_kwargs())
    await kafka_io.start_client(consumer, config)
    try:
        assigned: set[Any] = set()
        first = True
        while not stop.is_set():
            with contextlib.suppress(Exception):  # the broker away: try again shortly
                cluster = await asyncio.wait_for(consumer._client.fetch_all_metadata(), 5)
                parts = {TopicPartition(topic, p)
                         for p in cluster.partitions_for_topic(topic) or ()}
                if parts - assigned:
                    positions = {tp: await consumer.position(tp) for tp in assigned}
                    consumer.assign(sorted(parts))
                    for tp, at in positions.items():
                        consumer.seek(tp, at)
                    new = sorted(parts - assigned)
                    if first and not from_start:
                        await consumer.seek_to_end(*new)
                    else:
                        await consumer.seek_to_beginning(*new)
                    if not assigned:
                        where = "--from" if from_start else "now"
                        print(f"alerts: following {topic} from {where}", file=sys.stderr,
                              flush=True)
                    assigned = parts
                first = False
            deadline = asyncio.get_running_loop().time() + 2.0
            while not stop.is_set() and asyncio.get_running_loop().time() < deadline:
                if not assigned:
                    await asyncio.sleep(0.2)
                    continue
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        printer.take(record.value)
    finally:
        await consumer.stop()


def run(args: argparse.Namespace) -> int:
    import logging

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        kafka = kafka_io.config_from_args(args)
    except kafka_io.KafkaConfigError as exc:
        print(f"alerts: {exc}", file=sys.stderr)
        return 2
    printer = Printer(args, sys.stdout)

    async def main() -> int:
        if not args.follow:
            async for record in kafka_io.read_to_end(kafka, [args.alerts_topic]):
                printer.take(record.value)
            return 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await follow(kafka, args.alerts_topic, printer, args.since is not None, stop)
        return 0

    try:
        return asyncio.run(main())
    except (kafka_io.KafkaUnavailable, kafka_io.KafkaConfigError) as exc:
        print(f"alerts: {exc}", file=sys.stderr)
        return 2
