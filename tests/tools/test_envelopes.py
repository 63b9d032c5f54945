"""`export`'s envelopes read back as the messages they carry (streams.tools.envelopes)."""

from __future__ import annotations

import orjson
from aiokafka.structs import ConsumerRecord

from streams.commands.transfer import from_record
from streams.tools.envelopes import unwrap
from streams.tools.impact import read_alerts

MESSAGE = orjson.dumps({"type": "label.voided", "event_id": "e-1", "label_id": "L-1"})


def _exported(value: bytes | None, key: bytes | None = b"k") -> bytes:
    record = ConsumerRecord("labels", 2, 41, 1740823200000, 0, key, value, None, 0,
                            len(value or b""), [])
    return orjson.dumps(from_record(record))


def test_an_envelope_stands_for_its_value_byte_for_byte() -> None:
    assert unwrap(_exported(MESSAGE)) == MESSAGE
    assert unwrap(_exported(b"\xff\x00 not json")) == b"\xff\x00 not json"
    assert unwrap(_exported(b"{broken")) == b"{broken"
    assert unwrap(_exported(None)) is None


def test_anything_else_is_left_as_it_is() -> None:
    for line in (MESSAGE, b"not json", b'{"topic": "x"}', b'{"topic":"x","offset":1}',
                 b'{"topic":', b"[1, 2]"):
        assert unwrap(line) == line
    bad_b64 = orjson.dumps({"topic": "t", "offset": 1, "value_b64": "%%%"})
    assert unwrap(bad_b64) == bad_b64


def test_report_reads_exported_alerts() -> None:
    alert = {"alert_id": "a-1", "rule": "duplicate_tracking", "event_time": "2025-03-01T10:00:00Z"}
    lines = [_exported(orjson.dumps(alert)), b"", _exported(None), orjson.dumps(alert)]
    assert list(read_alerts(lines)) == [alert, alert]
