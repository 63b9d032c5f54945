"""The schema files, their examples, and the msgspec decoder agreeing with `jsonschema`.

The decoder (streams.core.events.decode, with the msgspec types streams.core.schema builds from the
schema files) must accept exactly the messages `jsonschema` accepts, and reject the others with
the contract's `error.code`. Where a message breaks several rules, msgspec reports the first it
meets: the `path` counts when it is one of the JSON Pointers of the errors jsonschema reports
(a missing property's pointer names the property, e.g. /ship_to/postal_code).
"""

from __future__ import annotations

import calendar
import copy
import json
import math
import random
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core import events, schema
from streams.core.carriers import CARRIER_ORDER
from streams.core.numbers import generate
from streams.core.schema import SCHEMAS_DIR

EXAMPLES = SCHEMAS_DIR / "examples"
MESSAGE_TYPES = ("label.purchased", "label.voided", "carrier.scan")
ALL_SCHEMAS = (*MESSAGE_TYPES, "alert", "deadletter", "incident", "action")
EVENT_CLASSES = {"label.purchased": events.LabelPurchased, "label.voided": events.LabelVoided,
                 "carrier.scan": events.CarrierScan}
TIMESTAMP_FIELDS = {"label.purchased": ("purchased_at", "ship_by"),
                    "label.voided": ("voided_at",), "carrier.scan": ("occurred_at",)}

# An independent RFC 3339 date-time check for jsonschema's format checker (the optional
# rfc3339-validator package is not a dependency): the grammar, then the calendar.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-]([0-9]{2}):([0-9]{2}))"
)


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    m = _RFC3339.fullmatch(value)
    if not m:
        return False
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
        return False
    if hour > 23 or minute > 59 or second > 60:
        return False
    return m.group(9) is None or (int(m.group(9)) <= 23 and int(m.group(10)) <= 59)


def reference_moment(text: str) -> datetime:
    """The instant the contract gives a valid timestamp, computed independently of
    streams: UTC, fractions truncated to microseconds, a leap second read as :59."""
    m = _RFC3339.fullmatch(text)
    assert m is not None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micro = int((m.group(7) or ".0")[1:7].ljust(6, "0"))
    local = datetime(year, month, day, hour, minute, min(second, 59), micro, tzinfo=UTC)
    if m.group(9) is None:
        return local
    offset = timedelta(hours=int(m.group(9)), minutes=int(m.group(10)))
    return local - offset if m.group(8)[0] == "+" else local + offset


FORMAT_CHECKER = jsonschema.FormatChecker(formats=())
FORMAT_CHECKER.checks("date-time")(_is_date_time)


def reference(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema.load(name), format_checker=FORMAT_CHECKER)


REFERENCES = {name: reference(name) for name in MESSAGE_TYPES}


def examples(kind: str) -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("*.json") if f".{kind}." in p.name)


def schema_of(path: Path) -> str:
    return path.name.split(f".{'valid' if '.valid.' in path.name else 'invalid'}.")[0]


# --- the reference verdict: Python's json and jsonschema ----------------------------------

def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _pointer(parts: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def expected(value: bytes, max_bytes: int = events.DEFAULT_MAX_BYTES,
             ) -> tuple[str | None, set[str | None]]:
    """(error code, the paths that may be reported) by the contract's order of checks, with
    jsonschema for the schema; (None, set()) for a message to accept."""
    if not value:
        return "invalid_json", {None}
    if len(value) > max_bytes:
        return "too_large", {None}
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return "encoding", {None}
    try:
        obj = json.loads(text, parse_constant=_refuse_constant)
    except ValueError:
        return "invalid_json", {None}
    if not isinstance(obj, dict):
        return "not_an_object", {None}
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in REFERENCES:
        return "unknown_type", {"/type"}
    paths: set[str | None] = set()
    for error in REFERENCES[kind].iter_errors(obj):
        where = _pointer(error.absolute_path)
        if error.validator == "required":
            paths.update(f"{where}/{name}" for name in error.validator_value
                         if name not in error.instance)
        else:
            paths.add(where)
    return ("schema", paths) if paths else (None, set())


def check_agrees(value: bytes, max_bytes: int = events.DEFAULT_MAX_BYTES) -> str:
    """Decode `value` and assert the verdict is the reference's; the outcome's name."""
    code, paths = expected(value, max_bytes)
    try:
        event = events.decode(value, max_bytes)
    except events.DecodeError as err:
        assert code is not None, f"rejected a valid message ({err}): {value[:300]!r}"
        assert err.code == code, f"{err} but expected {code} {paths}: {value[:300]!r}"
        assert err.path in paths, f"{err} but expected a path in {paths}: {value[:300]!r}"
        return code
    assert code is None, f"accepted, but expected {code} at {paths}: {value[:300]!r}"
    obj = json.loads(value)
    assert type(event) is EVENT_CLASSES[obj["type"]]
    assert (event.event_id, event.tracking_number) == (obj["event_id"], obj["tracking_number"])
    assert event.carrier == obj["carrier"].strip().lower()
    assert event.key == f"{event.carrier}:{event.number}"
    for name in TIMESTAMP_FIELDS[obj["type"]]:
        if name in obj:
            moment = getattr(event, name)
            assert moment == reference_moment(obj[name]) and moment.tzinfo is UTC, obj[name]
    first = TIMESTAMP_FIELDS[obj["type"]][0]
    assert event.event_ts == math.floor(reference_moment(obj[first]).timestamp())
    return "accepted"


# --- the schema files and their examples -------------------------------------------------

@pytest.mark.parametrize("name", ALL_SCHEMAS)
def test_schema_files_are_valid_draft_2020_12(name: str) -> None:
    doc = schema.load(name)
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(doc)


def test_every_timestamp_uses_the_same_pattern_the_decoder_has_a_shortcut_for() -> None:
    patterns = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("format") == "date-time" and "pattern" in node:
                patterns.add(node["pattern"])
            for value in node.values():
                walk(value)

    for name in ALL_SCHEMAS:
        walk(schema.load(name))
    assert patterns == {events.RFC3339_PATTERN}


def test_alert_actions_table_covers_every_rule_with_known_actions() -> None:
    alert = schema.load("alert")
    rules = set(alert["properties"]["rule"]["enum"])
    known = set(alert["properties"]["actions"]["items"]["enum"])
    table = alert["x-actions"]
    assert set(table) == rules
    for by_severity in table.values():
        assert set(by_severity) <= {"critical", "warning", "info"}
        for actions in by_severity.values():
            assert set(actions) <= known and len(actions) == len(set(actions))


def test_there_are_valid_and_invalid_examples_of_every_schema() -> None:
    for name in ALL_SCHEMAS:
        assert any(schema_of(p) == name for p in examples("valid")), name
        assert any(schema_of(p) == name for p in examples("invalid")), name


@pytest.mark.parametrize("path", examples("valid"), ids=lambda p: p.name)
def test_valid_examples_pass(path: Path) -> None:
    reference(schema_of(path)).validate(json.loads(path.read_text()))
    if schema_of(path) in MESSAGE_TYPES:
        assert check_agrees(path.read_bytes()) == "accepted"


@pytest.mark.parametrize("path", examples("invalid"), ids=lambda p: p.name)
def test_invalid_examples_fail(path: Path) -> None:
    assert not reference(schema_of(path)).is_valid(json.loads(path.read_text()))
    if schema_of(path) in MESSAGE_TYPES:
        assert check_agrees(path.read_bytes()) == "schema"


# --- the translation ---------------------------------------------------------------------

MESSAGE = {"type": "object", "required": ["type"],
           "properties": {"type": {"type": "string", "const": "m"}}}


def message_with(prop: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {**MESSAGE, "required": ["type", "x"] if required else ["type"],
            "properties": {**MESSAGE["properties"], "x": prop}}


@pytest.mark.parametrize("prop", [
    {"type": "string", "format": "email"},
    {"type": "string", "format": "date-time"},  # without the pattern that parse relies on
    {"type": "string", "minLength": 1, "x-unknown": 1},
    {"type": "object", "patternProperties": {}},
    {"type": "object", "additionalProperties": False},
    {"type": "integer", "minimum": 0},  # msgspec's int would refuse 1.0
    {"type": "integer"},
    {"type": "number"},
    {"type": "array", "items": {"type": "string"}},
    {"type": ["string", "null"]},
    {"oneOf": [{"type": "string"}]},
    {"type": "string", "enum": ["a", 1]},
    {"type": "string", "const": "a", "pattern": "^b"},  # no string can be valid
])
def test_translation_refuses_what_it_does_not_translate(prop: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="schema at /x"):
        schema.translate(message_with(prop))


def test_translation_refuses_the_output_schemas_and_messages_without_a_type_const() -> None:
    for name in ("alert", "deadletter"):
        with pytest.raises(ValueError):
            schema.translate(schema.load(name))
    with pytest.raises(ValueError, match="type"):
        schema.translate({"type": "object", "properties": {"a": {"type": "string"}}})
    with pytest.raises(ValueError, match="deferred"):
        schema.translate(MESSAGE, deferred=[("nowhere",)])


def test_translation_keeps_required_optional_and_constraints() -> None:
    kind = schema.translate(message_with({"type": "object", "required": ["a", "b"], "properties": {
        "a": {"type": "string", "minLength": 2, "maxLength": 3, "pattern": "^[a-z]+$"},
        "c": {"type": "string", "enum": ["p", "q", "rr"], "maxLength": 1},
        "v": {"type": "integer", "const": 1}}}))
    decode = msgspec.json.Decoder(kind.struct).decode
    ok = decode(b'{"type": "m", "x": {"a": "ab", "b": null, "v": 1.0}}')
    assert (ok.x.a, ok.x.b, ok.x.c) == ("ab", None, None)  # b: required, any value
    for bad, where in [(b'{"type": "m"}', "$"), (b'{"type": "m", "x": {"a": "ab"}}', "$.x"),
                       (b'{"type": "m", "x": {"a": "a", "b": 1}}', "$.x.a"),
                       (b'{"type": "m", "x": {"a": "AB", "b": 1}}', "$.x.a"),
                       (b'{"type": "m", "x": {"a": "ab", "b": 1, "c": "rr"}}', "$.x.c"),
                       (b'{"type": "m", "x": {"a": "ab", "b": 1, "c": null}}', "$.x.c"),
                       (b'{"type": "m", "x": {"a": "ab", "b": 1, "v": true}}', "$.x.v"),
                       (b'{"type": "m", "x": {"a": "ab", "b": 1, "v": 2}}', "$.x.v"),
                       (b'{"type": "n", "x": {"a": "ab", "b": 1}}', "$.type")]:
        with pytest.raises(msgspec.ValidationError) as err:
            decode(bad)
        assert str(err.value).endswith(f"`{where}`") or where == "$", (bad, err.value)


def test_deferred_patterns_are_left_to_the_caller() -> None:
    kind = schema.translate(message_with({"type": "string", "pattern": "^[a-z]$"}),
                            deferred=[("x",)])
    assert kind.patterns == {("x",): "^[a-z]$"}
    assert msgspec.json.decode(b'{"type": "m", "x": "AB"}', type=kind.struct).x == "AB"


@pytest.mark.parametrize(("text", "message", "path"), [
    ("Expected `str`, got `int` - at `$.ship_to.postal_code`", "Expected `str`, got `int`",
     "/ship_to/postal_code"),
    ("Expected `str` - at `$.labels[0].label_id`", "Expected `str`", "/labels/0/label_id"),
    ("Object missing required field `postal_code` - at `$.ship_to`",
     "Object missing required field `postal_code`", "/ship_to/postal_code"),
    ("Object missing required field `event_id`", "Object missing required field `event_id`",
     "/event_id"),
    ("Expected `object`, got `str`", "Expected `object`, got `str`", ""),
])
def test_msgspec_error_locations_become_json_pointers(text: str, message: str, path: str,
                                                      ) -> None:
    assert schema.explain(msgspec.ValidationError(text)) == (message, path)


# --- agreement with jsonschema on generated and mutated messages -------------------------

TRICKY_STRINGS = [
    "", " ", "x", "US", "us", "USA", "U", "USD", "usd", "EURO", "12.34", "12.", ".5", "-1",
    "1e3", "0", "007.10", "1234567890123456", "12.1234567", "x" * 127, "x" * 128, "x" * 129,
    "US\n", "\nUS", "2025-02-24T15:04:05Z", "2025-02-24t15:04:05z", "2025-02-24 15:04:05Z",
    "2025-02-24T15:04:05", "2025-02-24T15:04:05Z\n", "2025-02-24T15:04:05.5+05:30",
    "2024-02-29T00:00:00Z", "2025-02-29T00:00:00Z", "2025-04-31T00:00:00Z",
    "2025-12-31T23:59:60Z", "2025-02-24T24:00:00Z", "2025-02-24T15:60:00Z",
    "1969-12-31T23:59:59Z", "1970-01-01T00:00:00+01:00", "2999-12-31T23:59:59-23:59",
    "3000-01-01T00:00:00Z", "2025-02-24T15:04:05+24:00", "2025-02-24T15:04:05.Z",
    "2025-02-24T15:04:05.1234567890Z", "2025-02-24T15:04:05.999999999+00:00",
    "2025-02-24T15:04:05+0530", "2025-02-24T15:04Z", "20250224T150405Z",
    "2025-02-24T15:04:05,5Z", "2025-W09-1T15:04:05Z", "2025-02-24T15:04:05.5z",
    "２０２５-02-24T15:04:05Z", "2025-02-24T15:04:0５Z", "2025-02-24T15:04:05.５Z",
    "label.purchased", "label.voided", "carrier.scan", "delivered", "pre_transit",
    "Delivered", "ups", "UPS ", "1Z999AA10123456784", "\u00e9\u00e9", "\U0001F4E6" * 2,
]
JSON_SCALARS: list[Any] = [None, True, False, 0, 1, -1, 2, 1.0, 1.5, 0.0, -0.0, 1e3, 10**20,
                           *TRICKY_STRINGS]
KNOWN_FIELDS = ["type", "schema_version", "event_id", "label_id", "tracking_number", "carrier",
                "seller_id", "order_id", "channel", "service", "ship_to", "ship_from",
                "purchased_at", "ship_by", "cost", "voided_at", "status", "code", "occurred_at",
                "location", "postal_code", "country", "city", "state", "amount", "currency"]
STATUSES = schema.load("carrier.scan")["properties"]["status"]["enum"]
TEXT_CHARS = "abcXYZ019 -_.:/\\\"'\t\n\u00e9\u00df\u4e2d\U0001F4E6\u200b\u0000\u007f"


def random_text(rng: random.Random, lo: int = 0, hi: int = 12) -> str:
    return "".join(rng.choice(TEXT_CHARS) for _ in range(rng.randint(lo, hi)))


def random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if roll < 0.55 or depth > 2:
        return rng.choice(JSON_SCALARS) if rng.random() < 0.8 else random_text(rng)
    if roll < 0.7:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice([*KNOWN_FIELDS, "a", "extra"]): random_value(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


def random_timestamp(rng: random.Random, valid: bool = True) -> str:
    """An RFC 3339 timestamp in any form the schema allows (offsets, fractions of any length,
    lower case, leap second); with valid=False, one part is then broken: out of range (day
    30 of February, hour 24, offset +24:00, year 1969) or malformed."""
    year = rng.randint(1970, 2999) if rng.random() < 0.3 else rng.randint(2020, 2026)
    month = rng.randint(1, 12)
    parts = {"year": f"{year:04d}", "month": f"{month:02d}",
             "day": f"{rng.randint(1, calendar.monthrange(year, month)[1]):02d}",
             "t": rng.choice("TTTTt"), "hour": f"{rng.randint(0, 23):02d}",
             "minute": f"{rng.randint(0, 59):02d}",
             "second": f"{rng.choice([rng.randint(0, 59), 60]):02d}",
             "fraction": "" if rng.random() < 0.6 else "." + "".join(
                 rng.choice("0123456789") for _ in range(rng.randint(1, 12))),
             "zone": rng.choice("ZZZZz") if rng.random() < 0.6 else
             f"{rng.choice('+-')}{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"}
    if not valid:
        part, broken = rng.choice([
            ("year", rng.choice(["1969", "3000", "0001", "9999", "20251"])),
            ("month", rng.choice(["00", "13", "1"])),
            ("day", rng.choice(["00", "32", f"{calendar.monthrange(year, month)[1] + 1:02d}"])),
            ("t", rng.choice([" ", "_", ""])), ("hour", rng.choice(["24", "99", "1"])),
            ("minute", "60"), ("second", rng.choice(["61", "99"])),
            ("fraction", rng.choice([".", ",5", ".5.5", ".\uff15"])),
            ("zone", rng.choice(["", "+24:00", "-00:60", "+0530", "+05", "UTC", "Z\n"]))])
        parts[part] = broken
    p = parts
    return (f"{p['year']}-{p['month']}-{p['day']}{p['t']}{p['hour']}:{p['minute']}:{p['second']}"
            f"{p['fraction']}{p['zone']}")


def random_number(rng: random.Random, carrier: str) -> str:
    if carrier in CARRIER_ORDER and rng.random() < 0.8:
        number = generate(carrier, rng=rng)
        if rng.random() < 0.3:  # printed with spaces, dashes, lower case
            number = rng.choice([" ", "-", ""]).join(
                number[i:i + 4] for i in range(0, len(number), 4))
            number = number.lower() if rng.random() < 0.5 else number
        return number
    return random_text(rng, 1, 30)


def generated_message(rng: random.Random) -> dict[str, Any]:
    """A valid message of a random type, optional fields present or not, extra fields."""
    kind = rng.choice(MESSAGE_TYPES)
    carrier = rng.choice([*CARRIER_ORDER, "pigeon"])
    msg: dict[str, Any] = {"type": kind, "schema_version": rng.choice([1, 1, 1, 1.0]),
                           "event_id": random_text(rng, 1, 40) or "e",
                           "tracking_number": random_number(rng, carrier),
                           "carrier": rng.choice([carrier, carrier, carrier.upper(),
                                                  f" {carrier} "])}
    if kind != "carrier.scan":
        msg["label_id"] = f"L-{rng.randrange(10**6)}"
    if kind == "label.purchased":
        msg.update(seller_id=f"s-{rng.randrange(100)}", order_id=f"o-{rng.randrange(10**6)}",
                   ship_to={"postal_code": random_text(rng, 1, 10) or "1",
                            "country": rng.choice(["US", "CA", "GB", "DE"])},
                   purchased_at=random_timestamp(rng))
        optional = {"service": random_text(rng), "channel": rng.choice(["buy_shipping", "veeqo"]),
                    "ship_by": random_timestamp(rng),
                    "ship_from": rng.choice([{}, {"postal_code": "98109"}, {"country": "US"},
                                             {"postal_code": "98109", "country": "US"}]),
                    "cost": {"amount": rng.choice(["0", "7.45", "12.3", "123456789012345.123456"]),
                             "currency": rng.choice(["USD", "EUR", "CAD"])}}
    elif kind == "label.voided":
        msg["voided_at"] = random_timestamp(rng)
        optional = {}
    else:
        msg.update(status=rng.choice(STATUSES), occurred_at=random_timestamp(rng))
        location = {"postal_code": "10001", "city": "NEW YORK", "state": "NY", "country": "US"}
        optional = {"code": rng.choice(["", "KB", "OF"]),
                    "location": {k: v for k, v in location.items() if rng.random() < 0.7}}
    for name, value in optional.items():
        if rng.random() < 0.6:
            msg[name] = value
    if rng.random() < 0.2:
        msg[rng.choice(["extra", "producer", "tags"])] = random_value(rng)
    items = list(msg.items())
    rng.shuffle(items)  # the type need not come first
    return dict(items)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*prefix, key))
            out.extend(_paths(value, (*prefix, key)))
    return out


def _edit(rng: random.Random, text: str) -> str:
    edit = rng.choice(["append", "drop", "upper", "lower", "digit", "grow", "unicode"])
    if edit == "append":
        return text + rng.choice(["\n", " ", "x", "Z", "0", "\u00e9", "\u0000"])
    if edit == "drop":
        return text[:-1]
    if edit == "upper":
        return text.upper()
    if edit == "lower":
        return text.lower()
    if edit == "grow":  # to and across the length limits (2, 3, 32, 64, 128, 256)
        return (text or "x") * rng.choice([2, 3]) if rng.random() < 0.5 else (
            text + "y" * (rng.choice([2, 3, 32, 33, 64, 65, 128, 129, 256, 257]) - len(text)))
    if not text:
        return text
    i = rng.randrange(len(text))
    new = rng.choice("0123456789") if edit == "digit" else rng.choice("\uff10\u00e9X-")
    return text[:i] + new + text[i + 1:]


def mutated(rng: random.Random, msg: dict[str, Any]) -> dict[str, Any]:
    msg = copy.deepcopy(msg)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        paths = _paths(msg)
        if not paths:
            break
        where = rng.choice(paths)
        parent = msg
        for part in where[:-1]:
            parent = parent[part]
        key = where[-1]
        op = rng.choice(["delete", "replace", "edit", "edit", "add", "time", "type"])
        if op == "delete":
            del parent[key]
        elif op == "replace":
            parent[key] = random_value(rng)
        elif op == "add":
            parent[rng.choice([*KNOWN_FIELDS, "extra"])] = random_value(rng)
        elif op == "time":
            name = rng.choice(["purchased_at", "ship_by", "voided_at", "occurred_at"])
            msg[name] = random_timestamp(rng, valid=False)
        elif op == "type":
            msg["type"] = rng.choice([*MESSAGE_TYPES, "label.printed", None, 1, ["carrier.scan"]])
        elif isinstance(parent[key], str):
            parent[key] = _edit(rng, parent[key])
        else:
            parent[key] = random_value(rng)
    return msg


def encoded(rng: random.Random, msg: Any) -> bytes:
    value = json.dumps(msg, ensure_ascii=rng.random() < 0.3,
                       separators=rng.choice([(",", ":"), (", ", ": ")])).encode()
    if rng.random() > 0.15:
        return value
    # byte-level damage: what a broken producer sends
    i = rng.randrange(len(value) + 1)
    damage = rng.choice(["truncate", "byte", "duplicate", "bom", "junk", "array", "empty",
                         "skipped_bad_utf8", "control"])
    if damage == "truncate":
        return value[:i]
    if damage == "byte":
        return value[:i] + rng.choice([b"\xff", b"\xc3", b"\x80", b"\xed\xa0\x80"]) + value[i:]
    if damage == "duplicate" and value.startswith(b"{") and len(value) > 2:
        name = rng.choice(["event_id", "type", "status", "occurred_at", "purchased_at"])
        earlier = json.dumps(random_value(rng) if rng.random() < 0.5 else msg.get(name)).encode()
        return b'{"' + name.encode() + b'":' + earlier + b"," + value[1:]
    if damage == "bom":
        return b"\xef\xbb\xbf" + value
    if damage == "junk":
        return value + rng.choice([b" x", b"}", b",", b"\n"])
    if damage == "array":
        return b"[" + value + b"]"
    if damage == "empty":
        return rng.choice([b"", b" ", b"null", b"\"text\"", b"1"])
    if damage == "skipped_bad_utf8" and value.startswith(b"{") and len(value) > 2:
        return b'{"extra":"\xff\xfe",' + value[1:]  # a field msgspec skips: still not UTF-8
    if damage == "control" and value.startswith(b"{") and len(value) > 2:
        return b'{"extra":"a' + rng.choice([b"\x01", b"\t", b"\n", b"\x1f"]) + b'",' + value[1:]
    return value


def case(rng: random.Random) -> tuple[bytes, int]:
    """One message to decode, and the maximum size to decode it with."""
    source = rng.random()
    if source < 0.15:
        path = rng.choice([p for p in examples("valid") if schema_of(p) in MESSAGE_TYPES])
        msg: Any = json.loads(path.read_text())
    else:
        msg = generated_message(rng)
    if rng.random() < 0.6:
        msg = mutated(rng, msg)
    value = encoded(rng, msg)
    max_bytes = events.DEFAULT_MAX_BYTES
    if value and rng.random() < 0.02:
        max_bytes = rng.randint(max(1, len(value) - 3), len(value) + 3)
    return value, max_bytes


def test_decoder_agrees_with_jsonschema_on_12000_generated_and_mutated_messages() -> None:
    rng = random.Random(20250224)
    outcomes: Counter[str] = Counter()
    for _ in range(12_000):
        value, max_bytes = case(rng)
        outcomes[check_agrees(value, max_bytes)] += 1
    # the mix tests something: many accepted, many schema errors, every other code seen
    assert sum(outcomes.values()) == 12_000
    assert outcomes["accepted"] > 3000 and outcomes["schema"] > 2000, outcomes
    for code in ("invalid_json", "encoding", "not_an_object", "unknown_type", "too_large"):
        assert outcomes[code] >= 20, outcomes


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_decoder_agrees_with_jsonschema_shrinking(rng: random.Random) -> None:
    # the same generator under hypothesis, which shrinks a failure to a small case
    check_agrees(*case(rng))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(MESSAGE_TYPES), st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(TRICKY_STRINGS),
              st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(KNOWN_FIELDS), inner, max_size=4)),
    max_leaves=8))
def test_decoder_agrees_on_arbitrary_values(kind: str, value: Any) -> None:
    if isinstance(value, dict) and value:
        value = {"type": kind, **value}
    check_agrees(json.dumps(value).encode())


@pytest.mark.parametrize("text", TRICKY_STRINGS)
def test_tricky_strings_agree_in_every_timestamp_and_country(text: str) -> None:
    for path in examples("valid"):
        if schema_of(path) not in MESSAGE_TYPES:
            continue
        base = json.loads(path.read_text())
        for name in (*TIMESTAMP_FIELDS[base["type"]], "status", "carrier"):
            check_agrees(json.dumps(base | {name: text}).encode())
        for parent in ("ship_to", "ship_from", "location"):
            check_agrees(json.dumps(base | {parent: {"country": text}}).encode())
        check_agrees(json.dumps(base | {"cost": {"amount": text, "currency": text}}).encode())


def test_timestamps_agree_on_random_components() -> None:
    rng = random.Random(3339)
    base = json.loads((EXAMPLES / "carrier.scan.valid.minimal.json").read_text())
    outcomes: Counter[str] = Counter()
    for _ in range(3000):
        text = random_timestamp(rng, valid=rng.random() < 0.5)
        outcomes[check_agrees(json.dumps(base | {"occurred_at": text}).encode())] += 1
    assert outcomes["accepted"] > 1000 and outcomes["schema"] > 500, outcomes


def test_the_timestamp_shortcut_holds_next_to_its_shape() -> None:
    # decode proves `YYYY-MM-DDTHH:MM:SS[.digits]Z` without the regex (events._moment): every
    # one-character change of such strings must still get jsonschema's verdict
    base = json.loads((EXAMPLES / "carrier.scan.valid.minimal.json").read_text())
    outcomes: Counter[str] = Counter()
    for template in ("2025-02-28T23:59:59Z", "1970-01-01T00:00:00.5Z", "2999-12-31T23:59:59Z",
                     "2024-02-29T12:00:00.123456789Z"):
        for i in range(len(template)):
            for char in "0129-:.TtZz +\u0663\uff15x":
                text = template[:i] + char + template[i + 1:]
                outcomes[check_agrees(json.dumps(base | {"occurred_at": text}).encode())] += 1
    for text in ("1969-12-31T23:59:59Z", "3000-01-01T00:00:00Z", "2025-02-24T15:04:05.Z",
                 "2025-02-24T15:04:05.Z5", "2025-02-24T15:04:05Z5", "2025-02-24T15:04:05.1ZZ"):
        outcomes[check_agrees(json.dumps(base | {"occurred_at": text}).encode())] += 1
    assert outcomes["accepted"] > 100 and outcomes["schema"] > 500, outcomes
