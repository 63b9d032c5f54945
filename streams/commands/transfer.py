"""JSON Lines to and from a Kafka topic: `import FILE --topic T`, `export --topic T FILE`.

import: each line becomes one record. A line may be
- a plain message (any JSON object without a `value` member, e.g. a contract message):
  the value is the line's bytes as they are; the key is the message's `--key-field`
  (default `tracking_number`, present in every contract message; `none` for no key); the
  record timestamp is the event time (`purchased_at`, `voided_at` or `occurred_at`);
- an exported record (an object with a `value` or `value_b64` member, as `export` writes):
  key, value and timestamp are taken from it, so `export | import` keeps keys and timestamps;
- anything else (not JSON, not an object): sent as it is, with no key, for the processor to
  dead-letter; counted in the summary.
Records go to the default partitioner (by key), not to the exported partition numbers.

export: from the beginning (or `--from TIME`) to the end offsets seen at start, without a
consumer group. One object per record: topic, partition, offset, timestamp (RFC 3339, ms),
key (UTF-8 text, null, or `key_b64` when not UTF-8), value (the parsed JSON when the value is
JSON, else `value_b64`). Headers are not exported. Values round-trip byte for byte when the
producer wrote compact JSON (as this tool, `simulate` and most JSON libraries do).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from streams.core.outputs import rfc3339
from streams.runtime.kafka_io import (
    INPUT_RETENTION_MS,
    KafkaConfigError,
    KafkaUnavailable,
    add_bootstrap_argument,
    config_from_args,
)
from streams.tools.files import describe_os_error, open_input
from streams.tools.impact import parse_time
from streams.tools.progress import Progress

HELP_IMPORT = "Load a JSON Lines file into a Kafka topic, keys and event-time timestamps kept."
HELP_EXPORT = "Dump a Kafka topic to a JSON Lines file, from the start to its current end."

EVENT_TIME_FIELDS = ("purchased_at", "voided_at", "occurred_at")
_IN_FLIGHT = 2000  # unacknowledged sends before waiting: bounds memory, keeps batches full


def configure_import(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="JSON Lines; - for stdin")
    parser.add_argument("--topic", required=True, help="the topic to write to (created "
                        "when missing, as the worker creates its input topics)")
    add_bootstrap_argument(parser)
    parser.add_argument(
        "--key-field",
        default="tracking_number",
        help="message field used as record key for plain messages; 'none' for no key",
    )
    parser.add_argument("--partitions", type=int, default=8, help="if the topic is created (8)")
    parser.add_argument("--replication", type=int, default=1, help="if the topic is created (1)")
    parser.add_argument(
        "--retention-ms",
        type=int,
        default=INPUT_RETENTION_MS,
        help=f"if the topic is created ({INPUT_RETENTION_MS} = keep forever: timestamps are "
        f"event times; the worker and simulate create input topics the same way)",
    )


def configure_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="JSON Lines out; - for stdout")
    parser.add_argument("--topic", required=True, help="the topic to read")
    add_bootstrap_argument(parser)
    parser.add_argument("--from", dest="from_time", type=parse_time, metavar="TIME",
                        help="start at the first record with this timestamp or later")  # fmt: skip


# ------------------------------------------------------------------------------ import


def _ms(text: Any) -> int | None:
    if not isinstance(text, str):
        return None
    try:
        return int(parse_time(text).timestamp() * 1000)
    except ValueError:
        return None


def _bytes(record: dict[str, Any], name: str) -> bytes | None:
    """`name` (text, JSON, or null) or `name_b64` of an exported record, as bytes."""
    if record.get(f"{name}_b64") is not None:
        return base64.b64decode(record[f"{name}_b64"])
    value = record.get(name)
    if value is None:
        return None
    if name == "key" and isinstance(value, str):
        return value.encode()
    return orjson.dumps(value)


def to_record(
    line: bytes, key_field: str | None
) -> tuple[bytes | None, bytes | None, int | None, str]:
    """(key, value, timestamp_ms, kind) for one input line; kind: message|record|raw."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, line, None, "raw"
    if not isinstance(obj, dict):
        return None, line, None, "raw"
    if "value" in obj or "value_b64" in obj:
        return _bytes(obj, "key"), _bytes(obj, "value"), _ms(obj.get("timestamp")), "record"
    key = obj.get(key_field) if key_field else None
    key_bytes = (
        None
        if key is None
        else (key if isinstance(key, str) else orjson.dumps(key).decode()).encode()
    )
    stamp = next((_ms(obj[f]) for f in EVENT_TIME_FIELDS if f in obj), None)
    return key_bytes, line, stamp, "message"


@dataclass
class ImportResult:
    kinds: Counter[str] = field(default_factory=Counter)  # sent, by kind
    failed: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)


async def _import(args: argparse.Namespace, source: IO[bytes], size: int | None) -> ImportResult:
    from streams.runtime.kafka_io import (
        ensure_topics,
        finite_retention,
        input_topic_config,
        make_producer,
        record_batch_bytes,
        retention_warning,
        start_client,
        topic_configs,
    )

    kafka = args.kafka
    config = input_topic_config(args.retention_ms)
    await ensure_topics(kafka, [args.topic], args.partitions, args.replication, config)
    if short := await finite_retention(kafka, [args.topic]):
        print(retention_warning("import", short), file=sys.stderr)
    # a record is sent when the topic can hold it: an oversized message reaches the worker,
    # which dead-letters it as too_large; one the broker would refuse is named and skipped
    found = await topic_configs(kafka, [args.topic], ["max.message.bytes"])
    limit = int(found.get(args.topic, {}).get("max.message.bytes") or (1 << 20))
    key_field = None if args.key_field.lower() == "none" else args.key_field
    result = ImportResult()
    producer = make_producer(kafka, max_request_size=limit + 65536)
    await start_client(producer, kafka)
    pending: list[tuple[int, str, asyncio.Future[Any]]] = []

    async def settle() -> None:
        for number, kind, future in pending:
            try:
                await future
            except Exception as exc:  # the broker refused it: name it, keep the others
                result.failed.append((number, f"{type(exc).__name__}: {exc}"))
            else:
                result.kinds[kind] += 1
        pending.clear()

    try:
        with Progress(f"import {args.topic}", total=size, unit="records") as progress:
            for number, line in enumerate(source, start=1):
                progress.update(len(line))
                line = line.rstrip(b"\r\n")
                if not line.strip():
                    continue
                key, value, stamp, kind = to_record(line, key_field)
                need = record_batch_bytes(key, value)
                if need > limit:
                    result.failed.append((number, (
                        f"{need:,} bytes as a record, more than topic {args.topic} holds "
                        f"(max.message.bytes={limit})")))
                    continue
                try:
                    future = await producer.send(args.topic, value=value, key=key,
                                                 timestamp_ms=stamp)
                except Exception as exc:  # refused before sending (e.g. a bad timestamp)
                    result.failed.append((number, f"{type(exc).__name__}: {exc}"))
                    continue
                pending.append((number, kind, future))
                if len(pending) >= _IN_FLIGHT:
                    await settle()
            await settle()
    finally:
        await producer.stop()
    return result


def run_import(args: argparse.Namespace) -> int:
    try:
        args.kafka = config_from_args(args)
    except KafkaConfigError as exc:
        print(f"import: {exc}", file=sys.stderr)
        return 2
    try:
        source = sys.stdin.buffer if args.file == "-" else open_input(args.file)
    except OSError as exc:
        print(f"import: {describe_os_error(exc, args.file)}", file=sys.stderr)
        return 2
    size = None if args.file == "-" else os.fstat(source.fileno()).st_size
    started = datetime.now(UTC)
    try:
        result = asyncio.run(_import(args, source, size))
    except (KafkaUnavailable, RuntimeError) as exc:  # RuntimeError: the topic not created
        print(f"import: {exc}", file=sys.stderr)
        return 2
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    seconds = (datetime.now(UTC) - started).total_seconds()
    for number, why in result.failed:
        print(f"import: {args.file}:{number}: not sent: {why}", file=sys.stderr)
    kinds = result.kinds
    total = sum(kinds.values())
    detail = ", ".join(f"{kind}={n}" for kind, n in sorted(kinds.items())) or "nothing"
    failed = f", {len(result.failed)} lines not sent" if result.failed else ""
    print(
        f"import: {total} records to {args.topic} ({detail}){failed} in {seconds:.2f}s, "
        f"{total / seconds if seconds else 0:,.0f} records/s",
        file=sys.stderr,
    )
    return 1 if result.failed else 0


# ------------------------------------------------------------------------------ export


def from_record(record: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": rfc3339(datetime.fromtimestamp(record.timestamp / 1000, UTC)),
    }
    key = record.key
    try:
        out["key"] = None if key is None else key.decode()
    except UnicodeDecodeError:
        out["key_b64"] = base64.b64encode(key).decode()
    value = record.value
    try:
        out["value"] = None if value is None else orjson.loads(value)
    except orjson.JSONDecodeError:  # not JSON (or not UTF-8): keep the bytes
        out["value_b64"] = base64.b64encode(value).decode()
    return out


async def _export(args: argparse.Namespace, out: IO[bytes]) -> int:
    from streams.runtime.kafka_io import read_to_end

    progress = Progress(f"export {args.topic}", unit="records")

    def on_start(total: int, missing: list[str]) -> None:
        progress.total = total
        if missing:
            raise LookupError(f"no such topic: {', '.join(missing)}")

    from_ms = None if args.from_time is None else int(args.from_time.timestamp() * 1000)
    count = 0
    with progress:
        async for record in read_to_end(args.kafka, [args.topic], from_ms, on_start):
            out.write(orjson.dumps(from_record(record)) + b"\n")
            count += 1
            progress.update()
    return count


def run_export(args: argparse.Namespace) -> int:
    try:
        args.kafka = config_from_args(args)
    except KafkaConfigError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2
    try:
        out = sys.stdout.buffer if args.file == "-" else open(args.file, "wb")  # noqa: SIM115
    except OSError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2
    started = datetime.now(UTC)
    try:
        count = asyncio.run(_export(args, out))
    except (LookupError, KafkaUnavailable) as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2
    finally:
        out.flush()
        if out is not sys.stdout.buffer:
            out.close()
    seconds = (datetime.now(UTC) - started).total_seconds()
    print(f"export: {count} records from {args.topic} in {seconds:.2f}s", file=sys.stderr)
    return 0
