"""The two output records, built the same way by the stream workers and the offline modes.

Alerts come out of the detection core without `detected_at` (the core never reads the wall
clock); `stamp_alert` adds it where the alert is emitted. Dead letters carry the input record
byte for byte (base64) so that nothing is lost and a fixed message can be re-sent.
"""

from __future__ import annotations

import base64
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


class Rejection(Protocol):
    """Why a record could not be processed: `streams.events.DecodeError` is one."""

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
) -> dict[str, Any]:
    """A `tracking.deadletter` record per the contract."""
    return {
        "source_topic": source_topic,
        "partition": partition,
        "offset": offset,
        "key_b64": _b64(key),
        "value_b64": _b64(value),
        "error": {"code": error.code, "message": error.message, "path": error.path},
        "received_at": received_at or utc_now(),
    }


def dumps(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record)
