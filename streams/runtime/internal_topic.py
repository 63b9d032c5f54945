"""The internal topic `<app_id>-tracking-events`: its record format and its partitioning.

Ingest (plain aiokafka, `streams.runtime.ingest`) decodes the input records and writes the events of
one internal partition as ONE record, a frame; the stateful stage
(`streams.runtime.detection_stage`) reads a frame and applies it in one step. One record per
batch instead of per event is what takes the per-message cost of Kafka and Faust out of the
per-event budget.

Frame layout, version 2 (version 1 had no arrived-by time; it still reads):

    b"TVF" | version (1 byte) | msgpack [[read times, ms], events, arrived by, ms]

A read time is the wall clock (epoch ms) at which ingest read the event's input record: the
alert latency (`tracking_validator_event_to_alert_seconds`) starts there. Workers before
this meaning wrote the input record's timestamp in the same place; their frames still read
(the layout is unchanged), only their alerts' latency then counts from the record timestamp.

The arrived-by time (epoch ms) is a time by which every input record of the frame was in
its input partition: when ingest first saw a fetch response whose high watermark was past
it. For a backlog that is the start of the read, long before ingest reaches the record.

A progress record tells the stage how far the inputs have been read, so that it can end the
alert hold of a backlog early (`streams.runtime.detection_stage`):

    b"TVP" | version 1 | msgpack [[[input topic, its partitions], ...],
                                  [[input topic, partition, read through, ms], ...]]

"Read through T" for an input partition means: every record appended to it before T is in a
frame written to this internal partition before this record. Ingest writes one to every
internal partition after the frames of a batch (`streams.runtime.ingest`).

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
VERSION = 2
_HEADER = MAGIC + bytes([VERSION])
PROGRESS_MAGIC = b"TVP"
PROGRESS_VERSION = 1
_PROGRESS_HEADER = PROGRESS_MAGIC + bytes([PROGRESS_VERSION])

Entry = tuple[int, events.Event]  # (read time in epoch ms, decoded event)
InputPartition = tuple[str, int]  # (input topic, partition)

_encode = msgspec.msgpack.Encoder().encode
_decode_body_v1 = msgspec.msgpack.Decoder(tuple[list[int], bytes]).decode
_decode_body = msgspec.msgpack.Decoder(tuple[list[int], bytes, int]).decode
_decode_progress = msgspec.msgpack.Decoder(
    tuple[list[tuple[str, int]], list[tuple[str, int, int]]]).decode


class Frame:
    """A decoded frame: its entries and the time by which all their records had arrived."""

    __slots__ = ("arrived_by", "entries")

    def __init__(self, entries: list[Entry], arrived_by: int) -> None:
        self.entries = entries
        self.arrived_by = arrived_by


class Progress:
    """A decoded progress record: every input topic's partition count, and the input
    partitions read through a time (epoch ms)."""

    __slots__ = ("partitions", "read_through")

    def __init__(self, partitions: dict[str, int],
                 read_through: dict[InputPartition, int]) -> None:
        self.partitions = partitions
        self.read_through = read_through


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


def encode_frame(entries: Sequence[Entry], arrived_by: int | None = None) -> bytes:
    """A frame; `arrived_by` defaults to its latest read time (a record was there when read)."""
    read_times = [ts for ts, _ in entries]
    if arrived_by is None:
        arrived_by = max(read_times, default=0)
    body = (read_times, events.encode_events([event for _, event in entries]), arrived_by)
    return _HEADER + _encode(body)


def encode_progress(partitions: dict[str, int],
                    read_through: dict[InputPartition, int]) -> bytes:
    return _PROGRESS_HEADER + _encode((
        sorted(partitions.items()),
        [(topic, partition, ms) for (topic, partition), ms in sorted(read_through.items())],
    ))


def decode(data: bytes) -> Frame | Progress:
    """An internal-topic record: a frame or a progress record."""
    magic, version = data[:3], data[3] if len(data) > 3 else -1
    if magic == PROGRESS_MAGIC:
        if version != PROGRESS_VERSION:
            raise FrameError(f"internal-topic progress record version {version}; this worker "
                             f"reads {PROGRESS_VERSION}: run one version per --app-id")
        counts, through = _decode_progress(memoryview(data)[4:])
        return Progress(dict(counts), {(t, p): ms for t, p, ms in through})
    if magic != MAGIC:
        raise FrameError("not a internal-topic frame (bad magic)")
    if version == 1:
        timestamps, payload = _decode_body_v1(memoryview(data)[4:])
        arrived_by = max(timestamps, default=0)
    elif version == VERSION:
        timestamps, payload, arrived_by = _decode_body(memoryview(data)[4:])
    else:
        raise FrameError(f"internal-topic frame version {version}; this worker reads "
                         f"{VERSION} and 1: run one version per --app-id")
    decoded = events.decode_events(payload)
    if len(decoded) != len(timestamps):
        raise FrameError("internal-topic frame: timestamps and events differ in number")
    return Frame(list(zip(timestamps, decoded, strict=True)), arrived_by)


def decode_frame(data: bytes) -> list[Entry]:
    """A frame's entries (a progress record is refused)."""
    record = decode(data)
    if not isinstance(record, Frame):
        raise FrameError("an internal-topic progress record, not a frame")
    return record.entries


def split(entries: list[Entry], max_events: int) -> list[list[Entry]]:
    """Frames of at most `max_events` events: bounds a record's size and the stage's step."""
    return [entries[i:i + max_events] for i in range(0, len(entries), max_events)]
