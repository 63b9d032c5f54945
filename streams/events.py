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


_floor = math.floor


def _utc(moment: datetime) -> tuple[datetime, int]:
    """(UTC datetime, epoch seconds floored) of a timestamp the schema check parsed."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment, _floor(moment.timestamp())


def tracking_key(carrier: str, number: str) -> str:
    return f"{carrier}:{number}"


# The fields each builder takes, in order: the schema check extracts them as it checks them
# (one dict read per field; a date-time comes parsed).
_LABEL_PURCHASED_FIELDS = (
    "event_id", "label_id", "tracking_number", "carrier", "seller_id", "order_id", "channel",
    "service", "ship_to/postal_code", "ship_to/country", "cost/amount", "cost/currency",
    "purchased_at", "ship_by",
)


def _label_purchased(values: tuple[Any, ...]) -> LabelPurchased:
    (event_id, label_id, raw, carrier, seller_id, order_id, channel, service, postal_code,
     country, amount, currency, purchased_at, ship_by) = values
    carrier = carrier.strip().lower()
    check = validate(raw, carrier)
    number = check.number
    purchased_at, ts = _utc(purchased_at)
    return LabelPurchased(
        event_id, label_id, raw, carrier, seller_id, order_id, channel, service, postal_code,
        country, None if amount is None else {"amount": amount, "currency": currency},
        purchased_at, None if ship_by is None else _utc(ship_by)[0], ts,
        f"{carrier}:{number}", number, check,
    )


_LABEL_VOIDED_FIELDS = ("event_id", "label_id", "tracking_number", "carrier", "voided_at")


def _label_voided(values: tuple[Any, ...]) -> LabelVoided:
    event_id, label_id, raw, carrier, voided_at = values
    carrier = carrier.strip().lower()
    number = canonical(raw, carrier)
    voided_at, ts = _utc(voided_at)
    return LabelVoided(
        event_id, label_id, raw, carrier, voided_at, ts, f"{carrier}:{number}", number,
    )


_CARRIER_SCAN_FIELDS = (
    "event_id", "tracking_number", "carrier", "status", "code", "occurred_at",
    "location/postal_code", "location/country", "location/city", "location/state",
)


def _carrier_scan(values: tuple[Any, ...]) -> CarrierScan:
    (event_id, raw, carrier, status, code, occurred_at, postal_code, country, city,
     state) = values
    carrier = carrier.strip().lower()
    number = canonical(raw, carrier)
    if occurred_at.tzinfo is not UTC:  # _utc(), inlined: scans are most of the traffic
        occurred_at = occurred_at.astimezone(UTC)
    return CarrierScan(
        event_id, raw, carrier, status, code, occurred_at, postal_code, country, city, state,
        _floor(occurred_at.timestamp()), f"{carrier}:{number}", number,
    )


# type -> (compiled schema check, generated check-and-extract, builder), from the schema
# files at import
_DECODERS = {
    kind: (_schema.validator(kind), _schema.compile_fast(_schema.load(kind), fields), build)
    for kind, fields, build in (
        (LABEL_PURCHASED, _LABEL_PURCHASED_FIELDS, _label_purchased),
        (LABEL_VOIDED, _LABEL_VOIDED_FIELDS, _label_voided),
        (CARRIER_SCAN, _CARRIER_SCAN_FIELDS, _carrier_scan),
    )
}
# type -> (check-and-extract, builder): decode's path for messages that pass
_FAST = {kind: (extract, build) for kind, (_, extract, build) in _DECODERS.items()}
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
    check, extract, build = entry
    try:
        check(obj)
    except _schema.Invalid as exc:
        raise DecodeError("schema", exc.message, exc.path) from None
    return build(extract(obj))


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
    if entry is not None:
        values = entry[0](obj)
        if values is not None:
            return entry[1](values)
    return decode_object(obj)


# ---------------------------------------------------------------- a batch of events as bytes
# (the internal topic's frames). Interim format until events are msgspec structs: an orjson
# array of the event objects, each tagged with its type.

_CLASSES: dict[str, type] = {
    LABEL_PURCHASED: LabelPurchased, LABEL_VOIDED: LabelVoided, CARRIER_SCAN: CarrierScan,
}
_TAGS = {cls: tag for tag, cls in _CLASSES.items()}
_DATETIME_FIELDS = ("purchased_at", "ship_by", "voided_at", "occurred_at")


def encode_events(batch: list[Event]) -> bytes:
    return orjson.dumps([[_TAGS[type(e)], e] for e in batch])


def decode_events(data: bytes) -> list[Event]:
    out: list[Event] = []
    for tag, obj in orjson.loads(data):
        for name in _DATETIME_FIELDS:
            value = obj.get(name)
            if value is not None:
                obj[name] = datetime.fromisoformat(value)
        if "validation" in obj:
            obj["validation"] = Validation(**obj["validation"])
        out.append(_CLASSES[tag](**obj))
    return out
