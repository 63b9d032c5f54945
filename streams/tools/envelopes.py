"""`export`'s record envelopes read back as the messages they carry.

`export` writes one object per record: `{"topic", "partition", "offset", "timestamp", "key",
"value"}` (or `value_b64` when the value is not JSON). `scan` and `report` take such a file as
well as one of bare messages: a line that is an envelope stands for its value.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

_PREFIX = b'{"topic":'  # what export writes first; a contract message never starts so


def is_envelope(record: dict[str, Any]) -> bool:
    """A parsed line is one of export's envelopes."""
    return "topic" in record and "offset" in record and ("value" in record
                                                         or "value_b64" in record)


def unwrap(line: bytes) -> bytes | None:
    """The message an envelope line carries (its value's bytes; None for a null value), or
    `line` itself when it is not an envelope."""
    if not line.startswith(_PREFIX):
        return line
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if not isinstance(record, dict) or not is_envelope(record):
        return line
    if record.get("value_b64") is not None:
        try:
            return base64.b64decode(record["value_b64"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            return line
    if "value" not in record:
        return line
    value = record["value"]
    return None if value is None else orjson.dumps(value)
