"""Decode one input message (bytes) into a typed event, or say exactly why it is a dead letter.

    event = decode(record.value, max_bytes=settings.max_message_bytes)  # raises DecodeError

Checks run in the contract's order: size (`too_large`), UTF-8 (`encoding`), JSON
(`invalid_json`), top-level object (`not_an_object`), `type` (`unknown_type`, path `/type`),
then the message's schema (`schema`, with a JSON Pointer `path` such as `/ship_to/postal_code`).
A None or empty value is `invalid_json`.

The schema check is msgspec's: streams.core.schema builds one struct per schemas/<type>.schema.json
and a tagged union of them on `type` decodes and validates a message in one pass. Only when
that fails are the checks above taken one by one, to say which failed (dead letters are rare).
Where a message breaks several rules of its schema, the error is one of them (the first msgspec
meets); tests/core/test_schemas.py checks it is one of the errors `jsonschema` reports.

A well-formed label whose tracking number fails validation is NOT a decode error: the event
carries the `Validation` and detection turns it into an `invalid_tracking` alert.

Events are msgspec structs: `encode_events` / `decode_events` ship a batch of them between two
stages as msgpack (arrays, tagged by type), losslessly.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

import msgspec

from streams.core import schema as _schema
from streams.core.carriers import carriers
from streams.core.validation import Validation, canonical, validate

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


# The decoded events. Field order is the msgpack wire order of encode_events (array_like):
# changing it changes EVENTS_FORMAT. Tags are small integers, one byte on the wire.
EVENTS_FORMAT = 1


class LabelPurchased(msgspec.Struct, tag=1, array_like=True, gc=False):
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


class LabelVoided(msgspec.Struct, tag=2, array_like=True, gc=False):
    event_id: str
    label_id: str
    tracking_number: str
    carrier: str
    voided_at: datetime
    event_ts: int
    key: str
    number: str


class CarrierScan(msgspec.Struct, tag=3, array_like=True, gc=False):
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

_events_encoder = msgspec.msgpack.Encoder()
_events_decoder = msgspec.msgpack.Decoder(list[Event])  # type: ignore[arg-type]


def encode_events(batch: list[Event]) -> bytes:
    """A batch of events as msgpack (format EVENTS_FORMAT); `decode_events` reverses it."""
    return _events_encoder.encode(batch)


def decode_events(data: bytes | bytearray | memoryview) -> list[Event]:
    """The events of `encode_events(batch)`, equal to the batch's (datetimes UTC)."""
    return _events_decoder.decode(data)


def tracking_key(carrier: str, number: str) -> str:
    return f"{carrier}:{number}"


# --- from a decoded message to its event ------------------------------------------------

class _Recheck(Exception):
    """The fast path cannot vouch for a message: decode it again the slow way, which says why."""


# The fast path's structs leave these patterns to the builders below (streams.core.schema,
# `deferred`): msgspec runs a regex per value, ~0.5 us for a timestamp; here the values that
# repeat (countries, currencies, amounts) are looked up in a set of those already matched,
# and timestamps of the common shape are proven without the regex (_moment).
_DEFERRED = {
    LABEL_PURCHASED: frozenset({("purchased_at",), ("ship_by",), ("ship_to", "country"),
                                ("ship_from", "country"), ("cost", "amount"),
                                ("cost", "currency")}),
    LABEL_VOIDED: frozenset({("voided_at",)}),
    CARRIER_SCAN: frozenset({("occurred_at",), ("location", "country")}),
}
_FAST = {kind: _schema.input_type(kind, paths) for kind, paths in _DEFERRED.items()}
_MEMO_LIMIT = 4096  # values remembered per pattern: bounded memory whatever the input


class _Pattern:
    """One deferred schema pattern: `matches(value)`, remembering values that matched."""

    __slots__ = ("ok", "search")

    def __init__(self, pattern: str) -> None:
        self.ok: set[str] = set()
        self.search = re.compile(pattern).search  # search: JSON Schema patterns are unanchored

    def matches(self, value: str) -> bool:
        if self.search(value) is None:
            return False
        if len(self.ok) < _MEMO_LIMIT:
            self.ok.add(value)
        return True


def _pattern(kind: str, *path: str) -> _Pattern:
    return _Pattern(_FAST[kind].patterns[path])


# The timestamp pattern the shortcut in _moment is proven for (tests/core/test_schemas.py); a
# schema with any other date-time pattern gets the regex for every value.
RFC3339_PATTERN = (
    r"^(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]"
    r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
    r"([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)


class _Timestamp:
    """A `format: date-time` field: its pattern, and whether _moment's shortcut holds for it."""

    __slots__ = ("path", "search", "shortcut")

    def __init__(self, kind: str, field: str) -> None:
        pattern = _FAST[kind].patterns[(field,)]
        self.path = f"/{field}"
        self.search = re.compile(pattern).search
        self.shortcut = pattern == RFC3339_PATTERN


_CODES = frozenset(carriers())
_fromiso = datetime.fromisoformat
_floor = math.floor
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _moment(text: str, spec: _Timestamp) -> tuple[datetime, int]:
    """The UTC datetime of a `format: date-time` string and its epoch seconds (floored), or
    _Recheck if its pattern fails.

    The shortcut: when fromisoformat (C) reads `YYYY-MM-DDTHH:MM:SS[.digits]Z` with those
    separators at those places, every other place held an ASCII digit and the fields are in
    range (month, day of that month, hour, minute, second <= 59), so RFC3339_PATTERN matches
    exactly when the year is 1970-2999. Anything else (offsets, lower case, :60) takes the
    schema's regex, then parse_timestamp for the calendar.
    """
    if spec.shortcut:
        n = len(text)
        if n == 20 and text[4::3] == "--T::Z":
            try:
                moment = _fromiso(text)
            except ValueError:  # :60, 02-30: the long way says which
                pass
            else:
                # the year, as text: its four places held ASCII digits (fromisoformat read
                # them), so this is 1970 <= moment.year <= 2999 without the attribute
                if "1970" <= text < "3":  # "Z": tzinfo is UTC
                    # whole seconds: exactly floor(timestamp()), in a third of its work
                    since = moment - _EPOCH
                    return moment, since.days * 86400 + since.seconds
        elif (n > 21 and text[4:20:3] == "--T::." and text[-1] == "Z" and text.isascii()
              and text[20:-1].isdigit()):
            try:
                moment = _fromiso(text)
            except ValueError:
                pass
            else:
                if "1970" <= text < "3":
                    return moment, _floor(moment.timestamp())
    if spec.search(text) is None:
        raise _Recheck
    parsed = _schema.parse_timestamp(text)
    if parsed is None:
        raise DecodeError("schema", f"not an RFC 3339 date-time: {text!r}", spec.path)
    moment = parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)
    return moment, _floor(moment.timestamp())


_PURCHASED_AT = _Timestamp(LABEL_PURCHASED, "purchased_at")
_SHIP_BY = _Timestamp(LABEL_PURCHASED, "ship_by")
_SHIP_TO_COUNTRY = _pattern(LABEL_PURCHASED, "ship_to", "country")
_SHIP_FROM_COUNTRY = _pattern(LABEL_PURCHASED, "ship_from", "country")
_AMOUNT = _pattern(LABEL_PURCHASED, "cost", "amount")
_CURRENCY = _pattern(LABEL_PURCHASED, "cost", "currency")


def _label_purchased(m: Any) -> LabelPurchased:
    ship_to, ship_from, cost = m.ship_to, m.ship_from, m.cost
    country = ship_to.country
    if country not in _SHIP_TO_COUNTRY.ok and not _SHIP_TO_COUNTRY.matches(country):
        raise _Recheck
    if ship_from is not None and ship_from.country is not None and (
            ship_from.country not in _SHIP_FROM_COUNTRY.ok
            and not _SHIP_FROM_COUNTRY.matches(ship_from.country)):
        raise _Recheck
    if cost is None:
        amount = None
    else:
        amount, currency = cost.amount, cost.currency
        if (amount not in _AMOUNT.ok and not _AMOUNT.matches(amount)) or (
                currency not in _CURRENCY.ok and not _CURRENCY.matches(currency)):
            raise _Recheck
        amount = {"amount": amount, "currency": currency}
    purchased_at, ts = _moment(m.purchased_at, _PURCHASED_AT)
    ship_by = None if m.ship_by is None else _moment(m.ship_by, _SHIP_BY)[0]
    carrier = m.carrier
    if carrier not in _CODES:  # a set lookup spares most messages strip() and lower()
        carrier = carrier.strip().lower()
    check = validate(m.tracking_number, carrier)
    number = check.number
    return LabelPurchased(
        m.event_id, m.label_id, m.tracking_number, carrier, m.seller_id, m.order_id, m.channel,
        m.service, ship_to.postal_code, country, amount, purchased_at, ship_by,
        ts, f"{carrier}:{number}", number, check,
    )


_VOIDED_AT = _Timestamp(LABEL_VOIDED, "voided_at")


def _label_voided(m: Any) -> LabelVoided:
    voided_at, ts = _moment(m.voided_at, _VOIDED_AT)
    carrier = m.carrier
    if carrier not in _CODES:  # a set lookup spares most messages strip() and lower()
        carrier = carrier.strip().lower()
    number = canonical(m.tracking_number, carrier)
    return LabelVoided(m.event_id, m.label_id, m.tracking_number, carrier, voided_at,
                       ts, f"{carrier}:{number}", number)


_OCCURRED_AT = _Timestamp(CARRIER_SCAN, "occurred_at")
_SCAN_COUNTRY = _pattern(CARRIER_SCAN, "location", "country")


def _carrier_scan(m: Any) -> CarrierScan:
    where = m.location
    if where is None:
        postal_code = country = city = state = None
    else:
        postal_code, country, city, state = (where.postal_code, where.country, where.city,
                                             where.state)
        if country is not None and country not in _SCAN_COUNTRY.ok and (
                not _SCAN_COUNTRY.matches(country)):
            raise _Recheck
    occurred_at, ts = _moment(m.occurred_at, _OCCURRED_AT)
    carrier = m.carrier
    if carrier not in _CODES:  # a set lookup spares most messages strip() and lower()
        carrier = carrier.strip().lower()
    number = canonical(m.tracking_number, carrier)
    return CarrierScan(
        m.event_id, m.tracking_number, carrier, m.status, m.code, occurred_at, postal_code,
        country, city, state, ts, f"{carrier}:{number}", number,
    )


# type -> event builder; each parses exactly the schema's date-time fields (checked here, so
# a schema edit that adds one cannot go unchecked)
_BUILDERS = {LABEL_PURCHASED: (_label_purchased, {("purchased_at",), ("ship_by",)}),
             LABEL_VOIDED: (_label_voided, {("voided_at",)}),
             CARRIER_SCAN: (_carrier_scan, {("occurred_at",)})}
_INPUTS = {kind: _schema.input_type(kind) for kind in EVENT_TYPES}  # every pattern in msgspec
for _kind, (_, _parsed) in _BUILDERS.items():
    if set(_INPUTS[_kind].date_times) != _parsed:
        raise ValueError(f"schemas/{_kind}.schema.json: date-time fields "
                         f"{sorted(_INPUTS[_kind].date_times)}, events.py parses {sorted(_parsed)}")
_BY_STRUCT = {_INPUTS[kind].struct: build for kind, (build, _) in _BUILDERS.items()}
_BY_FAST_STRUCT = {_FAST[kind].struct: build for kind, (build, _) in _BUILDERS.items()}
_messages = msgspec.json.Decoder(
    _FAST[LABEL_PURCHASED].struct | _FAST[LABEL_VOIDED].struct  # type: ignore[operator]
    | _FAST[CARRIER_SCAN].struct)
_MsgspecError = msgspec.DecodeError  # ValidationError is one too


def parse(value: bytes | bytearray | memoryview | None, max_bytes: int = DEFAULT_MAX_BYTES,
          ) -> dict[str, Any]:
    """The JSON object of a message, or DecodeError (size, encoding, JSON, object)."""
    if not value:
        raise DecodeError("invalid_json", "empty message value")
    if len(value) > max_bytes:
        raise DecodeError("too_large", f"{len(value)} bytes > maximum {max_bytes}")
    data = bytes(value)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        raise DecodeError("encoding", f"not UTF-8: {bad.reason} at byte {bad.start}") from None
    try:
        obj = msgspec.json.decode(data)
    except _MsgspecError as exc:  # also a number out of range: not JSON this reader can hold
        raise DecodeError("invalid_json", str(exc)) from None
    except RecursionError:  # msgspec recurses per nesting level: a hostile [[[[...]]]]
        raise DecodeError("invalid_json", "nested too deeply") from None
    if type(obj) is not dict:
        raise DecodeError("not_an_object", f"top-level JSON {type(obj).__name__}, not an object")
    return obj


def decode_object(obj: dict[str, Any]) -> Event:
    """The typed event of an already-parsed message object (schema checked here)."""
    kind = obj.get("type")
    found = _INPUTS.get(kind) if type(kind) is str else None
    if found is None:
        raise DecodeError(
            "unknown_type", f"type {kind!r:.80} is not one of {', '.join(EVENT_TYPES)}", "/type"
        )
    try:
        message = msgspec.convert(obj, found.struct)
    except msgspec.ValidationError as exc:
        text, path = _schema.explain(exc)
        raise DecodeError("schema", text, path) from None
    try:
        return _BY_STRUCT[found.struct](message)
    except _Recheck:  # the struct checked every pattern: the builders' checks pass
        raise AssertionError(f"a {kind} the schema accepts failed a deferred pattern") from None


def decode(value: bytes | bytearray | memoryview | None, max_bytes: int = DEFAULT_MAX_BYTES,
           ) -> Event:
    """Decode and check one message; raises DecodeError with a contract dead-letter code."""
    # One msgspec pass for messages that pass; anything else takes parse() and
    # decode_object() from the top, so every error is reported exactly as they report it
    # (msgspec stops at the first error it meets: a schema error ahead of broken JSON).
    if value and len(value) <= max_bytes:
        if type(value) is memoryview:
            value = bytes(value)
        try:
            message = _messages.decode(value)
        except (_MsgspecError, RecursionError):
            pass
        else:
            # msgspec checks the UTF-8 of the strings it reads, not of the fields it skips
            if value.isascii() or _is_utf8(value):
                try:
                    return _BY_FAST_STRUCT[type(message)](message)
                except _Recheck:
                    pass
    return decode_object(parse(value, max_bytes))


def _is_utf8(value: bytes | bytearray) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
