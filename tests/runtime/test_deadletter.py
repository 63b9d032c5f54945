"""Dead letters always fit: a too_large input is carried as a prefix with its size and SHA-256,
and every record is bounded by `outputs.dead_letter_max_bytes(max_message_bytes)`."""

from __future__ import annotations

import base64
import hashlib
import json
from collections import namedtuple
from dataclasses import replace
from typing import Any

import jsonschema
import orjson
import pytest

from streams.core import events, schema
from streams.core.outputs import (
    MAX_ERROR_CHARS,
    MAX_TOPIC_CHARS,
    dead_letter,
    dead_letter_max_bytes,
    dumps,
)
from streams.core.settings import Settings
from streams.runtime.ingest import build_batch
from streams.tools.offline import Processor

MIB = 1 << 20
DEADLETTER = jsonschema.Draft202012Validator(schema.load("deadletter"))
SCAN = orjson.dumps({"type": "carrier.scan", "schema_version": 1, "event_id": "e-1",
                     "tracking_number": "1Z999AA10123456784", "carrier": "ups",
                     "status": "delivered", "occurred_at": "2025-02-26T19:30:00Z"})


def oversized(size: int) -> bytes:
    """A well-formed scan padded with an extra field to exactly `size` bytes."""
    head = SCAN[:-1] + b',"padding":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


def decode_error(value: bytes, max_bytes: int) -> events.DecodeError:
    with pytest.raises(events.DecodeError) as err:
        events.decode(value, max_bytes)
    return err.value


@pytest.mark.parametrize("size", [MIB + 1, 2 * MIB, 8 * MIB])
def test_too_large_input_becomes_a_bounded_dead_letter(size: int) -> None:
    value = oversized(size)
    assert len(value) == size
    error = decode_error(value, MIB)
    assert (error.code, error.path) == ("too_large", None)
    record = dead_letter(source_topic="scans", partition=3, offset=41, key=b"k", value=value,
                         error=error, max_message_bytes=MIB)
    encoded = dumps(record)
    assert len(encoded) <= dead_letter_max_bytes(MIB) < 3 * MIB
    DEADLETTER.validate(json.loads(encoded))
    assert base64.b64decode(record["value_b64"]) == value[:MIB]
    assert record["value_size"] == size
    assert record["value_sha256"] == hashlib.sha256(value).hexdigest()
    assert base64.b64decode(record["key_b64"]) == b"k" and "key_size" not in record


@pytest.mark.parametrize("size", [MIB + 1, 8 * MIB])
def test_the_worker_and_the_offline_mode_dead_letter_within_the_bound(size: int) -> None:
    value = oversized(size)
    tp = namedtuple("TP", "topic partition")("scans", 0)
    record = namedtuple("Record", "offset key value timestamp")(7, b"K" * (2 * MIB), value, 0)
    batch = build_batch({tp: [record]}, partitions=4, max_bytes=MIB)
    [(key, out)] = batch.dead_letters
    assert key == b"K" * MIB  # the dead letter's own record key is cut too
    assert out["error"]["code"] == "too_large"
    assert len(dumps(out)) <= dead_letter_max_bytes(MIB)
    assert out["value_size"] == size and len(base64.b64decode(out["value_b64"])) == MIB
    letters: list[dict[str, Any]] = []
    processor = Processor(letters.append, letters.append,
                          replace(Settings(), max_message_bytes=MIB))
    processor.feed(value, source="scans", partition=0, offset=7)
    processor.finish()
    assert [r["error"]["code"] for r in letters] == ["too_large"]
    assert len(dumps(letters[0])) <= dead_letter_max_bytes(MIB)


def test_a_key_over_the_maximum_is_cut_the_same_way() -> None:
    key = b"K" * (2 * MIB)
    record = dead_letter(source_topic="labels", partition=0, offset=0, key=key, value=b"[]",
                         error=decode_error(b"[]", MIB), max_message_bytes=MIB)
    assert base64.b64decode(record["key_b64"]) == key[:MIB]
    assert (record["key_size"], record["key_sha256"]) == (len(key), hashlib.sha256(key).hexdigest())
    assert base64.b64decode(record["value_b64"]) == b"[]" and "value_size" not in record
    DEADLETTER.validate(record)
    assert len(dumps(record)) <= dead_letter_max_bytes(MIB)


def test_inputs_up_to_the_maximum_are_carried_whole() -> None:
    value = b"{" + b" " * 98 + b"["  # 100 bytes, not JSON
    record = dead_letter(source_topic="labels", partition=0, offset=0, key=None, value=value,
                         error=decode_error(value, 100), max_message_bytes=100)
    assert record["error"]["code"] == "invalid_json"
    assert base64.b64decode(record["value_b64"]) == value and record["key_b64"] is None
    assert not {"value_size", "value_sha256", "key_size", "key_sha256"} & record.keys()
    DEADLETTER.validate(record)


class Huge:
    code = "schema"
    message = "\x00" * (3 * MAX_ERROR_CHARS)  # each character 6 bytes of JSON: \u0000
    path = "/" + "\x01" * (3 * MAX_ERROR_CHARS)


@pytest.mark.parametrize("max_bytes", [1, 100, 4096, MIB])
def test_the_bound_holds_for_the_widest_record_and_is_tight(max_bytes: int) -> None:
    record = dead_letter(source_topic="t" * MAX_TOPIC_CHARS, partition=2**31 - 1,
                         offset=-(2**63), key=b"k" * (max_bytes + 7),
                         value=b"v" * (max_bytes + 9), error=Huge(),
                         received_at="2025-03-01T10:00:00.123456789+05:30",
                         max_message_bytes=max_bytes)
    size = len(dumps(record))
    assert len(record["error"]["message"]) == len(record["error"]["path"]) == MAX_ERROR_CHARS
    assert size <= dead_letter_max_bytes(max_bytes) <= size + 256


def test_unknown_type_messages_do_not_carry_the_whole_value() -> None:
    error = decode_error(orjson.dumps({"type": "x" * 100_000}), MIB)
    assert error.code == "unknown_type" and len(error.message) < 200
