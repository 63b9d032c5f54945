"""The two output records, built the same way by the stream workers and the offline modes.

Alerts come out of the detection core without `detected_at` (the core never reads the wall
clock); `stamp_alert` adds it where the alert is emitted. Dead letters carry the input record
byte for byte (base64) so that nothing is lost and a fixed message can be re-sent, and always
fit their topic: a value (or key) over `max_message_bytes` is carried as its first
`max_message_bytes` plus its size and SHA-256 (`value_size`, `value_sha256`), so a dead letter
is never larger than `dead_letter_max_bytes(max_message_bytes)`.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson


def rfc3339(moment: datetime) -> str:
    """UTC RFC 3339 with millisecond precision and a `Z` offset."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now() -> str:
    return rfc3339(datetime.now(UTC))


def stamp_alert(alert: dict[str, Any], detected_at: str | None = None) -> dict[str, Any]:
    """Return the alert with the wall-clock `detected_at` it is emitted at."""
    return {**alert, "detected_at": detected_at or utc_now()}


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _b64_len(size: int) -> int:
    return 4 * ((size + 2) // 3)


DEFAULT_MAX_MESSAGE_BYTES = 1 << 20  # the contract's default; Settings.max_message_bytes
MAX_ERROR_CHARS = 1000  # error.message and error.path are cut to this many characters
MAX_TOPIC_CHARS = 249  # Kafka's limit on a topic name (ASCII)
# The JSON of a dead letter around its variable parts, at their widest: keys, punctuation,
# 20-digit integers (partition, offset, sizes), two SHA-256 digests and a received_at of up to
# 40 characters (tests/runtime/test_deadletter.py checks this against real records).
_FIXED_BYTES = 512


def dead_letter_max_bytes(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> int:
    """The most bytes `dumps(dead_letter(...))` can take for inputs checked against
    `max_message_bytes`, whatever their size: size the dead-letter topic's max.message.bytes
    and the producer's max request size from it (plus the record's own key and Kafka's
    per-record and per-batch overhead)."""
    # key and value: base64 of at most max_message_bytes each; message and path: a character
    # takes at most 6 bytes in JSON (\u00XX); the topic name is ASCII
    return (2 * _b64_len(max_message_bytes) + 2 * 6 * MAX_ERROR_CHARS + MAX_TOPIC_CHARS
            + _FIXED_BYTES)


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_ERROR_CHARS:
        return text
    return text[:MAX_ERROR_CHARS - 1] + "\u2026"


class Rejection(Protocol):
    """Why a record could not be processed: `streams.core.events.DecodeError` is one."""

    code: str
    message: str
    path: str | None


def dead_letter(
    *,
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    error: Rejection,
    received_at: str | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> dict[str, Any]:
    """A `tracking.deadletter` record per the contract, never larger (as JSON) than
    `dead_letter_max_bytes(max_message_bytes)`: a value or key longer than
    `max_message_bytes` (a `too_large` input) is cut to that many bytes, and the record adds
    the whole one's size and SHA-256 (`value_size`/`value_sha256`, `key_size`/`key_sha256`)."""
    record: dict[str, Any] = {
        "source_topic": source_topic,
        "partition": partition,
        "offset": offset,
        "key_b64": None,
        "value_b64": None,
        "error": {"code": error.code, "message": _clip(error.message), "path": _clip(error.path)},
        "received_at": received_at or utc_now(),
    }
    for name, data in (("key", key), ("value", value)):
        if data is not None and len(data) > max_message_bytes:
            whole = memoryview(data)
            record[f"{name}_b64"] = _b64(bytes(whole[:max_message_bytes]))
            record[f"{name}_size"] = len(whole)
            record[f"{name}_sha256"] = hashlib.sha256(whole).hexdigest()
        else:
            record[f"{name}_b64"] = _b64(None if data is None else bytes(data))
    return record


def dumps(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record)
