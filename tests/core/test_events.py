"""decode(): typed events from bytes, and the contract's dead-letter codes with JSON Pointers."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core import events
from streams.core.events import (
    CarrierScan,
    DecodeError,
    Event,
    LabelPurchased,
    LabelVoided,
    decode,
    decode_events,
    decode_object,
    encode_events,
    parse,
)
from streams.core.schema import SCHEMAS_DIR

EXAMPLES = SCHEMAS_DIR / "examples"
EXPECTED = json.loads((EXAMPLES / "expected-errors.json").read_text())


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


def encoded(obj: object) -> bytes:
    return orjson.dumps(obj)


def error_of(value: bytes | None, **kwargs: int) -> DecodeError:
    with pytest.raises(DecodeError) as err:
        decode(value, **kwargs)
    return err.value


def test_label_purchased_full() -> None:
    event = decode((EXAMPLES / "label.purchased.valid.full.json").read_bytes())
    assert isinstance(event, LabelPurchased)
    assert event.key == "ups:1Z999AA10123456784"
    assert event.number == "1Z999AA10123456784"
    assert event.tracking_number == "1Z 999 AA1 01 2345 6784"
    assert event.validation.valid
    assert event.purchased_at == datetime(2025, 2, 24, 15, 4, 5, tzinfo=UTC)
    assert event.event_ts == int(event.purchased_at.timestamp())
    assert event.ship_by == datetime(2025, 2, 27, 7, 59, 59, tzinfo=UTC)
    assert (event.seller_id, event.order_id, event.channel) == (
        "seller-42", "112-0000001-0000001", "buy_shipping")
    assert (event.ship_to_postal_code, event.ship_to_country) == ("10001-1234", "US")
    assert event.cost == {"amount": "12.34", "currency": "USD"}


def test_label_purchased_minimal_offsets_fractions_lower_case() -> None:
    event = decode((EXAMPLES / "label.purchased.valid.minimal.json").read_bytes())
    assert isinstance(event, LabelPurchased)
    assert event.purchased_at.tzinfo is UTC
    assert event.purchased_at == datetime(2025, 2, 24, 15, 4, 5, 123456, tzinfo=UTC)
    assert event.event_ts == 1740409445  # fractions truncated: detection compares seconds
    assert event.channel is None and event.cost is None and event.ship_by is None


def test_routing_prefix_and_leap_second_and_extra_fields() -> None:
    event = decode((EXAMPLES / "label.purchased.valid.routing-prefix-and-extras.json")
                   .read_bytes())
    assert event.key == "usps:9400100000000000000013"
    assert event.purchased_at == datetime(2025, 6, 30, 23, 59, 59, tzinfo=UTC)


def test_a_bad_tracking_number_is_a_valid_message() -> None:
    event = decode((EXAMPLES / "label.purchased.valid.bad-tracking-number.json").read_bytes())
    assert isinstance(event, LabelPurchased)
    assert not event.validation.valid and event.validation.reason == "check_digit"
    assert event.key == "ups:1Z999AA10123456785"


def test_unknown_carrier_is_a_valid_message() -> None:
    msg = example("label.purchased.valid.full.json") | {"carrier": "pigeon"}
    event = decode(encoded(msg))
    assert event.validation.reason == "unknown_carrier"
    assert event.key == "pigeon:1Z999AA10123456784"


def test_voided_and_scans_share_the_label_key() -> None:
    voided = decode((EXAMPLES / "label.voided.valid.json").read_bytes())
    assert isinstance(voided, LabelVoided)
    assert voided.key == "ups:1Z999AA10123456784"  # "UPS" and lower-case number normalised
    assert voided.voided_at == datetime(2025, 2, 25, 0, 0, tzinfo=UTC)
    scan = decode((EXAMPLES / "carrier.scan.valid.delivered.json").read_bytes())
    assert isinstance(scan, CarrierScan)
    assert scan.key == voided.key
    assert (scan.status, scan.code, scan.postal_code, scan.country, scan.city, scan.state) == (
        "delivered", "KB", "10001", "US", "NEW YORK", "NY")
    assert scan.occurred_at == datetime(2025, 2, 26, 19, 30, tzinfo=UTC)
    minimal = decode((EXAMPLES / "carrier.scan.valid.minimal.json").read_bytes())
    assert minimal.key == "usps:9400100000000000000013"
    assert minimal.postal_code is None and minimal.country is None


@pytest.mark.parametrize("name", sorted(k for k in EXPECTED if not k.startswith("$")))
def test_invalid_examples_are_schema_errors_with_their_path(name: str) -> None:
    code, path = EXPECTED[name]
    err = error_of((EXAMPLES / name).read_bytes())
    assert (err.code, err.path) == (code, path), err


def test_every_invalid_input_example_has_an_expected_error() -> None:
    inputs = {p.name for p in Path(EXAMPLES).glob("*.invalid.*.json")
              if p.name.split(".invalid.")[0] in ("label.purchased", "label.voided",
                                                  "carrier.scan")}
    assert inputs == {k for k in EXPECTED if not k.startswith("$")}


@pytest.mark.parametrize("value", [None, b"", bytearray()])
def test_empty_value_is_invalid_json(value: bytes | None) -> None:
    assert error_of(value).code == "invalid_json"


@pytest.mark.parametrize("value", [b"{", b"{'a': 1}", b"NaN", b"{\"a\": 1,}", b"\xef\xbb\xbf{}"])
def test_invalid_json(value: bytes) -> None:
    assert error_of(value).code == "invalid_json"


@pytest.mark.parametrize("value", [b"{\"type\": \"\xff\"}", b"\xc3\x28", "é".encode("latin-1")])
def test_not_utf8_is_encoding(value: bytes) -> None:
    err = error_of(value)
    assert err.code == "encoding" and err.path is None


@pytest.mark.parametrize("value", [b"[]", b"\"label.purchased\"", b"1", b"null", b"true"])
def test_not_an_object(value: bytes) -> None:
    assert error_of(value).code == "not_an_object"


@pytest.mark.parametrize("kind", [None, "label.printed", 7, "LABEL.PURCHASED", ["carrier.scan"]])
def test_unknown_type(kind: object) -> None:
    msg = example("carrier.scan.valid.delivered.json")
    if kind is None:
        del msg["type"]
    else:
        msg["type"] = kind
    err = error_of(encoded(msg))
    assert (err.code, err.path) == ("unknown_type", "/type")


def test_too_large_is_checked_before_parsing() -> None:
    value = (EXAMPLES / "carrier.scan.valid.delivered.json").read_bytes()
    assert isinstance(decode(value, max_bytes=len(value)), CarrierScan)
    assert error_of(value, max_bytes=len(value) - 1).code == "too_large"
    assert error_of(b"x" * ((1 << 20) + 1)).code == "too_large"


def test_memoryview_input() -> None:
    value = (EXAMPLES / "carrier.scan.valid.delivered.json").read_bytes()
    assert isinstance(decode(memoryview(value)), CarrierScan)


@pytest.mark.parametrize(("field", "value", "path"), [
    ("schema_version", 2, "/schema_version"),
    ("schema_version", "1", "/schema_version"),
    ("schema_version", False, "/schema_version"),
    ("event_id", "x" * 129, "/event_id"),
    ("event_id", 12, "/event_id"),
    ("ship_to", {"postal_code": "1"}, "/ship_to/country"),
    ("ship_to", "10001", "/ship_to"),
    ("cost", {"amount": "1.5"}, "/cost/currency"),
    ("cost", {"amount": "-1.5", "currency": "USD"}, "/cost/amount"),
    ("purchased_at", "2025-02-24T15:04:05Z\n", "/purchased_at"),
    ("purchased_at", "2025-02-29T00:00:00Z", "/purchased_at"),
    ("ship_by", "tomorrow", "/ship_by"),
    ("channel", None, "/channel"),
])
def test_schema_errors_name_the_field(field: str, value: object, path: str) -> None:
    msg = example("label.purchased.valid.full.json") | {field: value}
    err = error_of(encoded(msg))
    assert (err.code, err.path) == ("schema", path)
    assert err.to_dict() == {"code": "schema", "message": err.message, "path": path}


def test_missing_required_fields() -> None:
    full = example("label.purchased.valid.full.json")
    for field in ("event_id", "label_id", "tracking_number", "carrier", "seller_id", "order_id",
                  "ship_to", "purchased_at", "schema_version"):
        msg = {k: v for k, v in full.items() if k != field}
        err = error_of(encoded(msg))
        assert (err.code, err.path) == ("schema", f"/{field}")


def test_integral_float_version_is_accepted_like_json_schema_does() -> None:
    msg = example("label.purchased.valid.full.json") | {"schema_version": 1.0}
    assert isinstance(decode(encoded(msg)), LabelPurchased)


@pytest.mark.parametrize(("text", "moment"), [
    ("2025-02-24T15:04:05Z", datetime(2025, 2, 24, 15, 4, 5, tzinfo=UTC)),
    ("2025-02-24t15:04:05z", datetime(2025, 2, 24, 15, 4, 5, tzinfo=UTC)),
    ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ("2025-02-24T15:04:05.999999-05:30", datetime(2025, 2, 24, 20, 34, 5, 999999, tzinfo=UTC)),
    ("1970-01-01T00:00:00.5+01:00", datetime(1969, 12, 31, 23, 0, 0, 500000, tzinfo=UTC)),
])
def test_timestamps_become_utc_and_floored_epoch_seconds(text: str, moment: datetime) -> None:
    msg = example("carrier.scan.valid.delivered.json") | {"occurred_at": text}
    event = decode(encoded(msg))
    assert event.occurred_at == moment and event.occurred_at.tzinfo is UTC
    assert event.event_ts == math.floor(moment.timestamp())  # -3600 for the 1969 one


def test_decode_agrees_with_parse_then_decode_object() -> None:
    for path in sorted(EXAMPLES.glob("*.json")):
        if path.name.split(".valid.")[0].split(".invalid.")[0] not in (
                "label.purchased", "label.voided", "carrier.scan"):
            continue
        value = path.read_bytes()
        try:
            expected: object = decode_object(parse(value))
        except DecodeError as exc:
            expected = exc.to_dict()
        try:
            got: object = decode(value)
        except DecodeError as exc:
            got = exc.to_dict()
        assert got == expected, path.name


# --- JSON corner cases where the contract, not Python's json module, decides ---------------

def test_lone_surrogates_are_invalid_json() -> None:
    # Python's json reads "\ud800" into a str that no UTF-8 output (alerts) can hold; msgspec
    # refuses it anywhere, in fields it ignores too
    value = encoded(example("carrier.scan.valid.delivered.json"))
    for bad in (value.replace(b'"event_id":"', b'"event_id":"\\ud800', 1),
                value[:-1] + b',"x":"\\udc00"}'):
        assert error_of(bad).code == "invalid_json"


def test_numbers_beyond_a_double_are_invalid_json_where_read() -> None:
    # Python's json reads 1e400 as infinity (a schema error for jsonschema); msgspec refuses
    # it where it reads the field, and skips it in fields it ignores
    value = encoded(example("carrier.scan.valid.delivered.json"))
    assert error_of(value.replace(b'"schema_version":1', b'"schema_version":1e400')).code == (
        "invalid_json")
    assert isinstance(decode(value[:-1] + b',"x":1e400}'), CarrierScan)


def test_bad_utf8_in_an_ignored_field_is_still_an_encoding_error() -> None:
    value = b'{"extra":"\xff",' + encoded(example("carrier.scan.valid.delivered.json"))[1:]
    assert error_of(value).code == "encoding"


@pytest.mark.parametrize(("first", "last", "valid"), [
    ("", "e-1", True), ("e-1", "", False), (1, "e-1", True), ("e-1", 1, False)])
def test_a_repeated_key_counts_with_its_last_value_as_in_a_dict(first: object, last: object,
                                                                valid: bool) -> None:
    body = encoded({k: v for k, v in example("carrier.scan.valid.delivered.json").items()
                    if k != "event_id"})
    value = (b'{"event_id":' + encoded(first) + b',' + body[1:-1] + b',"event_id":'
             + encoded(last) + b'}')
    if valid:
        assert decode(value).event_id == last
    else:
        assert (error_of(value).code, error_of(value).path) == ("schema", "/event_id")


def test_bytearray_input() -> None:
    value = (EXAMPLES / "carrier.scan.valid.delivered.json").read_bytes()
    assert decode(bytearray(value)) == decode(value)


# --- the patterns decode checks outside msgspec ---------------------------------------------

def test_remembered_pattern_values_are_bounded_and_only_matching_ones() -> None:
    pattern = events._Pattern("^[0-9]+$")
    assert not pattern.matches("12a") and "12a" not in pattern.ok
    for i in range(events._MEMO_LIMIT + 100):
        assert pattern.matches(str(i))
    assert len(pattern.ok) == events._MEMO_LIMIT
    assert pattern.matches(str(events._MEMO_LIMIT + 5000))  # still checked, not remembered


def test_a_country_seen_valid_does_not_let_an_invalid_one_through() -> None:
    msg = example("label.purchased.valid.full.json")
    decode(encoded(msg))  # "US" remembered
    for bad in ("us", "US\n", "USA", "U1"):
        err = error_of(encoded(msg | {"ship_to": {"postal_code": "1", "country": bad}}))
        assert (err.code, err.path) == ("schema", "/ship_to/country"), bad


# --- events between two stages: msgpack -----------------------------------------------------

def sample_events() -> list[Event]:
    found: list[Event] = []
    for path in sorted(EXAMPLES.glob("*.valid*.json")):
        if path.name.split(".valid")[0] in ("label.purchased", "label.voided", "carrier.scan"):
            found.append(decode(path.read_bytes()))
    full = example("label.purchased.valid.full.json")
    found.append(decode(encoded(full | {"purchased_at": "1970-01-01T00:00:00.5+01:00",
                                        "ship_by": "2999-12-31T23:59:60.999999-23:59",
                                        "carrier": "pigeon", "channel": "\u00e9\U0001F4E6"})))
    found.append(decode(encoded(example("carrier.scan.valid.delivered.json")
                                | {"location": {"city": ""}, "code": ""})))
    return found


def test_events_round_trip_through_msgpack() -> None:
    batch = sample_events()
    assert {type(e) for e in batch} == {LabelPurchased, LabelVoided, CarrierScan}
    assert any(not e.validation.valid for e in batch if isinstance(e, LabelPurchased))
    back = decode_events(encode_events(batch))
    assert back == batch
    for before, after in zip(batch, back, strict=True):
        assert type(after) is type(before)
        for name in before.__struct_fields__:
            value = getattr(after, name)
            assert type(value) is type(getattr(before, name)), name
            if isinstance(value, datetime):
                assert value.tzinfo is UTC
    assert decode_events(encode_events([])) == []


def test_encoded_events_are_compact_arrays() -> None:
    source = orjson.dumps(example("carrier.scan.valid.delivered.json"))
    blob = encode_events([decode(source)])
    assert msgspec.msgpack.decode(blob)[0][0] == 3  # [tag, fields...], no field names
    assert b"event_id" not in blob and len(blob) < len(source)


def test_a_damaged_batch_raises() -> None:
    blob = encode_events(sample_events())
    for bad in (blob[:-1], b"\x91\x92\x09\x00", b"not msgpack"):
        with pytest.raises(msgspec.DecodeError):
            decode_events(bad)


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_deep_nesting_is_invalid_json_not_a_crash(depth: int) -> None:
    nested = b"[" * depth + b"]" * depth
    scan = encoded(example("carrier.scan.valid.delivered.json"))
    for value in (nested, scan[:-1] + b',"x":' + nested + b"}"):
        assert error_of(value).code == "invalid_json"


@settings(max_examples=1500, deadline=None)
@given(st.randoms(use_true_random=False), st.binary(max_size=64))
def test_damaged_bytes_give_an_event_or_a_decode_error_never_a_crash(
        rng: random.Random, noise: bytes) -> None:
    value = bytearray((EXAMPLES / rng.choice(sorted(
        p.name for p in EXAMPLES.glob("*.json") if p.name.split(".")[0] in (
            "label", "carrier")))).read_bytes())
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(value) + 1)
        roll = rng.random()
        if roll < 0.4:
            value[at:at + 1] = noise[:rng.randint(1, 4)] or b"\x00"
        elif roll < 0.7:
            del value[at:at + rng.randint(1, 8)]
        else:  # repeat a piece: duplicate keys, nested braces, doubled quotes
            value[at:at] = value[rng.randrange(len(value)):][:rng.randint(1, 40)]
    try:
        event = decode(bytes(value))
    except DecodeError as err:
        assert err.code in events.ERROR_CODES
        assert (err.path is None) == (err.code not in ("schema", "unknown_type"))
    else:
        assert isinstance(event, (LabelPurchased, LabelVoided, CarrierScan))
