"""Generate realistic label and scan traffic, optionally with a number-reuse incident.

To files (`--out DIR`: labels.jsonl, scans.jsonl, ground_truth.jsonl, manifest.json; or one
events.jsonl with `--combined`) and/or to Kafka (`--bootstrap`: the labels and scans topics,
created if missing, at `--rate` messages per second, record timestamps = event time).
Messages come in arrival order. ground_truth.jsonl lists what the contract demands of them,
derived from what was injected, one JSON object a line with `kind`: `alert` (rule,
tracking_number, carrier, label_id, severity), then `incident` and `action` (the records that
`scan --incidents/--actions` must write, `detected_at` aside). `--incident-channel` and
`--incident-labels` make the incident one carrier and channel's, of many sellers.
Same seed and flags, same bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from streams.runtime import kafka_security
from streams.runtime.kafka_io import INPUT_RETENTION_MS
from streams.tools.impact import parse_time
from streams.tools.progress import Progress
from streams.tools.simulation import DEFAULT_START, Params, World, lines, serialize, simulate


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=1,
                        help="random seed: the same seed gives the same traffic (default 1)")
    parser.add_argument("--labels", type=int, default=2000, help="labels bought (default 2000)")
    parser.add_argument("--days", type=float, default=90.0, help="span of purchases (90)")
    parser.add_argument("--start", type=parse_time, default=DEFAULT_START,
                        help="first day of traffic (default 2025-01-01)")  # fmt: skip
    parser.add_argument("--sellers", type=int, help="default: one per 25 labels, at least 8")
    parser.add_argument("--in-house-share", type=float, default=0.2,
                        help="in-house (scan-only) USPS shipments per label (0.2)")  # fmt: skip
    inc = parser.add_argument_group("incident: the label platform re-issues old USPS numbers")
    inc.add_argument(
        "--incident-start",
        metavar="TIME|+DAYS",
        help="start of the incident (RFC 3339, date, or +N days after --start)",
    )
    inc.add_argument("--incident-days", type=float, default=3.0,
                     help="how long the incident lasts, days (default 3)")
    inc.add_argument(
        "--incident-share",
        type=float,
        default=0.3,
        help="share of USPS labels in the window given a used number (0.3)",
    )
    inc.add_argument("--reuse-age-days", type=float, default=60.0,
                     help="how old the re-issued numbers are (60)")  # fmt: skip
    inc.add_argument("--incident-channel", metavar="CHANNEL",
                     help="re-issue only through this channel, e.g. buy_shipping (default: any)")
    inc.add_argument("--incident-labels", type=int, default=0, metavar="N",
                     help="N more labels in the window given used numbers: USPS, through "
                     "--incident-channel (default buy_shipping), sellers drawn evenly (0)")
    noise = parser.add_argument_group("faults and noise (shares of labels)")
    for flag, default in (
        ("invalid-share", 0.005), ("void-share", 0.03), ("voided-shipped-share", 0.003),
        ("mismatch-share", 0.003), ("reprint-share", 0.02), ("retry-share", 0.01),
        ("late-label-share", 0.01), ("skew-share", 0.01),
    ):  # fmt: skip
        noise.add_argument(f"--{flag}", type=float, default=default, help=f"({default})")
    noise.add_argument("--malformed", type=int, default=0,
                       help="messages that must be dead-lettered (0)")  # fmt: skip
    out = parser.add_argument_group("output")
    out.add_argument("--out", metavar="DIR", help="write JSON Lines files here")
    out.add_argument(
        "--combined",
        action="store_true",
        help="one events.jsonl (labels and scans interleaved) instead of two files",
    )
    out.add_argument("--bootstrap", metavar="HOST:PORT", help="also produce to Kafka")
    kafka_security.add_arguments(out)  # --kafka-config: also produce to Kafka
    out.add_argument("--rate", type=float, default=0.0, help="messages/s to Kafka (0 = max)")
    out.add_argument("--labels-topic", default="labels",
                     help="topic of the label events, with --bootstrap (default labels)")
    out.add_argument("--scans-topic", default="scans",
                     help="topic of the carrier scans, with --bootstrap (default scans)")
    out.add_argument("--partitions", type=int, default=8, help="for topics created (8)")
    out.add_argument(
        "--retention-ms",
        type=int,
        default=INPUT_RETENTION_MS,
        help=f"for topics created ({INPUT_RETENTION_MS} = forever, as import and worker "
        f"create input topics: timestamps are event times)",
    )


def params_from(args: argparse.Namespace) -> Params:
    incident = None
    if args.incident_start:
        text = args.incident_start
        if text.startswith("+"):
            incident = args.start + timedelta(days=float(text[1:]))
        else:
            incident = parse_time(text)
    return Params(
        seed=args.seed, labels=args.labels, days=args.days, start=args.start,
        sellers=args.sellers, in_house_share=args.in_house_share, incident_start=incident,
        incident_days=args.incident_days, incident_share=args.incident_share,
        reuse_age_days=args.reuse_age_days, incident_channel=args.incident_channel,
        incident_labels=args.incident_labels, invalid_share=args.invalid_share,
        void_share=args.void_share, voided_shipped_share=args.voided_shipped_share,
        mismatch_share=args.mismatch_share, reprint_share=args.reprint_share,
        retry_share=args.retry_share, late_label_share=args.late_label_share,
        skew_share=args.skew_share, malformed=args.malformed,
    )  # fmt: skip


def manifest(world: World) -> dict[str, Any]:
    p = world.params
    return {
        "seed": p.seed,
        "labels": p.labels,
        "start": p.start.isoformat(),
        "days": p.days,
        "incident_start": p.incident_start.isoformat() if p.incident_start else None,
        "incident_days": p.incident_days,
        "reuse_age_days": p.reuse_age_days,
        "messages": Counter(m.topic for m in world.messages),
        "shipments": Counter(s.kind for s in world.shipments),
        "malformed": world.malformed,
        "ground_truth": Counter(g["rule"] for g in world.ground_truth),
        "incidents": len(world.incidents),
        "actions": len(world.actions),
    }


def write_files(world: World, out: Path, combined: bool = False,
                progress: Progress | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    if progress is not None:
        progress.total = len(world.messages)
    names: dict[str, str | None] = {"labels.jsonl": "labels", "scans.jsonl": "scans"}
    if combined:
        names = {"events.jsonl": None}
    written = []
    for name, topic in names.items():
        with open(out / name, "wb") as handle:
            for line in lines(world.messages, topic):
                handle.write(line)
                if progress is not None:
                    progress.update()
        written.append(out / name)
    with open(out / "ground_truth.jsonl", "wb") as handle:
        for kind, records in (("alert", world.ground_truth), ("incident", world.incidents),
                              ("action", world.actions)):
            handle.writelines(orjson.dumps({"kind": kind, **r}) + b"\n" for r in records)
    (out / "manifest.json").write_bytes(orjson.dumps(manifest(world), option=orjson.OPT_INDENT_2))
    return [*written, out / "ground_truth.jsonl", out / "manifest.json"]


async def produce(world: World, args: argparse.Namespace) -> int:
    from streams.runtime.kafka_io import (
        Sender,
        ensure_topics,
        finite_retention,
        input_topic_config,
        make_producer,
        retention_warning,
        start_client,
    )

    kafka = args.kafka
    topics = {"labels": args.labels_topic, "scans": args.scans_topic}
    config = input_topic_config(args.retention_ms)
    await ensure_topics(kafka, topics.values(), args.partitions, 1, config)
    if short := await finite_retention(kafka, topics.values()):
        print(retention_warning("simulate", short), file=sys.stderr)
    producer = make_producer(kafka)
    await start_client(producer, kafka)
    sender = Sender(producer)
    started = time.monotonic()
    try:
        with Progress("simulate", total=len(world.messages), unit="messages") as progress:
            for index, message in enumerate(world.messages):
                if args.rate > 0:  # pace against the clock, not per message: no drift
                    ahead = index / args.rate - (time.monotonic() - started)
                    if ahead > 0:
                        await sender.drain()
                        await asyncio.sleep(ahead)
                key = message.key.encode() if message.key is not None else None
                await sender.send(
                    topics[message.topic], serialize(message.value), key,
                    timestamp_ms=message.event_time * 1000,
                )  # fmt: skip
                progress.update()
            await sender.drain()
    finally:
        await producer.stop()
    return sender.sent


def run(args: argparse.Namespace) -> int:
    from streams.runtime.kafka_io import KafkaUnavailable, config_from_args

    to_kafka = bool(args.bootstrap or args.kafka_config)
    if not args.out and not to_kafka:
        print("simulate: give --out DIR and/or --bootstrap HOST:PORT (or --kafka-config FILE)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        params = params_from(args)
        args.kafka = config_from_args(args) if to_kafka else None
    except ValueError as exc:  # a KafkaConfigError too
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    began = time.monotonic()
    with Progress("simulate: generate", unit="shipments") as progress:
        world = simulate(params, progress)
    truth = Counter(g["rule"] for g in world.ground_truth)
    summary = (
        f"simulate: {len(world.messages)} messages ({len(world.shipments)} shipments), "
        f"ground truth {sum(truth.values())} alerts "
        + (", ".join(f"{r}={n}" for r, n in sorted(truth.items())) or "-")
        + f", {len(world.incidents)} incidents, {len(world.actions)} actions"
    )
    if args.out:
        with Progress(f"simulate: write {args.out}", unit="messages") as progress:
            written = write_files(world, Path(args.out), args.combined, progress)
        for path in written:
            print(f"wrote {path}", file=sys.stderr)
    if to_kafka:
        try:
            sent = asyncio.run(produce(world, args))
        except KafkaUnavailable as exc:
            print(f"simulate: {exc}", file=sys.stderr)
            return 2
        summary += f"; produced {sent} to {args.labels_topic}/{args.scans_topic}"
    print(f"{summary} in {time.monotonic() - began:.1f}s", file=sys.stderr)
    return 0
