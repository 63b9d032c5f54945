"""The internal topic `<app_id>-tracking-events`: its record format and its partitioning.

Ingest (plain aiokafka, `streams.runtime.ingest`) decodes the input records and writes the events of
one internal partition as ONE record, a frame; the stateful stage
(`streams.runtime.detection_stage`) reads a frame and applies it in one step. One record per
batch instead of per event is what takes the per-message cost of Kafka and Faust out of the
per-event budget.

Frame layout, version 1:

    b"TVF" | version (1 byte) | msgpack [[read times, ms], events]

A read time is the wall clock (epoch ms) at which ingest read the event's input record: the
alert latency (`tracking_validator_event_to_alert_seconds`) starts there. Workers before
this meaning wrote the input record's timestamp in the same place; their frames still read
(the layout is unchanged), only their alerts' latency then counts from the record timestamp.

The version byte lets a worker refuse a frame it cannot read (a mixed-version group) instead
of misreading it. Events are encoded with `streams.core.events.encode_events`.

Partitioning: an event goes to partition `partition_for(tracking key, partitions)`. The same
function is Faust's producer partitioner (`faust_partitioner`), so `app.router` (the lookup
API's forwarding) finds the worker that owns a key's table partition. It is CRC-32, not
Kafka's murmur2: aiokafka's murmur2 is pure Python, ~12 µs a key against ~0.4 µs (measured).
"""

from __future__ import annotations

from collections.abc import Sequence
from zlib import crc32

import msgspec

from streams.core import events

MAGIC = b"TVF"
VERSION = 1
_HEADER = MAGIC + bytes([VERSION])

Entry = tuple[int, events.Event]  # (read time in epoch ms, decoded event)

_encode = msgspec.msgpack.Encoder().encode
_decode_body = msgspec.msgpack.Decoder(tuple[list[int], bytes]).decode

class FrameError(ValueError):
    """An internal record this worker cannot read (wrong magic or version)."""


def partition_for(key: bytes, partitions: int) -> int:
    return crc32(key) % partitions


def faust_partitioner(key: bytes | None, all_partitions: Sequence[int],
                      available: Sequence[int]) -> int:
    """`producer_partitioner` for Faust: the partition `partition_for` gives."""
    if key is None:
        return all_partitions[0]
    return all_partitions[crc32(key) % len(all_partitions)]


def encode_frame(entries: Sequence[Entry]) -> bytes:
    body = (
        [ts for ts, _ in entries],
        events.encode_events([event for _, event in entries]),
    )
    return _HEADER + _encode(body)


def decode_frame(data: bytes) -> list[Entry]:
    if data[:3] != MAGIC:
        raise FrameError("not a internal-topic frame (bad magic)")
    if data[3] != VERSION:
        raise FrameError(f"internal-topic frame version {data[3]}; this worker reads "
                         f"{VERSION}: run one version per --app-id")
    timestamps, payload = _decode_body(memoryview(data)[4:])
    decoded = events.decode_events(payload)
    if len(decoded) != len(timestamps):
        raise FrameError("internal-topic frame: timestamps and events differ in number")
    return list(zip(timestamps, decoded, strict=True))


def split(entries: list[Entry], max_events: int) -> list[list[Entry]]:
    """Frames of at most `max_events` events: bounds a record's size and the stage's step."""
    return [entries[i:i + max_events] for i in range(0, len(entries), max_events)]
