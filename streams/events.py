"""Decode one input message (bytes) into a typed event, or say exactly why it is a dead letter.

    event = decode(record.value, max_bytes=settings.max_message_bytes)  # raises DecodeError

Checks run in the contract's order: size (`too_large`), UTF-8 (`encoding`), JSON
(`invalid_json`), top-level object (`not_an_object`), `type` (`unknown_type`), then the
message's schema, compiled from schemas/<type>.schema.json (`schema`, with a JSON Pointer
`path` such as `/ship_to/postal_code`). A None or empty value is `invalid_json`.

A well-formed label whose tracking number fails validation is NOT a decode error: the event
carries the `Validation` and detection turns it into an `invalid_tracking` alert.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from streams import schema as _schema
from streams.validation import Validation, canonical, validate

LABEL_PURCHASED = "label.purchased"
LABEL_VOIDED = "label.voided"
CARRIER_SCAN = "carrier.scan"
EVENT_TYPES = (LABEL_PURCHASED, LABEL_VOIDED, CARRIER_SCAN)
DEFAULT_MAX_BYTES = 1 << 20

ERROR_CODES = ("encoding", "invalid_json", "not_an_object", "unknown_type", "schema", "too_large")


class DecodeError(Exception):
    """Why a message is a dead letter: `code` is one of ERROR_CODES, `path` a JSON Pointer."""

    def __init__(self, code: str, message: str, path: str | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" at {path}" if path else ""))
        self.code = code
        self.message = message
        self.path = path

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "path": self.path}


@dataclass(slots=True)
class LabelPurchased:
    event_id: str
    label_id: str
    tracking_number: str  # as received
    carrier: str  # lower case, stripped
    seller_id: str
    order_id: str
    channel: str | None
    service: str | None
    ship_to_postal_code: str
    ship_to_country: str
    cost: dict[str, str] | None  # {"amount", "currency"}
    purchased_at: datetime  # UTC
    ship_by: datetime | None  # UTC
    event_ts: int  # purchased_at, epoch seconds: what detection compares
    key: str  # tracking key f"{carrier}:{canonical number}"
    number: str  # canonical number
    validation: Validation


@dataclass(slots=True)
class LabelVoided:
    event_id: str
    label_id: str
    tracking_number: str
    carrier: str
    voided_at: datetime
    event_ts: int
    key: str
    number: str


@dataclass(slots=True)
class CarrierScan:
    event_id: str
    tracking_number: str
    carrier: str
    status: str
    code: str | None
    occurred_at: datetime
    postal_code: str | None
    country: str | None
    city: str | None
    state: str | None
    event_ts: int
    key: str
    number: str


Event = LabelPurchased | LabelVoided | CarrierScan


_fromiso = datetime.fromisoformat
_floor = math.floor


def _utc(text: str) -> tuple[datetime, int]:
    """(UTC datetime, epoch seconds floored) for a timestamp the schema already accepted."""
    # fromisoformat reads every ordinary RFC 3339 string (C, ~0.1 us; "Z" gives UTC itself);
    # parse_timestamp only for what it refuses (lower-case t/z, leap second :60)
    try:
        moment = _fromiso(text)
    except ValueError:
        moment = _schema.parse_timestamp(text)
        assert moment is not None  # the compiled schema accepted it already
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment, _floor(moment.timestamp())


def tracking_key(carrier: str, number: str) -> str:
    return f"{carrier}:{number}"


def _label_purchased(obj: dict[str, Any]) -> LabelPurchased:
    carrier = obj["carrier"].strip().lower()
    raw = obj["tracking_number"]
    check = validate(raw, carrier)
    number = check.number
    ship_to = obj["ship_to"]
    purchased_at, ts = _utc(obj["purchased_at"])
    ship_by = obj.get("ship_by")
    cost = obj.get("cost")
    get = obj.get
    return LabelPurchased(
        obj["event_id"], obj["label_id"], raw, carrier, obj["seller_id"], obj["order_id"],
        get("channel"), get("service"), ship_to["postal_code"], ship_to["country"],
        None if cost is None else {"amount": cost["amount"], "currency": cost["currency"]},
        purchased_at, None if ship_by is None else _utc(ship_by)[0], ts,
        f"{carrier}:{number}", number, check,
    )


def _label_voided(obj: dict[str, Any]) -> LabelVoided:
    carrier = obj["carrier"].strip().lower()
    raw = obj["tracking_number"]
    number = canonical(raw, carrier)
    voided_at, ts = _utc(obj["voided_at"])
    return LabelVoided(
        obj["event_id"], obj["label_id"], raw, carrier, voided_at, ts, f"{carrier}:{number}",
        number,
    )


def _carrier_scan(obj: dict[str, Any]) -> CarrierScan:
    carrier = obj["carrier"].strip().lower()
    raw = obj["tracking_number"]
    number = canonical(raw, carrier)
    text = obj["occurred_at"]
    try:  # _utc(), inlined: scans are most of the traffic
        occurred_at = _fromiso(text)
    except ValueError:
        occurred_at = _schema.parse_timestamp(text)
        assert occurred_at is not None  # the compiled schema accepted it already
    if occurred_at.tzinfo is not UTC:
        occurred_at = occurred_at.astimezone(UTC)
    where = obj.get("location")
    if where:
        get = where.get
        postal_code, country, city, state = (
            get("postal_code"), get("country"), get("city"), get("state"))
    else:
        postal_code = country = city = state = None
    return CarrierScan(
        obj["event_id"], raw, carrier, obj["status"], obj.get("code"), occurred_at,
        postal_code, country, city, state, _floor(occurred_at.timestamp()),
        f"{carrier}:{number}", number,
    )


# type -> (compiled schema check, builder); the checks come from the schema files at import.
_DECODERS = {
    LABEL_PURCHASED: (_schema.validator(LABEL_PURCHASED), _label_purchased),
    LABEL_VOIDED: (_schema.validator(LABEL_VOIDED), _label_voided),
    CARRIER_SCAN: (_schema.validator(CARRIER_SCAN), _carrier_scan),
}
# type -> (generated valid/invalid check, builder): decode's path for messages that pass
_FAST = {kind: (check.fast, build) for kind, (check, build) in _DECODERS.items()}  # type: ignore[attr-defined]
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


def parse(value: bytes | bytearray | memoryview | None, max_bytes: int = DEFAULT_MAX_BYTES,
          ) -> dict[str, Any]:
    """The JSON object of a message, or DecodeError (size, encoding, JSON, object)."""
    if not value:
        raise DecodeError("invalid_json", "empty message value")
    if len(value) > max_bytes:
        raise DecodeError("too_large", f"{len(value)} bytes > maximum {max_bytes}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        # orjson reports bad UTF-8 as a JSON error; tell the two apart only on this slow path
        try:
            bytes(value).decode("utf-8")
        except UnicodeDecodeError as bad:
            raise DecodeError("encoding", f"not UTF-8: {bad.reason} at byte {bad.start}") from None
        raise DecodeError("invalid_json", str(exc)) from None
    if type(obj) is not dict:
        raise DecodeError("not_an_object", f"top-level JSON {type(obj).__name__}, not an object")
    return obj


def decode_object(obj: dict[str, Any]) -> Event:
    """The typed event of an already-parsed message object (schema checked here)."""
    kind = obj.get("type")
    entry = _DECODERS.get(kind) if type(kind) is str else None
    if entry is None:
        raise DecodeError(
            "unknown_type", f"type {kind!r} is not one of {', '.join(EVENT_TYPES)}", "/type"
        )
    check, build = entry
    try:
        check(obj)
    except _schema.Invalid as exc:
        raise DecodeError("schema", exc.message, exc.path) from None
    return build(obj)


def decode(value: bytes | bytearray | memoryview | None, max_bytes: int = DEFAULT_MAX_BYTES,
           ) -> Event:
    """Decode and check one message; raises DecodeError with a contract dead-letter code."""
    # parse() and decode_object() inlined for messages that pass; anything else takes
    # them again from the top, so every error is reported exactly as they report it
    try:
        obj = _loads(value) if value and len(value) <= max_bytes else None
    except _JSONDecodeError:
        obj = None
    if type(obj) is not dict:
        return decode_object(parse(value, max_bytes))
    kind = obj.get("type")
    entry = _FAST.get(kind) if type(kind) is str else None
    if entry is not None and entry[0](obj):
        return entry[1](obj)
    return decode_object(obj)
