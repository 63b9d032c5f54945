"""Reprocess the input topics from the beginning (or --from) into replay topics, then stop.

By default replay runs on the stream runtime, the same one the workers run: a fresh
application id of its own (`--replay-id`, default `replay-<UTC time>`: its own consumer
groups, internal topic and changelog, so the live workers' groups and offsets are never
touched), state in RocksDB on disk (`--state-dir`), memory bounded whatever the history's
length. It reads every partition of the labels and scans topics up to the end offsets seen
at start, and stops once the whole group is done. Several `replay` processes started with
the same --replay-id (on one machine or many) share the partitions. Alerts go, with their
revisions, to `--alerts-topic` (default tracking.alerts.replay) keyed by tracking number;
dead letters to `--dead-letters-topic` (default tracking.deadletter.replay). `--cleanup`
deletes the replay's internal topics and local state afterwards.

`--in-memory` runs the offline core in this one process instead (state and the decoded
history in memory, applied in event-time order): quicker to start for a small history (no
topics or consumer groups to set up), but its memory grows with the history (~1.4 KB per
event), so it is for histories of up to a few hundred thousand events. It also writes the
response (contract, "Incidents and actions"), as `scan --incidents/--actions` does: the
incidents to `--incidents-topic` (default tracking.incidents.replay, key `carrier:channel`)
and the due actions to `--actions-topic` (default tracking.actions.replay, key `order_id`),
at the watermark of the greatest event time read, after the alerts.

With `--from TIME` only records from that time on are read: state starts empty there, so
start at least one reuse window (180 days) before the period you care about.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streams.commands import response_settings
from streams.core.outputs import dumps
from streams.runtime.kafka_io import (
    KafkaUnavailable,
    add_bootstrap_argument,
    config_from_args,
)
from streams.tools.impact import parse_time
from streams.tools.offline import ORDERS, Processor, Response, Summary, paused_gc
from streams.tools.progress import Progress


def configure(parser: argparse.ArgumentParser) -> None:
    add_bootstrap_argument(parser)
    # the worker's environment names the live topics: replay reads the same by default
    parser.add_argument(
        "--labels-topic", default=os.environ.get("TRACKING_VALIDATOR_LABELS_TOPIC") or "labels",
        help="input topic of label events (env TRACKING_VALIDATOR_LABELS_TOPIC; default labels)",
    )
    parser.add_argument(
        "--scans-topic", default=os.environ.get("TRACKING_VALIDATOR_SCANS_TOPIC") or "scans",
        help="input topic of carrier scans (env TRACKING_VALIDATOR_SCANS_TOPIC; default scans)",
    )
    parser.add_argument(
        "--from",
        dest="from_time",
        type=parse_time,
        metavar="TIME",
        help="read records with a timestamp at or after TIME (default: all)",
    )
    parser.add_argument("--alerts-topic", default="tracking.alerts.replay",
                        help="where the replay's alerts go, revisions included (default "
                        "tracking.alerts.replay; never an input topic)")
    parser.add_argument("--incidents-topic", default="tracking.incidents.replay",
                        help="incidents out, key carrier:channel (tracking.incidents.replay)")
    parser.add_argument("--actions-topic", default="tracking.actions.replay",
                        help="per-order actions out, key order_id (tracking.actions.replay)")
    parser.add_argument("--deadletter-topic", "--dead-letters-topic", dest="dead_letters_topic",
                        default="tracking.deadletter.replay",
                        help="where the replay's dead letters go (default "
                        "tracking.deadletter.replay)")
    parser.add_argument("--partitions", type=int, default=8,
                        help="partitions of the topics created, and of the replay's internal "
                        "topic and changelog (8)")
    parser.add_argument("--replication", type=int, default=1, help="for topics created (1)")
    parser.add_argument("--replay-id", default=None,
                        help="application id of the replay (consumer groups, internal topics);"
                        " give every process of one replay the same (default replay-<UTC "
                        "time>)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="RocksDB state of this process (default: a directory under the "
                        "system's temporary directory, removed afterwards)")
    parser.add_argument("--cleanup", action="store_true",
                        help="afterwards, delete the replay's internal topic and changelog "
                        "(and this process's state)")
    parser.add_argument("--in-memory", action="store_true",
                        help="run the offline core in this process, state in memory: for "
                        "small histories only (memory grows ~1.4 KB per event)")
    parser.add_argument("--order", choices=ORDERS, default="event-time",
                        help="with --in-memory: apply in event-time order (default) or input "
                        "order")
    parser.add_argument("--log-level", "--loglevel", dest="loglevel", default="warning",
                        choices=["debug", "info", "warning", "error"],
                        help="log level of the stream runtime (default warning)")
    response_settings.add_arguments(parser)


def incident_key(record: dict[str, Any]) -> bytes:
    """The tracking.incidents record key: `carrier:channel`."""
    return f"{record['carrier']}:{record['channel']}".encode()


async def replay(args: argparse.Namespace) -> tuple[Summary, list[str]]:
    """Run the replay; (summary, input topics that do not exist). The response's records
    are left in `args.response_records` (incidents, actions)."""
    from streams.runtime.kafka_io import (
        Sender,
        ensure_topics,
        make_producer,
        read_to_end,
        start_client,
    )

    kafka = config_from_args(args)
    settings = response_settings.settings_from(args)
    outputs = [args.alerts_topic, args.dead_letters_topic, args.incidents_topic,
               args.actions_topic]
    if set(outputs) & {args.labels_topic, args.scans_topic}:
        raise ValueError("an output topic must not be an input topic")
    await ensure_topics(kafka, outputs, args.partitions, args.replication)
    outbox: list[tuple[str, bytes | None, bytes]] = []

    def on_alert(alert: dict[str, Any]) -> None:
        outbox.append((args.alerts_topic, alert["tracking_number"].encode(), dumps(alert)))

    def on_dead_letter(record: dict[str, Any]) -> None:
        outbox.append((args.dead_letters_topic, current_key, dumps(record)))

    response = Response(on_alert, settings)
    processor = Processor(response.on_alert, on_dead_letter, settings, order=args.order)
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
            incidents, actions = response.records(summary.watermark)
            for record in incidents:
                outbox.append((args.incidents_topic, incident_key(record), dumps(record)))
            for record in actions:
                outbox.append((args.actions_topic, record["order_id"].encode(), dumps(record)))
            args.response_records = (incidents, actions)
            await flush()
            await sender.drain()
    finally:
        await producer.stop()
    return summary, missing


def run(args: argparse.Namespace) -> int:
    if not args.in_memory:
        return run_on_stream_runtime(args)
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
    from streams.commands.scan import response_line

    incidents, actions = args.response_records
    print(response_line("replay", incidents, actions)
          + f" -> {args.incidents_topic}, {args.actions_topic}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- on the stream runtime


def default_replay_id() -> str:
    return "replay-" + datetime.now(UTC).strftime("%Y%m%dt%H%M%S")


def run_on_stream_runtime(args: argparse.Namespace) -> int:
    """One replay process on the stream runtime (streams.runtime.app in replay mode)."""
    import shutil
    import tempfile
    import time

    from streams.commands.worker import serve
    from streams.runtime.stream_config import StreamConfig

    try:
        kafka = config_from_args(args)
        settings = response_settings.settings_from(args)
    except ValueError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    if args.alerts_topic in (args.labels_topic, args.scans_topic):
        print("replay: the alerts topic must not be an input topic", file=sys.stderr)
        return 2
    from streams.runtime.kafka_io import KafkaUnavailable, check_connection

    try:  # a refused connection: one line and exit 2, as every command
        asyncio.run(check_connection(kafka))
    except KafkaUnavailable as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    replay_id = args.replay_id or default_replay_id()
    own_state = args.state_dir is None
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix=f"tv-{replay_id}-"))
    config = StreamConfig(
        app_id=replay_id, bootstrap=kafka.bootstrap, kafka=kafka, state_dir=state_dir,
        partitions=args.partitions, replication=args.replication,
        labels_topic=args.labels_topic, scans_topic=args.scans_topic,
        alerts_topic=args.alerts_topic, deadletter_topic=args.dead_letters_topic,
        # never the live response topics
        incidents_topic=args.incidents_topic, actions_topic=args.actions_topic,
        settings=settings, replay=True,
        replay_from_ms=None if args.from_time is None else int(args.from_time.timestamp()
                                                               * 1000),
    )
    progress = Progress("replay")
    state: dict[str, Any] = {}

    def on_progress(done: int, total: int) -> None:
        progress.total = total
        progress.update(done - progress.done, done - progress.count)

    def on_built(app: Any) -> None:
        state["app"] = app
        app.tracking["runtime"]["replay_progress"] = on_progress

    print(f"replay {replay_id}: {args.labels_topic}, {args.scans_topic} -> "
          f"{args.alerts_topic}, {args.dead_letters_topic}", file=sys.stderr)
    started = time.monotonic()
    try:
        with progress:
            code = serve(config, loglevel=args.loglevel, on_built=on_built)
    finally:
        if own_state or args.cleanup:
            shutil.rmtree(state_dir, ignore_errors=True)
    app = state.get("app")
    runtime = app.tracking["runtime"] if app is not None else {}
    if code != 0 or runtime.get("replay_done") is None:
        print(f"replay {replay_id}: stopped before the end (exit {code or 1}); run it again "
              "with the same --replay-id to continue", file=sys.stderr)
        return code or 1
    seconds = time.monotonic() - started
    ingest, stage = runtime["ingest"], app.tracking["stage"]
    print(f"replay {replay_id}: this process read {ingest.records:,} records "
          f"({ingest.dead_letters:,} dead letters), applied {stage.events:,} events, "
          f"published {stage.alerts:,} alerts and revisions, {seconds:.1f}s, "
          f"{stage.events / max(seconds, 1e-9):,.0f} events/s", file=sys.stderr)
    if args.cleanup:
        asyncio.run(cleanup(kafka, config))
    return 0


async def cleanup(kafka: Any, config: Any) -> None:
    """Delete the replay's internal topics (its consumer groups expire on their own)."""
    from streams.runtime.kafka_io import make_admin

    admin = make_admin(kafka)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        mine = [t for t in (config.internal_topic_name, config.changelog_topic,
                            config.response_topic_name, config.response_changelog_topic,
                            f"{config.app_id}-__assignor-__leader") if t in existing]
        if mine:
            await admin.delete_topics(mine)
            print(f"replay {config.app_id}: deleted {', '.join(mine)}", file=sys.stderr)
    finally:
        await admin.close()
